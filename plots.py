"""Figures that show the claim at a glance.

python plots.py RUN_DIR                      # curves.png, latents.png, correlations.png
python plots.py --grid results/              # grid.png from results/grid.csv
python plots.py --compare OUT.png RUN_DIR... # learning curves of several runs, and a table
python plots.py --official-curve CURVE.csv   # the official recipe in clref and in the official code
python plots.py --doublings RUN_DIR          # a run's R² at every doubling of the pairs seen
python plots.py --cost results/              # cost.png from results/cost.csv and cost.json

Everything is read from the files of a run directory or a results directory
(README "Files"); this module imports clref and matplotlib, not train.
"""
import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import clref as C  # noqa: E402

DPI = 120


def setting_title(cfg, steps=None):
    """'sphere, vmf (kappa=10), dot loss tau=0.1, N=10, 6000 steps'."""
    noise = {"vmf": f"kappa={cfg.kappa:g}", "normal": f"sigma={cfg.sigma:g}",
             "laplace": f"lam={cfg.lam:g}", "gennorm": f"beta={cfg.beta:g}, lam={cfg.lam:g}",
             "restricted_vmf": f"kappa={cfg.kappa:g}, keeps {cfg.kept}",
             "aniso_normal": "precisions " + "-".join(f"{v:g}" for v in (cfg.precisions or ()))}
    loss = "dot" if cfg.p is None else f"L{cfg.p:g}"
    loss = "anisotropic" if cfg.learn_precision else loss
    return (f"{cfg.space}, {cfg.marginal} p(z), {cfg.conditional} ({noise[cfg.conditional]}), "
            f"{loss} loss tau={cfg.tau:g}, N={cfg.n}, {steps if steps is not None else cfg.steps} steps")


def save(fig, path):
    """Save a figure as PNG through a temporary file and a rename, so an interrupted
    save leaves the old figure or the new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_log(run_dir):
    """log.csv as {column: array}."""
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def load_run(run_dir):
    """(cfg, params, steps, sets) of a finished or interrupted run, from its
    config.json and checkpoint.npz; the evaluation sets are drawn again from the
    run's seed, as training drew them."""
    cfg = read_config(run_dir)
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as data:
        params = C.encoder_from_vector(cfg, data["params"])
        mixing = [data[f"mixing_{k}"] for k in range(cfg.mixing_layers)]
        steps = int(data["step"])
    return cfg, params, steps, C.evaluation_sets(cfg, mixing, C.run_generators(cfg.seed)[2])


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
    # fixed margins: a constrained layout of 2N panels took most of a run's drawing time
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n + 1, 4.8), squeeze=False)
    fig.subplots_adjust(left=0.5 / (1.9 * n + 1), right=0.99, bottom=0.1, top=0.84,
                        wspace=0.35, hspace=0.6)
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
    cfg, params, steps, (z_fit, x_fit, z_eval, x_eval) = load_run(run_dir)
    h_fit, h_eval = (C.encode(params, x, cfg.head, cfg.radius) for x in (x_fit, x_eval))
    identity = C.held_out_scores(z_fit, x_fit, z_eval, x_eval)
    return [plot_curves(run_dir, cfg, read_log(run_dir), identity),
            plot_latents(run_dir, cfg, z_fit, h_fit, z_eval, h_eval, steps),
            plot_correlations(run_dir, cfg, x_eval, h_eval, z_eval, steps)]


def read_grid(results_dir):
    with open(os.path.join(results_dir, "grid.csv")) as f:
        return list(csv.DictReader(f))


def parse_bars(text):
    """'r2 >= 0.99 and mcc < 0.95' -> [("r2", ">=", 0.99), ("mcc", "<", 0.95)]."""
    bars = []
    for part in (text or "").split(" and "):
        if part.strip():
            metric, op, value = part.split()
            bars.append((metric, op, float(value)))
    return bars


GRID_KINDS = [("identity x = g(z)", "identity_", "tab:gray", "s"),
              ("supervised", "supervised_", "tab:green", "^"),
              ("contrastive", "", "tab:blue", "o")]
SHORTFALL_FLOOR = 1e-4      # 1 - score is drawn no lower than this on the log axis


def plot_grid(results_dir):
    """grid.png: per preset, 1 - R² and 1 - MCC on a log axis (so 0.99 and 0.996 are
    far apart) for the identity, supervised and contrastive encoders: each seed a
    dot, the mean a marker. Red ticks mark each bar, read from grid.csv's bars
    column: the contrastive marker must lie left of a '|' and right of an 'x'."""
    rows = read_grid(results_dir)
    names = list(dict.fromkeys(r["preset"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 2.6), sharey=True,
                             layout="constrained")
    y = np.arange(len(names))
    scores = [float(r[key]) for r in rows for key in r
              if key.endswith(("r2", "mcc")) and r[key] not in (None, "", "nan")]
    lowest = max(SHORTFALL_FLOOR, 10 ** np.floor(np.log10(max(1.0 - max(scores, default=0.0),
                                                              SHORTFALL_FLOOR))))
    for ax, metric in zip(axes, ("r2", "mcc")):
        for k, (label, prefix, color, marker) in enumerate(GRID_KINDS):
            offset = (k - 1) * 0.25
            for row, name in enumerate(names):
                values = [float(r[prefix + metric]) for r in rows
                          if r["preset"] == name and r.get(prefix + metric) not in (None, "")]
                shortfall = np.maximum(1.0 - np.array(values), SHORTFALL_FLOOR)
                if not len(values):
                    continue
                ax.scatter(shortfall, np.full(len(values), row + offset), s=8, color=color, alpha=0.5)
                ax.scatter([np.mean(shortfall)], [row + offset], s=40, color=color, marker=marker,
                           label=label if row == 0 else None, edgecolor="k", linewidth=0.4)
        for row, name in enumerate(names):
            bars = parse_bars(next((r.get("bars") for r in rows if r["preset"] == name), ""))
            for bar_metric, op, value in bars:
                if bar_metric == metric:
                    ax.plot(1.0 - value, row, marker="|" if op == ">=" else "x", color="red",
                            markersize=16, mew=2)
        ax.set_xscale("log")
        ax.set(xlim=(lowest * 0.7, 1.2),
               xlabel=("1 - held-out linear R²" if metric == "r2" else "1 - MCC")
               + "  (log scale; left is better)",
               title=("R²" if metric == "r2" else "MCC")
               + "  (red |: must lie left of it, red x: must lie right of it)")
        ax.grid(axis="x", which="both", alpha=0.3)
        for row in y[1::2]:
            ax.axhspan(row - 0.5, row + 0.5, color="0.95", zorder=0)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9)
    seeds = len({r["seed"] for r in rows})
    dims = sorted({r.get("n") or "?" for r in rows})
    fig.suptitle(f"synthetic grid, N={'/'.join(dims)}, held-out scores of {seeds} seed(s): "
                 f"small dots are seeds, large markers their mean", fontsize=10)
    return save(fig, os.path.join(results_dir, "grid.png"))


def read_config(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    saved.pop("preset", None)
    return C.Config.from_dict(saved)


def score_at(log, seconds, key="r2"):
    """The score of the last evaluation at or before `seconds`; None when the run
    ended before then (or had not been evaluated yet)."""
    done = np.nonzero(log["seconds"] <= seconds)[0]
    if not len(done) or log["seconds"][-1] < 0.98 * seconds:
        return None
    return float(log[key][done[-1]])


def compare_runs(out_path, run_dirs, minutes=(5, 10, 30)):
    """Draw 1 - held-out R² against pairs seen (log-log) for several runs into
    out_path, and return a Markdown table: per run, R² after each of `minutes`
    of training and the pairs seen per second."""
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    lines = ["| run | steps | batch | pairs/s | " + " | ".join(f"R² at {m} min" for m in minutes)
             + " | final R² |", "|---" * (len(minutes) + 5) + "|"]
    for run_dir in run_dirs:
        cfg, log = read_config(run_dir), read_log(run_dir)
        pairs = log["step"] * cfg.batch_size
        name = os.path.basename(os.path.normpath(run_dir))
        ax.plot(pairs, np.maximum(1 - log["r2"], SHORTFALL_FLOOR), label=name)
        at = [score_at(log, 60 * m) for m in minutes]
        lines.append(f"| {name} | {int(log['step'][-1])} | {cfg.batch_size} | "
                     f"{pairs[-1] / log['seconds'][-1]:,.0f} | "
                     + " | ".join("-" if r is None else f"{r:.4f}" for r in at)
                     + f" | {log['r2'][-1]:.4f} |")
    ax.set(xscale="log", yscale="log", xlabel="positive pairs seen", ylabel="1 - held-out linear R²",
           title="learning curves (log-log)")
    ax.axhline(0.01, color="red", lw=1, ls="--", label="R² = 0.99")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, out_path)
    return "\n".join(lines)


def doubling_table(run_dir):
    """A Markdown table of a run's held-out R² at every doubling of the pairs seen,
    from its first evaluation on, with the training seconds at each."""
    cfg, log = read_config(run_dir), read_log(run_dir)
    pairs = log["step"] * cfg.batch_size
    lines = ["| pairs seen | step | held-out R² | 1 - R² | MCC | training time |", "|---|---|---|---|---|---|"]
    target = pairs[0]
    for k, seen in enumerate(pairs):
        if seen >= target or k == len(pairs) - 1:
            hours = log["seconds"][k] / 3600
            lines.append(f"| {seen / 1e6:,.1f} M | {int(log['step'][k])} | {log['r2'][k]:.4f} | "
                         f"{1 - log['r2'][k]:.4f} | {log['mcc'][k]:.4f} | {hours:.2f} h |")
            while target <= seen:
                target *= 2
    return "\n".join(lines)


def plot_official_curve(csv_path):
    """curve.png beside the curve.csv of bench/compare_official.py --curve: held-out
    R² against steps for the official code and clref, trained side by side."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    step = np.array([float(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(step, [float(r["official_r2"]) for r in rows], lw=3, alpha=0.5, label="official code (PyTorch)")
    ax.plot(step, [float(r["clref_r2"]) for r in rows], ls="--", color="black", label="clref")
    ax.set(xlabel=f"steps (batch {int(float(rows[-1]['pairs']) / max(step[-1], 1))})",
           ylabel="held-out linear R²",
           title="official recipe on the default row (same weights and batches)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, os.path.join(os.path.dirname(os.path.abspath(csv_path)), "curve.png"))


def plot_cost(results_dir):
    """cost.png from results_dir/cost.csv and cost.json (bench/recovery_cost.py):
    pairs to R² >= 0.99 against the information a pair carries, log-log, one marker
    per N; the fitted law as a line per N; a censored or paused run as an open marker
    at its pairs so far; runs the fit left out (held out, or outside the law's domain)
    ringed, the plain recipe as crosses, the tau-floor sets as filled plus signs."""
    with open(os.path.join(results_dir, "cost.csv")) as f:
        rows = list(csv.DictReader(f))
    fit_path = os.path.join(results_dir, "cost.json")
    saved = json.load(open(fit_path)) if os.path.exists(fit_path) else {}
    fit, domain = saved.get("pairs_099"), saved.get("domain")
    markers = dict(zip(sorted({int(r["n"]) for r in rows}), "osD^v<>ph*P"))
    colors = dict(zip(markers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(8.5, 5), layout="constrained")
    for r in rows:
        n, info = int(r["n"]), float(r["info"])
        censored = r["censored"] == "True" or r.get("finished") == "False"  # a lower bound
        pairs = float(r["pairs"] if censored else r["pairs_099"])
        style = dict(marker=markers[n], color=colors[n], ms=7, ls="none")
        if r["set"] == "plain":
            style.update(marker="x")
        elif r["set"].startswith("tau-floor"):
            style.update(marker="P", ms=8)
        if censored:
            style.update(mfc="none")
        elif r["set"] != "plain" and r.get("fitted", "True") != "True":  # held out, or outside the domain
            style.update(mec="black", mew=1.5)
        ax.plot(info, pairs, **style)
    infos = np.array([float(r["info"]) for r in rows]) if rows else np.array([0.05, 10])
    grid = np.geomspace(infos.min() / 1.3, infos.max() * 1.3, 50)
    for n in markers:
        if fit:
            # the law c N^a I^(-b) of results/cost.md (bench/recovery_cost.py, law_pairs):
            # solid over the I its domain of kappa gives at this N, dotted outside it
            def law(info):
                return fit["c"] * n ** fit["a"] * info ** -fit["b"]
            ax.plot(grid, law(grid), color=colors[n], lw=1, ls=":")
            if domain and domain["n"][0] <= n <= domain["n"][1]:
                # I(z; z_tilde) = minus Theorem 1's limit (README §5)
                inside = np.geomspace(*(-C.theorem1_limit(n, k) for k in domain["kappa"]), 20)
                ax.plot(inside, law(inside), color=colors[n], lw=1.2)
        ax.plot([], [], marker=markers[n], color=colors[n], ls="-", label=f"N = {n}")
    ax.plot([], [], marker="o", mfc="none", color="gray", ls="none", label="lower bound (cap, or paused)")
    ax.plot([], [], marker="o", mec="black", mew=1.5, color="gray", ls="none", label="not in the fit")
    ax.plot([], [], marker="x", color="gray", ls="none", label="plain recipe")
    if any(r["set"].startswith("tau-floor") for r in rows):
        ax.plot([], [], marker="P", ms=8, color="gray", ls="none",
                label=f"tau held at {saved.get('tau_floor', 'a floor')}")
    ax.set(xscale="log", yscale="log", xlabel="I(z; z_tilde), nats a pair",
           ylabel="positive pairs to held-out R² >= 0.99",
           title="the cost of recovery" + (f": c N^{fit['a']:.2f} I^-{fit['b']:.2f}" if fit else "")
           + (f", solid for kappa {domain['kappa'][0]:g}-{domain['kappa'][1]:g}" if fit and domain else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, os.path.join(results_dir, "cost.png"))


def plot_ladder(results_dir):
    """ladder.png from results_dir/ladder.csv (bench/ladder.py): for each ladder row,
    the bar's metric at the budget (top) and the pairs to the bar as a share of the
    budget (bottom) per rung, one marker a seed; a run that never met the bar is an
    open marker at the top of the lower panel, one still running is grey."""
    with open(os.path.join(results_dir, "ladder.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["set"] == "ladder"]
    import train
    names = list(dict.fromkeys(r["row"] for r in rows)) or ["(no runs yet)"]
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.5), squeeze=False,
                             layout="constrained")
    for k, name in enumerate(names):
        own = [r for r in rows if r["row"] == name]
        present = {r["rung"] for r in own}
        rungs = [name for name in ("preset", *train.DEPARTURES, "official") if name in present]
        bars = parse_bars(train_bars(name))
        metric, _, threshold = bars[0] if bars else ("r2", ">=", None)
        top, bottom = axes[0, k], axes[1, k]
        for r in own:
            x = rungs.index(r["rung"]) + (int(r["seed"]) % 10 - 1) * 0.12   # seeds side by side
            color = "tab:blue" if r["finished"] == "True" else "tab:gray"
            top.plot(x, float(r[metric]), "o", color=color, ms=5)
            reached = r["pairs_to_bar"] not in ("", None)
            share = float(r["pairs_to_bar"]) / float(r["budget"]) if reached else 1.1
            bottom.plot(x, share, "o", color=color, ms=5, mfc=color if reached else "none")
        if threshold is not None:
            top.axhline(threshold, color="tab:red", lw=1, ls="--", label=f"bar {metric} {threshold:g}")
            top.legend(loc="lower left", fontsize=8)
        bottom.axhline(1.0, color="gray", lw=0.8)
        top.set(title=name, ylabel=f"{metric} at the budget")
        bottom.set(ylabel="pairs to the bar / budget (open: not met)", ylim=(0, 1.2))
        for ax in (top, bottom):
            ax.set_xticks(range(len(rungs)), rungs, rotation=45, ha="right", fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("one departure reverted at a time, at the preset's pairs (seeds 1000-1002)")
    return save(fig, os.path.join(results_dir, "ladder.png"))


def plot_boundaries(path, theorem, runs, precisions):
    """boundaries.png (bench/boundaries.py --figure), three panels. Left: Theorem 4.5 as
    a number, loss(lambda) - loss(1) of h_lambda under full and restricted support
    ({name: {"losses": {lambda: value}}}). Middle: held-out R² (filled) and orthogonality
    gap (open) of each finished run, grouped by row ({row: [(r2, gap), ...]}), with the
    paper's R² where it gives one ({row: value} under the key "paper"). Right: learned
    against true precisions of runs with a learned precision ({label: report}), each
    learned set divided by its own common scale (the geometric mean of the ratios)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    left, middle, right = axes
    for name, result in theorem.items():
        lambdas = sorted(result["losses"])
        left.plot(lambdas, [result["losses"][lam] for lam in lambdas], "o-", label=name)
    left.axvline(1.0, color="gray", lw=0.8)
    left.axhline(0.0, color="gray", lw=0.8)
    left.set(title="Theorem 4.5 on S² (tau 0.3)", xlabel="lambda in h_lambda(u, v) = (u, lambda v)/||.||",
             ylabel="asymptotic loss - its value at lambda = 1")
    left.legend(fontsize=8)
    paper = runs.get("paper", {})
    names = [name for name in runs if name != "paper"] or ["(no runs yet)"]
    for k, name in enumerate(names):
        for r2, gap in runs.get(name, []):
            middle.plot(k, r2, "o", color="tab:blue", ms=5)
            middle.plot(k + 0.15, gap, "o", color="tab:orange", ms=5, mfc="none")
        if name in paper:
            middle.plot([k - 0.25, k + 0.25], [paper[name]] * 2, color="tab:red", lw=2)
    middle.plot([], [], "o", color="tab:blue", label="held-out R²")
    middle.plot([], [], "o", color="tab:orange", mfc="none", label="orthogonality gap")
    middle.plot([], [], color="tab:red", lw=2, label="their Table 1 (R²)")
    middle.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    middle.set(title="restricted support: runs, one marker a seed", ylim=(-0.05, 1.05))
    middle.legend(fontsize=8, loc="center right")
    middle.grid(alpha=0.3)
    for label, report in precisions.items():
        learned, true = np.asarray(report["matched"]), np.asarray(report["true"])
        scale = np.exp(np.mean(np.log(learned / true)))
        right.plot(true, learned / scale, "o-", ms=4, label=f"{label} (corr {report['correlation']:.3f})")
    if precisions:
        span = [min(min(r["true"]) for r in precisions.values()), max(max(r["true"]) for r in precisions.values())]
        right.plot(span, span, color="gray", lw=0.8, ls="--")
        right.legend(fontsize=7)
    right.set(title="anisotropic: learned precision of the matched output",
              xlabel="true precision of the latent", ylabel="learned precision / common scale")
    right.grid(alpha=0.3)
    return save(fig, path)


def train_bars(preset):
    """The bars of a preset of train.py, as its describe_bars text."""
    import train
    return train.describe_bars(train.PRESETS[preset]) if preset in train.PRESETS else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description="Draw the figures of a run or of the grid.")
    parser.add_argument("run_dir", nargs="*", help="a run directory written by train.py")
    parser.add_argument("--grid", metavar="RESULTS_DIR", help="draw grid.png from RESULTS_DIR/grid.csv")
    parser.add_argument("--compare", metavar="PNG", help="draw the learning curves of the run "
                        "directories into PNG and print a table of their R² after 5, 10 and 30 min")
    parser.add_argument("--doublings", action="store_true",
                        help="print a table of the run's R² at every doubling of the pairs seen")
    parser.add_argument("--cost", metavar="RESULTS_DIR",
                        help="draw cost.png from RESULTS_DIR/cost.csv (bench/recovery_cost.py)")
    parser.add_argument("--ladder", metavar="RESULTS_DIR",
                        help="draw ladder.png from RESULTS_DIR/ladder.csv (bench/ladder.py)")
    parser.add_argument("--official-curve", metavar="CSV",
                        help="draw curve.png beside the curve.csv of bench/compare_official.py --curve")
    args = parser.parse_args(argv)
    if not (args.run_dir or args.grid or args.official_curve or args.cost or args.ladder):
        parser.error("give a run directory, --grid RESULTS_DIR, --cost RESULTS_DIR, --ladder RESULTS_DIR or "
                     "--official-curve CSV")
    try:
        if args.doublings:
            for run_dir in args.run_dir:
                print(doubling_table(run_dir))
            return 0
        if args.official_curve:
            paths = plot_official_curve(args.official_curve)
        elif args.cost:
            paths = plot_cost(args.cost)
        elif args.ladder:
            paths = plot_ladder(args.ladder)
        elif args.compare:
            print(compare_runs(args.compare, args.run_dir))
            paths = args.compare
        elif args.grid:
            paths = plot_grid(args.grid)
        elif len(args.run_dir) == 1:
            paths = plot_run(args.run_dir[0])
        else:
            parser.error("give one run directory, or several with --compare PNG")
    except (OSError, ValueError, KeyError) as error:
        print(f"plots.py: error: {error}", file=sys.stderr)
        return 2
    for path in ([paths] if isinstance(paths, str) else paths):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
