"""How many positive pairs recovery costs on the sphere, and a law that predicts it
(results/cost.md).

python bench/recovery_cost.py [--set study|held-out|plain|large-kappa|held-out-2|tau-floor|
                               tau-floor-2|all]
                              [--jobs 2] [--threads T]
    trains every (N, kappa, seed) of the set that has not finished, then writes
    results/cost.csv, results/cost.md, results/cost.json (the fit) and
    results/cost.png. Resumable like the grid: SIGINT or SIGTERM keeps the work,
    a re-run reads finished runs and continues interrupted ones.
python bench/recovery_cost.py --report
    the same files from the runs that have finished, training nothing.
python bench/recovery_cost.py --predict N KAPPA
    the fitted law's pairs (and minutes of one core) to the jump and to R² >= 0.99,
    and whether (N, KAPPA) lies in the law's domain.
python bench/recovery_cost.py --register [held-out|held-out-2]
    writes the law's predictions for a held-out set's points, from the current fit,
    before those points are run (results/cost-predictions.json, -2.json). It never
    overwrites.

Every run is the grid's sphere_vmf recipe (README "The experiment grid": whitened
64-64-64 encoder, lr 1e-3 sqrt(T / (T + t)), batch 512, at most 500 000 steps)
with kappa, tau = 1/kappa and N changed, and R² evaluated whenever 2 % more steps
have passed (so a pair count below is at most 2 % late). Per run:
- pairs to the jump: steps x batch at the first evaluation with held-out R² >= 0.95;
- pairs to 0.99: at the stop, once R² on the stopping rule's own samples was
  >= 0.99 at two evaluations in a row; a run that reaches the cap is censored;
- the seconds of one core it took.
The law (results/cost.md): pairs = c N^a I^(-b), I = I(z; z_tilde) =
log|S^{N-1}| - H_vMF(kappa) nats (minus Theorem 1's limit, README §5), fitted by
least squares in logs over the study's finished, uncensored runs inside its domain,
N 3-20 and kappa 1-20 (a paused run is a lower bound in the table and the figure).
"""
import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

# (N, kappa): N = 10 across kappa, kappa = 10 across N, and two that move both
STUDY = [(10, k) for k in (1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)] + \
        [(n, 10.0) for n in (3, 5, 20)] + [(20, 20.0), (20, 50.0)]
# predicted before they are run: kappa beyond the study at N = 5, an N between the
# study's at a kappa it has, and an N it lacks at a small kappa (N = 20 with kappa = 1.5
# would need about 1.1 G pairs by the law, past the cap of 256 M)
HELD_OUT = [(5, 30.0), (15, 5.0), (7, 2.0)]
PLAIN = [(10, 3.0), (10, 10.0)]                    # the same recipe without whitening
# where the law stops: at N = 20 it was 13x low at kappa = 50 and right at kappa = 20;
# these ask whether large kappa breaks it at smaller N too (compared with the registered law)
LARGE_KAPPA = [(10, 50.0), (10, 100.0), (5, 100.0)]
LARGE_KAPPA_STEPS = 100_000     # a cap of 51 M pairs, > 25x the registered law at each point
# the law's domain, where the study measured it: beyond kappa = 20 it predicts too few
# pairs (results/cost.md, "Large kappa"), so the fit leaves the study's kappa = 50 out
DOMAIN_N, DOMAIN_KAPPA = (3, 20), (1.0, 20.0)
# a second registration, inside the domain and after it was drawn: N and kappa
# between and beside the study's, one below its smallest N = 10 kappa
HELD_OUT_2 = [(12, 3.0), (15, 15.0), (8, 1.5), (4, 5.0)]
# the two worst large-kappa points again with tau held at 0.05 (kappa 20's) instead of
# 1/kappa: is their cost the sharp temperature's, or the concentrated pairs'?
TAU_FLOOR, TAU_FLOOR_POINTS = 0.05, [(20, 50.0), (10, 100.0)]
# those two cost about what kappa 20 costs at their N; registered as a prediction
# (the law at kappa 20's I) for three more points before they are run
TAU_FLOOR_2 = [(15, 50.0), (5, 100.0), (20, 100.0)]
FLOORED = ("tau-floor", "tau-floor-2")
SETS = {"study": STUDY, "held-out": HELD_OUT, "plain": PLAIN, "large-kappa": LARGE_KAPPA,
        "held-out-2": HELD_OUT_2, "tau-floor": TAU_FLOOR_POINTS, "tau-floor-2": TAU_FLOOR_2}
# the sets whose points were predicted, and committed, before they were run
REGISTERED = {"held-out": "cost-predictions.json", "held-out-2": "cost-predictions-2.json",
              "tau-floor-2": "cost-predictions-3.json"}
SEEDS = (0, 1, 2)
JUMP_R2, TARGET_R2, EVAL_GROWTH = 0.95, 0.99, 0.02
BASE = train.PRESETS["sphere_vmf"].config.replace(stop_r2=TARGET_R2, eval_growth=EVAL_GROWTH,
                                                  supervised_steps=0)
COLUMNS = ["set", "n", "kappa", "info", "seed", "fitted", "pairs_jump", "pairs_099", "censored", "finished",
           "r2", "steps", "pairs", "seconds", "pairs_per_second"]


def pair_information(n, kappa):
    """I(z; z_tilde) in nats for z uniform on S^{N-1} and z_tilde ~ vMF(z, kappa):
    log|S^{N-1}| - H_vMF(kappa), minus the limit of README §5 "Theorem 1 as a number"."""
    return -C.theorem1_limit(n, kappa)


def in_domain(n, kappa):
    return DOMAIN_N[0] <= n <= DOMAIN_N[1] and DOMAIN_KAPPA[0] <= kappa <= DOMAIN_KAPPA[1]


def run_config(set_name, n, kappa, seed, base=BASE):
    """The configuration of one run: the base recipe at (N, kappa), tau = 1/kappa (the
    tau-floor sets: at least TAU_FLOOR); the learning rate's time scale is its own, so
    a lower cap changes nothing before it."""
    capped = set_name in ("large-kappa", *FLOORED)
    return base.replace(n=n, kappa=float(kappa), seed=seed,
                        tau=max(1.0 / kappa, TAU_FLOOR) if set_name in FLOORED else 1.0 / kappa,
                        whiten=base.whiten and set_name != "plain",
                        steps=min(base.steps, LARGE_KAPPA_STEPS) if capped else base.steps)


def run_dir(out_root, set_name, n, kappa, seed):
    return os.path.join(out_root, f"{set_name}-n{n}-k{kappa:g}-s{seed}")


def study_jobs(set_names, out_root, seeds=SEEDS, base=BASE, points=None):
    """[(set, n, kappa, cfg, directory)], the most expected work first (the
    smallest I per pair, ties by N)."""
    jobs = []
    for name in set_names:
        for n, kappa in (points or SETS[name]):
            for seed in seeds:
                jobs.append((name, n, kappa, C.check_config(run_config(name, n, kappa, seed, base)),
                             run_dir(out_root, name, n, kappa, seed)))
    return sorted(jobs, key=lambda j: (pair_information(j[1], j[2]) / j[1], j[0], j[4]))


def study_job(job):
    """One run in a pool worker: read back when finished, continued from its
    checkpoint when interrupted, else trained; {"status": ...} as the grid's jobs."""
    name, n, kappa, cfg, path = job
    if train.stop_requested():
        return {"status": "skipped"}
    try:
        metrics, read_back = train.run_quietly(cfg, path, None, resume=True)
        if read_back:
            print(f"{os.path.basename(path)}: already finished", flush=True)
            return {"status": "finished"}
    except train.Interrupted:
        return {"status": "interrupted"}
    except train.NonFiniteLoss as error:
        print(f"{os.path.basename(path)}: {error}", flush=True)
        return {"status": "finished"}
    print(f"{os.path.basename(path)}: R² {metrics['r2']:.4f} after {metrics['steps']} steps "
          f"in {train.format_seconds(metrics['seconds'])}", flush=True)
    return {"status": "finished"}


def read_log(path):
    with open(os.path.join(path, "log.csv")) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def run_record(job):
    """One row of cost.csv from a run's log.csv and metrics.json. A run that was
    started and not finished (paused: SIGTERM) gives a row with finished False, its
    pairs so far a lower bound; a run never started gives None."""
    name, n, kappa, cfg, path = job
    metrics = train.finished_metrics(path, cfg)
    if not os.path.exists(os.path.join(path, "log.csv")) or (
            metrics is None and not train.same_config(path, cfg)):
        return None
    log = read_log(path)
    if not log:
        return None
    pairs = cfg.batch_size
    jump = next((row["step"] * pairs for row in log if row["r2"] >= JUMP_R2), None)
    finished = metrics is not None
    reached = finished and train.target_reached(cfg, log)
    steps = int(metrics["steps"] if finished else log[-1]["step"])
    seconds = metrics["seconds"] if finished else log[-1]["seconds"]
    return {"set": name, "n": n, "kappa": kappa, "info": pair_information(n, kappa),
            "seed": cfg.seed, "fitted": name == "study" and in_domain(n, kappa), "pairs_jump": jump,
            "pairs_099": steps * pairs if reached else None,
            "censored": finished and not reached, "finished": finished,
            "r2": metrics["r2"] if finished else log[-1]["r2"], "steps": steps,
            "pairs": steps * pairs, "seconds": seconds, "pairs_per_second": steps * pairs / seconds}


# ----------------------------------------------------------------------------
# The law: log pairs = log c + a log N - b log I, least squares
# ----------------------------------------------------------------------------

def fit_law(n, info, pairs):
    """{"c", "a", "b", their standard errors "se_log_c", "se_a", "se_b", "scatter"
    (the standard deviation of log(measured / fitted)), "runs"} for
    pairs = c N^a I^(-b). With a single N in the data, a is fixed at 0."""
    n, info, pairs = (np.asarray(v, dtype=float) for v in (n, info, pairs))
    columns = [np.ones_like(info), -np.log(info)]
    varies = len(np.unique(n)) > 1
    if varies:
        columns.insert(1, np.log(n))
    coef, se, scatter = least_squares(np.stack(columns, axis=1), np.log(pairs))
    if not varies:
        coef, se = np.insert(coef, 1, 0.0), np.insert(se, 1, 0.0)
    return {"c": float(math.exp(coef[0])), "a": float(coef[1]), "b": float(coef[2]),
            "se_log_c": float(se[0]), "se_a": float(se[1]), "se_b": float(se[2]),
            "scatter": scatter, "runs": len(pairs)}


def least_squares(design, target):
    """(coefficients, their standard errors, the root mean square residual) of
    target ~ design @ coefficients."""
    if len(target) <= design.shape[1]:
        raise ValueError(f"the law needs more than {design.shape[1]} runs, got {len(target)}")
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    variance = residual @ residual / (len(target) - design.shape[1])
    se = np.sqrt(np.diag(variance * np.linalg.inv(design.T @ design)))
    return coef, se, float(np.sqrt(residual @ residual / len(target)))


def law_pairs(fit, n, info):
    """c N^a I^(-b)."""
    return fit["c"] * n ** fit["a"] * info ** (-fit["b"])


# forms of log pairs tried beside the law, as the columns after the constant, from
# log N and log I; fitted to the same runs as the law, after the held-out runs were seen
OTHER_FORMS = {"c N^a I^(-b) (the law)": lambda log_n, log_i: [log_n, -log_i],
               "with a log N log I term": lambda log_n, log_i: [log_n, -log_i, log_n * log_i],
               "with a (log N)^2 term": lambda log_n, log_i: [log_n, log_n ** 2, -log_i]}


def form_lines(records, predictions):
    """cost.md's "Other forms": each form's scatter over the fitted runs and its
    measured / predicted at the held-out points (median of their seeds)."""
    used = [r for r in records if r["fitted"] and r["finished"] and r["pairs_099"] is not None]
    points = [(name, p["n"], p["kappa"]) for name in ("held-out", "held-out-2") if name in predictions
              for p in predictions[name]["points"]]
    if len(used) < 5 or not points:
        return []

    def design(form, n, info):
        n, info = np.asarray(n, dtype=float), np.asarray(info, dtype=float)
        return np.stack([np.ones_like(n), *OTHER_FORMS[form](np.log(n), np.log(info))], axis=-1)
    lines = ["", "## Other forms (fitted to the same runs, tried after the held-out runs were seen)", "",
             "| form | scatter | measured / predicted at " + ", ".join(f"({n}, {k:g})" for _, n, k in points)
             + " |", "|---|---|---|"]
    for form in OTHER_FORMS:
        coef, _, scatter = least_squares(design(form, [r["n"] for r in used], [r["info"] for r in used]),
                                         np.log([r["pairs_099"] for r in used]))
        ratios = []
        for name, n, kappa in points:
            got = [r["pairs_099"] for r in records if r["set"] == name and r["n"] == n and r["kappa"] == kappa]
            predicted = math.exp(design(form, n, pair_information(n, kappa)) @ coef)
            ratios.append(f"{np.median(got) / predicted:.2f}" if got and all(got) else "-")
        lines.append(f"| {form} | ×{math.exp(scatter):.2f} | {', '.join(ratios)} |")
    return lines


def fit_records(records, key):
    """The law for `key` ("pairs_099" or "pairs_jump") over the study's finished runs
    inside the domain that got there."""
    used = [r for r in records if r["fitted"] and r["finished"] and r[key] is not None]
    return fit_law([r["n"] for r in used], [r["info"] for r in used], [r[key] for r in used])


# ----------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------

def millions(pairs):
    return "-" if pairs is None else f"{pairs / 1e6:.2f}"


def describe_fit(fit):
    return (f"c = {fit['c']:.3g} (log c ± {fit['se_log_c']:.2f}), a = {fit['a']:.2f} ± "
            f"{fit['se_a']:.2f}, b = {fit['b']:.2f} ± {fit['se_b']:.2f}; scatter of the runs around "
            f"it ×{math.exp(fit['scatter']):.2f} (standard deviation of the log ratio "
            f"{fit['scatter']:.2f}), {fit['runs']} runs")


def git_commit_of(path):
    """The abbreviated commit that added `path`, or None outside git or before it is committed."""
    try:
        out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h", "--", path],
                             cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if out else None


def cost_markdown(records, fits, predictions, command, base, out_root):
    lines = ["# The cost of recovery", "",
             f"Written by `{command}` at commit {train.head_commit()} from the runs in "
             f"{os.path.relpath(out_root, ROOT)} (each run's env.json names the commit that trained it; I: minus "
             f"Theorem 1's limit, README §5). Recipe: {train.describe_recipe(base)}, tau = 1/kappa, "
             f"evaluated whenever {EVAL_GROWTH:.0%} more steps have passed; plain: the same without "
             f"whitening; tau-floor(-2): tau = max(1/kappa, {TAU_FLOOR:g}). Pairs in millions; "
             "censored: the cap came first; paused: stopped by SIGTERM, to be continued (its R² is "
             "held-out R² at its last evaluation). Law: the fit below, evaluated at the run's N and I. Fitted: the study's runs inside the law's domain, "
             f"N {DOMAIN_N[0]}-{DOMAIN_N[1]} and kappa {DOMAIN_KAPPA[0]:g}-{DOMAIN_KAPPA[1]:g} "
             "(beyond kappa 20 the law predicts too few pairs: see Large kappa).", ""]
    for key, label in (("pairs_099", "R² >= 0.99"), ("pairs_jump", f"the jump (R² >= {JUMP_R2})")):
        if key in fits:
            lines.append(f"Law for {label}: pairs = c N^a I^(-b), {describe_fit(fits[key])}.")
            lines.append("")
    fit = fits.get("pairs_099")
    lines += ["| set | N | kappa | I (nats) | seed | fitted | M pairs to jump | M pairs to 0.99 | law | "
              "measured / law | held-out R² | minutes | k pairs/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        predicted = law_pairs(fit, r["n"], r["info"]) if fit else None
        ratio = (f"{r['pairs_099'] / predicted:.2f}" if predicted and r["pairs_099"]
                 else (f"> {r['pairs'] / predicted:.2f}" if predicted else "-"))
        lines.append(
            f"| {r['set']} | {r['n']} | {r['kappa']:g} | {r['info']:.4f} | {r['seed']} | "
            f"{'yes' if r['fitted'] else 'no'} | "
            f"{millions(r['pairs_jump'])} | "
            + (f"> {r['pairs'] / 1e6:.0f} (censored)" if r["censored"]
               else f"> {r['pairs'] / 1e6:.2f} (paused)" if not r["finished"]
               else millions(r["pairs_099"]))
            + f" | {millions(predicted)} | {ratio} | {r['r2']:.4f} | {r['seconds'] / 60:.1f} | "
            f"{r['pairs_per_second'] / 1e3:.0f} |")
    for set_name, saved in predictions.items():
        commit = saved.get("commit") or "not yet committed"
        lines += ["", f"## Held-out predictions: {set_name} (registered in results/"
                  f"{REGISTERED[set_name]}, commit {commit}, from the fit of {saved['fit']['runs']} runs)", "",
                  f"Registered law for R² >= 0.99: pairs = c N^a I^(-b), {describe_fit(saved['fit'])}. "
                  f"Predicted: {saved.get('rule', POINT_RULE)}.", "",
                  "| N | kappa | predicted M pairs to 0.99 | measured (median of seeds) | "
                  "measured / predicted |", "|---|---|---|---|---|"]
        for p in saved["points"]:
            lines.append(f"| {p['n']} | {p['kappa']:g} | {millions(p['pairs_099'])} | "
                         f"{measured_cells(records, set_name, p['n'], p['kappa'], p['pairs_099'])} |")
    if "held-out" in predictions:
        lines += large_kappa_lines(records, predictions["held-out"]["fit"])
    lines += form_lines(records, predictions)
    lines += plain_lines(records)
    lines += ["", "![pairs to R² 0.99 against I](cost.png)", ""]
    return "\n".join(lines)


def measured_cells(records, set_name, n, kappa, predicted):
    """'median (k runs) | median / predicted' over the set's runs at (N, kappa). A run
    that hit its cap counts as its cap; when the median is such a run, both cells
    are lower bounds ('>'). Until every run has stopped: 'j of k runs reached it | -'."""
    mine = [r for r in records if r["set"] == set_name and r["n"] == n and r["kappa"] == kappa]
    if not mine or not all(r["finished"] for r in mine):
        return f"{sum(bool(r['pairs_099']) for r in mine)} of {len(mine)} runs reached it | -"
    runs = sorted(mine, key=lambda r: (r["pairs_099"] or r["pairs"], r["censored"]))  # a capped run
    # took more than its pairs, so it sorts after one that stopped at the same count
    middle = runs[(len(runs) - 1) // 2: len(runs) // 2 + 1]
    measured = float(np.median([r["pairs_099"] or r["pairs"] for r in middle]))
    bound = "> " if any(r["censored"] for r in middle) else ""
    return (f"{bound}{millions(measured)} ({len(mine)} runs"
            + (f", {sum(r['censored'] for r in mine)} censored" if any(r["censored"] for r in mine) else "")
            + f") | {bound}{measured / predicted:.2f}")


def large_kappa_lines(records, fit):
    """The registered law against the large-kappa set, the study's two largest kappa
    (20 is the domain's edge) and the tau-floor set."""
    points = [("study", 10, 20.0), ("study", 20, 20.0), ("study", 20, 50.0)] + \
             [(name, n, k) for name in ("large-kappa", *FLOORED) for n, k in SETS[name]]
    rows = []
    for set_name, n, kappa in points:
        if any(r["set"] == set_name and r["n"] == n and r["kappa"] == kappa for r in records):
            law = law_pairs(fit, n, pair_information(n, kappa))
            rows.append(f"| {set_name} | {n} | {kappa:g} | {run_config(set_name, n, kappa, 0).tau:g} | "
                        f"{millions(law)} | "
                        f"{measured_cells(records, set_name, n, kappa, law)} |")
    if not rows:
        return []
    return ["", "## Large kappa (the registered law; `--set large-kappa` and the tau-floor sets are "
            f"capped at {LARGE_KAPPA_STEPS * BASE.batch_size / 1e6:.0f} M pairs)", "",
            "| set | N | kappa | tau | registered law M pairs | measured (median of seeds) | measured / law |",
            "|---|---|---|---|---|---|---|", *rows]


def plain_lines(records):
    """What whitening changes: per plain run, its pairs to 0.99 over those of the
    whitened run at the same N, kappa and seed."""
    whitened = {(r["n"], r["kappa"], r["seed"]): r["pairs_099"] for r in records
                if r["set"] == "study" and r["pairs_099"]}
    ratios = {}
    for r in records:
        key = (r["n"], r["kappa"], r["seed"])
        if r["set"] == "plain" and r["pairs_099"] and whitened.get(key):
            ratios.setdefault(key[:2], []).append(f"{r['pairs_099'] / whitened[key]:.2f}")
    if not ratios:
        return []
    return ["", "## Without whitening", "",
            "Pairs to 0.99 of the plain recipe over those of the whitened one, same N, kappa "
            "and seed (seeds in order): "
            + "; ".join(f"N = {n}, kappa = {k:g}: {', '.join(v)}" for (n, k), v in ratios.items())
            + "."]


def write_reports(jobs, results_dir, command, base, out_root):
    records = [r for r in (run_record(job) for job in jobs) if r is not None]
    os.makedirs(results_dir, exist_ok=True)
    train.write_text(os.path.join(results_dir, "cost.csv"), train.csv_text(records, COLUMNS))
    fits = {}
    for key in ("pairs_099", "pairs_jump"):
        try:
            fits[key] = fit_records(records, key)
        except ValueError as error:
            print(f"no law for {key} yet: {error}")
    if fits:
        speed = [r["pairs_per_second"] for r in records if r["set"] == "study" and r["finished"]]
        train.write_json(os.path.join(results_dir, "cost.json"),
                         {**fits, "domain": {"n": list(DOMAIN_N), "kappa": list(DOMAIN_KAPPA)},
                          "tau_floor": TAU_FLOOR, "pairs_per_second": float(np.median(speed))})
    predictions = read_predictions(results_dir)
    train.write_text(os.path.join(results_dir, "cost.md"),
                     cost_markdown(records, fits, predictions, command, base, out_root))
    import plots
    plots.plot_cost(results_dir)
    print(f"{sum(r['finished'] for r in records)} of the {len(jobs)} runs of every set have finished; "
          f"wrote {results_dir}/cost.csv, cost.md, cost.png" + (", cost.json" if fits else ""))
    return records


def read_predictions(results_dir):
    """{set: its registered predictions, with the commit that added them} for the
    registered sets that have a file."""
    found = {}
    for set_name, name in REGISTERED.items():
        path = os.path.join(results_dir, name)
        saved = train.read_json(path)
        if saved is not None:
            found[set_name] = {**saved, "commit": git_commit_of(os.path.relpath(path, ROOT))}
    return found


POINT_RULE = "the law at the point's I"


def register(results_dir, set_name):
    path = os.path.join(results_dir, REGISTERED[set_name])
    if os.path.exists(path):
        raise SystemExit(f"{path} exists; predictions are registered once")
    fits = train.read_json(os.path.join(results_dir, "cost.json"))
    if fits is None:
        raise SystemExit(f"no fit in {results_dir}/cost.json: run the study first")
    # a tau-floor set is predicted to cost what kappa 20 (tau = TAU_FLOOR) costs at its N
    floored = set_name in FLOORED
    rule = f"the law at kappa {1 / TAU_FLOOR:g}'s I (tau held at {TAU_FLOOR:g})" if floored else POINT_RULE
    points = []
    for n, kappa in SETS[set_name]:
        info = pair_information(n, min(kappa, 1 / TAU_FLOOR) if floored else kappa)
        points.append({"n": n, "kappa": kappa, "info": pair_information(n, kappa),
                       "pairs_099": law_pairs(fits["pairs_099"], n, info),
                       "pairs_jump": law_pairs(fits["pairs_jump"], n, info)})
    train.write_json(path, {"fit": fits["pairs_099"], "fit_jump": fits["pairs_jump"], "rule": rule,
                            "points": points})
    for p in points:
        print(f"N = {p['n']}, kappa = {p['kappa']:g}: {p['pairs_099'] / 1e6:.1f} M pairs to R² 0.99")
    print(f"wrote {path}; commit it before running --set {set_name}")


def predict(results_dir, n, kappa):
    fits = train.read_json(os.path.join(results_dir, "cost.json"))
    if fits is None:
        raise SystemExit(f"no fit in {results_dir}/cost.json: run the study first")
    info = pair_information(n, kappa)
    print(f"N = {n}, kappa = {kappa:g}: I(z; z_tilde) = {info:.4f} nats a pair")
    if not in_domain(n, kappa):
        print(f"  outside the law's domain (N {DOMAIN_N[0]}-{DOMAIN_N[1]}, kappa "
              f"{DOMAIN_KAPPA[0]:g}-{DOMAIN_KAPPA[1]:g}), an extrapolation; beyond kappa 20 "
              "with tau = 1/kappa it predicts too few pairs (results/cost.md, Large kappa)")
    for key, label in (("pairs_jump", f"to the jump (R² {JUMP_R2})"), ("pairs_099", "to R² 0.99")):
        pairs, spread = law_pairs(fits[key], n, info), math.exp(fits[key]["scatter"])
        print(f"  {label}: {pairs / 1e6:.3g} M pairs (runs scatter ×{spread:.2f} around the law), "
              f"about {pairs / fits['pairs_per_second'] / 60:.1f} min of one core")
    edge = 1 / TAU_FLOOR                   # kappa 20, the domain's edge
    if kappa > edge and DOMAIN_N[0] <= n <= DOMAIN_N[1]:
        # the tau-floor sets: past kappa 20, tau held at 1/20 costs roughly what kappa 20
        # does at the same N; tau-floor-2's registered predictions say how roughly
        pairs = law_pairs(fits["pairs_099"], n, pair_information(n, edge))
        print(f"  with tau held at {TAU_FLOOR:g} instead, kappa {edge:g}'s {pairs / 1e6:.3g} M pairs "
              "to R² 0.99 is a rough guide only (how rough: results/cost.md, tau-floor-2)")


def check_point(n, kappa):
    if not (isinstance(n, int) and n >= 2):
        raise SystemExit(f"N must be an integer >= 2, got {n!r}")
    if not (math.isfinite(kappa) and kappa > 0):
        raise SystemExit(f"KAPPA must be a finite number > 0, got {kappa!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="study", choices=[*SETS, "all"],
                        help="which points to train (default: study)")
    train.add_study_arguments(parser, os.path.join(ROOT, "results", "cost", "runs"))
    parser.add_argument("--register", nargs="?", const="held-out", choices=list(REGISTERED),
                        help="register the predictions of a held-out set (default held-out) "
                             "from the current fit")
    parser.add_argument("--predict", nargs=2, metavar=("N", "KAPPA"))
    parser.add_argument("--base", type=json.loads, default={},
                        help="JSON of recipe fields to change, e.g. '{\"widths\": [8, 8]}' "
                             "for a toy study")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=SEEDS,
                        help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--points", type=lambda s: [(int(p.split(":")[0]), float(p.split(":")[1]))
                                                    for p in s.split(",")],
                        help="train only these points of the set, as N:KAPPA,N:KAPPA")
    args = parser.parse_args(argv)
    if args.predict:
        try:
            n, kappa = int(args.predict[0]), float(args.predict[1])
        except ValueError:
            raise SystemExit(f"--predict takes N (an integer) and KAPPA (a number), "
                             f"got {' '.join(args.predict)}")
        check_point(n, kappa)
        return predict(args.results, n, kappa)
    if args.register:
        return register(args.results, args.register)
    train.check_study_arguments(args)
    base = BASE.replace(**{k: tuple(v) if k == "widths" else v for k, v in args.base.items()})
    names = list(SETS) if args.set == "all" else [args.set]
    jobs = study_jobs(list(SETS), args.out, args.seeds, base)
    command = shlex.join(["python", "bench/recovery_cost.py", *(argv if argv is not None else sys.argv[1:])])
    if not args.report:
        todo = [job for job in jobs if job[0] in names
                and (args.points is None or (job[1], job[2]) in args.points)]
        start = time.time()
        results = train.run_in_pool(study_job, todo, args.jobs, args.threads)
        status = [r["status"] for r in results]
        if train.stop_requested() or status.count("finished") < len(status):
            print(f"study interrupted after {train.format_seconds(time.time() - start)}: "
                  f"{status.count('finished')} of {len(status)} runs finished; run the same "
                  "command again to continue", file=sys.stderr)
            return 128 + (train.STOP["signum"] or 15)
    write_reports(jobs, args.results, command, base, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
