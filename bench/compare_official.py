"""clref beside the paper's official PyTorch code, on identical inputs, in one table.

python bench/compare_official.py --official DIR [--train-steps 200] [--batch 512]
python bench/compare_official.py --official DIR --curve 500 [--curve-out results/official]

DIR holds the official modules: a checkout of the reference repository, or a copy
of the modules its synthetic script imports. They need torch, scipy, scikit-learn
and typing_extensions, which clref does not: install them in a separate virtual
environment with clref's own requirements (results/official.md says how). Without
them, or without DIR, the script prints one line and exits 0.

Every row feeds both sides the same float64 inputs and prints the largest absolute
difference (or, for the samplers, a two-sample KS p-value):
- losses: the official SimCLRLoss and LpSimCLRLoss, called as its training step
  calls them (the negatives are the anchors rolled by one), against
  clref.infonce(..., form="official"), value and both gradients;
- metrics: the official linear_disentanglement and permutation_disentanglement
  against clref.linear_r2 (in sample) and clref.mcc;
- mixing: the weights the official construct_invertible_mlp draws, in clref.mix,
  and clref.unmix on its output;
- encoder: the official get_mlp (10N, 50N x 4, 10N, sphere rescaling) with its
  weights loaded into clref.encode;
- training: the same initial weights and batches, the official loss with
  torch.optim.Adam against clref's official form with clref's Adam, both at a
  constant 1e-4; the largest relative parameter difference after 1, 10, 100 and
  the last step;
- samplers: the official vMF sampler against clref's, KS test on the cosines.

--curve STEPS trains the official recipe twice side by side (official code and
clref, same initial weights and batches, float32, batch 6144, constant rate 1e-4)
on the default row and writes held-out R² every 50 steps to CURVE_OUT/curve.csv;
`python plots.py --official-curve CURVE_OUT/curve.csv` draws it.
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402
from autograd import grad  # noqa: E402

import clref as C  # noqa: E402
import train  # noqa: E402

N = 10
OFFICIAL_WIDTHS = [10 * N, 50 * N, 50 * N, 50 * N, 50 * N, 10 * N]


def load_official(directory):
    """(torch, namespace of the official modules), or a one-line reason why not."""
    if directory is None:
        return None, "no --official DIR given"
    if not os.path.isdir(directory):
        return None, f"--official {directory!r} is not a directory"
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (it is not a dependency of clref)"
    sys.path.insert(0, os.path.abspath(directory))
    try:
        import disentanglement_utils
        import encoders
        import invertible_network_utils
        import losses
        import vmf
    except ImportError as error:
        return None, f"the official modules in {directory} do not import ({error})"
    modules = dict(losses=losses, metrics=disentanglement_utils, encoders=encoders,
                   mixing=invertible_network_utils, vmf=vmf)
    return torch, argparse.Namespace(**modules)


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


# ----------------------------------------------------------------------------
# Losses, metrics, mixing, encoder
# ----------------------------------------------------------------------------

def official_loss(official, p, tau):
    if p is None:
        return official.losses.SimCLRLoss(normalize=False, tau=tau)
    return official.losses.LpSimCLRLoss(p=p, tau=tau, simclr_compatibility_mode=True, pow=True)


def call_official_loss(torch, loss, z1_rec, z2_rec):
    """As the official training step calls it: z3_rec is z1_rec rolled by one."""
    return loss(None, None, None, z1_rec, z2_rec, torch.roll(z1_rec, 1, 0))[0]


def loss_rows(torch, official, rng, batch=256):
    rows = []
    for p in (None, 1, 2, 3):
        for tau in (0.1, 1.0):
            h = rng.standard_normal((batch, N))
            h_tilde = h + 0.3 * rng.standard_normal((batch, N))
            if p is None:
                h, h_tilde = C.normalize(h), C.normalize(h_tilde)
            args = (h, h_tilde, tau, p, False, "official")
            value = C.infonce(*args)
            grad_h, grad_h_tilde = grad(C.infonce, 0)(*args), grad(C.infonce, 1)(*args)
            th = torch.tensor(h, requires_grad=True)
            tht = torch.tensor(h_tilde, requires_grad=True)
            loss = call_official_loss(torch, official_loss(official, p, tau), th, tht)
            loss.backward()
            name = "SimCLRLoss" if p is None else f"LpSimCLRLoss p={p}"
            rows.append((f"loss {name}, tau {tau}, B {batch}",
                         max(abs(value - loss.item()), max_abs(grad_h, th.grad),
                             max_abs(grad_h_tilde, tht.grad)), "value, grad h, grad h~"))
    return rows


def metric_rows(official, rng, size=4096):
    z_sphere = C.sample_uniform_sphere(size, N, rng)
    bent = np.tanh(z_sphere @ rng.standard_normal((N, N))) + 0.05 * rng.standard_normal((size, N))
    z_box = rng.uniform(0, 1, (size, N))
    signed = z_box[:, rng.permutation(N)] * rng.choice([-2.0, 1.0, 3.0], N) + 0.02 * np.sin(7 * z_box)
    rows = []
    for name, z, h in (("sphere, tanh map", z_sphere, bent), ("box, signed permutation", z_box, signed)):
        (r2, _), _ = official.metrics.linear_disentanglement(z, h, mode="r2")
        (mcc, _), _ = official.metrics.permutation_disentanglement(
            z, h, mode="pearson", solver="munkres", rescaling=True)
        rows.append((f"linear R² ({name})", abs(r2 - C.linear_r2(z, h)), f"{r2:.6f}"))
        rows.append((f"MCC ({name})", abs(mcc - C.mcc(z, h)), f"{mcc:.6f}"))
    return rows


def official_mixing(torch, official, seed):
    np.random.seed(seed)              # the official code draws from NumPy's global state
    with contextlib.redirect_stdout(io.StringIO()):
        g = official.mixing.construct_invertible_mlp(
            n=N, n_layers=3, act_fct="leaky_relu", cond_thresh_ratio=0.0, n_iter_cond_thresh=25000)
    return g.double(), [m.weight.detach().numpy().copy() for m in g if isinstance(m, torch.nn.Linear)]


def mixing_rows(torch, official, rng, size=4096):
    g, weights = official_mixing(torch, official, seed=0)
    z = C.sample_uniform_sphere(size, N, rng)
    with torch.no_grad():
        x_official = g(torch.tensor(z)).numpy()
    x = C.mix(weights, z)
    return [("mixing: clref.mix with the official weights", max_abs(x, x_official), "x"),
            ("mixing: clref.unmix of the official x", max_abs(C.unmix(weights, x_official), z), "z")]


def official_encoder(torch, official, seed, dtype):
    torch.manual_seed(seed)
    f = official.encoders.get_mlp(n_in=N, n_out=N, layers=list(OFFICIAL_WIDTHS),
                                  output_normalization="fixed_sphere")
    return f.double() if dtype == "float64" else f


def clref_params(torch, f):
    """clref's encoder parameters holding the weights of the official MLP f."""
    linear = [m for m in f if isinstance(m, torch.nn.Linear)]
    return {"layers": [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
                       for m in linear]}


def encoder_rows(torch, official, rng, size=4096):
    f = official_encoder(torch, official, seed=0, dtype="float64")
    x = C.mix(C.make_mixing(N, 3, rng, 1000), C.sample_uniform_sphere(size, N, rng))
    with torch.no_grad():
        h_official = f(torch.tensor(x)).numpy()
    h = C.encode(clref_params(torch, f), x, "sphere")
    return [("encoder: get_mlp weights in clref.encode (sphere)", max_abs(h, h_official), "h")]


# ----------------------------------------------------------------------------
# Training steps
# ----------------------------------------------------------------------------

def relative_difference(params, f, torch):
    """max over layers of max |clref - official| / max |official|, weights and biases."""
    worst = 0.0
    for (w, b), (tw, tb) in zip(params["layers"], clref_params(torch, f)["layers"]):
        worst = max(worst, max_abs(w, tw) / np.max(np.abs(tw)), max_abs(b, tb) / np.max(np.abs(tb)))
    return worst


def default_row_config(dtype, batch):
    return train.PRESETS[train.DEFAULT_PRESET].config.replace(
        **{**train.RECIPES["official"], "batch_size": batch, "dtype": dtype})


def training_rows(torch, official, steps, batch, seed=0):
    """The relative parameter difference after 1, 10, 100, ... steps, float64."""
    cfg = default_row_config("float64", batch)
    rng = np.random.default_rng(seed)
    mixing = C.make_mixing(N, 3, rng, 1000)
    f = official_encoder(torch, official, seed, "float64")
    optimiser = torch.optim.Adam(f.parameters(), lr=cfg.lr)
    loss = official_loss(official, cfg.p, cfg.tau)
    params = clref_params(torch, f)
    state = C.adam_init(params)
    marks = {1, 10, 100, steps}
    rows = []
    for step in range(1, steps + 1):
        x, x_tilde = train.contrastive_batch(cfg, mixing, rng)
        optimiser.zero_grad()
        value = call_official_loss(torch, loss, f(torch.tensor(x)), f(torch.tensor(x_tilde)))
        value.backward()
        optimiser.step()
        _, params, state = C.train_step(C.contrastive_objective, params, state, (x, x_tilde), cfg, cfg.lr)
        if step in marks:
            rows.append((f"training: parameters after {step} step{'s' if step > 1 else ''}, batch {batch}",
                         relative_difference(params, f, torch), "relative"))
    return rows


def sampler_rows(official, rng, draws=100000):
    from scipy.stats import ks_2samp
    rows = []
    mu = np.zeros((draws, N))
    mu[:, 0] = 1.0
    for kappa in (1.0, 10.0):
        np.random.seed(1)
        theirs = official.vmf.sample_vMF(mu, kappa, draws)[:, 0]
        ours = C.sample_vmf(mu, kappa, rng)[:, 0]
        p_value = ks_2samp(ours, theirs).pvalue
        rows.append((f"vMF sampler kappa {kappa:g}: KS p-value on cosines", p_value,
                     f"means {ours.mean():.4f} / {theirs.mean():.4f}"))
    return rows


# ----------------------------------------------------------------------------
# The official recipe, both implementations side by side
# ----------------------------------------------------------------------------

def first_reaching(log_path, r2=0.99):
    """(pairs, seconds) at the first evaluation of a run's log.csv with R² >= r2, or None."""
    import csv
    try:
        with open(log_path) as f:
            rows = list(csv.DictReader(f))
        config = train.read_run_config(os.path.dirname(log_path))[1]
    except (OSError, ValueError):
        return None
    for row in rows:
        if float(row["r2"]) >= r2:
            return int(row["step"]) * config.batch_size, float(row["seconds"])
    return None


def curve(torch, official, steps, out_dir, batch=6144, dtype="float32", every=50, seed=0):
    """Held-out R² of both trainings every `every` steps, written to out_dir/curve.csv."""
    torch.set_num_threads(1)
    train.set_blas_threads(1)
    torch.set_default_dtype(getattr(torch, dtype))
    cfg = default_row_config(dtype, batch)
    init_rng, data_rng, eval_rng = C.run_generators(seed)[:3]
    mixing = C.make_mixing(N, 3, init_rng, cfg.cond_pool)
    sets = C.evaluation_sets(cfg, mixing, eval_rng)
    f = official_encoder(torch, official, seed, dtype)
    optimiser = torch.optim.Adam(f.parameters(), lr=cfg.lr)
    loss = official_loss(official, cfg.p, cfg.tau)
    params, state = clref_params(torch, f), None
    state = C.adam_init(params)
    rows, seconds = [], {"clref": 0.0, "official": 0.0}
    os.makedirs(out_dir, exist_ok=True)

    def record(step):
        with torch.no_grad():
            official_r2 = C.held_out_scores(sets[0], f(torch.tensor(sets[1])).numpy(),
                                            sets[2], f(torch.tensor(sets[3])).numpy())["r2"]
        clref_r2 = train.evaluate(cfg, params, cfg.head, sets)["r2"]
        rows.append({"step": step, "pairs": step * batch, "clref_r2": clref_r2,
                     "official_r2": official_r2, "clref_seconds": round(seconds["clref"], 1),
                     "official_seconds": round(seconds["official"], 1)})
        train.write_text(os.path.join(out_dir, "curve.csv"),
                         train.csv_text(rows, list(rows[0])))
        print(f"step {step:>5}  R² clref {clref_r2:.4f}  official {official_r2:.4f}", flush=True)

    record(0)
    for step in range(1, steps + 1):
        x, x_tilde = train.contrastive_batch(cfg, mixing, data_rng)
        start = time.perf_counter()
        optimiser.zero_grad()
        value = call_official_loss(torch, loss, f(torch.tensor(x)), f(torch.tensor(x_tilde)))
        value.backward()
        optimiser.step()
        seconds["official"] += time.perf_counter() - start
        start = time.perf_counter()
        _, params, state = C.train_step(C.contrastive_objective, params, state, (x, x_tilde), cfg, cfg.lr)
        seconds["clref"] += time.perf_counter() - start
        if step % every == 0 or step == steps:
            record(step)
    train.write_json(os.path.join(out_dir, "env.json"), train.environment())
    return rows


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def print_table(rows):
    width = max(len(name) for name, _, _ in rows)
    print(f"{'comparison':<{width}}  {'max |diff|':>10}  what")
    for name, diff, what in rows:
        print(f"{name:<{width}}  {diff:>10.2e}  {what}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="directory of the official modules")
    parser.add_argument("--train-steps", type=int, default=200, help="steps of the training row")
    parser.add_argument("--batch", type=int, default=512, help="batch of the training row")
    parser.add_argument("--curve", type=int, metavar="STEPS",
                        help="instead of the table: the official recipe in both, STEPS steps")
    parser.add_argument("--curve-out", default=os.path.join(HERE, "..", "results", "official"),
                        help="where --curve writes curve.csv")
    parser.add_argument("--curve-batch", type=int, default=6144, help="batch of --curve")
    parser.add_argument("--curve-dtype", choices=("float32", "float64"), default="float32",
                        help="precision of --curve")
    args = parser.parse_args(argv)
    if args.train_steps < 1 or args.batch < 2 or (args.curve is not None and args.curve < 1):
        parser.error("--train-steps and --curve must be >= 1, --batch >= 2")
    torch, official = load_official(args.official)
    if torch is None:
        print(f"compare_official.py: {official}; nothing compared.")
        return 0
    torch.set_default_dtype(torch.float64)
    print(f"# torch {torch.__version__}; official modules from {os.path.abspath(args.official)}")
    print(f"# {train.describe_environment(train.environment())}")
    if args.curve is not None:
        rows = curve(torch, official, args.curve, args.curve_out, args.curve_batch, args.curve_dtype)
        reached = first_reaching(os.path.join(HERE, "..", "results", "default", "log.csv"))
        print(json.dumps(rows[-1]))
        if reached:
            print(f"clref's CPU recipe on the same row (results/default): R² >= 0.99 after "
                  f"{reached[0]:,} pairs, {reached[1]:.0f} s")
        return 0
    rng = np.random.default_rng(2021)
    started = time.time()
    rows = (loss_rows(torch, official, rng) + metric_rows(official, rng)
            + mixing_rows(torch, official, rng) + encoder_rows(torch, official, rng)
            + training_rows(torch, official, args.train_steps, args.batch))
    print_table(rows)
    print()
    print_table(sampler_rows(official, rng))
    print(f"\n({time.time() - started:.0f} s; float64 everywhere except where a row says; "
          f"training rows: batch {args.batch}, default row, official recipe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
