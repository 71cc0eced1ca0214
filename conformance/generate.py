"""Write conformance/vectors.json: fixed inputs and clref's outputs, in float64.

python conformance/generate.py    # deterministic: the same file every time

Each case is {"function", "args", "expected", "tolerance"}; see PORTING.md.
"""
import json
import math
import os
import sys

import numpy as np
from autograd import grad

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clref as C  # noqa: E402

VERSION = 4                            # 2: infonce cases may carry self_pair; 3: form;
                                       # 4: whitening_stage, encode with params.whiten
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


def build():
    rng = np.random.default_rng(20210216)
    cases = (infonce_cases(rng) + alignment_uniformity_cases(rng) + metric_cases(rng)
             + assignment_cases(rng) + mixing_encoder_cases(rng) + sampler_cases()
             + option_cases(np.random.default_rng(20260301), {"self_pair": True}, "with the self pair")
             + option_cases(np.random.default_rng(20261201), {"form": "official"},
                            "the reference code's form")
             + whitening_cases(np.random.default_rng(20261202)))
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
