"""Write conformance/vectors.json: fixed inputs and clref's outputs, in float64.

python conformance/generate.py    # deterministic: the same file every time

Each case is {"function", "args", "expected", "tolerance"}; see PORTING.md.
"""
import json
import math
import os
import sys

import autograd.numpy as anp
import numpy as np
from autograd import grad

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clref as C  # noqa: E402

VERSION = 6                            # 2: infonce cases may carry self_pair; 3: form;
                                       # 4: whitening_stage, encode with params.whiten;
                                       # 5: encode_vjp, adam_update, learning_rate, train_step,
                                       # infonce at tau 1e-3 and p 1.5, sample_box_conditional;
                                       # 6: restricted_vmf and aniso_normal from given draws,
                                       # anisotropic_infonce, corrected_infonce
EXACT = {"abs": 1e-12, "rel": 1e-12}   # float64 ports; PORTING.md gives float32 tolerances


def as_list(a):
    return np.asarray(a, dtype=float).tolist()


def infonce_cases(rng):
    cases = []
    for p in (None, 1, 2, 3):
        for tau in (0.5, 1.0):
            for batch, dim in ((4, 2), (9, 3), (16, 5)):
                h, h_tilde = rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim))
                if p is None:
                    h, h_tilde = C.normalize(h), C.normalize(h_tilde)
                value = C.infonce(h, h_tilde, tau, p)
                cases.append({
                    "function": "infonce",
                    "args": {"h": as_list(h), "h_tilde": as_list(h_tilde), "tau": tau, "p": p},
                    "expected": {"value": value,
                                 "grad_h": as_list(grad(C.infonce, 0)(h, h_tilde, tau, p)),
                                 "grad_h_tilde": as_list(grad(C.infonce, 1)(h, h_tilde, tau, p))},
                    "tolerance": EXACT})
    return cases


def option_cases(rng, option, note):
    """infonce with one option set, e.g. {"self_pair": True} (each row's log-sum-exp
    also holds s(h_i, h_i) / tau) or {"form": "official"} (row i holds s(h_i, h_j) / tau
    for every anchor j, i itself included, and the positive s(h_i, h_tilde_i) / tau)."""
    cases = []
    for p in (None, 1, 2, 3):
        for batch, dim in ((5, 2), (12, 4)):
            h, h_tilde = rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim))
            if p is None:
                h, h_tilde = 1.5 * C.normalize(h), 1.5 * C.normalize(h_tilde)
            args = (h, h_tilde, 0.5, p)
            cases.append({
                "function": "infonce",
                "args": {"h": as_list(h), "h_tilde": as_list(h_tilde), "tau": 0.5, "p": p, **option},
                "expected": {"value": C.infonce(*args, **option),
                             "grad_h": as_list(grad(C.infonce, 0)(*args, **option)),
                             "grad_h_tilde": as_list(grad(C.infonce, 1)(*args, **option))},
                "tolerance": EXACT, "note": note})
    return cases


def alignment_uniformity_cases(rng):
    cases = []
    for name, fn in (("alignment", C.alignment), ("uniformity", C.uniformity)):
        for p, tau in ((None, 0.5), (1, 1.0), (2, 1.0)):
            h, h_tilde = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
            cases.append({"function": name,
                          "args": {"h": as_list(h), "h_tilde": as_list(h_tilde), "tau": tau, "p": p},
                          "expected": {"value": fn(h, h_tilde, tau, p)}, "tolerance": EXACT})
    return cases


def metric_cases(rng):
    cases = []
    z = rng.standard_normal((40, 3))
    h = np.tanh(z @ rng.standard_normal((3, 3))) + 0.1 * rng.standard_normal((40, 3))
    z_eval = rng.standard_normal((30, 3))
    h_eval = np.tanh(z_eval @ rng.standard_normal((3, 3)))
    cases.append({"function": "linear_r2", "args": {"z": as_list(z), "h": as_list(h)},
                  "expected": {"value": C.linear_r2(z, h)}, "tolerance": EXACT})
    cases.append({"function": "linear_r2",
                  "args": {"z": as_list(z), "h": as_list(h), "z_eval": as_list(z_eval), "h_eval": as_list(h_eval)},
                  "expected": {"value": C.linear_r2(z, h, z_eval, h_eval)}, "tolerance": EXACT})
    signed = z[:, [2, 0, 1]] * np.array([-1.0, 3.0, -0.5]) + 1.0
    tied = np.column_stack([z[:, 0] + z[:, 1], z[:, 0] - z[:, 1], z[:, 2]])  # |rho| ties
    for name, out in (("noisy", h), ("signed permutation", signed), ("tied correlations", tied)):
        cases.append({"function": "mcc", "args": {"z": as_list(z), "h": as_list(out)},
                      "expected": {"value": C.mcc(z, out)}, "tolerance": EXACT, "note": name})
    return cases


def assignment_cases(rng):
    cases = []
    matrices = [rng.standard_normal((5, 5)), rng.integers(0, 3, size=(6, 6)).astype(float),
                np.ones((4, 4)), np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])]
    for cost in matrices:
        match = C.linear_assignment(cost)
        cases.append({"function": "linear_assignment", "args": {"cost": as_list(cost)},
                      "expected": {"assignment": match.tolist(),
                                   "cost": float(cost[np.arange(len(match)), match].sum())},
                      "tolerance": EXACT,
                      "note": "with ties several assignments are optimal: compare the total cost"})
    return cases


def mixing_encoder_cases(rng):
    cases = []
    mixing = C.make_mixing(4, 3, rng, cond_pool=100)
    z = C.sample_uniform_sphere(6, 4, rng)
    x = C.mix(mixing, z)
    mats = [as_list(w) for w in mixing]
    cases.append({"function": "mix", "args": {"mixing": mats, "z": as_list(z)},
                  "expected": {"value": as_list(x)}, "tolerance": EXACT})
    cases.append({"function": "unmix", "args": {"mixing": mats, "x": as_list(x)},
                  "expected": {"value": as_list(C.unmix(mixing, x))}, "tolerance": EXACT})
    for head, extra in (("sphere", {}), ("sphere", {"radius": np.array(2.5)}),
                        ("box", {"bound": np.array([0.5, 1.0, 2.0, 3.0])}), ("none", {})):
        params = C.init_encoder(4, (9, 7), head, rng, "float64")
        params["layers"] = [(w, rng.uniform(-0.1, 0.1, b.shape)) for w, b in params["layers"]]
        params.update(extra)
        encoded = {"layers": [{"W": as_list(w), "b": as_list(b)} for w, b in params["layers"]]}
        encoded.update({k: as_list(v) for k, v in extra.items()})
        cases.append({"function": "encode", "args": {"params": encoded, "x": as_list(x), "head": head},
                      "expected": {"value": as_list(C.encode(params, x, head))}, "tolerance": EXACT})
    return cases


def whitening_cases(rng):
    """The whitening stage from observations, and an encoder that holds one."""
    mixing = C.make_mixing(4, 3, rng, cond_pool=100)
    x = C.mix(mixing, rng.uniform(0, 1, (40, 4)))
    mean, matrix = C.whitening_stage(x)
    cases = [{"function": "whitening_stage", "args": {"x": as_list(x)},
              "expected": {"mean": as_list(mean), "matrix": as_list(matrix)}, "tolerance": EXACT}]
    params = C.init_encoder(4, (9, 7), "none", rng, "float64", stage=(mean, matrix))
    params["layers"] = [(w, rng.uniform(-0.1, 0.1, b.shape)) for w, b in params["layers"]]
    encoded = {"layers": [{"W": as_list(w), "b": as_list(b)} for w, b in params["layers"]],
               "whiten": {"mean": as_list(mean), "matrix": as_list(matrix)}}
    cases.append({"function": "encode", "args": {"params": encoded, "x": as_list(x[:6]), "head": "none"},
                  "expected": {"value": as_list(C.encode(params, x[:6], "none"))}, "tolerance": EXACT,
                  "note": "with the whitening stage"})
    return cases


def sampler_cases():
    """Distribution checks: a correct sampler passes each with overwhelming probability."""
    cases = []
    for n, kappa in ((3, 1.0), (10, 10.0), (5, 50.0)):
        cases.append({"function": "sample_vmf",
                      "args": {"n": n, "kappa": kappa, "draws": 100000},
                      "expected": {"mean_cosine": C.vmf_mean_cosine(n, kappa)},
                      "tolerance": {"abs_mean_cosine": 6.0 * math.sqrt(
                          (1 - C.vmf_mean_cosine(n, kappa) ** 2) / 100000)},
                      "note": "mean of mu·z_tilde over draws; the tolerance is 6 standard errors "
                              "(the cosine's variance is at most 1 - A_N(kappa)²)"})
    for beta, lam in ((1.0, 0.5), (3.0, 0.05), (0.7, 2.0)):
        var = lam ** 2 * math.gamma(3 / beta) / math.gamma(1 / beta)
        m4 = lam ** 4 * math.gamma(5 / beta) / math.gamma(1 / beta)
        cases.append({"function": "sample_gennorm", "args": {"beta": beta, "lam": lam, "draws": 200000},
                      "expected": {"mean": 0.0, "variance": var, "fourth_moment": m4},
                      "tolerance": {"abs_mean": 6 * math.sqrt(var / 200000),
                                    "abs_variance": 6 * math.sqrt((m4 - var ** 2) / 200000)},
                      "note": "density ∝ exp(-|u/lam|^beta); tolerances are 6 standard errors"})
    for conditional in ("normal", "laplace", "gennorm"):
        cases.append({"function": "sample_conditional",
                      "args": {"space": "box", "box_low": 0.0, "box_high": 1.0, "n": 3,
                               "conditional": conditional, "sigma": 0.3, "lam": 0.3, "beta": 3.0,
                               "draws": 10000},
                      "expected": {"min_at_least": 0.0, "max_at_most": 1.0},
                      "tolerance": {"abs": 0.0},
                      "note": "every coordinate of every draw lies in the box"})
    return cases


def as_tree(params):
    """clref parameters -> JSON: layers as {"W", "b"}, and bound, radius, whiten when held."""
    tree = {"layers": [{"W": as_list(w), "b": as_list(b)} for w, b in params["layers"]]}
    for key in ("bound", "radius"):
        if key in params:
            tree[key] = as_list(params[key])
    if "whiten" in params:
        tree["whiten"] = {k: as_list(v) for k, v in params["whiten"].items()}
    return tree


def moments_tree(params, leaves):
    """Adam's moment leaves (in clref's order) as a JSON tree shaped like `params`."""
    return as_tree(C.with_leaves(C.trainable(params), iter(leaves)))


def small_encoder(rng, head, learn_radius=False, whiten=False, radius=1.0, n=4, widths=(9, 7)):
    """A float64 encoder N -> 9 -> 7 -> N with random biases (random weights: the widths
    are below 2N, so the identity path of README §4 is off), optionally whitened."""
    stage = None
    if whiten:
        mixing = C.make_mixing(n, 3, rng, cond_pool=100)
        stage = C.whitening_stage(C.mix(mixing, rng.uniform(0, 1, (40, n))))
    params = C.init_encoder(n, widths, head, rng, "float64", radius, learn_radius, stage=stage)
    params["layers"] = [(w, rng.uniform(-0.1, 0.1, b.shape)) for w, b in params["layers"]]
    if head == "box":
        params["bound"] = rng.uniform(0.5, 2.0, n)
    return params


def encode_vjp_cases(rng):
    """encode with a cotangent g: the gradients of sum(g * encode(params, x)) with respect
    to every trainable parameter and to x (the whitening stage is fixed: no gradient)."""
    cases = []
    for head, learn, radius in (("sphere", False, 1.5), ("sphere", True, 2.0), ("box", False, 1.0),
                                ("none", False, 1.0)):
        for whiten in (False, True):
            params = small_encoder(rng, head, learn, whiten, radius)
            x, g = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
            free, fixed = C.trainable(params), {k: params[k] for k in C.FIXED_PARAMETERS if k in params}

            def dot(free, x):
                return anp.sum(g * C.encode({**free, **fixed}, x, head, radius))
            grads = grad(dot, 0)(free, x)
            cases.append({"function": "encode_vjp",
                          "args": {"params": as_tree(params), "x": as_list(x), "head": head,
                                   "radius": radius, "cotangent": as_list(g)},
                          "expected": {"grad_params": as_tree(grads), "grad_x": as_list(grad(dot, 1)(free, x))},
                          "tolerance": EXACT,
                          "note": f"{head} head{', learned radius' if learn else ''}"
                                  f"{', whitened' if whiten else ''}"
                                  + ("; args.radius, as params holds none" if head == "sphere" and not learn
                                     else "")})
    return cases


def adam_cases(rng):
    """One Adam step from moments of step 3 to step 4, with gradients from 1e-10 to 1: where
    eps (1e-8) is added, and the bias correction, change the small ones' steps by far more
    than the tolerance."""
    params = {"layers": [(rng.standard_normal((3, 2)), rng.standard_normal(2))], "radius": np.array(1.5)}
    scales = np.array([[1e-10, 1e-9], [1e-8, 1e-7], [1e-3, 1.0]])
    grads = {"layers": [(scales * rng.standard_normal((3, 2)), 1e-9 * rng.standard_normal(2))],
             "radius": np.array(3e-9)}
    leaves = C.parameter_leaves(params)
    state = {"m": [np.array(1e-9 * rng.standard_normal(np.shape(a))) for a in leaves],
             "v": [np.array(1e-8 * rng.standard_normal(np.shape(a))) ** 2 for a in leaves], "t": 3}
    before = {"m": moments_tree(params, state["m"]), "v": moments_tree(params, state["v"])}
    new, after = C.adam_update(params, grads, {k: [a.copy() for a in v] if k != "t" else v
                                               for k, v in state.items()}, 1e-3)
    return [{"function": "adam_update",
             "args": {"params": as_tree(params), "grads": as_tree(grads), **before, "t": 3, "lr": 1e-3,
                      "b1": 0.9, "b2": 0.999, "eps": 1e-8},
             "expected": {"params": as_tree(new), "m": moments_tree(params, after["m"]),
                          "v": moments_tree(params, after["v"]), "t": after["t"]},
             "tolerance": EXACT,
             "note": "t is the step count before this update; eps is added after the bias correction"}]


SCHEDULES = (  # (config fields, steps): warm-up and cosine, constant, inverse square root
    ({"lr": 3e-3, "lr_final": 1e-5, "lr_timescale": None, "warmup": 100, "steps": 9000},
     [0, 49, 99, 100, 101, 4550, 8999, 9000, 12000]),
    ({"lr": 1e-4, "lr_final": None, "lr_timescale": None, "warmup": 0, "steps": 100001}, [0, 10, 100000]),
    ({"lr": 1e-3, "lr_final": None, "lr_timescale": 100000, "warmup": 100, "steps": 500000},
     [0, 99, 100, 100100, 400100]),
)


def schedule_cases():
    cases = []
    for fields, steps in SCHEDULES:
        cfg = C.Config(**fields)
        cases.append({"function": "learning_rate", "args": {"config": fields, "steps": steps},
                      "expected": {"rates": [C.learning_rate(cfg, t) for t in steps]},
                      "tolerance": EXACT, "note": "steps are 0-based"})
    return cases


STEP_FIELDS = ("head", "radius", "learn_radius", "tau", "p", "self_pair", "self_pair_until", "loss_form",
               "lr", "lr_final", "lr_timescale", "warmup", "steps")
# (note, head, learn_radius, whiten, config changes): 3 steps of each. No case pairs an Lp
# loss with no head: its loss does not change when every output moves by one vector, so
# the output bias's gradient is rounding noise, which Adam divides by eps and no two
# implementations share.
TRAIN_STEPS = (
    ("dot loss, learned radius, whitened, warm-up then cosine", "sphere", True, True,
     dict(tau=0.5, lr=3e-2, lr_final=1e-4, warmup=2, steps=3)),
    ("L1 loss, box head, constant rate", "box", False, False, dict(p=1.0, tau=1.0, lr=1e-2)),
    ("L3 loss, box head, self pair, sqrt schedule", "box", False, False,
     dict(p=3.0, tau=1.0, self_pair=True, lr=1e-2, lr_timescale=2, warmup=1)),
    ("the reference code's form, dot, fixed radius 1", "sphere", False, False,
     dict(tau=0.2, loss_form="official", lr=1e-2)),
    ("L1, box head, the self pair as a warm start: on for steps 0 and 1, off at step 2", "box", False, False,
     dict(p=1.0, tau=0.5, self_pair=True, self_pair_until=2, lr=1e-2)),
)


def train_step_cases(rng):
    """Three training steps as train.py takes them: at step t (0-based) the rate is
    learning_rate(config, t) and the loss holds the self pair while self_pair_active;
    both views are encoded with the same parameters, the loss's gradient taken with
    respect to every trainable parameter, then one Adam step (b1 0.9, b2 0.999, eps 1e-8)."""
    cases = []
    for note, head, learn, whiten, changes in TRAIN_STEPS:
        cfg = C.Config(n=4, widths=(9, 7), head=head, learn_radius=learn,
                       radius=2.0 if learn else 1.0, dtype="float64", **changes)
        params = small_encoder(rng, head, learn, whiten, cfg.radius)
        batches = [(rng.standard_normal((8, 4)), rng.standard_normal((8, 4))) for _ in range(3)]
        state, current, losses, snapshots = C.adam_init(params), params, [], []
        without_self_pair = cfg.replace(self_pair=False, self_pair_until=None)
        for step, batch in enumerate(batches):
            loss_cfg = cfg if C.self_pair_active(cfg, step) else without_self_pair
            loss, current, state = C.train_step(C.contrastive_objective, current, state, batch, loss_cfg,
                                                C.learning_rate(cfg, step))
            losses.append(loss)
            snapshots.append({"params": as_tree(C.trainable(current)), "m": moments_tree(current, state["m"]),
                              "v": moments_tree(current, state["v"])})
        cases.append({"function": "train_step",
                      "args": {"params": as_tree(params), "config": {k: getattr(cfg, k) for k in STEP_FIELDS},
                               "batches": [[as_list(x), as_list(x_tilde)] for x, x_tilde in batches]},
                      "expected": {"losses": losses, "after_1": snapshots[0], "after_3": snapshots[2]},
                      "tolerance": {"abs": 1e-10, "rel": 1e-10}, "note": note})
    return cases


def hard_infonce_cases(rng):
    """|S| past float64's exp overflow (tau = 1e-3: a naive log-sum-exp gives inf or nan),
    and a non-integer p."""
    cases = []
    for p, tau in ((None, 1e-3), (1, 1e-3), (1.5, 0.5), (1.5, 1.0)):
        h, h_tilde = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
        if p is None:
            h, h_tilde = C.normalize(h), C.normalize(h_tilde)
        args = (h, h_tilde, tau, p)
        cases.append({"function": "infonce",
                      "args": {"h": as_list(h), "h_tilde": as_list(h_tilde), "tau": tau, "p": p},
                      "expected": {"value": C.infonce(*args), "grad_h": as_list(grad(C.infonce, 0)(*args)),
                                   "grad_h_tilde": as_list(grad(C.infonce, 1)(*args))},
                      "tolerance": {"abs": 1e-12 / min(tau, 1.0), "rel": 1e-12},
                      "note": "largest abs(S) %.0f; the absolute tolerance is 1e-12 / tau" % np.max(
                          np.abs(C.similarity_matrix(h, h_tilde, tau, p)))})
    return cases


def truncated_moments(density, center, low, high, points=2_000_001):
    """Mean, variance and fourth central moment of z_tilde on [low, high] with density
    ∝ density(z_tilde - center), by the trapezoid rule on a fine grid."""
    t = np.linspace(low, high, points)
    weight = density(t - center)

    def integral(values):            # the trapezoid rule (numpy's name for it changed in 2.0)
        return float(np.sum(values[1:] + values[:-1]) * (t[1] - t[0]) / 2)
    total = integral(weight)
    mean = integral(t * weight) / total
    var = integral((t - mean) ** 2 * weight) / total
    m4 = integral((t - mean) ** 4 * weight) / total
    return mean, var, m4


def box_sampler_cases():
    """The box conditional by its distribution: noise redrawn coordinate-wise until the
    coordinate lies in [0, 1] makes z_tilde - z follow the noise truncated to the box.
    Anchors near a face make the truncation large, so clipping (mass at the face) fails."""
    cases = []
    center = [0.02, 0.5, 0.97]
    for conditional, scale, beta in (("normal", 0.1, 2.0), ("laplace", 0.1, 1.0), ("gennorm", 0.1, 3.0)):
        shape = {"normal": lambda u: np.exp(-0.5 * (u / scale) ** 2),
                 "laplace": lambda u: np.exp(-np.abs(u) / scale),
                 "gennorm": lambda u: np.exp(-np.abs(u / scale) ** beta)}[conditional]
        moments = [truncated_moments(shape, c, 0.0, 1.0) for c in center]
        draws = 200000
        cases.append({"function": "sample_box_conditional",
                      "args": {"z": center, "conditional": conditional, "sigma": scale, "lam": scale,
                               "beta": beta, "box_low": 0.0, "box_high": 1.0, "draws": draws},
                      "expected": {"mean": [m for m, _, _ in moments], "variance": [v for _, v, _ in moments]},
                      "tolerance": {"abs_mean": [6 * math.sqrt(v / draws) for _, v, _ in moments],
                                    "abs_variance": [6 * math.sqrt((m4 - v * v) / draws) for _, v, m4 in moments]},
                      "note": "per coordinate, over draws of one anchor z; tolerances are 6 standard errors"})
    return cases


class Stream:
    """A stand-in for a Generator's standard_normal that hands out given numbers in
    order (row-major) and records how many were taken."""

    def __init__(self, numbers):
        self.numbers, self.used = numbers, 0

    def standard_normal(self, shape):
        count = int(np.prod(shape))
        out = self.numbers[self.used:self.used + count].reshape(shape)
        self.used += count
        return out


def stream_sampler_cases(rng):
    """The new conditionals with their random numbers given, so a port's arithmetic is
    compared exactly (their distributions are clref's tests' business)."""
    cases = []
    z = C.sample_uniform_sphere(6, 5, rng)
    kept = 2
    r = np.linalg.norm(z[:, kept:], axis=1, keepdims=True)
    cosines, normals = rng.uniform(-1, 1, 6), rng.standard_normal((6, 5 - kept))
    z_tilde = np.concatenate([z[:, :kept], r * C.vmf_from_draws(z[:, kept:] / r, cosines, normals)], axis=1)
    cases.append({"function": "restricted_vmf_from_draws",
                  "args": {"z": as_list(z), "kept": kept, "cosines": as_list(cosines), "normals": as_list(normals)},
                  "expected": {"value": as_list(z_tilde)}, "tolerance": EXACT,
                  "note": "w: the cosines to v / r; normals: the draws whose part orthogonal to v / r sets the direction"})
    for precisions in ((1.0, 2.0, 3.0, 4.0), (25.0, 25.0, 5.0, 5.0)):
        z = C.sample_uniform_sphere(5, 4, rng)
        stream = Stream(rng.standard_normal(4000))
        z_tilde = C.sample_aniso_normal(z, precisions, stream)
        cases.append({"function": "aniso_normal_from_draws",
                      "args": {"z": as_list(z), "precisions": list(precisions),
                               "normals": as_list(stream.numbers[:stream.used].reshape(-1, 4))},
                      "expected": {"value": as_list(z_tilde), "rows_drawn": stream.used // 4},
                      "tolerance": EXACT,
                      "note": "normals are consumed a row at a time: first one row per anchor, then one "
                              "per rejected anchor, in anchor order, each round"})
    return cases


def loss_case(f, inputs, options, note=None):
    """A case of loss f(*inputs.values(), *options.values()): its value and its gradient
    with respect to each named input."""
    call = (*inputs.values(), *options.values())
    case = {"function": f.__name__, "args": {**{k: as_list(v) for k, v in inputs.items()}, **options},
            "expected": {"value": f(*call),
                         **{f"grad_{name}": as_list(grad(f, k)(*call)) for k, name in enumerate(inputs)}},
            "tolerance": EXACT}
    return {**case, "note": note} if note else case


def boundary_loss_cases(rng):
    """The anisotropic similarity (gradient for the precision too) and the support-corrected loss."""
    cases = []
    for self_pair in (False, True):
        h, h_tilde = C.normalize(rng.standard_normal((7, 4))), C.normalize(rng.standard_normal((7, 4)))
        cases.append(loss_case(C.anisotropic_infonce, {"h": h, "h_tilde": h_tilde, "precision": rng.standard_normal(4)},
                               {"tau": 1.0, "self_pair": self_pair}, "precision is λ; Λ̂ = softplus(λ)"))
    for p in (None, 1, 2):
        inputs = {"h": rng.standard_normal((5, 3)), "h_tilde": rng.standard_normal((5, 3)),
                  "h_negative": rng.standard_normal((5, 4, 3))}
        cases.append(loss_case(C.corrected_infonce, inputs, {"tau": 0.5, "p": p}))
    return cases


def build():
    rng = np.random.default_rng(20210216)
    cases = (infonce_cases(rng) + alignment_uniformity_cases(rng) + metric_cases(rng)
             + assignment_cases(rng) + mixing_encoder_cases(rng) + sampler_cases()
             + option_cases(np.random.default_rng(20260301), {"self_pair": True}, "with the self pair")
             + option_cases(np.random.default_rng(20261201), {"form": "official"},
                            "the reference code's form")
             + whitening_cases(np.random.default_rng(20261202))
             + encode_vjp_cases(np.random.default_rng(20261203))
             + adam_cases(np.random.default_rng(20261204)) + schedule_cases()
             + train_step_cases(np.random.default_rng(20261205))
             + hard_infonce_cases(np.random.default_rng(20261206)) + box_sampler_cases()
             + stream_sampler_cases(np.random.default_rng(20261207))
             + boundary_loss_cases(np.random.default_rng(20261208)))
    return {"version": VERSION, "generator": "python conformance/generate.py", "cases": cases}


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    text = json.dumps(build(), indent=1, allow_nan=False) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}: {len(json.loads(text)['cases'])} cases")


if __name__ == "__main__":
    main()
