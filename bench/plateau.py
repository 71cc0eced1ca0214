"""What a run has not learned: canonical correlations between z and h = f(g(z)).

python bench/plateau.py RUN_DIR [RUN_DIR ...]
python bench/plateau.py --spread [SEEDS]

For each run (its config.json and checkpoint.npz), on the run's own held-out
evaluation samples:
- the squared canonical correlations between z and h, largest first; their mean is
  close to the linear R², so "nine near 1 and one low" reads as one latent
  direction not learned;
- for the least correlated pair, which principal component of x = g(z) carries it:
  the squared correlation of its latent variate with each principal component of
  x, the components ordered from the largest variance of x to the smallest;
- the spread of cov(x): its largest eigenvalue over its smallest.

With --spread: that spread for every row of the grid (its p(z) and mixing) at each
of the comma-separated SEEDS (default 0,1,2, the grid's), from as many observations
as the whitening stage is estimated from, without training anything.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import plots  # noqa: E402


def canonical_correlations(z, h):
    """(correlations (N,) largest first, latent directions (N, N) as columns): the
    canonical correlation analysis of z and h, from the SVD of Q_zᵀ Q_h with Q the
    orthonormal bases of the centred samples."""
    zc, hc = z - z.mean(axis=0), h - h.mean(axis=0)
    qz, rz = np.linalg.qr(zc)
    qh, _ = np.linalg.qr(hc)
    u, s, _ = np.linalg.svd(qz.T @ qh)
    return np.clip(s, 0, 1), np.linalg.solve(rz, u)


def report(run_dir):
    cfg, params, steps, (z_fit, x_fit, z_eval, x_eval) = plots.load_run(run_dir)
    h = C.encode(params, x_eval, cfg.head, cfg.radius).astype(float)
    z, x = z_eval.astype(float), x_eval.astype(float)
    rho, directions = canonical_correlations(z, h)
    variances, components = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(variances)[::-1]
    scores = (x - x.mean(axis=0)) @ components[:, order]
    weakest = (z - z.mean(axis=0)) @ directions[:, -1]
    carried = [np.corrcoef(weakest, scores[:, k])[0, 1] ** 2 for k in range(cfg.n)]
    r2 = C.linear_r2(z_fit, C.encode(params, x_fit, cfg.head, cfg.radius), z_eval, h)
    print(f"{run_dir}: step {steps}, whiten {cfg.whiten}, held-out R² {r2:.4f}")
    print("  squared canonical correlations: " + " ".join(f"{r ** 2:.3f}" for r in rho)
          + f" (mean {np.mean(rho ** 2):.4f})")
    print("  weakest latent variate against the principal components of x, largest variance "
          "first (squared correlation): " + " ".join(f"{c:.2f}" for c in carried))
    print(f"  cov(x): largest / smallest eigenvalue {variances.max() / variances.min():.0f}")


def spread(seeds):
    """cov(x)'s largest over smallest eigenvalue per grid row and seed, and the range."""
    import train
    found = []
    for name in train.GRID_PRESETS:
        cfg = train.PRESETS[name].config
        row = []
        for seed in seeds:
            init_rng, *_, stage_rng, _ = C.run_generators(seed)
            mixing = C.make_mixing(cfg.n, cfg.mixing_layers, init_rng, cfg.cond_pool, cfg.cond_quantile)
            x = C.mix(mixing, C.sample_marginal(cfg.replace(seed=seed), cfg.whiten_samples, stage_rng))
            variances = np.linalg.eigvalsh(np.cov(x, rowvar=False))
            row.append(variances.max() / variances.min())
        found += row
        print(f"{name}: " + ", ".join(f"seed {s} {v:.0f}" for s, v in zip(seeds, row)))
    print(f"cov(x), largest / smallest eigenvalue over {len(found)} (row, seed): "
          f"{min(found):.0f} to {max(found):.0f}")


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[2])
        return 2
    if argv[0] == "--spread":
        spread([int(s) for s in (argv[1] if len(argv) > 1 else "0,1,2").split(",")])
        return 0
    for run_dir in argv:
        report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
