"""An independent port of infonce (both forms, with gradients), linear_r2 and mcc in plain
NumPy, checked against vectors.json. It reads only the JSON file, not clref:
copy the pattern to check a port in another framework.

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


def close(got, want, tol):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and np.allclose(got, want, rtol=tol["rel"], atol=tol["abs"])


FLOAT32_TOLERANCE = {"infonce": {"rel": 1e-4, "abs": 1e-5},
                     "linear_r2": {"rel": 0.0, "abs": 1e-4}, "mcc": {"rel": 0.0, "abs": 1e-4}}


def check(case, dtype=np.float64):
    fn, args, want, tol = case["function"], case["args"], case["expected"], case["tolerance"]
    if dtype == np.float32:
        tol = FLOAT32_TOLERANCE.get(fn, tol)
    a = {k: (np.array(v, dtype=dtype) if isinstance(v, list) else v) for k, v in args.items()}
    if fn == "infonce":
        tau = dtype(a["tau"])
        if a.get("form", "paper") == "official":
            value, grad_h, grad_h_tilde = official_infonce_with_grads(a["h"], a["h_tilde"], tau,
                                                                      a["p"])
        else:
            value, grad_h, grad_h_tilde = infonce_with_grads(a["h"], a["h_tilde"], tau, a["p"],
                                                             a.get("self_pair", False))
        return (close(value, want["value"], tol) and close(grad_h, want["grad_h"], tol)
                and close(grad_h_tilde, want["grad_h_tilde"], tol))
    if fn == "linear_r2":
        return close(linear_r2(a["z"], a["h"], a.get("z_eval"), a.get("h_eval")), want["value"], tol)
    if fn == "mcc":
        return close(mcc(a["z"], a["h"]), want["value"], tol)
    return None  # not ported here


def main(path, dtype=np.float64):
    with open(path) as f:
        cases = json.load(f)["cases"]
    results = [(case, check(case, dtype)) for case in cases]
    checked = [(c, ok) for c, ok in results if ok is not None]
    failed = [c for c, ok in checked if not ok]
    for case in failed:
        print(f"FAIL {case['function']} {case.get('note', '')} args {sorted(case['args'])}")
    print(f"{len(checked) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [a for a in sys.argv[1:] if a != "--float32"]
    sys.exit(main(paths[0] if paths else os.path.join(here, "vectors.json"),
                  np.float32 if "--float32" in sys.argv else np.float64))
