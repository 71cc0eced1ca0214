"""An independent PyTorch port of every case in vectors.json, in float64: the losses,
metrics, mixing, whitening and encoder as torch code, every gradient from torch's
autograd, Adam written out from Kingma & Ba's Algorithm 1 (not torch.optim), the
rate schedules and whole training steps, and the samplers with torch's random
numbers. It reads only the JSON file, not clref.

python conformance/check_torch.py [path/to/vectors.json]

Without torch it prints one line and exits 0. With it, it prints "N passed, M failed"
and exits 1 if a case failed.
"""
import itertools
import json
import math
import os
import sys

try:
    import torch
except ImportError:                      # the test that runs this file skips without torch
    torch = None

DTYPE = "float64"


def tensor(value):
    return torch.tensor(value, dtype=torch.float64)


# ---- losses (README §5)

def similarity(a, b, tau, p):
    """S[i, j] = s(b_j, a_i) / tau: a_i · b_j, or -Σ_k |a_ik - b_jk|^p (a power, not a norm)."""
    if p is None:
        return a @ b.T / tau
    return -(a[:, None, :] - b[None, :, :]).abs().pow(p).sum(dim=2) / tau


def infonce(h, h_tilde, tau, p, self_pair=False, form="paper"):
    b = len(h)
    if form == "official":            # row i: the positive, then every anchor j against h_i
        positive = (-(h - h_tilde).abs().pow(p).sum(dim=1) if p is not None
                    else (h * h_tilde).sum(dim=1)) / tau
        rows = torch.cat([positive[:, None], similarity(h, h, tau, p)], dim=1)
        return (torch.logsumexp(rows, dim=1) - positive).mean()
    s = similarity(h_tilde, h, tau, p)
    if self_pair:                     # one more entry per row: s(h_i, h_i) / tau
        own = (h * h).sum(dim=1) / tau if p is None else torch.zeros(b, dtype=h.dtype)
        s = torch.cat([s, own[:, None]], dim=1)
    return (torch.logsumexp(s, dim=1) - s[torch.arange(b), torch.arange(b)]).mean()


def alignment(h, h_tilde, tau, p):
    s = (h * h_tilde).sum(dim=1) if p is None else -(h - h_tilde).abs().pow(p).sum(dim=1)
    return -s.mean() / tau


def uniformity(h, h_tilde, tau, p):
    s = similarity(h_tilde, h, tau, p)
    b = len(h)
    s = s.masked_fill(torch.eye(b, dtype=torch.bool), -math.inf)
    return torch.logsumexp(s, dim=1).mean() - math.log(b - 1)


# ---- metrics (README §6)

def linear_r2(z, h, z_eval=None, h_eval=None):
    if z_eval is None:
        z_eval, h_eval = z, h
    ones = torch.ones(len(h), 1, dtype=h.dtype)
    coef = torch.linalg.lstsq(torch.cat([h, ones], dim=1), z).solution
    pred = torch.cat([h_eval, torch.ones(len(h_eval), 1, dtype=h.dtype)], dim=1) @ coef
    sse = ((z_eval - pred) ** 2).sum(dim=0)
    sst = ((z_eval - z_eval.mean(dim=0)) ** 2).sum(dim=0)
    return (1 - sse / sst).mean()


def mcc(z, h):
    n = z.shape[1]
    zc, hc = z - z.mean(dim=0), h - h.mean(dim=0)
    rho = ((zc.T @ hc) / torch.outer(zc.norm(dim=0), hc.norm(dim=0))).abs()
    return max(rho[torch.arange(n), list(perm)].mean() for perm in itertools.permutations(range(n)))


def assignment(cost):
    n = len(cost)
    best = min(itertools.permutations(range(n)), key=lambda perm: float(cost[torch.arange(n), list(perm)].sum()))
    return list(best), cost[torch.arange(n), list(best)].sum()


# ---- mixing, whitening, encoder (README §3, §4)

def mix(mixing, z):
    x = z @ mixing[0].T
    for w in mixing[1:]:
        x = torch.nn.functional.leaky_relu(x, 0.2) @ w.T
    return x


def unmix(mixing, x):
    for w in reversed(mixing[1:]):
        x = torch.linalg.solve(w, x.T).T
        x = torch.where(x > 0, x, x / 0.2)
    return torch.linalg.solve(mixing[0], x.T).T


def whitening_stage(x):
    xc = x - x.mean(dim=0)
    values, vectors = torch.linalg.eigh(xc.T @ xc / (len(x) - 1))
    return x.mean(dim=0), vectors @ torch.diag(values.rsqrt()) @ vectors.T


def parameters(tree, trainable=True):
    """{name: tensor}: layers.K.W, layers.K.b, bound, radius (requires_grad), and
    whiten.mean, whiten.matrix (fixed)."""
    out = {}
    for k, layer in enumerate(tree["layers"]):
        out[f"layers.{k}.W"], out[f"layers.{k}.b"] = tensor(layer["W"]), tensor(layer["b"])
    for key in ("bound", "radius"):
        if key in tree:
            out[key] = tensor(tree[key])
    for t in out.values():
        t.requires_grad_(trainable)
    if "whiten" in tree:
        out["whiten.mean"], out["whiten.matrix"] = tensor(tree["whiten"]["mean"]), tensor(tree["whiten"]["matrix"])
    return out


def encode(params, x, head, radius=1.0):
    h = x
    if "whiten.mean" in params:
        h = (h - params["whiten.mean"]) @ params["whiten.matrix"]
    layers = sum(name.startswith("layers.") for name in params) // 2
    for k in range(layers):
        h = h @ params[f"layers.{k}.W"] + params[f"layers.{k}.b"]
        if k < layers - 1:
            h = torch.nn.functional.leaky_relu(h, 0.01)
    if head == "sphere":
        return params.get("radius", radius) * h / h.norm(dim=1, keepdim=True)
    if head == "box":
        return params["bound"] * torch.sigmoid(h)
    return h


def trainable_names(params):
    return [name for name in params if not name.startswith("whiten.")]


# ---- Adam and the schedules (README §5), written out

def adam_update(params, grads, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba's Algorithm 1: bias-corrected moments, eps added to sqrt(v_hat)."""
    t += 1
    new_p, new_m, new_v = {}, {}, {}
    with torch.no_grad():
        for name in params:
            new_m[name] = b1 * m[name] + (1 - b1) * grads[name]
            new_v[name] = b2 * v[name] + (1 - b2) * grads[name] * grads[name]
            m_hat = new_m[name] / (1 - b1 ** t)
            v_hat = new_v[name] / (1 - b2 ** t)
            new_p[name] = params[name] - lr * m_hat / (v_hat.sqrt() + eps)
    return new_p, new_m, new_v, t


def learning_rate(config, step):
    """Linear warm-up, then lr sqrt(T / (T + t)), a cosine decay to lr_final, or constant."""
    lr, warmup = config["lr"], config["warmup"]
    if step < warmup:
        return lr * (step + 1) / warmup
    if config["lr_timescale"] is not None:
        return lr * math.sqrt(config["lr_timescale"] / (config["lr_timescale"] + step - warmup))
    if config["lr_final"] is None:
        return lr
    done = min((step - warmup) / max(1, config["steps"] - warmup), 1.0)
    return config["lr_final"] + (lr - config["lr_final"]) * (1 + math.cos(math.pi * done)) / 2


def train(tree, config, batches):
    """[(loss, params, m, v)] after each of the batches, as train.py steps."""
    params = {name: t.detach() for name, t in parameters(tree).items()}
    names = trainable_names(params)
    m = {name: torch.zeros_like(params[name]) for name in names}
    v = {name: torch.zeros_like(params[name]) for name in names}
    t, out = 0, []
    for step, (x, x_tilde) in enumerate(batches):
        free = {name: params[name].clone().requires_grad_(True) for name in names}
        current = {**params, **free}
        self_pair = config["self_pair"] and (config["self_pair_until"] is None or step < config["self_pair_until"])
        h = encode(current, x, config["head"], config["radius"])
        h_tilde = encode(current, x_tilde, config["head"], config["radius"])
        loss = infonce(h, h_tilde, config["tau"], config["p"], self_pair, config["loss_form"])
        grads = dict(zip(names, torch.autograd.grad(loss, [free[name] for name in names])))
        new, m, v, t = adam_update({name: params[name] for name in names}, grads, m, v, t,
                                   learning_rate(config, step))
        params.update(new)
        out.append((float(loss.detach()), new, m, v))
    return out


# ---- samplers (README §2)

def sample_gennorm(shape, beta, lam, generator):
    sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
    gamma = torch._standard_gamma(torch.full(shape, 1 / beta, dtype=torch.float64), generator=generator)
    return lam * sign * gamma ** (1 / beta)


def sample_noise(kind, shape, generator, sigma, lam, beta):
    if kind == "normal":
        return sigma * torch.randn(shape, generator=generator, dtype=torch.float64)
    if kind == "laplace":             # the inverse CDF of Laplace(0, lam)
        u = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
        return -lam * torch.sign(u) * torch.log1p(-2 * u.abs())
    return sample_gennorm(shape, beta, lam, generator)


def sample_box(center, args, generator):
    """center + noise, every coordinate outside the box drawn again."""
    low, high = args["box_low"], args["box_high"]

    def noise(shape):
        return sample_noise(args["conditional"], shape, generator, args["sigma"], args["lam"], args["beta"])
    out = center + noise(center.shape)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = center[bad] + noise((int(bad.sum()),))
        bad = (out < low) | (out > high)
    return out


def sample_vmf_cosines(count, n, kappa, generator):
    """Wood (1994): w = mu·z_tilde by rejection from a transformed Beta((n-1)/2, (n-1)/2)."""
    b = (n - 1) / (2 * kappa + math.sqrt(4 * kappa ** 2 + (n - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (n - 1) * math.log(1 - x0 ** 2)
    half = torch.tensor((n - 1) / 2, dtype=torch.float64)
    found = []
    while sum(len(f) for f in found) < count:
        g1 = torch._standard_gamma(half.expand(count), generator=generator)
        g2 = torch._standard_gamma(half.expand(count), generator=generator)
        z = g1 / (g1 + g2)                         # Beta((n-1)/2, (n-1)/2)
        w = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        u = torch.rand(count, generator=generator, dtype=torch.float64)
        found.append(w[kappa * w + (n - 1) * torch.log(1 - x0 * w) - c >= torch.log(u)])
    return torch.cat(found)[:count]


# ---- the boundary rows (README §2, §5)

def restricted_vmf_from_draws(z, kept, cosines, normals):
    u, v = z[:, :kept], z[:, kept:]
    r = v.norm(dim=1, keepdim=True)
    mu = v / r
    orth = normals - (normals * mu).sum(dim=1, keepdim=True) * mu
    orth = orth / orth.norm(dim=1, keepdim=True)
    w = cosines[:, None]
    return torch.cat([u, r * (w * mu + (1 - w * w).sqrt() * orth)], dim=1)


def aniso_normal_from_draws(z, precisions, normals):
    scale = tensor(precisions).rsqrt()
    out, used = z + scale * normals[:len(z)], len(z)
    while True:
        bad = ((1 - out.norm(dim=1)).abs() >= 0.1).nonzero().flatten()
        if len(bad) == 0:
            return out / out.norm(dim=1, keepdim=True), used
        out[bad] = z[bad] + scale * normals[used:used + len(bad)]
        used += len(bad)


def anisotropic_infonce(h, h_tilde, precision, tau, self_pair):
    """The paper's form with s(a, b) = -½ Σ_k softplus(λ_k) (a_k - b_k)²."""
    weights = torch.nn.functional.softplus(precision)
    b = len(h)
    s = -0.5 * (weights * (h_tilde[:, None, :] - h[None, :, :]) ** 2).sum(dim=2) / tau
    if self_pair:                      # s(h_i, h_i) = 0
        s = torch.cat([s, torch.zeros(b, 1, dtype=h.dtype)], dim=1)
    return (torch.logsumexp(s, dim=1) - s[torch.arange(b), torch.arange(b)]).mean()


def corrected_infonce(h, h_tilde, h_negative, tau, p):
    if p is None:
        positive, negative = (h * h_tilde).sum(dim=1), (h[:, None, :] * h_negative).sum(dim=2)
    else:
        positive = -(h - h_tilde).abs().pow(p).sum(dim=1)
        negative = -(h[:, None, :] - h_negative).abs().pow(p).sum(dim=2)
    rows = torch.cat([positive[:, None], negative], dim=1) / tau
    return (torch.logsumexp(rows, dim=1) - positive / tau).mean()


# ---- the cases

def close(got, want, tol):
    got = got.detach() if isinstance(got, torch.Tensor) else tensor(got)
    want = tensor(want)
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=tol["rel"], atol=tol["abs"]))


def same_tree(named, tree, tol):
    want = {name: t for name, t in parameters(tree, trainable=False).items() if not name.startswith("whiten.")}
    return set(named) == set(want) and all(close(named[name], want[name].tolist(), tol) for name in want)


def check(case, generator):
    fn, args, want, tol = case["function"], case["args"], case["expected"], case["tolerance"]
    a = {k: (tensor(v) if isinstance(v, list) and k not in ("mixing", "batches", "steps", "precisions") else v)
         for k, v in args.items() if k not in ("params", "grads", "m", "v", "config")}
    if fn == "infonce":
        h, h_tilde = a["h"].requires_grad_(True), a["h_tilde"].requires_grad_(True)
        value = infonce(h, h_tilde, a["tau"], a["p"], a.get("self_pair", False), a.get("form", "paper"))
        grad_h, grad_h_tilde = torch.autograd.grad(value, [h, h_tilde])
        return (close(value, want["value"], tol) and close(grad_h, want["grad_h"], tol)
                and close(grad_h_tilde, want["grad_h_tilde"], tol))
    if fn in ("alignment", "uniformity"):
        f = alignment if fn == "alignment" else uniformity
        return close(f(a["h"], a["h_tilde"], a["tau"], a["p"]), want["value"], tol)
    if fn == "linear_r2":
        return close(linear_r2(a["z"], a["h"], a.get("z_eval"), a.get("h_eval")), want["value"], tol)
    if fn == "mcc":
        return close(mcc(a["z"], a["h"]), want["value"], tol)
    if fn == "linear_assignment":
        match, cost = assignment(a["cost"])
        return sorted(match) == list(range(len(match))) and close(cost, want["cost"], tol)
    if fn in ("mix", "unmix"):
        mixing = [tensor(w) for w in args["mixing"]]
        return close(mix(mixing, a["z"]) if fn == "mix" else unmix(mixing, a["x"]), want["value"], tol)
    if fn == "whitening_stage":
        mean, matrix = whitening_stage(a["x"])
        return close(mean, want["mean"], tol) and close(matrix, want["matrix"], tol)
    if fn in ("encode", "encode_vjp"):
        params = parameters(args["params"])
        x = a["x"].requires_grad_(True)
        out = encode(params, x, args["head"], args.get("radius", 1.0))
        if fn == "encode":
            return close(out, want["value"], tol)
        names = trainable_names(params)
        grads = torch.autograd.grad((out * a["cotangent"]).sum(), [params[n] for n in names] + [x])
        return same_tree(dict(zip(names, grads[:-1])), want["grad_params"], tol) and close(grads[-1], want["grad_x"], tol)
    if fn == "adam_update":
        params, grads = parameters(args["params"], False), parameters(args["grads"], False)
        m, v = parameters(args["m"], False), parameters(args["v"], False)
        new, m, v, t = adam_update(params, grads, m, v, args["t"], args["lr"], args["b1"], args["b2"], args["eps"])
        return (t == want["t"] and same_tree(new, want["params"], tol) and same_tree(m, want["m"], tol)
                and same_tree(v, want["v"], tol))
    if fn == "learning_rate":
        return close([learning_rate(args["config"], t) for t in args["steps"]], want["rates"], tol)
    if fn == "train_step":
        steps = train(args["params"], args["config"], [(tensor(x), tensor(y)) for x, y in args["batches"]])
        return close([s[0] for s in steps], want["losses"], tol) and all(
            same_tree(p, snap["params"], tol) and same_tree(m, snap["m"], tol) and same_tree(v, snap["v"], tol)
            for (_, p, m, v), snap in ((steps[0], want["after_1"]), (steps[2], want["after_3"])))
    if fn == "restricted_vmf_from_draws":
        return close(restricted_vmf_from_draws(tensor(args["z"]), args["kept"], a["cosines"], a["normals"]),
                     want["value"], tol)
    if fn == "aniso_normal_from_draws":
        got, used = aniso_normal_from_draws(tensor(args["z"]), args["precisions"], a["normals"])
        return used == want["rows_drawn"] and close(got, want["value"], tol)
    if fn in ("anisotropic_infonce", "corrected_infonce"):
        names = ["h", "h_tilde", "precision" if fn == "anisotropic_infonce" else "h_negative"]
        inputs = [a[name].requires_grad_(True) for name in names]
        value = (anisotropic_infonce(*inputs, a["tau"], a["self_pair"]) if fn == "anisotropic_infonce"
                 else corrected_infonce(*inputs, a["tau"], a["p"]))
        grads = torch.autograd.grad(value, inputs)
        return close(value, want["value"], tol) and all(
            close(g, want[f"grad_{name}"], tol) for g, name in zip(grads, names))
    if fn == "sample_vmf":
        w = sample_vmf_cosines(args["draws"], args["n"], args["kappa"], generator)
        return abs(float(w.mean()) - want["mean_cosine"]) <= tol["abs_mean_cosine"]
    if fn == "sample_gennorm":
        u = sample_gennorm((args["draws"],), args["beta"], args["lam"], generator)
        return (abs(float(u.mean()) - want["mean"]) <= tol["abs_mean"]
                and abs(float((u * u).mean()) - want["variance"]) <= tol["abs_variance"])
    if fn == "sample_conditional":
        z = args["box_low"] + (args["box_high"] - args["box_low"]) * torch.rand(
            (args["draws"], args["n"]), generator=generator, dtype=torch.float64)
        z_tilde = sample_box(z, args, generator)
        return float(z_tilde.min()) >= want["min_at_least"] and float(z_tilde.max()) <= want["max_at_most"]
    if fn == "sample_box_conditional":
        z_tilde = sample_box(tensor(args["z"]).expand(args["draws"], -1).clone(), args, generator)
        mean, var = z_tilde.mean(dim=0), z_tilde.var(dim=0, unbiased=False)
        return (bool(((mean - tensor(want["mean"])).abs() <= tensor(tol["abs_mean"])).all())
                and bool(((var - tensor(want["variance"])).abs() <= tensor(tol["abs_variance"])).all()))
    raise ValueError(f"case function {fn!r} is not ported here")


def main(path):
    if torch is None:
        print("check_torch.py: torch is not installed; nothing checked")
        return 0
    with open(path) as f:
        cases = json.load(f)["cases"]
    generator = torch.Generator().manual_seed(2021)
    failed = 0
    for k, case in enumerate(cases):
        if not check(case, generator):
            failed += 1
            print(f"FAIL case {k}: {case['function']} {case.get('note', '')}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "vectors.json")))
