"""An independent port of clref's numbers in plain NumPy with hand-written gradients,
checked against vectors.json: infonce (both forms), alignment, uniformity, linear_r2,
mcc, linear_assignment, mix, unmix, whitening_stage, encode and its backward pass,
Adam, the learning-rate schedules, whole training steps, the box sampler, and the
boundary rows' conditionals (from given draws) and losses. It
reads only the JSON file, not clref: copy the pattern to check a port in another
framework. The vMF and generalised-normal samplers are left to check_torch.py.

python conformance/check_numpy.py [path/to/vectors.json] [--float32]

With --float32 the inputs are rounded to float32, computed in float32 and compared
with the float32 tolerances of PORTING.md.
"""
import itertools
import json
import os
import sys

import numpy as np


def similarity(h, h_tilde, tau, p):
    """S[i, j] = s(h_j, h_tilde_i) / tau; s = dot product or -||a - b||_p^p."""
    if p is None:
        return h_tilde @ h.T / tau
    return -np.sum(np.abs(h_tilde[:, None, :] - h[None, :, :]) ** p, axis=2) / tau


def infonce_with_grads(h, h_tilde, tau, p, self_pair=False):
    """Mean over rows of -S[i, i] + logsumexp_j S[i, j], and its gradients by hand.
    With self_pair, row i's log-sum-exp has one more entry, c_i = s(h_i, h_i) / tau."""
    s = similarity(h, h_tilde, tau, p)
    b = len(h)
    c = (np.sum(h * h, axis=1) / tau if p is None else np.zeros(b)) if self_pair else None
    rows = s if c is None else np.hstack([s, c[:, None]])
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    value = np.mean(lse - np.diag(s))
    weights = np.exp(rows - lse[:, None]) / b                # softmax over each row, / B
    g = weights[:, :b] - np.eye(b) / b                       # dLoss/dS
    if p is None:
        grad_h, grad_h_tilde = g.T @ h_tilde / tau, g @ h / tau
        if c is not None:                                    # dc_i/dh_i = 2 h_i / tau
            grad_h = grad_h + weights[:, b:] * 2 * h / tau
        return value, grad_h, grad_h_tilde
    d = h_tilde[:, None, :] - h[None, :, :]                  # d[i, j, k]
    ds = p * np.abs(d) ** (p - 1) * np.sign(d) / tau          # dS[i, j]/dh[j, k] (sign flips for h_tilde)
    return value, np.einsum("ij,ijk->jk", g, ds), -np.einsum("ij,ijk->ik", g, ds)


def lp_derivative(d, p, tau):
    """d/da of -|a - b|^p / tau at d = a - b: -p |d|^(p-1) sign(d) / tau (sign(0) = 0)."""
    return -p * np.abs(d) ** (p - 1) * np.sign(d) / tau


def official_infonce_with_grads(h, h_tilde, tau, p):
    """The reference code's form: row i holds A[i, j] = s(h_i, h_j) / tau for every
    j, and P_i = s(h_i, h_tilde_i) / tau; loss = mean_i(-P_i + logsumexp(A[i], P_i))."""
    b = len(h)
    if p is None:
        a, pos = h @ h.T / tau, np.sum(h * h_tilde, axis=1) / tau
    else:
        a = -np.sum(np.abs(h[:, None, :] - h[None, :, :]) ** p, axis=2) / tau
        pos = -np.sum(np.abs(h - h_tilde) ** p, axis=1) / tau
    rows = np.hstack([a, pos[:, None]])
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    value = np.mean(lse - pos)
    weights = np.exp(rows - lse[:, None]) / b
    w, g_pos = weights[:, :b], weights[:, b] - 1.0 / b       # dLoss/dA, dLoss/dP
    if p is None:
        grad_h = (w + w.T) @ h / tau + g_pos[:, None] * h_tilde / tau
        return value, grad_h, g_pos[:, None] * h / tau
    da = lp_derivative(h[:, None, :] - h[None, :, :], p, tau)    # dA[i, j]/dh_i; -that for h_j
    dp = lp_derivative(h - h_tilde, p, tau)                       # dP_i/dh_i; -that for h_tilde_i
    grad_h = (np.einsum("ij,ijk->ik", w, da) - np.einsum("ij,ijk->jk", w, da)
              + g_pos[:, None] * dp)
    return value, grad_h, -g_pos[:, None] * dp


def linear_r2(z, h, z_eval=None, h_eval=None):
    if z_eval is None:
        z_eval, h_eval = z, h
    coef = np.linalg.lstsq(np.c_[h, np.ones(len(h))], z, rcond=None)[0]
    pred = np.c_[h_eval, np.ones(len(h_eval))] @ coef
    return np.mean(1 - ((z_eval - pred) ** 2).sum(0) / ((z_eval - z_eval.mean(0)) ** 2).sum(0))


def mcc(z, h):
    n = z.shape[1]
    rho = np.abs(np.corrcoef(z.T, h.T)[:n, n:])
    return max(np.mean(rho[np.arange(n), list(perm)]) for perm in itertools.permutations(range(n)))


def alignment(h, h_tilde, tau, p):
    s = np.sum(h * h_tilde, axis=1) if p is None else -np.sum(np.abs(h - h_tilde) ** p, axis=1)
    return -np.mean(s) / tau


def uniformity(h, h_tilde, tau, p):
    s = similarity(h, h_tilde, tau, p)
    b = len(h)
    off = s[~np.eye(b, dtype=bool)].reshape(b, b - 1)
    top = off.max(axis=1, keepdims=True)
    return np.mean(top[:, 0] + np.log(np.exp(off - top).sum(axis=1))) - np.log(b - 1)


def assignment(cost):
    n = len(cost)
    best = min(itertools.permutations(range(n)), key=lambda perm: cost[np.arange(n), list(perm)].sum())
    return np.array(best), cost[np.arange(n), list(best)].sum()


def mix(mixing, z):
    x = z @ mixing[0].T
    for w in mixing[1:]:
        x = np.where(x > 0, x, 0.2 * x) @ w.T
    return x


def unmix(mixing, x):
    for w in mixing[:0:-1]:
        x = np.linalg.solve(w, x.T).T
        x = np.where(x > 0, x, x / 0.2)
    return np.linalg.solve(mixing[0], x.T).T


def whitening_stage(x):
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    return mean, (vectors / np.sqrt(values)) @ vectors.T


# ---- the encoder, forward and backward; parameters are {"layers": [(W, b)], "bound",
# "radius", "whiten": (mean, matrix)}, the keys present as in the JSON

def encode_with_vjp(params, x, head, radius=1.0):
    """(h, vjp): h = f(x), and vjp(g) = (gradients of sum(g * h) for every trainable
    parameter, gradient for x)."""
    h, inputs = x, []
    if "whiten" in params:
        mean, matrix = params["whiten"]
        h = (h - mean) @ matrix
    layers = params["layers"]
    for k, (w, b) in enumerate(layers):
        inputs.append(h)
        u = h @ w + b
        h = u if k == len(layers) - 1 else np.where(u > 0, u, 0.01 * u)
    y = h
    r = params.get("radius", radius)
    if head == "sphere":
        norm = np.sqrt(np.sum(y * y, axis=1, keepdims=True))
        unit = y / norm
        out = r * unit
    elif head == "box":
        sig = 1 / (1 + np.exp(-y))
        out = params["bound"] * sig
    else:
        out = y

    def vjp(g):
        grads = {}
        if head == "sphere":
            along = np.sum(unit * g, axis=1, keepdims=True)
            if "radius" in params:
                grads["radius"] = np.sum(along)
            g_y = (g - unit * along) * (r / norm)
        elif head == "box":
            grads["bound"] = np.sum(g * sig, axis=0)
            g_y = g * params["bound"] * sig * (1 - sig)
        else:
            g_y = g
        g_h, layer_grads = g_y, []
        for k in range(len(layers) - 1, -1, -1):
            w, b = layers[k]
            if k < len(layers) - 1:            # leaky ReLU: slope 1 where u > 0, else 0.01
                u = inputs[k + 1]              # the layer's output has u's sign
                g_h = g_h * np.where(u > 0, 1.0, 0.01)
            layer_grads.insert(0, (inputs[k].T @ g_h, g_h.sum(axis=0)))
            g_h = g_h @ w.T
        grads["layers"] = layer_grads
        if "whiten" in params:
            g_h = g_h @ params["whiten"][1].T
        return grads, g_h
    return out, vjp


# ---- Adam, the schedules and a training step (README §5)

def flat(tree):
    """{"layers.0.W": ..., "radius": ...}: a parameter tree as named arrays."""
    out = {}
    for k, (w, b) in enumerate(tree["layers"]):
        out[f"layers.{k}.W"], out[f"layers.{k}.b"] = w, b
    out.update({k: tree[k] for k in ("bound", "radius") if k in tree})
    return out


def adam_update(params, grads, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Named arrays in, (params, m, v, t) out: Kingma & Ba's Algorithm 1, eps added to
    sqrt(v_hat) after the bias correction."""
    t += 1
    new_p, new_m, new_v = {}, {}, {}
    for k in params:
        new_m[k] = b1 * m[k] + (1 - b1) * grads[k]
        new_v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
        m_hat = new_m[k] / (1 - b1 ** t)
        v_hat = new_v[k] / (1 - b2 ** t)
        new_p[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_p, new_m, new_v, t


def learning_rate(config, step):
    if step < config["warmup"]:
        return config["lr"] * (step + 1) / config["warmup"]
    if config["lr_timescale"] is not None:
        return config["lr"] * np.sqrt(config["lr_timescale"] / (config["lr_timescale"] + step - config["warmup"]))
    if config["lr_final"] is None:
        return config["lr"]
    progress = min((step - config["warmup"]) / max(1, config["steps"] - config["warmup"]), 1.0)
    return config["lr_final"] + 0.5 * (config["lr"] - config["lr_final"]) * (1 + np.cos(np.pi * progress))


def loss_with_grads(h, h_tilde, tau, p, self_pair, form):
    if form == "official":
        return official_infonce_with_grads(h, h_tilde, tau, p)
    return infonce_with_grads(h, h_tilde, tau, p, self_pair)


def contrastive_loss(params, x, x_tilde, config, self_pair):
    """(loss, gradients by name) of one batch. With the sphere head the encoder's unit
    outputs u enter the loss at the temperature tau / r², the model's concentration
    being r² / tau (README §4), and the radius's gradient is Σ (u·g_u + ũ·g_ũ) / r."""
    head, tau, p = config["head"], config["tau"], config["p"]
    if head == "sphere":
        r = params.get("radius", config["radius"])
        unit_params = {k: v for k, v in params.items() if k != "radius"}
        u, vjp = encode_with_vjp(unit_params, x, head)
        u_tilde, vjp_tilde = encode_with_vjp(unit_params, x_tilde, head)
        value, g_u, g_u_tilde = loss_with_grads(u, u_tilde, tau / r ** 2, p, self_pair, config["loss_form"])
    else:
        u, vjp = encode_with_vjp(params, x, head)
        u_tilde, vjp_tilde = encode_with_vjp(params, x_tilde, head)
        value, g_u, g_u_tilde = loss_with_grads(u, u_tilde, tau, p, self_pair, config["loss_form"])
    (grads, _), (grads_tilde, _) = vjp(g_u), vjp_tilde(g_u_tilde)
    named = {k: flat(grads)[k] + flat(grads_tilde)[k] for k in flat(grads)}
    if head == "sphere" and "radius" in params:
        named["radius"] = (np.sum(u * g_u) + np.sum(u_tilde * g_u_tilde)) / r
    return value, named


def train_steps(params, config, batches):
    """[(loss, params, m, v)] after each step, as train.py steps: the rate of step t
    (0-based) is learning_rate(config, t); the self pair is on while t < self_pair_until."""
    free = flat(params)
    m = {k: np.zeros_like(v) for k, v in free.items()}
    v = {k: np.zeros_like(a) for k, a in free.items()}
    t, out = 0, []
    for step, (x, x_tilde) in enumerate(batches):
        current = unflat(free, params)
        self_pair = config["self_pair"] and (config["self_pair_until"] is None
                                             or step < config["self_pair_until"])
        value, grads = contrastive_loss(current, x, x_tilde, config, self_pair)
        free, m, v, t = adam_update(free, grads, m, v, t, learning_rate(config, step))
        out.append((value, free, m, v))
    return out


def unflat(named, like):
    """The tree of `like` (its whitening stage kept) holding the named arrays."""
    tree = {k: like[k] for k in like if k == "whiten"}
    tree["layers"] = [(named[f"layers.{k}.W"], named[f"layers.{k}.b"]) for k in range(len(like["layers"]))]
    tree.update({k: named[k] for k in ("bound", "radius") if k in named})
    return tree


# ---- the boundary rows: restricted support and anisotropic conditionals (README §2, §5)

def restricted_vmf_from_draws(z, kept, cosines, normals):
    """The positive keeps u = z[:, :kept]; the rest is r (w mu + sqrt(1 - w²) v), mu = v_z / r."""
    u, v = z[:, :kept], z[:, kept:]
    r = np.sqrt(np.sum(v * v, axis=1, keepdims=True))
    mu = v / r
    orth = normals - np.sum(normals * mu, axis=1, keepdims=True) * mu
    orth = orth / np.sqrt(np.sum(orth * orth, axis=1, keepdims=True))
    w = cosines[:, None]
    return np.hstack([u, r * (w * mu + np.sqrt(1 - w * w) * orth)])


def aniso_normal_from_draws(z, precisions, normals):
    """z + delta, delta = normal / sqrt(precision), each row outside the band |1 - ||.||| < 0.1
    drawn again from the next rows of `normals`; (unit rows, rows used)."""
    scale = 1 / np.sqrt(np.asarray(precisions))
    out, used = z + scale * normals[:len(z)], len(z)
    while True:
        bad = np.flatnonzero(np.abs(1 - np.sqrt(np.sum(out * out, axis=1))) >= 0.1)
        if len(bad) == 0:
            return out / np.sqrt(np.sum(out * out, axis=1, keepdims=True)), used
        out[bad] = z[bad] + scale * normals[used:used + len(bad)]
        used += len(bad)


def anisotropic_infonce_with_grads(h, h_tilde, precision, tau, self_pair):
    """The p = 2 loss of the outputs scaled by s = sqrt(softplus(λ) / 2): the similarity
    -½ (a - b)ᵀ diag(softplus(λ)) (a - b); ds/dλ = sigmoid(λ) / (4 s)."""
    s = np.sqrt(np.logaddexp(0, precision) / 2)
    value, g, g_tilde = infonce_with_grads(h * s, h_tilde * s, tau, 2, self_pair)
    ds = 1 / (1 + np.exp(-precision)) / (4 * s)
    return value, g * s, g_tilde * s, np.sum(g * h + g_tilde * h_tilde, axis=0) * ds


def corrected_infonce_with_grads(h, h_tilde, h_negative, tau, p):
    """Row i: P_i = s(h_i, h_tilde_i) / tau and N_ij = s(h_i, h_negative_ij) / tau;
    loss = mean_i(logsumexp(P_i, N_i·) - P_i)."""
    b = len(h)
    if p is None:
        pos, neg = np.sum(h * h_tilde, axis=1) / tau, np.einsum("ik,ijk->ij", h, h_negative) / tau
    else:
        pos = -np.sum(np.abs(h - h_tilde) ** p, axis=1) / tau
        neg = -np.sum(np.abs(h[:, None, :] - h_negative) ** p, axis=2) / tau
    rows = np.hstack([pos[:, None], neg])
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    weights = np.exp(rows - lse[:, None]) / b
    g_pos, g_neg = weights[:, 0] - 1 / b, weights[:, 1:]
    if p is None:
        grad_h = g_pos[:, None] * h_tilde / tau + np.einsum("ij,ijk->ik", g_neg, h_negative) / tau
        return np.mean(lse - pos), grad_h, g_pos[:, None] * h / tau, g_neg[:, :, None] * h[:, None, :] / tau
    dp = lp_derivative(h - h_tilde, p, tau)
    dn = lp_derivative(h[:, None, :] - h_negative, p, tau)
    grad_h = g_pos[:, None] * dp + np.einsum("ij,ijk->ik", g_neg, dn)
    return np.mean(lse - pos), grad_h, -g_pos[:, None] * dp, -g_neg[:, :, None] * dn


# ---- the box conditional (README §2)

def sample_gennorm(shape, beta, lam, rng):
    """Density ∝ exp(-|u/lam|^beta): lam * sign * G^(1/beta), G ~ Gamma(1/beta, 1)."""
    return lam * rng.choice([-1.0, 1.0], shape) * rng.gamma(1 / beta, 1.0, shape) ** (1 / beta)


def sample_box_conditional(center, conditional, sigma, lam, beta, low, high, rng):
    """center (M x N) plus noise, every coordinate outside [low, high] drawn again."""
    def noise(shape):
        if conditional == "normal":
            return sigma * rng.standard_normal(shape)
        if conditional == "laplace":
            return rng.laplace(0.0, lam, shape)
        return sample_gennorm(shape, beta, lam, rng)
    out = center + noise(center.shape)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = center[bad] + noise(int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def close(got, want, tol):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and np.allclose(got, want, rtol=tol["rel"], atol=tol["abs"])


FLOAT32_TOLERANCE = {"infonce": {"rel": 1e-4, "abs": 1e-5}, "alignment": {"rel": 1e-4, "abs": 1e-5},
                     "uniformity": {"rel": 1e-4, "abs": 1e-5}, "mix": {"rel": 1e-4, "abs": 1e-5},
                     "unmix": {"rel": 1e-4, "abs": 1e-5}, "encode": {"rel": 1e-4, "abs": 1e-5},
                     "encode_vjp": {"rel": 1e-4, "abs": 1e-5}, "whitening_stage": {"rel": 1e-4, "abs": 1e-5},
                     "linear_r2": {"rel": 0.0, "abs": 1e-4}, "mcc": {"rel": 0.0, "abs": 1e-4},
                     "adam_update": {"rel": 1e-5, "abs": 1e-7}, "learning_rate": {"rel": 1e-6, "abs": 0.0},
                     "train_step": {"rel": 1e-4, "abs": 1e-5},
                     "linear_assignment": {"rel": 1e-6, "abs": 1e-6},
                     "restricted_vmf_from_draws": {"rel": 1e-4, "abs": 1e-5},
                     "aniso_normal_from_draws": {"rel": 1e-4, "abs": 1e-5},
                     "anisotropic_infonce": {"rel": 1e-4, "abs": 1e-5},
                     "corrected_infonce": {"rel": 1e-4, "abs": 1e-5}}


def arrays(tree, dtype):
    """A JSON parameter tree as the port holds it: layers as (W, b), whiten as (mean, matrix)."""
    out = {"layers": [(np.array(l["W"], dtype), np.array(l["b"], dtype)) for l in tree["layers"]]}
    out.update({k: np.array(tree[k], dtype) for k in ("bound", "radius") if k in tree})
    if "whiten" in tree:
        out["whiten"] = (np.array(tree["whiten"]["mean"], dtype), np.array(tree["whiten"]["matrix"], dtype))
    return out


def same_tree(named, tree, tol, dtype):
    want = flat(arrays(tree, dtype))
    return set(named) == set(want) and all(close(named[k], want[k], tol) for k in want)


def check(case, dtype=np.float64, rng=None):
    fn, args, want, tol = case["function"], case["args"], case["expected"], case["tolerance"]
    if dtype == np.float32:
        tol = dict(FLOAT32_TOLERANCE.get(fn, tol))
        if fn == "infonce":   # S scales the inputs' own rounding by 1/tau (PORTING.md, Tolerances)
            tol["abs"] /= min(args["tau"], 1.0)
    a = {k: (np.array(v, dtype=dtype) if isinstance(v, list) else v) for k, v in args.items()
         if k not in ("params", "grads", "m", "v", "mixing", "batches", "config", "steps")}
    if fn == "infonce":
        tau = dtype(a["tau"])
        value, grad_h, grad_h_tilde = loss_with_grads(a["h"], a["h_tilde"], tau, a["p"],
                                                      a.get("self_pair", False), a.get("form", "paper"))
        return (close(value, want["value"], tol) and close(grad_h, want["grad_h"], tol)
                and close(grad_h_tilde, want["grad_h_tilde"], tol))
    if fn in ("alignment", "uniformity"):
        f = alignment if fn == "alignment" else uniformity
        return close(f(a["h"], a["h_tilde"], dtype(a["tau"]), a["p"]), want["value"], tol)
    if fn == "linear_r2":
        return close(linear_r2(a["z"], a["h"], a.get("z_eval"), a.get("h_eval")), want["value"], tol)
    if fn == "mcc":
        return close(mcc(a["z"], a["h"]), want["value"], tol)
    if fn == "linear_assignment":
        match, cost = assignment(a["cost"])
        return sorted(match) == list(range(len(match))) and close(cost, want["cost"], tol)
    if fn in ("mix", "unmix"):
        mixing = [np.array(w, dtype) for w in args["mixing"]]
        got = mix(mixing, a["z"]) if fn == "mix" else unmix(mixing, a["x"])
        return close(got, want["value"], tol)
    if fn == "whitening_stage":
        mean, matrix = whitening_stage(a["x"])
        return close(mean, want["mean"], tol) and close(matrix, want["matrix"], tol)
    if fn in ("encode", "encode_vjp"):
        out, vjp = encode_with_vjp(arrays(args["params"], dtype), a["x"], a["head"], a.get("radius", 1.0))
        if fn == "encode":
            return close(out, want["value"], tol)
        grads, grad_x = vjp(a["cotangent"])
        return same_tree(flat(grads), want["grad_params"], tol, dtype) and close(grad_x, want["grad_x"], tol)
    if fn == "adam_update":
        params, grads = flat(arrays(args["params"], dtype)), flat(arrays(args["grads"], dtype))
        m, v = flat(arrays(args["m"], dtype)), flat(arrays(args["v"], dtype))
        new, m, v, t = adam_update(params, grads, m, v, args["t"], args["lr"], args["b1"], args["b2"],
                                   args["eps"])
        return (t == want["t"] and same_tree(new, want["params"], tol, dtype)
                and same_tree(m, want["m"], tol, dtype) and same_tree(v, want["v"], tol, dtype))
    if fn == "learning_rate":
        return close([learning_rate(args["config"], t) for t in args["steps"]], want["rates"], tol)
    if fn == "train_step":
        batches = [(np.array(x, dtype), np.array(x_tilde, dtype)) for x, x_tilde in args["batches"]]
        steps = train_steps(arrays(args["params"], dtype), args["config"], batches)
        return close([s[0] for s in steps], want["losses"], tol) and all(
            same_tree(params, snap["params"], tol, dtype) and same_tree(m, snap["m"], tol, dtype)
            and same_tree(v, snap["v"], tol, dtype)
            for (_, params, m, v), snap in ((steps[0], want["after_1"]), (steps[2], want["after_3"])))
    if fn == "restricted_vmf_from_draws":
        return close(restricted_vmf_from_draws(np.array(args["z"], dtype), args["kept"], a["cosines"], a["normals"]),
                     want["value"], tol)
    if fn == "aniso_normal_from_draws":
        got, used = aniso_normal_from_draws(np.array(args["z"], dtype), args["precisions"], a["normals"])
        return used == want["rows_drawn"] and close(got, want["value"], tol)
    if fn == "anisotropic_infonce":
        got = anisotropic_infonce_with_grads(a["h"], a["h_tilde"], a["precision"], dtype(a["tau"]), a["self_pair"])
        return all(close(v, want[k], tol) for v, k in zip(got, ("value", "grad_h", "grad_h_tilde", "grad_precision")))
    if fn == "corrected_infonce":
        got = corrected_infonce_with_grads(a["h"], a["h_tilde"], a["h_negative"], dtype(a["tau"]), a["p"])
        return all(close(v, want[k], tol) for v, k in zip(got, ("value", "grad_h", "grad_h_tilde", "grad_h_negative")))
    rng = rng or np.random.default_rng(0)
    if fn in ("sample_box_conditional", "sample_conditional"):
        low, high = args["box_low"], args["box_high"]
        center = (np.tile(args["z"], (args["draws"], 1)) if fn == "sample_box_conditional"
                  else rng.uniform(low, high, (args["draws"], args["n"])))
        draws = sample_box_conditional(center, args["conditional"], args["sigma"], args["lam"],
                                       args["beta"], low, high, rng)
        if fn == "sample_conditional":
            return draws.min() >= want["min_at_least"] and draws.max() <= want["max_at_most"]
        return (np.all(np.abs(draws.mean(axis=0) - want["mean"]) <= tol["abs_mean"])
                and np.all(np.abs(draws.var(axis=0) - want["variance"]) <= tol["abs_variance"]))
    if fn == "sample_gennorm":
        u = sample_gennorm(args["draws"], args["beta"], args["lam"], rng)
        return (abs(u.mean() - want["mean"]) <= tol["abs_mean"]
                and abs(np.mean(u ** 2) - want["variance"]) <= tol["abs_variance"])
    return None  # not ported here: the vMF sampler (check_torch.py has it)


def main(path, dtype=np.float64):
    with open(path) as f:
        cases = json.load(f)["cases"]
    rng = np.random.default_rng(2021)
    results = [(case, check(case, dtype, rng)) for case in cases]
    checked = [(c, ok) for c, ok in results if ok is not None]
    failed = [c for c, ok in checked if not ok]
    for case in failed:
        print(f"FAIL case {cases.index(case)}: {case['function']} {case.get('note', '')}")
    print(f"{len(checked) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [a for a in sys.argv[1:] if a != "--float32"]
    sys.exit(main(paths[0] if paths else os.path.join(here, "vectors.json"),
                  np.float32 if "--float32" in sys.argv else np.float64))
