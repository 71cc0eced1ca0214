"""Figures that show the claim at a glance.

python plots.py RUN_DIR          # curves.png, latents.png, correlations.png in RUN_DIR
python plots.py --grid results/  # grid.png from results/grid.csv
"""
import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

DPI = 120


def setting_title(cfg, steps=None):
    """'sphere, vmf (kappa=10), dot loss tau=0.1, N=10, 6000 steps'."""
    noise = {"vmf": f"kappa={cfg.kappa:g}", "normal": f"sigma={cfg.sigma:g}",
             "laplace": f"lam={cfg.lam:g}", "gennorm": f"beta={cfg.beta:g}, lam={cfg.lam:g}"}
    loss = "dot" if cfg.p is None else f"L{cfg.p:g}"
    return (f"{cfg.space}, {cfg.marginal} p(z), {cfg.conditional} ({noise[cfg.conditional]}), "
            f"{loss} loss tau={cfg.tau:g}, N={cfg.n}, {steps if steps is not None else cfg.steps} steps")


def save(fig, path):
    """Save a figure atomically as PNG."""
    train.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)
    return path


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in train.LOG_COLUMNS}


def load_run(run_dir):
    """(preset, cfg, state, sets) of a finished or interrupted run."""
    preset, cfg = train.read_run_config(run_dir)
    state = train.load_checkpoint(run_dir, cfg)
    sets = train.evaluation_sets(cfg, state["mixing"], train.generators(cfg.seed)[2])
    return preset, cfg, state, sets


def ideal_loss(cfg):
    """Loss of the ideal encoder when Theorem 1 applies (sphere, uniform p(z), vMF
    conditional, tau = 1/kappa): its limit plus log M, plus the self pair's excess
    at this batch when the run used it (README §5); else None."""
    if (cfg.space, cfg.marginal, cfg.conditional, cfg.p) == ("sphere", "uniform", "vmf", None) \
            and abs(cfg.tau * cfg.kappa - 1) < 1e-9 and cfg.radius == 1 and not cfg.learn_radius:
        negatives = cfg.batch_size - 1
        excess = (np.log1p(np.exp(cfg.kappa) / (negatives * C.vmf_mean_exp(cfg.n, cfg.kappa)))
                  if cfg.self_pair else 0.0)
        return C.theorem1_limit(cfg.n, cfg.kappa) + np.log(negatives) + excess
    return None


def plot_curves(run_dir, cfg, log, identity=None):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    bound = ideal_loss(cfg)
    for col, (x, label) in enumerate([(log["step"], "step"), (log["seconds"], "wall-clock seconds")]):
        axes[0, col].plot(x, log["loss"], color="tab:gray", label="training batch loss")
        if bound is not None:
            axes[0, col].axhline(bound, color="k", ls="--", lw=1, label="ideal encoder (Theorem 1)")
        axes[0, col].set(xlabel=label, ylabel="InfoNCE loss", title=f"loss against {label}")
        axes[0, col].legend(loc="upper right", fontsize=8)
        axes[1, col].plot(x, log["r2"], color="tab:blue", label="held-out linear R²")
        axes[1, col].plot(x, log["mcc"], color="tab:orange", label="MCC")
        if identity:
            axes[1, col].axhline(identity["r2"], color="tab:blue", ls=":", lw=1, label="R² of x = g(z)")
            axes[1, col].axhline(identity["mcc"], color="tab:orange", ls=":", lw=1, label="MCC of x = g(z)")
        axes[1, col].set(xlabel=label, ylabel="score", ylim=(0, 1.02), title=f"recovery against {label}")
        axes[1, col].axhline(1.0, color="k", lw=0.5)
        axes[1, col].legend(loc="lower right", fontsize=8)
    fig.suptitle(setting_title(cfg, int(log["step"][-1])), fontsize=10)
    return save(fig, os.path.join(run_dir, "curves.png"))


def plot_latents(run_dir, cfg, z_fit, h_fit, z_eval, h_eval, steps):
    """True z_i against the matched output (the MCC matching, sign fixed) and
    against the linear prediction (the R² fit on the other sample set)."""
    rho = C.correlation_matrix(z_eval, h_eval)
    match = C.linear_assignment(-np.abs(rho))
    prediction = C.affine_predict(C.affine_fit(h_fit, z_fit), h_eval)
    r2 = C.r2_per_dimension(z_eval, prediction)
    n, shown = cfg.n, slice(0, 1500)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n + 1, 4.8), constrained_layout=True, squeeze=False)
    for i in range(n):
        matched = h_eval[:, match[i]] * np.sign(rho[i, match[i]])
        axes[0, i].scatter(z_eval[shown, i], matched[shown], s=1, alpha=0.4)
        axes[0, i].set_title(f"h{match[i] + 1}: |ρ|={abs(rho[i, match[i]]):.3f}", fontsize=8)
        axes[1, i].scatter(z_eval[shown, i], prediction[shown, i], s=1, alpha=0.4, color="tab:orange")
        axes[1, i].set_title(f"linear: R²={r2[i]:.3f}", fontsize=8)
        for ax in axes[:, i]:
            ax.tick_params(labelsize=6)
            ax.set_xlabel(f"true z{i + 1}", fontsize=7)
    axes[0, 0].set_ylabel("matched output", fontsize=7)
    axes[1, 0].set_ylabel("linear prediction", fontsize=7)
    fig.suptitle("held-out latents, recovered against true\n" + setting_title(cfg, steps), fontsize=9)
    return save(fig, os.path.join(run_dir, "latents.png"))


def plot_correlations(run_dir, cfg, x_eval, h_eval, z_eval, steps):
    """|corr(z_i, output_j)| before training (x = g(z)) and after, columns in matched order."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, (out, name) in zip(axes, [(x_eval, "before: x = g(z)"), (h_eval, f"after {steps} steps: h = f(x)")]):
        rho = np.abs(C.correlation_matrix(z_eval, out))
        match = C.linear_assignment(-rho)
        image = ax.imshow(rho[:, match], vmin=0, vmax=1, cmap="viridis")
        ax.set(title=f"{name}\nMCC {np.mean(rho[np.arange(len(match)), match]):.3f}",
               xlabel="output dimension (matched order)", ylabel="latent dimension",
               xticks=range(len(match)), yticks=range(len(match)))
        ax.set_xticklabels([str(j + 1) for j in match], fontsize=7)
        ax.set_yticklabels([str(i + 1) for i in range(len(match))], fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="|Pearson correlation|")
    fig.suptitle(setting_title(cfg, steps), fontsize=9)
    return save(fig, os.path.join(run_dir, "correlations.png"))


def plot_run(run_dir):
    """Draw curves.png, latents.png and correlations.png into run_dir; returns the paths."""
    preset, cfg, state, sets = load_run(run_dir)
    z_fit, x_fit, z_eval, x_eval = sets
    h_fit, h_eval = (C.encode(state["params"], x, cfg.head, cfg.radius) for x in (x_fit, x_eval))
    steps = state["step"]
    identity = train.scores(z_fit, x_fit, z_eval, x_eval)
    return [plot_curves(run_dir, cfg, read_log(run_dir), identity),
            plot_latents(run_dir, cfg, z_fit, h_fit, z_eval, h_eval, steps),
            plot_correlations(run_dir, cfg, x_eval, h_eval, z_eval, steps)]


def read_grid(results_dir):
    with open(os.path.join(results_dir, "grid.csv")) as f:
        return list(csv.DictReader(f))


def plot_grid(results_dir):
    """grid.png: per preset, identity / supervised / contrastive R² and MCC (mean ±
    std over seeds) and a marker at each bar the preset must reach or stay under."""
    rows = read_grid(results_dir)
    names = [name for name in train.PRESETS if any(r["preset"] == name for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(names) + 2.6), sharey=True,
                             layout="constrained")
    kinds = [("identity", "identity_", "tab:gray"), ("supervised", "supervised_", "tab:green"),
             ("contrastive", "", "tab:blue")]
    y = np.arange(len(names))
    for ax, metric in zip(axes, ("r2", "mcc")):
        for k, (label, prefix, color) in enumerate(kinds):
            means, stds = [], []
            for name in names:
                values = [float(r[prefix + metric]) for r in rows
                          if r["preset"] == name and r.get(prefix + metric) not in (None, "")]
                means.append(np.mean(values) if values else np.nan)
                stds.append(np.std(values) if values else 0.0)
            ax.barh(y + (k - 1) * 0.27, means, height=0.27, xerr=stds, color=color, label=label,
                    error_kw={"lw": 0.8})
        for row, name in enumerate(names):
            for bar_metric, op, value in train.PRESETS[name].bars:
                if bar_metric == metric:
                    ax.plot(value, row, marker="|" if op == ">=" else "x", color="red",
                            markersize=14, mew=2)
        ax.set(xlim=(0, 1.05), xlabel="held-out linear R²" if metric == "r2" else "MCC",
               title=("R²" if metric == "r2" else "MCC") + "  (red |: must reach, red x: must stay below)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9)
    seeds = len({r["seed"] for r in rows})
    dims = sorted({r.get("n") or "?" for r in rows})
    fig.suptitle(f"synthetic grid, N={'/'.join(dims)}, held-out scores, mean ± std over "
                 f"{seeds} seed(s)", fontsize=10)
    return save(fig, os.path.join(results_dir, "grid.png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Draw the figures of a run or of the grid.")
    parser.add_argument("run_dir", nargs="?", help="a run directory written by train.py")
    parser.add_argument("--grid", metavar="RESULTS_DIR", help="draw grid.png from RESULTS_DIR/grid.csv")
    args = parser.parse_args(argv)
    if not args.run_dir and not args.grid:
        parser.error("give a run directory or --grid RESULTS_DIR")
    try:
        paths = plot_grid(args.grid) if args.grid else plot_run(args.run_dir)
    except (OSError, ValueError, KeyError) as error:
        print(f"plots.py: error: {error}", file=sys.stderr)
        return 2
    for path in ([paths] if isinstance(paths, str) else paths):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
