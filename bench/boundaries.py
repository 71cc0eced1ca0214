"""Where the theory ends (results/boundaries.md): restricted support as a number.

python bench/boundaries.py --gap RUN_DIR [RUN_DIR ...]
    held-out R² and the orthogonality gap (README §6) of finished runs.
python bench/boundaries.py --precisions RUN_DIR [RUN_DIR ...]
    for a finished run with a learned precision: the learned Λ̂ = softplus(λ) of each
    output against the true Λ of the latent the MCC matching gives it, their
    correlation and the spread of their ratio after one common scale.
python bench/boundaries.py --summary
    one line per row over the finished runs in results/boundaries/runs and the
    ladder's sphere_vmf_k10 preset runs (the full-support twins at N = 10): seeds,
    bars met, held-out R², MCC, and the orthogonality gap (a fixed similarity) or the
    correlation of learned and true precisions (a learned one); also written to
    results/boundaries/summary.csv, which the README's numbers are tested against.
python bench/boundaries.py --figure [--pairs 20000]
    results/boundaries.png: the theorem's curves, R² and orthogonality gap of every
    finished restricted-support run, learned against true precisions of every finished
    run with a learned precision (the run directories under results/boundaries and the
    ladder's sphere_vmf_k10 preset runs, the full-support twins at N = 10).
python bench/boundaries.py --theorem [--pairs 20000] [--seed 0]
    the asymptotic loss (alignment + uniformity, README §5) of
    h_lambda(u, v) = (u, lambda v) / ||(u, lambda v)|| on the sphere S² (N = 3, u the
    first coordinate, tau = 0.3, kappa = 1 / tau) for lambda around 1, under the
    restricted conditional (the positive keeps u) and the full-support vMF, and
    the slope and curvature of that loss at lambda = 1 with their standard errors.

With full support the identity (lambda = 1) minimises the loss (Theorem 1): slope 0,
curvature > 0. With restricted support no orthogonal map does (Zaliaduonis et al.,
Theorem 4.5): the slope at lambda = 1 is > 0, so a lambda below 1 scores lower.

The loss is a mean over pairs (z, z_tilde) of
    l(lambda) = -h(z)·h(z_tilde) / tau + log E_{z-}[exp(h(z-)·h(z_tilde) / tau)],
the inner expectation over z- uniform on S² computed by quadrature (Gauss-Legendre in
z_1, which is uniform on [-1, 1] on S², times equal steps in the angle), so each term
is exact up to the quadrature and the only noise is the sampling of the pairs: the
slope's and the curvature's standard errors are those of a mean of per-pair values.
"""
import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import clref as C  # noqa: E402

TAU, KEPT = 0.3, 1
LAMBDAS = (0.9, 0.95, 0.98, 1.0, 1.02, 1.05, 1.1)


def h_lambda(z, lam, kept=KEPT):
    """(u, lambda v) / ||(u, lambda v)||: the map that Theorem 4.5 compares with the identity."""
    return C.normalize(np.concatenate([z[:, :kept], lam * z[:, kept:]], axis=1))


def sphere_quadrature(k_t=64, k_phi=128):
    """(nodes (Q, 3), weights (Q,)) with Σ weights f(nodes) ≈ E f(z), z uniform on S²:
    z_1 = t is uniform on [-1, 1] (Archimedes), Gauss-Legendre in t, k_phi equal angles."""
    t, w = np.polynomial.legendre.leggauss(k_t)
    phi = 2 * np.pi * (np.arange(k_phi) + 0.5) / k_phi
    t_grid, phi_grid = np.meshgrid(t, phi, indexing="ij")
    ring = np.sqrt(1 - t_grid ** 2)
    nodes = np.stack([t_grid, ring * np.cos(phi_grid), ring * np.sin(phi_grid)], axis=-1).reshape(-1, 3)
    return nodes, np.repeat(w / 2, k_phi) / k_phi


def pair_losses(z, z_tilde, lam, tau=TAU, quadrature=None):
    """(B,) the per-pair terms of the asymptotic loss of h_lambda (README §5)."""
    nodes, weights = quadrature or sphere_quadrature()
    h, h_tilde, h_minus = h_lambda(z, lam), h_lambda(z_tilde, lam), h_lambda(nodes, lam)
    uniformity = np.empty(len(z))
    for start in range(0, len(z), 1000):          # 1000 x Q scores at a time
        scores = h_tilde[start:start + 1000] @ h_minus.T / tau
        top = scores.max(axis=1)
        uniformity[start:start + 1000] = top + np.log(np.exp(scores - top[:, None]) @ weights)
    return -np.sum(h * h_tilde, axis=1) / tau + uniformity


def theorem_4_5(conditional, pairs=20000, seed=0, delta=0.02, lambdas=LAMBDAS):
    """{"losses": mean loss at each lambda minus the loss at 1, "slope", "slope_se",
    "curvature", "curvature_se"}: central differences at lambda = 1 with step delta,
    per pair, and the standard errors of their means."""
    cfg = C.check_config(C.Config(n=3, conditional=conditional, kept=KEPT, kappa=1 / TAU))
    g = np.random.default_rng(seed)
    z = C.sample_uniform_sphere(pairs, 3, g)
    z_tilde = C.sample_conditional(cfg, z, g)
    quadrature = sphere_quadrature()
    at = {lam: pair_losses(z, z_tilde, lam, quadrature=quadrature) for lam in (*lambdas, 1 - delta, 1 + delta)}
    slope = (at[1 + delta] - at[1 - delta]) / (2 * delta)
    curvature = (at[1 + delta] + at[1 - delta] - 2 * at[1.0]) / delta ** 2

    def mean_se(v):
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    (s, s_se), (c, c_se) = mean_se(slope), mean_se(curvature)
    return {"losses": {lam: float(np.mean(at[lam] - at[1.0])) for lam in lambdas},
            "slope": s, "slope_se": s_se, "curvature": c, "curvature_se": c_se}


def precision_report(run_dir):
    """{"matched", "true", "correlation", "ratio_spread", "rho"}: the learned precision of
    the output matched to each latent (held-out samples, the MCC matching), the true
    precisions, their correlation, and exp(sd of log(Λ̂ / Λ)) after one common scale."""
    import plots
    cfg, params, _, (_, _, z_eval, x_eval) = plots.load_run(run_dir)
    h = C.encode(params, x_eval, cfg.head, cfg.radius).astype(float)
    rho = np.abs(C.correlation_matrix(z_eval.astype(float), h))
    match = C.linear_assignment(-rho)                   # latent i -> output match[i]
    learned = np.logaddexp(0.0, params["precision"].astype(float))[match]
    true = np.asarray(cfg.precisions, dtype=float)
    log_ratio = np.log(learned / true)
    return {"matched": learned, "true": true, "correlation": float(np.corrcoef(learned, true)[0, 1]),
            "ratio_spread": float(np.exp(np.std(log_ratio - log_ratio.mean()))),
            "rho": rho[np.arange(len(match)), match]}


def gap_report(run_dir):
    """(held-out R², orthogonality gap) of a finished run (README §6), from its checkpoint."""
    import plots
    cfg, params, _, (z_fit, x_fit, z_eval, x_eval) = plots.load_run(run_dir)
    h_fit, h_eval = (C.encode(params, x, cfg.head, cfg.radius).astype(float) for x in (x_fit, x_eval))
    return (C.linear_r2(z_fit.astype(float), h_fit, z_eval.astype(float), h_eval),
            C.orthogonality_gap(z_eval.astype(float), h_eval))


RESULTS = os.path.join(os.path.dirname(HERE), "results")
THEIR_R2 = {"restricted_full_n3": 1.00, "restricted_plain_n3": 0.13, "restricted_corrected_n3": 0.60}
RESTRICTED_ROWS = ("restricted_full_n3", "restricted_plain_n3", "restricted_corrected_n3",
                   "sphere_vmf_k10", "restricted_plain_k10")


def finished_runs(root):
    """(preset, run_dir) of every finished run (metrics.json present) under root."""
    import train
    found = []
    for dirpath, _, files in sorted(os.walk(root)):
        if "metrics.json" in files and "checkpoint.npz" in files:
            found.append((train.read_json(os.path.join(dirpath, "metrics.json")).get("preset"), dirpath))
    return found


SUMMARY_COLUMNS = ["preset", "seeds", "met", "r2_min", "r2_max", "mcc_min", "mcc_max",
                   "gap_min", "gap_max", "correlation_min", "correlation_max"]
SUMMARY_ROWS = RESTRICTED_ROWS + ("aniso_linear", "aniso_bimodal", "aniso_linear_dot")


def summary(results=RESULTS):
    """One dict per row of SUMMARY_ROWS with finished runs: the seeds ("1000-1004"), bars
    met, and the range over seeds of held-out R², MCC (metrics.json) and of the
    orthogonality gap or, with a learned precision, of the correlation of Λ̂ with Λ."""
    import plots
    import train
    found = (finished_runs(os.path.join(results, "boundaries", "runs"))
             + [(p, d) for p, d in finished_runs(os.path.join(results, "ladder", "runs"))
                if os.path.basename(d).startswith("sphere_vmf_k10-preset-")])
    rows = []
    for preset in SUMMARY_ROWS:
        dirs = [d for p, d in found if p == preset]
        if not dirs:
            continue
        metrics = [train.read_json(os.path.join(d, "metrics.json")) for d in dirs]
        met = (f"{sum(m['met'] for m in metrics)}/{len(metrics)}" if train.PRESETS[preset].bars
               else "no bar")                       # reported beside the others, nothing to meet
        row = {"preset": preset, "met": met,
               "seeds": seed_span(sorted(m["seed"] for m in metrics))}
        for key in ("r2", "mcc"):
            row[f"{key}_min"], row[f"{key}_max"] = min(m[key] for m in metrics), max(m[key] for m in metrics)
        if plots.read_config(dirs[0]).learn_precision:
            values, key = [precision_report(d)["correlation"] for d in dirs], "correlation"
        else:
            values, key = [gap_report(d)[1] for d in dirs], "gap"
        row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        rows.append(row)
    return rows


def seed_span(seeds):
    """[1000, 1001, 1002] -> "1000-1002"; seeds with gaps are listed."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def summary_line(row):
    """The printed form of a summary row (what the README quotes)."""
    def span(key, digits):
        low, high = (f"{float(row[f'{key}_{end}']):.{digits}f}" for end in ("min", "max"))
        return low if low == high else f"{low}-{high}"
    last = (f"orthogonality gap {span('gap', 3)}" if row.get("gap_min") not in (None, "")
            else f"Λ̂ against Λ: correlation {span('correlation', 3)}")
    return (f"{row['preset']}: seeds {row['seeds']}, met {row['met']}, held-out R² {span('r2', 4)}, "
            f"MCC {span('mcc', 4)}, {last}")


def figure(results=RESULTS, pairs=20000, seed=0):
    """Draw results/boundaries.png from the runs that have finished; returns its path."""
    import plots
    theorem = {name: theorem_4_5(conditional, pairs, seed)
               for conditional, name in (("vmf", "full support"), ("restricted_vmf", "restricted"))}
    runs = {name: [] for name in RESTRICTED_ROWS}
    twins = [(preset, d) for preset, d in finished_runs(os.path.join(results, "ladder", "runs"))
             if os.path.basename(d).startswith("sphere_vmf_k10-preset-")]
    precisions = {}
    for preset, run_dir in finished_runs(os.path.join(results, "boundaries")) + twins:
        cfg = plots.read_config(run_dir)
        if cfg.learn_precision:
            precisions[os.path.basename(run_dir)] = precision_report(run_dir)
        elif preset in runs:
            runs[preset].append(gap_report(run_dir))
    runs["paper"] = THEIR_R2
    return plots.plot_boundaries(os.path.join(results, "boundaries.png"), theorem, runs, precisions)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theorem", action="store_true", help="print Theorem 4.5 as a number")
    parser.add_argument("--gap", nargs="+", metavar="RUN_DIR",
                        help="held-out R² and orthogonality gap of finished runs")
    parser.add_argument("--precisions", nargs="+", metavar="RUN_DIR",
                        help="learned against true precisions of finished runs")
    parser.add_argument("--figure", action="store_true", help="draw results/boundaries.png")
    parser.add_argument("--summary", action="store_true",
                        help="one line per row of the finished runs; writes results/boundaries/summary.csv")
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.gap:
        for run_dir in args.gap:
            r2, gap = gap_report(run_dir)
            print(f"{run_dir}: held-out R² {r2:.4f}, orthogonality gap {gap:.4f}")
        return 0
    if args.precisions:
        for run_dir in args.precisions:
            r = precision_report(run_dir)
            print(f"{run_dir}: learned Λ̂ of the output matched to each latent "
                  + " ".join(f"{v:.2f}" for v in r["matched"]) + "; true Λ "
                  + " ".join(f"{v:.2f}" for v in r["true"]))
            print(f"  correlation {r['correlation']:.3f}, ratio spread after one common scale "
                  f"×{r['ratio_spread']:.3f}; matched |rho| " + " ".join(f"{v:.3f}" for v in r["rho"]))
        return 0
    if args.summary:
        import train
        rows = summary()
        train.write_text(os.path.join(RESULTS, "boundaries", "summary.csv"), train.csv_text(rows, SUMMARY_COLUMNS))
        for row in rows:
            print(summary_line(row))
        return 0
    if not (args.theorem or args.figure):
        parser.error("say --theorem, --figure, --summary, --gap RUN_DIR or --precisions RUN_DIR")
    if args.pairs < 10:
        raise SystemExit(f"--pairs must be an integer >= 10, got {args.pairs}")
    if args.figure:
        print(f"wrote {figure(pairs=args.pairs, seed=args.seed)}")
        return 0
    print(f"N = 3, tau = {TAU}, kappa = 1/tau, u = z_1 kept by the restricted conditional; "
          f"{args.pairs} pairs, seed {args.seed}")
    print("loss(lambda) - loss(1) at lambda = " + ", ".join(f"{lam:g}" for lam in LAMBDAS))
    for conditional, name in (("vmf", "full support"), ("restricted_vmf", "restricted")):
        r = theorem_4_5(conditional, args.pairs, args.seed)
        print(f"{name:>12}: " + " ".join(f"{v:+.5f}" for v in r["losses"].values())
              + f"; slope at 1 {r['slope']:+.4f} ± {r['slope_se']:.4f}, "
              f"curvature {r['curvature']:+.3f} ± {r['curvature_se']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
