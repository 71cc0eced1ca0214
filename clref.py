"""clref: contrastive learning inverts the data generating process, in NumPy + autograd.

Reference implementation of Zimmermann, Sharma, Schneider, Bethge and Brendel,
"Contrastive Learning Inverts the Data Generating Process", ICML 2021
(arXiv:2102.08850). Latents z are mixed by an invertible MLP g into
observations x = g(z); an encoder f trained with InfoNCE on positive pairs
(g(z), g(z_tilde)) makes h = f o g a simple map (a rotation on the sphere, a
signed permutation on a box with an Lp loss, p != 2).

The file reads top to bottom in the order of the data flow:
configuration -> latent samplers -> mixing g -> encoder f -> losses ->
metrics -> optimiser. "README §k" points to the math section of README.md.
"""
import math
from dataclasses import dataclass, asdict

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.extend import defvjp, defvjp_argnums, primitive

SPACES = ("sphere", "box", "unbounded")
MARGINALS = ("uniform", "normal", "laplace", "gennorm")
CONDITIONALS = ("vmf", "normal", "laplace", "gennorm", "restricted_vmf", "aniso_normal")
HEADS = ("sphere", "box", "none")
LOSS_FORMS = ("paper", "official")
DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """Everything that defines one experiment; validated once by `check_config`."""
    # latent space and data (README §1-§2)
    space: str = "sphere"          # "sphere" | "box" | "unbounded"
    n: int = 10                    # latent dimension N
    box_low: float = 0.0           # box [box_low, box_high]^N
    box_high: float = 1.0
    marginal: str = "uniform"      # p(z): "uniform" | "normal" | "laplace" | "gennorm"
    marginal_scale: float = 1.0    # scale m of a non-uniform marginal
    marginal_beta: float = 2.0     # shape of a generalised-normal marginal
    conditional: str = "vmf"       # p(z_tilde|z): "vmf" | "normal" | "laplace" | "gennorm" |
                                   # "restricted_vmf" (keeps the first `kept` coordinates)
    kappa: float = 1.0             # vMF concentration
    kept: int = 1                  # restricted_vmf: coordinates of z the positive keeps
    precisions: tuple = None       # aniso_normal: the precision Λ_k of each coordinate's noise
    sigma: float = 0.05            # Normal conditional: standard deviation
    lam: float = 0.05              # Laplace / generalised normal conditional: scale
    beta: float = 3.0              # generalised normal conditional: shape
    # mixing g (README §3)
    mixing_layers: int = 3
    cond_pool: int = 25000         # the reference code keeps only matrices as well
    cond_quantile: float = 0.0     # conditioned as the best of 25 000 draws
    # encoder f and loss (README §4-§5)
    widths: tuple = (100, 500, 500, 500, 500, 100)
    identity_init: bool = True     # start f close to linear (README §4)
    uniform_bias: bool = False     # biases U(±1/sqrt(fan_in)) as PyTorch's default for a
                                   # linear layer; False: biases start at 0
    whiten: bool = False           # a fixed whitening stage in front of the MLP, computed
                                   # from unlabelled observations (README §4)
    whiten_samples: int = 50000    # observations it is estimated from
    head: str = "sphere"           # "sphere" | "box" | "none"
    radius: float = 1.0            # sphere head: radius r (initial value if learned)
    learn_radius: bool = False
    tau: float = 1.0               # temperature; theory wants tau = 1/kappa on the sphere
    p: float = None                # None: dot-product similarity; p >= 1: -||a-b||_p^p
    self_pair: bool = False        # add the anchor paired with itself to each row (README §5)
    self_pair_until: int = None    # with self_pair: drop it from this step on (None: never)
    learn_precision: bool = False  # the anisotropic similarity -½ (a-b)ᵀ diag(Λ̂) (a-b) with a
                                   # learned Λ̂ = softplus(λ), on the outputs (needs p = 2)
    precision_lr: float = None     # λ's peak rate, following the schedule (None: lr)
    support_negatives: int = 0     # > 0: the support-corrected loss, this many negatives per
                                   # anchor drawn from the anchor's own support (README §5)
    loss_form: str = "paper"       # "paper" | "official": the reference code's row (README §5)
    # optimisation
    batch_size: int = 1024
    steps: int = 2000
    lr: float = 1e-4
    lr_final: float = None         # cosine decay to lr_final; None keeps lr constant
    lr_timescale: int = None       # without lr_final: lr sqrt(T / (T + t)) after warm-up, a
                                   # decay that does not depend on cfg.steps; None: constant
    warmup: int = 0                # linear warm-up steps
    dtype: str = "float32"
    seed: int = 0
    # evaluation and baselines (README §6)
    eval_every: int = 100          # steps between evaluations / checkpoints
    eval_growth: float = None      # also evaluate once eval_growth x step steps have passed
                                   # since the last evaluation: a fixed relative resolution
                                   # of when a score was first reached (None: off)
    eval_size: int = 4096          # fresh samples to fit the linear map, as many to score it
    supervised_steps: int = 0      # steps of the supervised baseline, which has a recipe
                                   # of its own (0: skip it; None: as many as the run)
    stop_r2: float = None          # stop early once held-out R² >= stop_r2 at two
                                   # evaluations in a row (None: run all the steps)

    def replace(self, **changes):
        return Config(**{**asdict(self), **changes})

    def to_dict(self):
        return {**asdict(self), "widths": list(self.widths),
                "precisions": None if self.precisions is None else list(self.precisions)}

    @staticmethod
    def from_dict(d):
        precisions = d.get("precisions")
        return Config(**{**d, "widths": tuple(d["widths"]),
                         "precisions": None if precisions is None else tuple(precisions)})


def _positive(name, value):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_config(cfg):
    """Raise ValueError naming the first bad value of `cfg` and what is allowed."""
    for name, allowed in [("space", SPACES), ("marginal", MARGINALS),
                          ("conditional", CONDITIONALS), ("head", HEADS), ("dtype", DTYPES),
                          ("loss_form", LOSS_FORMS)]:
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")
    if not isinstance(cfg.n, (int, np.integer)) or cfg.n < 2:
        raise ValueError(f"n (latent dimension N) must be an integer >= 2, got {cfg.n!r}")
    if cfg.conditional in ("vmf", "restricted_vmf") and cfg.space != "sphere":
        raise ValueError(f"conditional {cfg.conditional!r} is only defined on the sphere, "
                         f"got space {cfg.space!r}")
    if cfg.conditional == "aniso_normal":
        if cfg.space != "sphere":
            raise ValueError(f"conditional 'aniso_normal' is only defined on the sphere, got space {cfg.space!r}")
        if (cfg.precisions is None or len(cfg.precisions) != cfg.n
                or not all(math.isfinite(v) and v > 0 for v in cfg.precisions)):
            raise ValueError(f"precisions must hold n = {cfg.n} finite numbers > 0 (one per "
                             f"coordinate), got {cfg.precisions!r}")
    if cfg.learn_precision and (cfg.p != 2 or cfg.loss_form != "paper"):
        raise ValueError(f"learn_precision scales the outputs of the p = 2 similarity in the paper's "
                         f"form; p must be 2 and loss_form 'paper', got {cfg.p!r} and {cfg.loss_form!r}")
    if cfg.precision_lr is not None:
        _positive("precision_lr", cfg.precision_lr)
    if not isinstance(cfg.support_negatives, (int, np.integer)) or cfg.support_negatives < 0:
        raise ValueError(f"support_negatives must be an integer >= 0, got {cfg.support_negatives!r}")
    if cfg.support_negatives and (cfg.conditional != "restricted_vmf" or cfg.loss_form != "paper"
                                  or cfg.self_pair):
        raise ValueError("support_negatives (the support-corrected loss) needs conditional "
                         "'restricted_vmf', the paper's form and no self pair")
    if cfg.conditional == "restricted_vmf" and not (
            isinstance(cfg.kept, (int, np.integer)) and 1 <= cfg.kept <= cfg.n - 2):
        raise ValueError(f"kept must be an integer from 1 to n - 2 = {cfg.n - 2} (the vMF part needs "
                         f"a sphere of at least 2 coordinates), got {cfg.kept!r}")
    if cfg.marginal == "uniform" and cfg.space == "unbounded":
        raise ValueError("marginal 'uniform' is not defined on the unbounded space R^N; "
                         "use normal, laplace or gennorm")
    for name in ("kappa", "sigma", "lam", "beta", "marginal_scale", "marginal_beta",
                 "radius", "tau", "lr"):
        _positive(name, getattr(cfg, name))
    if cfg.lr_final is not None:
        _positive("lr_final", cfg.lr_final)
    if cfg.lr_timescale is not None:
        if not isinstance(cfg.lr_timescale, (int, np.integer)) or cfg.lr_timescale < 1:
            raise ValueError(f"lr_timescale must be None or an integer >= 1, got {cfg.lr_timescale!r}")
        if cfg.lr_final is not None:
            raise ValueError("lr_timescale (inverse-square-root decay) and lr_final (cosine "
                             "decay) are two schedules; give one of them")
    if cfg.stop_r2 is not None and not (isinstance(cfg.stop_r2, (int, float)) and 0 < cfg.stop_r2 <= 1):
        raise ValueError(f"stop_r2 must be None or a number in (0, 1], got {cfg.stop_r2!r}")
    if not cfg.box_low < cfg.box_high:
        raise ValueError(f"box_low must be < box_high, got [{cfg.box_low}, {cfg.box_high}]")
    if cfg.p is not None and not (math.isfinite(cfg.p) and cfg.p >= 1):
        raise ValueError(f"p must be None (dot product) or a number >= 1, got {cfg.p!r}")
    if cfg.p is None and cfg.head != "sphere":
        raise ValueError(f"the dot-product loss (p=None) needs head 'sphere', got {cfg.head!r}")
    if not cfg.widths or any(not isinstance(w, (int, np.integer)) or w < 1 for w in cfg.widths):
        raise ValueError(f"widths must be a non-empty list of positive integers, got {cfg.widths!r}")
    for name, low in [("mixing_layers", 1), ("cond_pool", 1), ("batch_size", 2),
                      ("steps", 0), ("warmup", 0), ("seed", 0), ("eval_every", 1),
                      ("eval_size", 16), ("supervised_steps", 0), ("whiten_samples", 2)]:
        value = getattr(cfg, name)
        if name == "supervised_steps" and value is None:
            continue
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if cfg.eval_growth is not None and not (isinstance(cfg.eval_growth, (int, float))
                                            and 0 < cfg.eval_growth <= 1):
        raise ValueError(f"eval_growth must be None or a number in (0, 1], got {cfg.eval_growth!r}")
    if cfg.self_pair_until is not None:
        if not isinstance(cfg.self_pair_until, (int, np.integer)) or cfg.self_pair_until < 0:
            raise ValueError(f"self_pair_until must be None or an integer >= 0, "
                             f"got {cfg.self_pair_until!r}")
        if not cfg.self_pair:
            raise ValueError("self_pair_until says when to drop the self pair; it needs self_pair")
    if cfg.self_pair and cfg.loss_form == "official":
        raise ValueError("loss_form 'official' already holds the self pair in every row; "
                         "self_pair must be False with it")
    if cfg.whiten and cfg.whiten_samples <= cfg.n:
        raise ValueError(f"whiten_samples must exceed n = {cfg.n} to estimate cov(x), "
                         f"got {cfg.whiten_samples!r}")
    if not 0 <= cfg.cond_quantile <= 1:
        raise ValueError(f"cond_quantile must be in [0, 1], got {cfg.cond_quantile!r}")
    return cfg


# ----------------------------------------------------------------------------
# Latent samplers (README §2). Every sampler takes an explicit Generator.
# ----------------------------------------------------------------------------

def run_generators(seed):
    """Six independent generators from one seed, for (mixing, encoder
    initialisation), the training stream, the evaluation sets, the supervised
    baseline, the whitening stage and the stopping rule's samples: changing how one
    is used leaves the others' numbers as they were (the first four are those of
    a four-way split)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]


def normalize(z):
    """(B, N) -> (B, N): rows projected onto the unit sphere, z / ||z||_2."""
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def sample_uniform_sphere(batch, n, rng):
    """(batch, n) uniform on the unit sphere: a normalised standard Gaussian."""
    return normalize(rng.standard_normal((batch, n)))


def sample_gennorm(shape, beta, lam, rng):
    """Generalised normal, density ∝ exp(-|u/lam|^beta): u = lam * sign * G^(1/beta),
    G ~ Gamma(1/beta, 1) (README §2). beta=1 is Laplace(lam), beta=2 Normal(lam/√2)."""
    sign = rng.choice(np.array([-1.0, 1.0]), size=shape)
    return lam * sign * rng.gamma(1.0 / beta, 1.0, size=shape) ** (1.0 / beta)


def sample_noise(kind, shape, rng, sigma=None, lam=None, beta=None):
    """Additive noise of one of the families "normal" (sigma), "laplace" (lam),
    "gennorm" (beta, lam)."""
    if kind == "normal":
        return sigma * rng.standard_normal(shape)
    if kind == "laplace":
        return rng.laplace(0.0, lam, size=shape)
    return sample_gennorm(shape, beta, lam, rng)


def perturb_in_box(center, draw, low, high, max_rounds=10000):
    """center + noise, every coordinate outside [low, high] redrawn until it is
    inside (coordinate-wise rejection; README §2). `draw(k)` returns k noise values."""
    out = center + draw(center.size).reshape(center.shape)
    for _ in range(max_rounds):
        bad = (out < low) | (out > high)
        count = int(bad.sum())
        if count == 0:
            return out
        out[bad] = center[bad] + draw(count)
    raise ValueError(f"rejection in the box [{low}, {high}] did not finish after "
                     f"{max_rounds} rounds; the noise scale is too small or too large for this box")


def sample_vmf(mu, kappa, rng):
    """(B, N) unit rows mu -> (B, N): one von Mises-Fisher(mu, kappa) draw per row.

    Wood (1994): the cosine w = mu·z_tilde is drawn by rejection from a Beta
    proposal, then z_tilde = w mu + sqrt(1 - w²) v with v uniform on the unit
    sphere orthogonal to mu (README §2)."""
    if not (np.isscalar(kappa) and math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    mu = np.asarray(mu, dtype=float)
    batch, n = mu.shape
    if n < 2:
        raise ValueError(f"the vMF distribution needs N >= 2, got N = {n}")
    w = _wood_cosines(batch, n, kappa, rng)
    return vmf_from_draws(mu, w, rng.standard_normal((batch, n)))


def vmf_from_draws(mu, w, normals):
    """z_tilde = w mu + sqrt(1 - w²) v from cosines w (B,) and standard normals (B, N),
    v the normals' part orthogonal to mu, normalised (README §2)."""
    v = normalize(normals - np.sum(normals * mu, axis=1, keepdims=True) * mu)
    return w[:, None] * mu + np.sqrt(np.clip(1.0 - w ** 2, 0.0, None))[:, None] * v


def _wood_cosines(batch, n, kappa, rng):
    """(batch,) cosines w with density ∝ exp(kappa w) (1 - w²)^((n-3)/2) (Wood 1994)."""
    # b = (-2κ + sqrt(4κ² + (n-1)²)) / (n-1), written without cancellation
    b = (n - 1) / (2 * kappa + math.sqrt(4 * kappa ** 2 + (n - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (n - 1) * math.log(1 - x0 ** 2)
    w = np.empty(batch)
    todo = np.arange(batch)
    while todo.size:
        beta_draw = rng.beta((n - 1) / 2, (n - 1) / 2, size=todo.size)
        w_new = (1 - (1 + b) * beta_draw) / (1 - (1 - b) * beta_draw)
        u = rng.uniform(size=todo.size)
        accept = kappa * w_new + (n - 1) * np.log(1 - x0 * w_new) - c >= np.log(u)
        w[todo[accept]] = w_new[accept]
        todo = todo[~accept]
    return w


def sample_restricted_vmf(z, kept, kappa, rng):
    """(B, N) unit rows z -> (B, N): the positive keeps u = z[:, :kept] and draws the
    rest as r w, r = ||v|| = sqrt(1 - ||u||²), w ~ vMF(v / r, kappa) on the unit
    sphere of the other N - kept coordinates (README §2, restricted support)."""
    u, v = z[:, :kept], z[:, kept:]
    r = np.sqrt(np.sum(v * v, axis=1, keepdims=True))
    return np.concatenate([u, r * sample_vmf(v / r, kappa, rng)], axis=1)


def sample_support_negatives(z, kept, count, rng):
    """(B, N) -> (B, count, N): for each anchor, count draws of its own support
    K(z) = {(u, r w')}: the kept u, and w' uniform on the sphere of the other N - kept
    coordinates, scaled by r = ||v|| (README §5, the support-corrected loss)."""
    batch, n = z.shape
    r = np.sqrt(np.sum(z[:, kept:] ** 2, axis=1))
    w = sample_uniform_sphere(batch * count, n - kept, rng).reshape(batch, count, n - kept)
    u = np.broadcast_to(z[:, None, :kept], (batch, count, kept))
    return np.concatenate([u, r[:, None, None] * w], axis=2)


def linear_precisions(n, low=5.0, high=25.0):
    """Λ evenly spaced from low to high over the n coordinates (README §2, "linear")."""
    return tuple(float(v) for v in np.linspace(low, high, n))


def bimodal_precisions(n, high=25.0, low=5.0):
    """Λ = high on the first n // 2 coordinates, low on the rest (README §2, "bimodal")."""
    return tuple(high if k < n // 2 else low for k in range(n))


def sample_aniso_normal(z, precisions, rng, band=0.1, max_rounds=10000):
    """(B, N) unit rows z -> (B, N): z + delta with delta ~ Normal(0, diag(Λ)⁻¹), a row
    drawn again until | 1 - ||z + delta|| | < band, then put back on the sphere
    (README §2, anisotropic conditional)."""
    scale = 1.0 / np.sqrt(np.asarray(precisions, dtype=float))
    out = z + scale * rng.standard_normal(z.shape)
    for _ in range(max_rounds):
        bad = np.abs(1.0 - np.linalg.norm(out, axis=1)) >= band
        count = int(bad.sum())
        if count == 0:
            return normalize(out)
        out[bad] = z[bad] + scale * rng.standard_normal((count, z.shape[1]))
    raise ValueError(f"the anisotropic conditional found no draw within {band} of the sphere "
                     f"after {max_rounds} rounds; the precisions are too small")


def sample_marginal(cfg, batch, rng):
    """(batch, N) draws of p(z): uniform, or a Normal / Laplace / generalised normal
    with scale m around the centre eta (e_1 on the sphere, 0 elsewhere), projected
    back on the sphere, truncated to the box (README §2)."""
    n = cfg.n
    if cfg.marginal == "uniform":
        if cfg.space == "sphere":
            return sample_uniform_sphere(batch, n, rng)
        return rng.uniform(cfg.box_low, cfg.box_high, size=(batch, n))

    def draw(shape):
        m = cfg.marginal_scale
        return sample_noise(cfg.marginal, shape, rng, sigma=m, lam=m, beta=cfg.marginal_beta)

    center = np.zeros((batch, n))
    if cfg.space == "sphere":
        center[:, 0] = 1.0
        return normalize(center + draw((batch, n)))
    if cfg.space == "box":
        return perturb_in_box(center, draw, cfg.box_low, cfg.box_high)
    return center + draw((batch, n))


def sample_conditional(cfg, z, rng):
    """(B, N) -> (B, N): one draw of p(z_tilde | z) per row (README §2)."""
    if cfg.conditional == "vmf":
        return sample_vmf(z, cfg.kappa, rng)
    if cfg.conditional == "restricted_vmf":
        return sample_restricted_vmf(z, cfg.kept, cfg.kappa, rng)
    if cfg.conditional == "aniso_normal":
        return sample_aniso_normal(z, cfg.precisions, rng)

    def draw(shape):
        return sample_noise(cfg.conditional, shape, rng, sigma=cfg.sigma, lam=cfg.lam, beta=cfg.beta)

    if cfg.space == "sphere":
        return normalize(z + draw(z.shape))
    if cfg.space == "box":
        return perturb_in_box(z, draw, cfg.box_low, cfg.box_high)
    return z + draw(z.shape)


def sample_pairs(cfg, batch, rng):
    """Positive pairs (z, z_tilde), each (batch, N): z ~ p(z), z_tilde ~ p(z_tilde|z)."""
    z = sample_marginal(cfg, batch, rng)
    return z, sample_conditional(cfg, z, rng)


# ----------------------------------------------------------------------------
# Mixing g: a frozen invertible MLP (README §3)
# ----------------------------------------------------------------------------

def _random_unit_column_matrices(count, n, rng):
    w = rng.uniform(-1.0, 1.0, size=(count, n, n))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def make_mixing(n, n_layers, rng, cond_pool=25000, cond_quantile=0.0):
    """List of n_layers (n, n) matrices W_l: entries uniform in [-1, 1], columns of
    unit L2 norm, redrawn until the condition number is at most the
    `cond_quantile` quantile of `cond_pool` such draws (0.0: their minimum)."""
    pool = np.linalg.cond(_random_unit_column_matrices(cond_pool, n, rng))
    threshold = np.quantile(pool, cond_quantile)
    chunk = max(1, min(cond_pool, 25000))
    mats = []
    while len(mats) < n_layers:
        candidates = _random_unit_column_matrices(chunk, n, rng)
        good = np.linalg.cond(candidates) <= threshold
        mats.extend(candidates[good][: n_layers - len(mats)])
    return mats


MIXING_SLOPE = 0.2


def leaky_relu(u, slope):
    """max(u, slope * u) for 0 < slope < 1."""
    return np.maximum(u, slope * u)


def mix(mixing, z):
    """(B, N) -> (B, N): x = g(z) = W_L σ(... σ(W_1 z)), σ leaky ReLU (0.2), no biases."""
    x = z
    for l, w in enumerate(mixing):
        if l > 0:
            x = leaky_relu(x, MIXING_SLOPE)
        x = x @ w.T
    return x


def observe(cfg, mixing, z):
    """(B, N) latents -> (B, N) observations x = g(z) in the experiment's dtype."""
    return mix(mixing, z).astype(cfg.dtype)


def unmix(mixing, x):
    """(B, N) -> (B, N): the exact inverse g⁻¹(x), layers undone in reverse order."""
    z = x
    for l, w in reversed(list(enumerate(mixing))):
        z = np.linalg.solve(w, z.T).T
        if l > 0:
            z = np.where(z > 0, z, z / MIXING_SLOPE)
    return z


# ----------------------------------------------------------------------------
# Encoder f (README §4)
# ----------------------------------------------------------------------------

ENCODER_SLOPE = 0.01


def whitening_stage(x):
    """(M, N) unlabelled observations -> (mean (N,), matrix (N, N)) of the fixed
    stage x -> (x - mean) matrix, matrix = cov(x)^(-1/2), the symmetric inverse
    square root (README §4: whitening); float64. ValueError if cov(x) is singular."""
    x = np.asarray(x, dtype=float)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    if not eigenvalues[0] > 1e-12 * eigenvalues[-1]:
        raise ValueError(f"cov(x) is singular (eigenvalues {eigenvalues[0]:.3g} to "
                         f"{eigenvalues[-1]:.3g}); the observations cannot be whitened")
    return x.mean(axis=0), (vectors / np.sqrt(eigenvalues)) @ vectors.T


def sample_whitening_stage(cfg, mixing, rng):
    """The whitening stage of a run: estimated from cfg.whiten_samples fresh
    observations x = g(z); the latents are drawn to make them and then dropped."""
    return whitening_stage(mix(mixing, sample_marginal(cfg, cfg.whiten_samples, rng)))


def init_encoder(n, widths, head, rng, dtype="float32", radius=1.0, learn_radius=False,
                 identity_init=True, uniform_bias=False, stage=None, learn_precision=False):
    """Parameters of the MLP N -> widths -> N: {"layers": [(W, b), ...]}, plus
    "bound" (N,) for the box head, "radius" () for a learned sphere radius and,
    given a stage (mean, matrix) of `whitening_stage`, the fixed "whiten" stage.
    W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), b = 0, or b drawn from the same
    uniform after W with `uniform_bias` (PyTorch's default). With `identity_init` the first
    2N units of every hidden layer also carry (x, -x) through the network, so the
    initial f is close to linear (README §4: why the sphere head needs this);
    it needs every width >= 2N and is skipped otherwise."""
    sizes = [n, *widths, n]
    layers = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_in, fan_out))
        b = rng.uniform(-bound, bound, fan_out) if uniform_bias else np.zeros(fan_out)
        if identity_init and min(widths) >= 2 * n:
            w = w + _identity_path(n, fan_in, fan_out, first=k == 0, last=k == len(sizes) - 2)
        layers.append((w.astype(dtype), b.astype(dtype)))
    params = {"layers": layers}
    if head == "box":
        params["bound"] = np.ones(n, dtype=dtype)
    if head == "sphere" and learn_radius:
        params["radius"] = np.asarray(radius, dtype=dtype)
    if stage is not None:
        params["whiten"] = {"mean": np.asarray(stage[0], dtype), "matrix": np.asarray(stage[1], dtype)}
    if learn_precision:        # λ of the anisotropic similarity, Λ̂ = softplus(λ) (README §5)
        params["precision"] = (0.1 * rng.standard_normal(n)).astype(dtype)
    return params


def _identity_path(n, fan_in, fan_out, first, last):
    """(fan_in, fan_out) weights that route u = x and v = -x through units 0..2N-1:
    leaky(u) - leaky(v) = (1 + slope) x, so the path is linear in x."""
    eye = np.eye(n)
    into = eye if first else np.vstack([eye, -eye]) / (1 + ENCODER_SLOPE)
    out = into if last else np.hstack([into, -into])
    path = np.zeros((fan_in, fan_out))
    path[: out.shape[0], : out.shape[1]] = out
    return path


def _leaky_relu_derivative(u, slope):
    """1 where u > 0, slope elsewhere, as an array of u's dtype."""
    d = (u > 0).astype(u.dtype)
    d *= 1 - slope
    d += slope
    return d


@primitive
def dense(h, w, b, slope):
    """(B, fan_in) -> (B, fan_out): leaky_relu(h @ w + b, slope), one layer of the
    encoder (README §4); slope = 1 is the affine output layer. An autograd
    primitive with a hand-written gradient: the activation's derivative is one
    multiply, the bias gradient a matrix-vector product, and nothing is allocated
    twice (README "Speed")."""
    u = h @ w
    u += b
    if slope != 1:
        np.maximum(u, slope * u, out=u)      # leaky ReLU in place on the fresh product
    return u


def _dense_vjp(argnums, ans, args, kwargs):
    h, w, b, slope = args

    def vjp(g):
        g_u = g if slope == 1 else g * _leaky_relu_derivative(ans, slope)  # ans > 0 iff u > 0
        grads = {0: lambda: g_u @ w.T, 1: lambda: h.T @ g_u,
                 2: lambda: np.ones(len(g_u), g_u.dtype) @ g_u}
        return [grads[k]() for k in argnums]
    return vjp


defvjp_argnums(dense, _dense_vjp)


@primitive
def sphere_head(h, r):
    """(B, D) -> (B, D): r h / ||h||, each row put on the sphere of radius r (README §4)."""
    return h * (r / np.sqrt(np.sum(h * h, axis=1, keepdims=True)))


def _sphere_head_vjp(argnums, ans, args, kwargs):
    """With u = h / ||h||: d(r u)/dh applied to g is (r / ||h||) (g - u (uᵀg)), and
    the gradient for r is Σ uᵀg."""
    h, r = args

    def vjp(g):
        norm = np.sqrt(np.sum(h * h, axis=1, keepdims=True))
        unit = h / norm
        along = np.sum(unit * g, axis=1, keepdims=True)
        grads = {0: lambda: (g - unit * along) * (r / norm),
                 1: lambda: np.sum(along).astype(np.result_type(r)).reshape(np.shape(r))}
        return [grads[k]() for k in argnums]
    return vjp


defvjp_argnums(sphere_head, _sphere_head_vjp)


def encode(params, x, head, radius=1.0):
    """(B, N) -> (B, N): h = f(x). The whitening stage (x - mean) matrix when the
    parameters hold one (README §4), leaky ReLU (0.01) after every hidden layer,
    then the head: "sphere" r h/||h||, "box" sigmoid(h) * bound, "none" h."""
    h = x
    if "whiten" in params:
        h = (h - params["whiten"]["mean"]) @ params["whiten"]["matrix"]
    layers = params["layers"]
    for w, b in layers[:-1]:
        h = dense(h, w, b, ENCODER_SLOPE)
    w, b = layers[-1]
    h = dense(h, w, b, 1.0)
    if head == "sphere":
        return sphere_head(h, params["radius"] if "radius" in params else radius)
    if head == "box":
        return params["bound"] / (1.0 + anp.exp(-h))
    return h


# ----------------------------------------------------------------------------
# Losses (README §5)
# ----------------------------------------------------------------------------

@primitive
def logsumexp(a, axis):
    """Stable log Σ exp(a) along `axis`: the maximum is subtracted before exp
    (README §5). An autograd primitive whose gradient is the softmax along `axis`."""
    a_max = np.max(a, axis=axis, keepdims=True)
    shifted = np.subtract(a, a_max)
    return np.squeeze(a_max, axis) + np.log(np.sum(np.exp(shifted, out=shifted), axis=axis))


def _logsumexp_vjp(ans, a, axis):
    def vjp(g):
        softmax = np.subtract(a, np.expand_dims(ans, axis))
        np.exp(softmax, out=softmax)
        softmax *= np.expand_dims(g, axis).astype(softmax.dtype)  # g may arrive as float64
        return softmax
    return vjp


defvjp(logsumexp, _logsumexp_vjp)


def similarity_matrix(h, h_tilde, tau, p=None):
    """(B, D), (B, D) -> (B, B): S[i, j] = s(h_j, h_tilde_i) / tau, with
    s(a, b) = aᵀb when p is None, else -||a - b||_p^p (README §5). 1/tau scales
    the (B, D) factors, not the (B, B) result."""
    if p is None:
        return (h_tilde / tau) @ h.T
    if p == 2:  # -||a - b||² = 2 aᵀb - ||a||² - ||b||²: one matrix product
        return (((2.0 / tau) * h_tilde) @ h.T - anp.sum(h_tilde * h_tilde, axis=1)[:, None] / tau
                - anp.sum(h * h, axis=1)[None, :] / tau)
    return pairwise_lp(h_tilde, h, p) * (-1.0 / tau)


def _differences(a, b):
    """Yield, for each coordinate k, the (B, C) matrix d[i, j] = a_ik - b_jk, as the
    product [a_k, 1] [1; -b_k] (exact: one rounding, as a subtraction; BLAS writes
    it faster than numpy broadcasts it). The same buffer is reused for every k."""
    dtype = np.result_type(a, b)
    left = np.stack([a.T, np.ones_like(a.T)], axis=2).astype(dtype)      # (D, B, 2)
    right = np.stack([np.ones_like(b.T), -b.T], axis=1).astype(dtype)    # (D, 2, C)
    d = np.empty((a.shape[0], b.shape[0]), dtype=dtype)
    for k in range(a.shape[1]):
        yield k, np.matmul(left[k], right[k], out=d)


def _power(x, q):
    """x^q for x >= 0: multiplications for q = 1, 2, 3 (np.power is slow)."""
    if q == 1:
        return x
    if q == 2:
        return x * x
    if q == 3:
        return x * x * x
    return x ** q


def _shared_values(a, b):
    """(D,) bool: True where column k holds some value twice among a[:, k] and
    b[:, k] together (a superset of the coordinates where some a_ik = b_jk)."""
    values = np.sort(np.concatenate([a.T, b.T], axis=1), axis=1)
    return np.any(values[:, 1:] == values[:, :-1], axis=1)


@primitive
def pairwise_lp(a, b, p):
    """(B, D), (C, D) -> (B, C): Σ_k |a_ik - b_jk|^p, the p-th power of the Lp
    distance (README §5). An autograd primitive that loops over the D coordinates
    (never over the batch), so no (B, C, D) tensor is held, forward or backward."""
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.result_type(a, b))
    for _, d in _differences(a, b):
        out += _power(np.abs(d, out=d), p)
    return out


def _pairwise_lp_vjp(argnums, ans, args, kwargs):
    """d/d a_ik of |a_ik - b_jk|^p is p |d|^(p-1) sign(d) with d = a_ik - b_jk; the
    gradient for b is the same with the opposite sign. Row and column sums are
    matrix-vector products. For p = 1, sign(d) = 2[d > 0] - 1 + [d = 0], and the
    last term is only computed when a coordinate of a equals one of b."""
    a, b, p = args

    def vjp(g):
        ones_a, ones_b = np.ones(a.shape[0], g.dtype), np.ones(b.shape[0], g.dtype)
        grad_a, grad_b = np.empty(a.shape[::-1], g.dtype), np.empty(b.shape[::-1], g.dtype)
        work = np.empty_like(g)
        row, col = g @ ones_b, ones_a @ g
        tied = _shared_values(a, b) if p == 1 else None
        for k, d in _differences(a, b):
            if p == 1:
                np.multiply(g, d > 0, out=work)
                grad_a[k], grad_b[k] = 2 * (work @ ones_b) - row, 2 * (ones_a @ work) - col
                if tied[k]:                       # ties: sign(0) = 0, not -1
                    np.multiply(g, d == 0, out=work)
                    grad_a[k] += work @ ones_b
                    grad_b[k] += ones_a @ work
            else:
                if p >= 2:                        # p |d|^(p-1) sign(d) = p d |d|^(p-2)
                    np.multiply(d, _power(np.abs(d), p - 2), out=work)
                else:
                    np.multiply(np.sign(d), _power(np.abs(d), p - 1), out=work)
                work *= p
                work *= g
                grad_a[k], grad_b[k] = work @ ones_b, ones_a @ work
            grad_b[k] *= -1
        grads = {0: grad_a.T, 1: grad_b.T}
        return [grads[argnum] for argnum in argnums]
    return vjp


defvjp_argnums(pairwise_lp, _pairwise_lp_vjp)


def _check_tau(tau):
    if not (np.isscalar(tau) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")


# The loss in row tiles (README §5, "Tiles"). A tile is T rows of S: for the
# products (p None or 2) a (T, B) block, for the other p two (T, D, B) arrays of
# coordinate differences. T is the largest count for which that block or array
# has at most LOSS_TILE_ELEMENTS numbers (2 MiB in float32, within this machine's
# 32 MiB L3 and of the order of its 1 MiB L2): of 2^16 ... 2^20, 2^19 was the fastest
# for L1 at every batch from 256 to 8192 and within 20 % of the fastest for the dot
# product (`python bench/scaling.py --tiles`, results/scaling.md). Smaller tiles
# cost Python overhead per tile, larger ones fall out of cache.
LOSS_TILE_ELEMENTS = 1 << 19


def tile_rows(batch, depth):
    """Rows of S per tile when each row holds batch x depth numbers."""
    return max(1, LOSS_TILE_ELEMENTS // (batch * depth))


def _product_tile(q, keys, keys_t, tau, p):
    """Scores S (T, C) of the query rows q against all keys for the dot product
    (p None) or -||a - b||² = 2 aᵀb - ||a||² - ||b||² (p = 2), one matrix product,
    and the map from weights W = d loss / d S to (grad q, transposed grad keys)
    (README §5, "Tiles")."""
    if p is None:
        scores = (q / tau) @ keys_t

        def backward(w):                 # w is the caller's buffer, scaled in place
            if tau != 1:
                w *= 1.0 / tau
            return w @ keys, q.T @ w
        return scores, backward
    scores = ((2.0 / tau) * q) @ keys_t
    scores -= np.sum(q * q, axis=1)[:, None] / tau
    scores -= np.sum(keys * keys, axis=1)[None, :] / tau

    def backward(w):                     # d S[i, j] / d q_i = 2 (k_j - q_i) / tau
        w *= 2.0 / tau
        return (w @ keys - np.sum(w, axis=1)[:, None] * q,
                q.T @ w - np.sum(w, axis=0)[None, :] * keys_t)
    return scores, backward


def _lp_tile(q, keys_t, tau, p, work, ties):
    """Scores S (T, C) = -Σ_k |d_ikj|^p / tau from the (T, D, C) differences
    d_ikj = q_ik - k_jk, and the map from W = d loss / d S to (grad q, transposed
    grad keys) (README §5, "Tiles"). With slope = d|d|^p / dd = p |d|^(p-1) sign(d), sign(0) = 0 at ties,
    d S / d q_ik = -slope / tau and d S / d k_jk = slope / tau. `work` holds two
    (T, D, C) buffers; `ties` says whether some d may be 0 (elsewhere
    sign(d) = d / |d|, one division, faster than numpy's sign; at d = 0 the
    division is skipped and the slope keeps d's value, 0)."""
    slope, size = work
    d = np.subtract(q[:, :, None], keys_t[None], out=slope)
    np.abs(d, out=size)
    if p == 1:
        np.divide(d, size, out=slope, where=size > 0) if ties else np.divide(d, size, out=slope)
    elif p >= 2:                         # p |d|^(p-1) sign(d) = p d |d|^(p-2)
        slope *= _power(size, p - 2)
        slope *= p
    else:
        np.multiply(np.sign(d), p * _power(size, p - 1), out=slope)
    scores = np.sum(_power(size, p), axis=1)
    scores *= -1.0 / tau

    def backward(w):
        if tau != 1:
            w *= 1.0 / tau
        grad_q = np.matmul(slope, w[:, :, None])[:, :, 0]     # Σ_j W_ij slope_ikj
        np.multiply(slope, w[:, None, :], out=slope)
        return -grad_q, np.sum(slope, axis=0)
    return scores, backward


def _tiles(queries, keys, tau, p):
    """(rows per tile, tile function): tile(part) gives the scores of the rows
    `part` of S and their backward map, from `_product_tile` or `_lp_tile`."""
    keys_t = np.ascontiguousarray(keys.T)
    if p in (None, 2):
        return (tile_rows(len(keys), 1),
                lambda part: _product_tile(queries[part], keys, keys_t, tau, p))
    depth = queries.shape[1]
    rows = min(tile_rows(len(keys), depth), len(queries))
    ties = queries is keys or bool(np.any(_shared_values(queries, keys)))
    work = np.empty((2, rows, depth, len(keys)), keys_t.dtype)

    def tile(part):
        q = queries[part]
        return _lp_tile(q, keys_t, tau, p, work[:, :len(q)], ties)
    return rows, tile


@primitive
def _mean_row_logsumexp_and_gradients(queries, keys, extra, tau, p):
    """(value, grad queries, grad keys, grad extra) of
    mean_i log(Σ_j exp S[i, j] + exp extra_i), S[i, j] = s(k_j, q_i) / tau, computed
    tile by tile: each tile's scores give its rows' log-sum-exp (maximum
    subtracted first) and, while they are in cache, their softmax weights
    W[i, j] = exp(S[i, j] - lse_i) / B, which are d value / d S (README §5, "Tiles")."""
    dtype = np.result_type(queries, keys)
    batch = len(queries)
    lse, grad_extra = np.empty(batch, dtype), np.empty(batch, dtype)
    grad_queries, grad_keys_t = np.empty(queries.shape, dtype), np.zeros(keys.shape[::-1], dtype)
    rows, tile = _tiles(queries, keys, tau, p)
    for start in range(0, batch, rows):
        part = slice(start, start + rows)
        scores, backward = tile(part)
        top = np.maximum(np.max(scores, axis=1), extra[part])
        scores -= top[:, None]
        weights = np.exp(scores, out=scores)
        extra_term = np.exp(extra[part] - top)
        total = np.sum(weights, axis=1) + extra_term
        lse[part] = top + np.log(total)
        share = (1.0 / (batch * total)).astype(dtype)
        weights *= share[:, None]
        grad_extra[part] = extra_term * share
        grad_queries[part], to_keys = backward(weights)
        grad_keys_t += to_keys
    return np.mean(lse), grad_queries, np.ascontiguousarray(grad_keys_t.T), grad_extra


def _mean_row_logsumexp_vjp(argnums, ans, args, kwargs):
    """The gradients were computed with the value: the VJP scales them by the
    upstream gradient of the value. The gradient outputs are not differentiable."""
    def vjp(g):
        if any(np.any(other) for other in g[1:]):
            raise NotImplementedError("the gradients of mean_row_logsumexp are outputs of a "
                                      "first-order primitive; they cannot be differentiated")
        return [ans[k + 1] * ans[k + 1].dtype.type(g[0]) for k in argnums]
    return vjp


defvjp_argnums(_mean_row_logsumexp_and_gradients, _mean_row_logsumexp_vjp)


def mean_row_logsumexp(queries, keys, tau, p=None, extra=None):
    """(B, D), (C, D), (B,) or None -> scalar:
    mean_i log(Σ_j exp(s(k_j, q_i) / tau) + exp(extra_i)), s as in `similarity_matrix`,
    without holding the (B, C) score matrix: it is computed in tiles of rows
    (README §5, "Tiles"). `extra` adds one term to each row's sum (none if None)."""
    dtype = np.result_type(queries.dtype, keys.dtype)
    if extra is None:
        extra = np.full(len(queries), -np.inf, dtype)
    elif anp.ndim(extra) == 0:
        extra = np.full(len(queries), extra, dtype)
    return _mean_row_logsumexp_and_gradients(queries, keys, extra, tau, p)[0]


def infonce(h, h_tilde, tau, p=None, self_pair=False, form="paper"):
    """(B, D), (B, D) -> scalar: the mean InfoNCE loss over the batch (README §5).

    form "paper": l_i = -S[i, i] + log Σ_j exp S[i, j], the positive inside the sum
    and the other B - 1 anchors as negatives of each positive h_tilde_i. With
    `self_pair`, each row's sum also holds exp(s(h_i, h_i) / tau).
    form "official", the reference code's row: l_i = -P_i + log(exp P_i +
    Σ_j exp(s(h_i, h_j) / tau)) with P_i = s(h_i, h_tilde_i) / tau, every anchor j
    (i itself included) a negative of the anchor h_i. Its sum already holds the
    self pair (j = i), so `self_pair=True` with it is a ValueError.
    The sums over j are computed in row tiles (`mean_row_logsumexp`)."""
    _check_tau(tau)
    if form == "official":
        if self_pair:
            raise ValueError("form 'official' already holds the self pair (j = i); "
                             "self_pair must be False with it")
        positive = positive_scores(h, h_tilde, tau, p)
        return mean_row_logsumexp(h, h, tau, p, extra=positive) - anp.mean(positive)
    if form != "paper":
        raise ValueError(f"form must be one of {', '.join(LOSS_FORMS)}; got {form!r}")
    extra = self_similarity(h, tau, p) if self_pair else None
    return mean_row_logsumexp(h_tilde, h, tau, p, extra) + alignment(h, h_tilde, tau, p)


def corrected_infonce(h, h_tilde, h_negative, tau, p=None):
    """(B, D), (B, D), (B, M, D) -> scalar: the support-corrected loss (README §5):
    l_i = -P_i + log(exp P_i + Σ_j exp(s(h_i, h_negative[i, j]) / tau)), P_i the
    positive's score, each anchor against its own M negatives."""
    _check_tau(tau)
    positive = positive_scores(h, h_tilde, tau, p)
    if p is None:
        negative = anp.sum(h[:, None, :] * h_negative, axis=2) / tau
    else:
        negative = anp.sum(anp.abs(h[:, None, :] - h_negative) ** p, axis=2) * (-1.0 / tau)
    rows = anp.concatenate([positive[:, None], negative], axis=1)
    return anp.mean(logsumexp(rows, axis=1) - positive)


def precision_scale(precision):
    """sqrt(Λ̂ / 2), Λ̂ = softplus(λ): outputs scaled by it make the p = 2 similarity
    -||a - b||² the anisotropic one, -½ (a - b)ᵀ diag(Λ̂) (a - b) (README §5)."""
    return anp.sqrt(anp.logaddexp(0.0, precision) / 2.0)


def anisotropic_infonce(h, h_tilde, precision, tau=1.0, self_pair=False):
    """The paper's form (README §5) with s(a, b) = -½ (a - b)ᵀ diag(softplus(λ)) (a - b),
    λ = precision: the p = 2 loss of the outputs scaled by precision_scale."""
    scale = precision_scale(precision)
    return infonce(h * scale, h_tilde * scale, tau, 2, self_pair)


def positive_scores(h, h_tilde, tau, p=None):
    """(B, D), (B, D) -> (B,): s(h_i, h_tilde_i) / tau, the diagonal of S (README §5)."""
    if p is None:
        return anp.sum(h * h_tilde, axis=1) / tau
    return anp.sum(anp.abs(h - h_tilde) ** p, axis=1) * (-1.0 / tau)


def self_similarity(h, tau, p=None):
    """(B, D) -> (B,) or 0: s(h_i, h_i) / tau, which is ||h_i||² / tau for the dot
    product and 0 for -||a - b||_p^p (README §5: the self pair)."""
    if p is None:
        return anp.sum(h * h, axis=1) / tau
    return 0.0


def alignment(h, h_tilde, tau, p=None):
    """Alignment term of the asymptotic loss: -mean_i s(h_i, h_tilde_i) / tau."""
    _check_tau(tau)
    if p is None:
        return anp.sum(h * h_tilde) * (-1.0 / (tau * len(h)))
    return anp.sum(anp.abs(h - h_tilde) ** p) * (1.0 / (tau * len(h)))


def uniformity(h, h_tilde, tau, p=None):
    """Uniformity term of the asymptotic loss, estimated with the B - 1 negatives:
    mean_i log( (1/(B-1)) Σ_{j≠i} exp S[i, j] ) (README §5)."""
    _check_tau(tau)
    s = similarity_matrix(h, h_tilde, tau, p)
    off_diagonal = anp.where(np.eye(s.shape[0], dtype=bool), -np.inf, s)
    return anp.mean(logsumexp(off_diagonal, axis=1)) - math.log(s.shape[0] - 1)


def regression_loss(h, z):
    """Supervised baseline: mean over the batch of ||h - z||²."""
    return anp.mean(anp.sum((h - z) ** 2, axis=1))


# ----------------------------------------------------------------------------
# Theory: closed forms used by the tests (README §5)
# ----------------------------------------------------------------------------

def log_bessel_iv(nu, x):
    """log I_nu(x), modified Bessel function of the first kind, x > 0, from its
    power series Σ_k (x/2)^(2k+nu) / (k! Γ(k+nu+1))."""
    terms = int(x + 10 * math.sqrt(x) + 60)
    k = np.arange(terms)
    log_terms = ((2 * k + nu) * math.log(x / 2)
                 - np.array([math.lgamma(i + 1) + math.lgamma(i + nu + 1) for i in k]))
    return float(logsumexp(log_terms, axis=0))


def vmf_mean_cosine(n, kappa):
    """A_N(kappa) = I_{N/2}(kappa) / I_{N/2-1}(kappa): E[muᵀ z_tilde] under vMF."""
    return math.exp(log_bessel_iv(n / 2, kappa) - log_bessel_iv(n / 2 - 1, kappa))


def vmf_entropy(n, kappa):
    """H_vMF = -log C_N(kappa) - kappa A_N(kappa), with
    C_N(kappa) = kappa^(N/2-1) / ((2π)^(N/2) I_{N/2-1}(kappa))."""
    log_c = ((n / 2 - 1) * math.log(kappa) - (n / 2) * math.log(2 * math.pi)
             - log_bessel_iv(n / 2 - 1, kappa))
    return -log_c - kappa * vmf_mean_cosine(n, kappa)


def vmf_mean_exp(n, kappa):
    """m = E[exp(kappa uᵀv)] for u, v independent and uniform on S^{N-1}:
    Γ(N/2) (2/kappa)^(N/2-1) I_{N/2-1}(kappa), the mean of one negative's term."""
    return math.exp(math.lgamma(n / 2) + (n / 2 - 1) * math.log(2 / kappa)
                    + log_bessel_iv(n / 2 - 1, kappa))


def log_sphere_area(n):
    """log |S^{N-1}| = log(2 π^(N/2) / Γ(N/2))."""
    return math.log(2) + (n / 2) * math.log(math.pi) - math.lgamma(n / 2)


def theorem1_limit(n, kappa):
    """Limit of infonce - log(B-1) for the ideal encoder with tau = 1/kappa on the
    sphere: H_vMF(kappa) - log |S^{N-1}| (README §5, Theorem 1). With the self
    pair, a batch of B scores higher by about log(1 + e^kappa / ((B-1) m)), with
    m = E exp(kappa uᵀv) over independent uniform u, v (`vmf_mean_exp`); the
    excess vanishes as B grows, so the limit is the same."""
    return vmf_entropy(n, kappa) - log_sphere_area(n)


# ----------------------------------------------------------------------------
# Metrics (README §6)
# ----------------------------------------------------------------------------

def _check_pair(name_a, a, name_b, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must be 2-D arrays with the same number "
                         f"of rows, got shapes {a.shape} and {b.shape}")
    for name, arr in ((name_a, a), (name_b, b)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return a, b


def affine_fit(inputs, targets):
    """Least-squares coefficients C, (D + 1, N), of targets ≈ [inputs, 1] C (README §6)."""
    design = np.hstack([inputs, np.ones((len(inputs), 1))])
    coef, *_ = np.linalg.lstsq(design, targets, rcond=None)
    return coef


def affine_predict(coef, inputs):
    """[inputs, 1] C: the prediction of an affine map fitted by `affine_fit`."""
    return np.hstack([inputs, np.ones((len(inputs), 1))]) @ coef


def r2_per_dimension(z, prediction):
    """(B, N), (B, N) -> (N,): 1 - SSE/SST per latent dimension, SST around z's mean."""
    sse = np.sum((z - prediction) ** 2, axis=0)
    sst = np.sum((z - z.mean(axis=0)) ** 2, axis=0)
    return 1.0 - sse / sst


def linear_r2(z, h, z_eval=None, h_eval=None):
    """Mean over latent dimensions of R² = 1 - SSE/SST of the affine least-squares
    map h -> z fitted on (z, h), scored on (z_eval, h_eval) if given, else in-sample."""
    z, h = _check_pair("z", z, "h", h)
    if (z_eval is None) != (h_eval is None):
        raise ValueError("give both z_eval and h_eval, or neither")
    if z_eval is None:
        z_eval, h_eval = z, h
    else:
        z_eval, h_eval = _check_pair("z_eval", z_eval, "h_eval", h_eval)
        if z_eval.shape[1] != z.shape[1] or h_eval.shape[1] != h.shape[1]:
            raise ValueError(f"z_eval/h_eval have {z_eval.shape[1]}/{h_eval.shape[1]} columns, "
                             f"z/h have {z.shape[1]}/{h.shape[1]}")
    prediction = affine_predict(affine_fit(h, z), h_eval)
    return float(np.mean(r2_per_dimension(z_eval, prediction)))


def correlation_matrix(z, h):
    """(B, N), (B, D) -> (N, D) Pearson correlations; a constant column correlates 0."""
    zc, hc = z - z.mean(axis=0), h - h.mean(axis=0)
    z_norm, h_norm = np.linalg.norm(zc, axis=0), np.linalg.norm(hc, axis=0)
    denom = np.outer(z_norm, h_norm)
    return np.divide(zc.T @ hc, denom, out=np.zeros_like(denom), where=denom > 0)


def linear_assignment(cost):
    """(n, n) -> (n,) ints: the column assigned to each row in a one-to-one
    assignment of minimum total cost (Hungarian algorithm with potentials,
    shortest augmenting paths, O(n³))."""
    cost = np.asarray(cost, dtype=float)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be a square matrix, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("cost contains non-finite values (nan or inf)")
    n = cost.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)      # row and column potentials
    row_of = np.zeros(n + 1, dtype=int)          # row_of[j]: row matched to column j (1-based)
    for i in range(1, n + 1):
        row_of[0], j0 = i, 0
        min_slack, came_from = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=int)
        used = np.zeros(n + 1, dtype=bool)
        while row_of[j0] != 0:
            used[j0] = True
            i0 = row_of[j0]
            slack = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (slack < min_slack[1:])
            min_slack[1:][better] = slack[better]
            came_from[1:][better] = j0
            candidates = np.where(free, min_slack[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[row_of[used]] += delta
            v[used] -= delta
            min_slack[~used] -= delta
            j0 = j1
        while j0 != 0:                           # flip the augmenting path
            j1 = came_from[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    assignment = np.empty(n, dtype=int)
    assignment[row_of[1:] - 1] = np.arange(n)
    return assignment


def mcc(z, h):
    """Mean correlation coefficient: mean |Pearson ρ(z_i, h_π(i))| under the
    one-to-one matching π that maximises the sum of |ρ| (README §6)."""
    z, h = _check_pair("z", z, "h", h)
    if z.shape[1] != h.shape[1]:
        raise ValueError(f"mcc needs as many output as latent dimensions, got "
                         f"{h.shape[1]} and {z.shape[1]}")
    rho = np.abs(correlation_matrix(z, h))
    match = linear_assignment(-rho)
    return float(np.mean(rho[np.arange(len(match)), match]))


def orthogonality_gap(z, h):
    """Fit h ≈ A z + c by least squares and return sqrt(mean_k (s_k / rms(s) - 1)²)
    over the singular values s of A: the distance of A, scaled to unit RMS singular
    value, from its nearest orthogonal matrix, per dimension. 0 iff A ∝ orthogonal."""
    z, h = _check_pair("z", z, "h", h)
    s = np.linalg.svd(affine_fit(z, h)[:-1], compute_uv=False)
    s = s / np.sqrt(np.mean(s ** 2))
    return float(np.sqrt(np.mean((s - 1.0) ** 2)))


def evaluation_sets(cfg, mixing, rng):
    """Fresh (z, x) to fit the linear map and fresh (z, x) to score it, each of
    cfg.eval_size samples of p(z)."""
    z_fit, z_eval = (sample_marginal(cfg, cfg.eval_size, rng) for _ in range(2))
    return z_fit, observe(cfg, mixing, z_fit), z_eval, observe(cfg, mixing, z_eval)


def held_out_scores(z_fit, h_fit, z_eval, h_eval):
    """{"r2", "mcc"}: linear R² fitted on the first set and scored on the second,
    and the MCC of the second (README §6)."""
    return {"r2": linear_r2(z_fit, h_fit, z_eval, h_eval), "mcc": mcc(z_eval, h_eval)}


# ----------------------------------------------------------------------------
# Objectives, optimiser and one training step
# ----------------------------------------------------------------------------

def contrastive_objective(params, x, x_tilde, cfg):
    """InfoNCE of the encoder on a batch of positive pairs; both views go through
    the encoder in one stacked forward pass; with a learned precision, the
    anisotropic loss."""
    h_both = encode(params, anp.concatenate([x, x_tilde], axis=0), cfg.head, cfg.radius)
    h, h_tilde = anp.split(h_both, 2)            # its gradient is one concatenation
    if "precision" in params:
        return anisotropic_infonce(h, h_tilde, params["precision"], cfg.tau, cfg.self_pair)
    return infonce(h, h_tilde, cfg.tau, cfg.p, cfg.self_pair, cfg.loss_form)


def corrected_objective(params, x, x_tilde, x_negative, cfg):
    """The support-corrected loss of the encoder: anchors, positives and each anchor's
    M negatives (B, M, N) go through the encoder in one stacked forward pass."""
    batch, count, n = x_negative.shape
    stacked = anp.concatenate([x, x_tilde, anp.reshape(x_negative, (batch * count, n))], axis=0)
    h_all = encode(params, stacked, cfg.head, cfg.radius)
    h, h_tilde, h_negative = h_all[:batch], h_all[batch:2 * batch], h_all[2 * batch:]
    return corrected_infonce(h, h_tilde, anp.reshape(h_negative, (batch, count, -1)), cfg.tau, cfg.p)


def supervised_objective(params, x, z, cfg):
    """Regression of the raw encoder output (no head) onto the true latents."""
    return regression_loss(encode(params, x, "none"), z)


FIXED_PARAMETERS = ("whiten",)   # computed before training, never updated (README §4)


def trainable(params):
    """The parameters that training updates: all but FIXED_PARAMETERS."""
    return {key: value for key, value in params.items() if key not in FIXED_PARAMETERS}


def parameter_leaves(params):
    """The arrays of a parameter tree in a fixed order: dictionaries by sorted key,
    lists and tuples in order. Adam's moments and a checkpoint use this order."""
    if isinstance(params, dict):
        return [leaf for key in sorted(params) for leaf in parameter_leaves(params[key])]
    if isinstance(params, (list, tuple)):
        return [leaf for item in params for leaf in parameter_leaves(item)]
    return [params]


def with_leaves(params, leaves):
    """A tree shaped like `params` that holds `leaves` (an iterator, consumed in
    the order of `parameter_leaves`)."""
    if isinstance(params, dict):
        rebuilt = {key: with_leaves(params[key], leaves) for key in sorted(params)}
        return {key: rebuilt[key] for key in params}
    if isinstance(params, (list, tuple)):
        return type(params)(with_leaves(item, leaves) for item in params)
    return next(leaves)


def to_vector(arrays):
    """One vector holding the arrays in order (the layout of a checkpoint)."""
    return np.concatenate([np.ravel(a) for a in arrays])


def from_vector(vector, like):
    """Arrays shaped like the arrays `like`, cut from `vector` in order."""
    ends = np.cumsum([np.size(a) for a in like])
    return [piece.reshape(np.shape(a)) for piece, a in zip(np.split(vector, ends[:-1]), like)]


def encoder_from_vector(cfg, vector):
    """The encoder parameters of `cfg` whose leaves, in order, make up `vector`;
    ValueError if the vector has another length."""
    placeholder = (np.zeros(cfg.n), np.eye(cfg.n)) if cfg.whiten else None
    template = init_encoder(cfg.n, cfg.widths, cfg.head, np.random.default_rng(0), cfg.dtype,
                            cfg.radius, cfg.learn_radius, stage=placeholder,
                            learn_precision=cfg.learn_precision)
    leaves = parameter_leaves(template)
    if np.size(vector) != sum(a.size for a in leaves):
        raise ValueError(f"{np.size(vector)} numbers do not fit the encoder of this "
                         f"configuration ({sum(a.size for a in leaves)} parameters)")
    return with_leaves(template, iter(from_vector(np.asarray(vector, dtype=cfg.dtype), leaves)))


def adam_init(params):
    """Adam state: first and second moments, one array per trainable parameter
    array, and the step count."""
    leaves = parameter_leaves(trainable(params))
    return {"m": [np.zeros_like(w) for w in leaves], "v": [np.zeros_like(w) for w in leaves], "t": 0}


def adam_update(params, grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step, Algorithm 1 of Kingma & Ba (2015; README §5), as PyTorch writes it:
    w <- w - lr m_hat / (sqrt(v_hat) + eps), eps added after the bias correction of
    v; returns new (params, state). `grads` is a tree shaped like `params` or the
    list of its leaves in the order of `parameter_leaves`; `lr` is one rate, or one
    per leaf in that order. `params` is left
    untouched; the moment buffers of `state` are updated in place (they belong to
    the optimiser)."""
    t = state["t"] + 1
    v_scale = 1 / math.sqrt(1 - b2 ** t)
    leaves = parameter_leaves(params)
    rates = lr if isinstance(lr, (list, tuple)) else [lr] * len(leaves)
    new = []
    for w, g, m, v, rate in zip(leaves, parameter_leaves(grads), state["m"], state["v"], rates):
        step = rate / (1 - b1 ** t)
        scratch = np.empty_like(w)
        m *= b1                                  # m <- b1 m + (1 - b1) g
        m += np.multiply(g, 1 - b1, out=scratch)
        np.multiply(g, g, out=scratch)           # v <- b2 v + (1 - b2) g²
        scratch *= 1 - b2
        v *= b2
        v += scratch
        np.sqrt(v, out=scratch)                  # sqrt(v_hat) + eps
        scratch *= v_scale
        scratch += eps
        np.divide(m, scratch, out=scratch)       # w <- w - lr/(1 - b1^t) m / (sqrt(v_hat) + eps)
        scratch *= step
        new.append(w - scratch)
    return with_leaves(params, iter(new)), {"m": state["m"], "v": state["v"], "t": t}


def learning_rate(cfg, step):
    """Learning rate at `step` (0-based): linear warm-up, then constant, a cosine
    decay from cfg.lr to cfg.lr_final over cfg.steps, or lr sqrt(T / (T + t)) with
    T = cfg.lr_timescale and t the steps since the warm-up (README §5: optimiser
    and schedule)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_timescale is not None:
        return cfg.lr * math.sqrt(cfg.lr_timescale / (cfg.lr_timescale + step - cfg.warmup))
    if cfg.lr_final is None:
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * min(progress, 1.0)))


def self_pair_active(cfg, step):
    """Whether the loss of `step` (0-based) holds the self pair: from the start
    until cfg.self_pair_until, when it is used as a warm start (README §5)."""
    return cfg.self_pair and (cfg.self_pair_until is None or step < cfg.self_pair_until)


def leaf_rates(free, cfg, lr):
    """lr, or one rate per leaf when the precision λ has a rate of its own: its
    share cfg.precision_lr / cfg.lr of the schedule's rate (README §5)."""
    if cfg.precision_lr is None or "precision" not in free:
        return lr
    own = {key: lr * cfg.precision_lr / cfg.lr if key == "precision" else lr for key in free}
    return [rate for key in sorted(free) for rate in [own[key]] * len(parameter_leaves(free[key]))]


def train_step(objective, params, state, batch, cfg, lr):
    """One optimisation step of `objective(params, *batch, cfg)`; returns
    (loss, params, state). The gradient is taken with respect to the flat list of
    trainable parameter arrays, in the order of `parameter_leaves`, which is the
    order Adam reads them in: autograd then tracks one list instead of the nested
    tree, which saves about half a millisecond a step and changes no number (README
    "Speed"). Fixed parameters (the whitening stage) pass through unchanged."""
    free, fixed = trainable(params), {k: params[k] for k in FIXED_PARAMETERS if k in params}

    def of_leaves(leaves):
        return objective({**with_leaves(free, iter(leaves)), **fixed}, *batch, cfg)
    loss, grads = value_and_grad(of_leaves)(parameter_leaves(free))
    free, state = adam_update(free, grads, state, leaf_rates(free, cfg, lr))
    return float(loss), {**free, **fixed}, state
