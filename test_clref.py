"""Tests: each states one claim of the paper or one property of the code, and
compares against something independent (finite differences, brute force, a
double loop, a closed form)."""
import csv
import itertools
import math
import os

import numpy as np
import pytest

import clref as C


def rng(seed=0):
    return np.random.default_rng(seed)


def random_orthogonal(n, generator):
    q, r = np.linalg.qr(generator.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------
# Gradients: autograd against central finite differences, float64
# ----------------------------------------------------------------------------

GRADIENT_CASES = [  # (head, p, learn_radius, self_pair)
    ("sphere", None, False, False),
    ("sphere", None, True, False),
    ("sphere", None, True, True),
    ("sphere", 1, False, False),
    ("box", 1, False, False),
    ("box", 2, False, False),
    ("none", 1, False, False),
    ("none", 1, False, True),
    ("none", 2, False, False),
    ("none", 2, False, True),
    ("none", 3, False, False),
    ("none", 3, False, True),
    ("none", 1.5, False, False),
]
OFFICIAL_GRADIENT_CASES = [("sphere", None, False, False), ("sphere", None, True, False),
                           ("none", 1, False, False), ("none", 2, False, False),
                           ("none", 3, False, False)]


def finite_difference_gradient(f, flat, eps=1e-5):
    grad = np.zeros_like(flat)
    for k in range(flat.size):
        step = np.zeros_like(flat)
        step[k] = eps
        grad[k] = (f(flat + step) - f(flat - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("form,head,p,learn_radius,self_pair",
                         [("paper", *case) for case in GRADIENT_CASES]
                         + [("official", *case) for case in OFFICIAL_GRADIENT_CASES])
def test_autograd_gradient_equals_finite_differences(form, head, p, learn_radius, self_pair):
    from autograd import grad
    from autograd.misc import flatten
    g = rng(1)
    cfg = C.Config(n=3, widths=(5, 4), head=head, p=p, tau=0.5, radius=1.3,
                   learn_radius=learn_radius, self_pair=self_pair, dtype="float64", loss_form=form)
    params = C.init_encoder(3, cfg.widths, head, g, "float64", 1.3, learn_radius)
    x, x_tilde = g.standard_normal((6, 3)), g.standard_normal((6, 3))
    flat, unflatten = flatten(params)

    def loss(theta):
        return C.contrastive_objective(unflatten(theta), x, x_tilde, cfg)

    auto = flatten(grad(C.contrastive_objective)(params, x, x_tilde, cfg))[0]
    numeric = finite_difference_gradient(loss, flat)
    rel = np.linalg.norm(auto - numeric) / np.linalg.norm(numeric)
    assert rel <= 1e-6, (f"{form} form, head={head} p={p} self_pair={self_pair}: autograd vs finite "
                         f"differences relative error {rel:.2e}")


def test_supervised_gradient_equals_finite_differences():
    from autograd import grad
    from autograd.misc import flatten
    g = rng(2)
    cfg = C.Config(n=3, widths=(5,), head="none", p=2, dtype="float64")
    params = C.init_encoder(3, cfg.widths, "none", g, "float64")
    x, z = g.standard_normal((6, 3)), g.standard_normal((6, 3))
    flat, unflatten = flatten(params)
    auto = flatten(grad(C.supervised_objective)(params, x, z, cfg))[0]
    numeric = finite_difference_gradient(lambda t: C.supervised_objective(unflatten(t), x, z, cfg), flat)
    rel = np.linalg.norm(auto - numeric) / np.linalg.norm(numeric)
    assert rel <= 1e-6, f"regression loss gradient relative error {rel:.2e}"


# ----------------------------------------------------------------------------
# Mixing g
# ----------------------------------------------------------------------------

def test_unmix_inverts_mix_and_mixing_entangles():
    g = rng(3)
    cfg = C.Config(n=10)
    mixing = C.make_mixing(10, 3, g, cond_pool=2000)
    z = C.sample_marginal(cfg, 4096, g)
    x = C.mix(mixing, z)
    err = np.max(np.abs(C.unmix(mixing, x) - z))
    assert err < 1e-10, f"unmix(mix(z)) differs from z by {err:.2e}"
    r2 = C.linear_r2(z, x)
    assert r2 < 0.9, f"mixed data are nearly linear in z (identity R² {r2:.3f}); g is not entangling"


def test_mixing_matrices_have_unit_columns_and_meet_the_condition_threshold():
    pool_rng, g = rng(4), rng(4)
    mats = C.make_mixing(5, 3, g, cond_pool=500, cond_quantile=0.01)
    threshold = np.quantile(np.linalg.cond(C._random_unit_column_matrices(500, 5, pool_rng)), 0.01)
    for w in mats:
        assert np.allclose(np.linalg.norm(w, axis=0), 1.0), "mixing columns are not unit-norm"
        assert np.linalg.cond(w) <= threshold, "a mixing matrix exceeds the condition threshold"


# ----------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("n,kappa", [(2, 0.5), (3, 1.0), (3, 10.0), (10, 1.0), (10, 10.0), (5, 100.0)])
def test_vmf_mean_cosine_matches_closed_form(n, kappa):
    g = rng(5)
    mu = C.sample_uniform_sphere(20000, n, g)
    z_tilde = C.sample_vmf(mu, kappa, g)
    cos = np.sum(mu * z_tilde, axis=1)
    expected = C.vmf_mean_cosine(n, kappa)
    se = cos.std() / math.sqrt(cos.size)
    assert abs(cos.mean() - expected) < 3 * se, (
        f"N={n} kappa={kappa}: mean cosine {cos.mean():.4f}, closed form A_N = {expected:.4f} (se {se:.4f})")
    assert np.allclose(np.linalg.norm(z_tilde, axis=1), 1.0), "vMF draws are not unit vectors"


def test_vmf_is_rotation_equivariant_in_distribution():
    """The direction orthogonal to mu is uniform: its mean over many draws is ~0."""
    g = rng(6)
    mu = np.tile(np.eye(4)[0], (20000, 1))
    z_tilde = C.sample_vmf(mu, 3.0, g)
    spread = z_tilde[:, 1:].mean(axis=0)
    se = z_tilde[:, 1:].std(axis=0) / math.sqrt(20000)
    assert np.all(np.abs(spread) < 4 * se), f"vMF draws are biased orthogonally to mu: {spread}"


@pytest.mark.parametrize("n,kept,kappa", [(3, 1, 1 / 0.3), (10, 1, 10.0), (6, 2, 4.0)])
def test_restricted_vmf_keeps_u_and_draws_the_rest_from_vmf_on_the_smaller_sphere(n, kept, kappa):
    """README §2, restricted support: u = z[:kept] is kept exactly, z_tilde is a unit
    vector, and w = v_tilde / r against v / r has the vMF mean cosine of S^(N-kept-1)."""
    cfg = C.check_config(C.Config(n=n, conditional="restricted_vmf", kept=kept, kappa=kappa))
    g = rng(41)
    z = C.sample_uniform_sphere(20000, n, g)
    z_tilde = C.sample_conditional(cfg, z, g)
    assert np.array_equal(z_tilde[:, :kept], z[:, :kept]), "the kept coordinates moved"
    assert np.allclose(np.linalg.norm(z_tilde, axis=1), 1.0)
    r = np.linalg.norm(z[:, kept:], axis=1, keepdims=True)
    cos = np.sum(z[:, kept:] / r * z_tilde[:, kept:] / r, axis=1)
    expected, se = C.vmf_mean_cosine(n - kept, kappa), cos.std() / math.sqrt(cos.size)
    assert abs(cos.mean() - expected) < 4 * se, (cos.mean(), expected, se)
    full = C.sample_conditional(cfg.replace(conditional="vmf"), z, g)
    assert not np.allclose(full[:, :kept], z[:, :kept]), "the full-support conditional kept u"


@pytest.mark.parametrize("n,kept", [(3, 0), (3, 2), (10, 9)])
def test_restricted_vmf_refuses_a_kept_count_without_a_sphere_left(n, kept):
    with pytest.raises(ValueError, match="kept must be an integer from 1 to n - 2"):
        C.check_config(C.Config(n=n, conditional="restricted_vmf", kept=kept))


@pytest.mark.parametrize("beta,lam", [(1.0, 0.5), (2.0, 1.0), (3.0, 0.05), (0.7, 2.0)])
def test_gennorm_variance_matches_closed_form(beta, lam):
    u = C.sample_gennorm(200000, beta, lam, rng(7))
    var = lam ** 2 * math.gamma(3 / beta) / math.gamma(1 / beta)
    m4 = lam ** 4 * math.gamma(5 / beta) / math.gamma(1 / beta)
    se = math.sqrt((m4 - var ** 2) / u.size)
    assert abs(np.mean(u ** 2) - var) < 3 * se, (
        f"beta={beta} lam={lam}: variance {np.mean(u ** 2):.5g}, closed form {var:.5g} (se {se:.2g})")


@pytest.mark.parametrize("conditional", ["normal", "laplace", "gennorm"])
def test_box_samples_stay_in_the_box(conditional):
    cfg = C.Config(space="box", n=4, box_low=-0.5, box_high=2.0, conditional=conditional,
                   sigma=0.3, lam=0.3, beta=3.0, head="none", p=1)
    z, z_tilde = C.sample_pairs(cfg, 5000, rng(8))
    for name, a in (("z", z), ("z_tilde", z_tilde)):
        assert a.min() >= -0.5 and a.max() <= 2.0, f"{name} left the box: [{a.min()}, {a.max()}]"
    assert np.abs(z - z_tilde).max() > 0, "the conditional added no noise"


def test_truncated_marginal_in_the_box():
    cfg = C.Config(space="box", n=3, marginal="laplace", marginal_scale=0.5,
                   conditional="laplace", head="none", p=1)
    z = C.sample_marginal(cfg, 5000, rng(9))
    assert z.min() >= 0 and z.max() <= 1, "the truncated marginal left the box"


@pytest.mark.parametrize("marginal,conditional", [("uniform", "vmf"), ("uniform", "normal"),
                                                  ("uniform", "laplace"), ("normal", "vmf"),
                                                  ("gennorm", "gennorm")])
def test_sphere_samples_have_unit_norm(marginal, conditional):
    cfg = C.Config(n=5, marginal=marginal, conditional=conditional, kappa=5.0)
    z, z_tilde = C.sample_pairs(cfg, 2000, rng(10))
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0), f"{marginal} marginal is off the sphere"
    assert np.allclose(np.linalg.norm(z_tilde, axis=1), 1.0), f"{conditional} conditional is off the sphere"


def test_nonuniform_sphere_marginal_concentrates_around_e1():
    cfg = C.Config(n=5, marginal="normal", marginal_scale=0.3)
    z = C.sample_marginal(cfg, 5000, rng(11))
    assert z[:, 0].mean() > 0.8, f"mean first coordinate {z[:, 0].mean():.3f}; expected mass near e_1"


def test_laplace_conditional_noise_scale_on_unbounded_space():
    cfg = C.Config(space="unbounded", n=3, marginal="normal", conditional="laplace", lam=0.2,
                   head="none", p=1)
    z, z_tilde = C.sample_pairs(cfg, 100000, rng(12))
    var = np.var(z_tilde - z)
    se = math.sqrt((24 * 0.2 ** 4 - (2 * 0.2 ** 2) ** 2) / (3 * 100000))
    assert abs(var - 2 * 0.2 ** 2) < 4 * se, f"Laplace noise variance {var:.5f}, expected {2 * 0.04}"


def test_same_seed_same_samples_and_parameters():
    cfg = C.Config(n=4, kappa=3.0, widths=(8,))

    def draw(seed):
        g = rng(seed)
        mixing = C.make_mixing(4, 2, g, cond_pool=100)
        params = C.init_encoder(4, cfg.widths, "sphere", g)
        return (*C.sample_pairs(cfg, 100, g), *mixing, params["layers"][0][0])

    for a, b in zip(draw(5), draw(5)):
        assert np.array_equal(a, b), "the same seed gave different numbers"
    assert not np.array_equal(draw(5)[0], draw(6)[0]), "different seeds gave the same samples"


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------

def sphere_data(n=5, batch=4000, seed=13):
    g = rng(seed)
    cfg = C.Config(n=n)
    mixing = C.make_mixing(n, 3, g, cond_pool=500)
    return g, mixing, C.sample_marginal(cfg, batch, g), C.sample_marginal(cfg, batch, g)


def test_ideal_encoder_scores_one():
    g, mixing, z, z_eval = sphere_data()
    h, h_eval = C.unmix(mixing, C.mix(mixing, z)), C.unmix(mixing, C.mix(mixing, z_eval))
    assert C.linear_r2(z, h, z_eval, h_eval) == pytest.approx(1.0, abs=1e-10), "ideal encoder R² != 1"
    assert C.mcc(z_eval, h_eval) == pytest.approx(1.0, abs=1e-10), "ideal encoder MCC != 1"


def test_rotation_scores_r2_one_and_mcc_below_one():
    g, _, z, z_eval = sphere_data()
    q = random_orthogonal(5, g)
    r2 = C.linear_r2(z, z @ q, z_eval, z_eval @ q)
    assert r2 == pytest.approx(1.0, abs=1e-10), f"R² of a rotation is {r2}"
    assert C.mcc(z_eval, z_eval @ q) < 0.9, "MCC does not see a generic rotation"
    assert C.orthogonality_gap(z_eval, 3.0 * z_eval @ q) < 1e-8, "gap of a scaled rotation is not 0"


def test_orthogonality_gap_sees_non_isometric_maps():
    g, _, z, _ = sphere_data()
    stretch = np.diag([1.0, 1.0, 1.0, 1.0, 3.0])
    assert C.orthogonality_gap(z, z @ stretch) > 0.3, "gap misses an anisotropic stretch"


def test_signed_scaled_permutation_scores_mcc_one():
    g, _, z, _ = sphere_data()
    perm = g.permutation(5)
    h = z[:, perm] * np.array([-2.0, 0.5, 3.0, -1.0, 7.0]) + 4.0
    assert C.mcc(z, h) == pytest.approx(1.0, abs=1e-12), "MCC of a signed, scaled permutation != 1"


def test_independent_noise_scores_near_zero():
    g, _, z, z_eval = sphere_data(batch=20000)
    h, h_eval = g.standard_normal(z.shape), g.standard_normal(z.shape)
    assert C.linear_r2(z, h, z_eval, h_eval) < 0.01, "held-out R² of noise is not ~0"
    assert C.mcc(z_eval, h_eval) < 0.03, "MCC of noise is not ~0"


def brute_force_assignment_cost(cost):
    n = len(cost)
    return min(sum(cost[i, perm[i]] for i in range(n)) for perm in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", range(1, 8))
def test_linear_assignment_equals_brute_force(n):
    g = rng(100 + n)
    for trial in range(6):
        if trial % 2:  # integer costs in a small range: many ties
            cost = g.integers(0, 3, size=(n, n)).astype(float)
        else:
            cost = g.standard_normal((n, n))
        match = C.linear_assignment(cost)
        assert sorted(match) == list(range(n)), f"assignment {match} is not a permutation"
        got = cost[np.arange(n), match].sum()
        assert got == pytest.approx(brute_force_assignment_cost(cost), abs=1e-12), (
            f"n={n}: Hungarian cost {got}, brute force {brute_force_assignment_cost(cost)}\n{cost}")


def test_linear_assignment_matches_scipy_when_available():
    optimize = pytest.importorskip("scipy.optimize")
    g = rng(200)
    for n in (10, 30):
        cost = g.standard_normal((n, n))
        rows, cols = optimize.linear_sum_assignment(cost)
        ours = C.linear_assignment(cost)
        assert cost[np.arange(n), ours].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-10)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------

def infonce_double_loop(h, h_tilde, tau, p, self_pair=False):
    """The loss of README §5 written out sample by sample."""
    def s(a, b):
        return float(np.dot(a, b)) if p is None else -float(np.sum(np.abs(a - b) ** p))

    total = 0.0
    for i in range(len(h)):
        scores = [s(h[j], h_tilde[i]) / tau for j in range(len(h))]
        terms = scores + ([s(h[i], h[i]) / tau] if self_pair else [])
        top = max(terms)
        total += -scores[i] + top + math.log(sum(math.exp(t - top) for t in terms))
    return total / len(h)


@pytest.mark.parametrize("p", [None, 1, 2, 3, 1.5])
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_infonce_equals_double_loop(p, tau):
    g = rng(14)
    h, h_tilde = g.standard_normal((17, 4)), g.standard_normal((17, 4))
    got, want = C.infonce(h, h_tilde, tau, p), infonce_double_loop(h, h_tilde, tau, p)
    assert got == pytest.approx(want, abs=1e-12, rel=1e-12), f"p={p} tau={tau}: {got} vs loop {want}"


def official_infonce_double_loop(h, h_tilde, tau, p):
    """The reference code's row (README §5) written out sample by sample: the positive,
    then every anchor j, i itself included, contrasted with the anchor h_i."""
    def s(a, b):
        return float(np.dot(a, b)) if p is None else -float(np.sum(np.abs(a - b) ** p))

    total = 0.0
    for i in range(len(h)):
        positive = s(h[i], h_tilde[i]) / tau
        terms = [positive] + [s(h[i], h[j]) / tau for j in range(len(h))]
        top = max(terms)
        total += -positive + top + math.log(sum(math.exp(t - top) for t in terms))
    return total / len(h)


@pytest.mark.parametrize("p", [None, 1, 2, 3])
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_official_form_equals_double_loop(p, tau):
    g = rng(26)
    h, h_tilde = g.standard_normal((15, 4)), g.standard_normal((15, 4))
    got = C.infonce(h, h_tilde, tau, p, form="official")
    want = official_infonce_double_loop(h, h_tilde, tau, p)
    assert got == pytest.approx(want, abs=1e-12, rel=1e-12), f"p={p} tau={tau}: {got} vs loop {want}"
    assert got != pytest.approx(C.infonce(h, h_tilde, tau, p), rel=1e-6), "the forms coincide"


def test_official_form_refuses_the_self_pair_it_already_holds():
    h = rng(27).standard_normal((4, 3))
    with pytest.raises(ValueError, match="already holds the self pair"):
        C.infonce(h, h, 1.0, 1, self_pair=True, form="official")
    with pytest.raises(ValueError, match="self_pair"):
        C.check_config(C.Config(loss_form="official", self_pair=True))
    with pytest.raises(ValueError, match="form"):
        C.infonce(h, h, 1.0, 1, form="reference")


@pytest.mark.parametrize("p", [None, 2])
def test_official_and_paper_forms_agree_in_expectation(p):
    """For ideal-encoder pairs on the sphere (h = z, vMF kappa = 1: the pair is
    exchangeable), the official row and the paper's row with the self pair have the
    same distribution, so the mean of their difference over many batches is 0 within
    its standard error. The plain paper form differs from both by the self pair's
    share, which vanishes as B grows (README §5)."""
    g = rng(28)
    cfg = C.Config(n=10, kappa=1.0)
    diffs, excess = [], []
    for _ in range(40):
        z, z_tilde = C.sample_pairs(cfg, 1024, g)
        official = C.infonce(z, z_tilde, 1.0, p, form="official")
        diffs.append(official - C.infonce(z, z_tilde, 1.0, p, self_pair=True))
        excess.append(official - C.infonce(z, z_tilde, 1.0, p))
    mean, se = np.mean(diffs), np.std(diffs, ddof=1) / math.sqrt(len(diffs))
    assert abs(mean) < 3 * se, f"p={p}: official - paper with self pair = {mean:.2e} ± {se:.2e}"
    assert np.mean(excess) > 0, f"p={p}: official - plain paper = {np.mean(excess):.2e}"
    if p is None:  # the self pair's share: log(1 + e^kappa / ((B-1) m)), as in Theorem 1's test
        estimate = math.log(1 + math.e / (1023 * C.vmf_mean_exp(10, 1.0)))
        assert np.mean(excess) == pytest.approx(estimate, rel=0.1), (np.mean(excess), estimate)


def test_l1_gradient_at_ties_uses_sign_zero():
    """Where a coordinate of h equals one of h_tilde, |d| has gradient sign(0) = 0;
    the gradient matches a loop over i, j, k written from README §5."""
    from autograd import grad
    g = rng(22)
    h = g.standard_normal((6, 3))
    h_tilde = h + 0.3 * g.standard_normal((6, 3))
    h_tilde[:3, 1] = h[:3, 1]                    # ties on the positive pairs
    h_tilde[4, 2] = h[1, 2]                      # and with a negative
    tau = 0.7
    s = np.array([[-np.abs(h[j] - h_tilde[i]).sum() / tau for j in range(6)] for i in range(6)])
    weight = np.exp(s - s.max(axis=1, keepdims=True))
    weight /= weight.sum(axis=1, keepdims=True)  # d loss / d S[i, j] = (softmax - I) / B
    weight = (weight - np.eye(6)) / 6
    want_h, want_h_tilde = np.zeros_like(h), np.zeros_like(h)
    for i in range(6):
        for j in range(6):
            for k in range(3):
                slope = np.sign(h_tilde[i, k] - h[j, k]) / tau   # dS[i, j] / dh[j, k]
                want_h[j, k] += weight[i, j] * slope
                want_h_tilde[i, k] -= weight[i, j] * slope
    got_h, got_h_tilde = grad(C.infonce, 0)(h, h_tilde, tau, 1), grad(C.infonce, 1)(h, h_tilde, tau, 1)
    assert np.allclose(got_h, want_h, atol=1e-12), f"grad h at ties:\n{got_h}\nloop:\n{want_h}"
    assert np.allclose(got_h_tilde, want_h_tilde, atol=1e-12), "grad h_tilde at ties differs from the loop"


@pytest.mark.parametrize("p", [None, 1, 2, 3])
def test_infonce_with_self_pair_equals_double_loop(p):
    g = rng(23)
    h, h_tilde = 1.7 * g.standard_normal((13, 4)), 1.7 * g.standard_normal((13, 4))
    got, want = C.infonce(h, h_tilde, 0.4, p, self_pair=True), infonce_double_loop(h, h_tilde, 0.4, p, True)
    assert got == pytest.approx(want, abs=1e-12, rel=1e-12), f"p={p}: {got} vs loop {want}"
    assert got > C.infonce(h, h_tilde, 0.4, p), "the self pair did not add to the loss"


@pytest.mark.parametrize("p", [1, 2, 3])
def test_self_pair_stops_inflated_outputs_from_lowering_the_loss(p):
    """README §5: with an unnormalised head, once every positive is nearest to its
    anchor, scaling the outputs by c drives the loss to 0; with the self pair the
    loss stays >= mean_i -S[i, i], which grows with c."""
    g = rng(24)
    h = g.standard_normal((64, 5))
    h_tilde = h + 0.01 * g.standard_normal((64, 5))
    plain = [C.infonce(c * h, c * h_tilde, 1.0, p) for c in (1, 10, 100)]
    paired = [C.infonce(c * h, c * h_tilde, 1.0, p, self_pair=True) for c in (1, 10, 100)]
    floors = [C.alignment(c * h, c * h_tilde, 1.0, p) for c in (1, 10, 100)]  # mean_i -S[i, i]
    assert plain[0] > 0.1 and max(plain[1:]) < 1e-3 and plain[2] < 1e-6, f"without the self pair: {plain}"
    assert all(v >= floor - 1e-12 for v, floor in zip(paired, floors)), f"{paired} below {floors}"
    assert paired[2] > paired[0], f"with the self pair, inflating the outputs lowered the loss: {paired}"


def test_self_pair_excess_over_theorem1_matches_its_estimate():
    """On the sphere (r = 1, tau = 1/kappa) the self pair adds exp(kappa) to each
    row: the finite-batch value rises by about log(1 + e^kappa / ((B-1) m))."""
    g = rng(25)
    n, kappa, batch = 10, 10.0, 8192
    z, z_tilde = C.sample_pairs(C.Config(n=n, kappa=kappa), batch, g)
    excess = C.infonce(z, z_tilde, 1 / kappa, self_pair=True) - C.infonce(z, z_tilde, 1 / kappa)
    estimate = math.log(1 + math.exp(kappa) / ((batch - 1) * C.vmf_mean_exp(n, kappa)))
    assert excess == pytest.approx(estimate, rel=0.1), f"excess {excess:.4f}, estimate {estimate:.4f}"


def test_self_pair_until_drops_the_self_pair_at_that_step():
    cfg = C.Config(self_pair=True, self_pair_until=3)
    assert [C.self_pair_active(cfg, step) for step in range(5)] == [True, True, True, False, False]
    assert all(C.self_pair_active(cfg.replace(self_pair_until=None), step) for step in (0, 10 ** 6))
    assert not C.self_pair_active(C.Config(), 0)
    with pytest.raises(ValueError, match="needs self_pair"):
        C.check_config(C.Config(self_pair_until=3))


def test_a_run_with_the_self_pair_as_warm_start_trains_the_plain_loss_after_it(tmp_path):
    """Up to self_pair_until a run matches the run with the self pair throughout
    (same seed, same batches); after it, it trains another loss."""
    import train
    cfg = TINY.replace(steps=20, eval_every=10, supervised_steps=0)
    logs = {}
    for name, variant in (("until", cfg.replace(self_pair=True, self_pair_until=10)),
                          ("always", cfg.replace(self_pair=True))):
        (tmp_path / name).mkdir()
        train.run(variant, str(tmp_path / name), "sphere_vmf_k10", say=lambda line: None)
        with open(tmp_path / name / "log.csv") as f:
            logs[name] = [(row["loss"], row["r2"], row["mcc"]) for row in csv.DictReader(f)]
    assert logs["until"][0] == logs["always"][0], "before the switch the run left the self pair's"
    assert logs["until"][1][0] != logs["always"][1][0], "after the switch the loss is the same"


def untiled_infonce(h, h_tilde, tau, p, self_pair=False, form="paper"):
    """The loss of README §5 from the whole (B, B) score matrix: similarity_matrix,
    then one log-sum-exp per row, differentiated by autograd."""
    import autograd.numpy as anp
    if form == "official":
        positive = C.positive_scores(h, h_tilde, tau, p)
        rows = C.logsumexp(C.similarity_matrix(h, h, tau, p), axis=1)
        return anp.mean(anp.logaddexp(rows, positive) - positive)
    rows = C.logsumexp(C.similarity_matrix(h, h_tilde, tau, p), axis=1)
    if self_pair:
        rows = anp.logaddexp(rows, C.self_similarity(h, tau, p))
    return anp.mean(rows) + C.alignment(h, h_tilde, tau, p)


TILE_CASES = [(p, form, self_pair) for p in (None, 1, 2, 3, 1.5)
              for form, self_pair in (("paper", False), ("paper", True), ("official", False))]


@pytest.mark.parametrize("p,form,self_pair", TILE_CASES)
@pytest.mark.parametrize("batch", [1, 2, 37])
def test_tiled_loss_equals_the_whole_score_matrix_in_float64(monkeypatch, batch, p, form, self_pair):
    """README §5, "Tiles": with tiles of 8 rows (so 37 rows end in a partial tile)
    the value and both gradients equal the untiled computation to 1e-12."""
    from autograd import value_and_grad
    monkeypatch.setattr(C, "LOSS_TILE_ELEMENTS", 8 * batch * 5)   # 8 rows of (5, batch)
    g = rng(40)
    h = 2 * g.standard_normal((batch, 5))
    h_tilde = h + 0.3 * g.standard_normal((batch, 5))
    h_tilde[: batch // 2, 1] = h[: batch // 2, 1]                # ties on some positives
    got = value_and_grad(C.infonce, (0, 1))(h, h_tilde, 0.4, p, self_pair, form)
    want = value_and_grad(untiled_infonce, (0, 1))(h, h_tilde, 0.4, p, self_pair, form)
    where = f"B={batch} p={p} form={form} self_pair={self_pair}"
    assert got[0] == pytest.approx(want[0], abs=1e-12, rel=1e-12), f"{where}: value {got[0]} vs {want[0]}"
    for name, a, b in zip(("h", "h_tilde"), got[1], want[1]):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), f"{where}: grad {name} differs by {np.abs(a - b).max():.1e}"


@pytest.mark.parametrize("p,form,self_pair", TILE_CASES)
def test_tiled_loss_is_as_accurate_in_float32(p, form, self_pair):
    """In float32 the tiled loss (B = 700, several tiles for the Lp losses) is as
    close to the float64 truth as the untiled one: its error is at most twice the
    untiled error, or 1e-6 of the value's (gradient's) scale."""
    from autograd import value_and_grad
    g = rng(41)
    h = g.standard_normal((700, 10))
    h_tilde = h + 0.3 * g.standard_normal((700, 10))
    truth = value_and_grad(untiled_infonce, (0, 1))(h, h_tilde, 0.5, p, self_pair, form)
    h32, h_tilde32 = h.astype(np.float32), h_tilde.astype(np.float32)
    tiled = value_and_grad(C.infonce, (0, 1))(h32, h_tilde32, 0.5, p, self_pair, form)
    untiled = value_and_grad(untiled_infonce, (0, 1))(h32, h_tilde32, 0.5, p, self_pair, form)
    assert np.asarray(tiled[0]).dtype == np.float32 and tiled[1][0].dtype == np.float32
    pieces = [("value", tiled[0], untiled[0], truth[0])] + [
        (f"grad {name}", a, b, c) for name, a, b, c in zip(("h", "h_tilde"), tiled[1], untiled[1], truth[1])]
    for name, got, old, want in pieces:
        scale = max(np.abs(want).max(), abs(float(np.mean(C.positive_scores(h, h_tilde, 0.5, p)))))
        error, old_error = np.abs(got - want).max(), np.abs(old - want).max()
        assert error <= max(2 * old_error, 1e-6 * scale), (
            f"p={p} form={form} self_pair={self_pair}: {name} error {error:.1e}, untiled {old_error:.1e}")


@pytest.mark.parametrize("p", [None, 1])
def test_tiled_loss_never_holds_a_batch_by_batch_array(p):
    """At B = 2048 in float32 the loss and its gradients allocate, at their peak,
    less than one (B, B) score matrix (16 MiB): the tiles are all that is held."""
    import tracemalloc
    from autograd import value_and_grad
    g = rng(42)
    h = g.standard_normal((2048, 10)).astype(np.float32)
    h_tilde = (h + 0.05 * g.standard_normal((2048, 10))).astype(np.float32)
    tracemalloc.start()
    try:
        value_and_grad(C.infonce, (0, 1))(h, h_tilde, 1.0, p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2048 * 2048 * 4, f"p={p}: peak {peak / 2**20:.1f} MiB, a (B, B) array is 16 MiB"


def test_infonce_is_stable_for_large_similarities():
    g = rng(15)
    h = C.normalize(g.standard_normal((8, 3)))
    value = C.infonce(h, h, 1e-4)
    assert np.isfinite(value), "infonce overflowed at tau = 1e-4"
    assert value == pytest.approx(infonce_double_loop(h, h, 1e-4, None), rel=1e-9)


def test_alignment_plus_uniformity_match_infonce_for_large_batches():
    g = rng(16)
    z, z_tilde = C.sample_pairs(C.Config(n=3, kappa=2.0), 4000, g)
    gap = C.infonce(z, z_tilde, 0.5) - math.log(3999)
    parts = C.alignment(z, z_tilde, 0.5) + C.uniformity(z, z_tilde, 0.5)
    assert gap == pytest.approx(parts, abs=2e-3), f"loss - log M = {gap}, alignment + uniformity = {parts}"


def test_dot_loss_is_invariant_to_rotations():
    g = rng(17)
    h, h_tilde = C.normalize(g.standard_normal((32, 5))), C.normalize(g.standard_normal((32, 5)))
    q = random_orthogonal(5, g)
    assert C.infonce(h @ q, h_tilde @ q, 0.3) == pytest.approx(C.infonce(h, h_tilde, 0.3), abs=1e-12)


def test_l1_loss_sees_rotations_but_not_signed_permutations():
    g = rng(18)
    h, h_tilde = g.standard_normal((32, 5)), g.standard_normal((32, 5))
    base = C.infonce(h, h_tilde, 1.0, p=1)
    signed_perm = np.eye(5)[g.permutation(5)] * np.array([1, -1, -1, 1, -1])
    assert C.infonce(h @ signed_perm, h_tilde @ signed_perm, 1.0, p=1) == pytest.approx(base, abs=1e-12)
    q = random_orthogonal(5, g)
    rotated = C.infonce(h @ q, h_tilde @ q, 1.0, p=1)
    assert abs(rotated - base) > 1e-3, "the L1 loss did not change under a generic rotation"


@pytest.mark.parametrize("n,kappa", [(3, 1.0), (3, 10.0), (10, 1.0), (10, 10.0)])
def test_theorem1_ideal_encoder_reaches_the_entropy_bound(n, kappa):
    """Theorem 1: for h = identity and tau = 1/kappa, loss - log M -> H_vMF - log|S^{N-1}|."""
    g = rng(19)
    batch = 8192
    z, z_tilde = C.sample_pairs(C.Config(n=n, kappa=kappa), batch, g)
    value = C.infonce(z, z_tilde, 1.0 / kappa) - math.log(batch - 1)
    limit = C.theorem1_limit(n, kappa)
    assert abs(value - limit) < 0.02, f"N={n} kappa={kappa}: {value:.4f}, theory {limit:.4f}"
    stretch = np.ones(n)
    stretch[0] = 2.0
    h, h_tilde = C.normalize(z * stretch), C.normalize(z_tilde * stretch)
    worse = C.infonce(h, h_tilde, 1.0 / kappa) - math.log(batch - 1)
    assert worse > value + 0.01, f"a non-isometric h scored {worse:.4f}, not above the ideal {value:.4f}"


# ----------------------------------------------------------------------------
# Optimiser
# ----------------------------------------------------------------------------

def test_adam_first_step_moves_each_parameter_by_lr():
    """With bias correction, Adam's first step is lr * sign(gradient)."""
    params = {"a": np.array([1.0, -2.0]), "b": [np.array(3.0)]}
    grads = {"a": np.array([0.5, -7.0]), "b": [np.array(1e-3)]}
    new, state = C.adam_update(params, grads, C.adam_init(params), lr=0.1)
    assert np.allclose(new["a"], [0.9, -1.9], atol=1e-6) and np.isclose(new["b"][0], 2.9, atol=1e-4)
    assert state["t"] == 1 and params["a"][0] == 1.0, "adam_update changed its input"


def test_adam_follows_algorithm_1_where_epsilon_matters():
    """Kingma & Ba's Algorithm 1 (and PyTorch): eps is added to sqrt(v_hat), after the
    bias correction. With gradients near eps the placement decides the step."""
    g = rng(29)
    params = {"w": g.standard_normal(6)}
    m, v, w = np.zeros(6), np.zeros(6), params["w"].copy()
    state = C.adam_init(params)
    for t in range(1, 6):
        grads = {"w": 1e-8 * g.standard_normal(6)}
        params, state = C.adam_update(params, grads, state, lr=0.01)
        m = 0.9 * m + 0.1 * grads["w"]
        v = 0.999 * v + 0.001 * grads["w"] ** 2
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        assert np.allclose(params["w"], w, rtol=0, atol=1e-15), f"step {t}: {params['w'] - w}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_step_keeps_dtype_and_lowers_the_loss(dtype):
    g = rng(20)
    cfg = C.Config(n=3, widths=(16, 16), head="none", p=1, dtype=dtype)
    params = C.init_encoder(3, cfg.widths, "none", g, dtype)
    state = C.adam_init(params)
    x, x_tilde = g.standard_normal((64, 3)).astype(dtype), g.standard_normal((64, 3)).astype(dtype)
    x_tilde = (x + 0.05 * x_tilde).astype(dtype)
    first = C.contrastive_objective(params, x, x_tilde, cfg)
    for _ in range(50):
        loss, params, state = C.train_step(C.contrastive_objective, params, state, (x, x_tilde), cfg, 1e-2)
    assert all(w.dtype == np.dtype(dtype) for layer in params["layers"] for w in layer), "dtype changed"
    assert loss < first - 0.5, f"50 steps on one batch did not lower the loss ({first:.3f} -> {loss:.3f})"


@pytest.mark.parametrize("head,p", [("sphere", None), ("box", 1.0), ("none", 3.0)])
def test_a_float32_step_keeps_parameters_gradients_and_moments_in_float32(head, p):
    """No float64 creeps into a float32 step: the loss's gradient, every parameter and
    both Adam moments stay float32, with a learned radius and the whitening stage."""
    from autograd import grad
    g = rng(21)
    space = {"sphere": "sphere", "box": "box", "none": "unbounded"}[head]
    cfg = C.Config(n=3, widths=(8, 8), head=head, p=p, space=space, dtype="float32",
                   conditional="vmf" if head == "sphere" else "laplace",
                   marginal="uniform" if head != "none" else "laplace", learn_radius=head == "sphere",
                   whiten=True, self_pair=p is not None)
    x = g.standard_normal((32, 3)).astype(np.float32)
    x_tilde = (x + 0.05 * g.standard_normal((32, 3))).astype(np.float32)
    params = C.init_encoder(3, cfg.widths, head, g, "float32", learn_radius=cfg.learn_radius,
                            stage=C.whitening_stage(x))
    assert all(leaf.dtype == np.float32 for leaf in C.parameter_leaves(params))
    grads = grad(C.contrastive_objective)(params, x, x_tilde, cfg)
    assert all(np.asarray(leaf).dtype == np.float32 for leaf in C.parameter_leaves(C.trainable(grads)))
    state = C.adam_init(params)
    for _ in range(3):
        _, params, state = C.train_step(C.contrastive_objective, params, state, (x, x_tilde), cfg, 1e-3)
    assert all(np.asarray(leaf).dtype == np.float32 for leaf in C.parameter_leaves(params))
    assert all(m.dtype == np.float32 for m in state["m"] + state["v"])


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("changes,named", [
    (dict(kappa=0.0), "kappa"), (dict(kappa=-1.0), "kappa"), (dict(tau=0.0), "tau"),
    (dict(tau=-0.5), "tau"), (dict(space="box", conditional="vmf", head="none", p=1), "vmf"),
    (dict(space="unbounded", marginal="uniform", conditional="normal", head="none", p=2), "uniform"),
    (dict(n=1), "n"), (dict(space="torus"), "space"), (dict(p=0.5), "p"),
    (dict(lam=float("nan")), "lam"), (dict(batch_size=1), "batch_size"), (dict(steps=-1), "steps"),
    (dict(widths=(10, 0)), "widths"), (dict(head="none", p=None), "head"),
    (dict(lr_timescale=0), "lr_timescale"), (dict(lr_timescale=10, lr_final=1e-5), "lr_timescale"),
    (dict(stop_r2=1.5), "stop_r2"),
])
def test_bad_config_raises_value_error_naming_the_value(changes, named):
    with pytest.raises(ValueError, match=named):
        C.check_config(C.Config().replace(**changes))


def test_bad_arguments_to_public_functions_raise_value_error():
    g = rng(21)
    h = g.standard_normal((5, 3))
    with pytest.raises(ValueError, match="kappa"):
        C.sample_vmf(C.normalize(h), 0.0, g)
    with pytest.raises(ValueError, match="N >= 2"):
        C.sample_vmf(np.ones((4, 1)), 1.0, g)
    with pytest.raises(ValueError, match="tau"):
        C.infonce(h, h, -1.0)
    with pytest.raises(ValueError, match="shapes"):
        C.linear_r2(h, h[:4])
    bad = h.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        C.mcc(h, bad)
    with pytest.raises(ValueError, match="non-finite"):
        C.linear_r2(np.where(h > 0, np.inf, h), h)
    with pytest.raises(ValueError, match="z_eval"):
        C.linear_r2(h, h, z_eval=h)
    with pytest.raises(ValueError, match="square"):
        C.linear_assignment(np.ones((2, 3)))


# ----------------------------------------------------------------------------
# Recovery on small problems (the paper's claim, at N = 3, fixed seeds)
# ----------------------------------------------------------------------------

SMALL = C.Config(n=3, widths=(64, 64, 64), batch_size=256, steps=1000, lr=1e-3, lr_final=1e-5,
                 warmup=50, eval_every=1000, eval_size=4096, seed=0)


def quiet_run(cfg, **kwargs):
    import train
    return train.run(cfg, say=lambda line: None, **kwargs)


def test_sphere_vmf_recovers_latents_up_to_rotation():
    cfg = SMALL.replace(space="sphere", conditional="vmf", kappa=10.0, tau=0.1, head="sphere")
    metrics = quiet_run(cfg)
    assert metrics["r2"] >= 0.95, f"sphere + vMF at N=3: held-out R² {metrics['r2']:.4f} < 0.95"
    assert metrics["r2"] > metrics["identity_r2"] + 0.05, "training did not beat the raw observations"


def test_box_laplace_l1_recovers_latents_up_to_signed_permutation():
    cfg = SMALL.replace(space="box", conditional="laplace", lam=0.05, head="none", p=1.0, tau=1.0)
    metrics = quiet_run(cfg)
    assert metrics["mcc"] >= 0.95, f"box + Laplace + L1 at N=3: MCC {metrics['mcc']:.4f} < 0.95"


def test_box_normal_l2_recovers_latents_linearly():
    cfg = SMALL.replace(space="box", conditional="normal", sigma=0.05, head="none", p=2.0, tau=1.0)
    metrics = quiet_run(cfg)
    assert metrics["r2"] >= 0.95, f"box + Normal + L2 at N=3: held-out R² {metrics['r2']:.4f} < 0.95"


# ----------------------------------------------------------------------------
# train.py: run directories, resume, command line
# ----------------------------------------------------------------------------

TINY = C.Config(n=3, widths=(8, 8), batch_size=32, steps=40, lr=1e-3, eval_every=10,
                eval_size=64, supervised_steps=5, cond_pool=200, kappa=5.0, tau=0.2)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("cfg", [TINY, TINY.replace(self_pair=True, self_pair_until=25),
                                 TINY.replace(whiten=True, whiten_samples=2000)],
                         ids=["plain", "self pair until step 25", "whitened"])
def test_resumed_run_ends_with_the_numbers_of_an_uninterrupted_run(tmp_path, cfg):
    import train
    (tmp_path / "whole").mkdir()
    whole = train.run(cfg, str(tmp_path / "whole"), "sphere_vmf_k10", say=lambda line: None)

    def stop_at_20(line):
        if line.startswith("step") and "20/40" in line:
            raise Interrupt

    (tmp_path / "cut").mkdir()
    with pytest.raises(Interrupt):
        train.run(cfg, str(tmp_path / "cut"), "sphere_vmf_k10", say=stop_at_20)
    resumed = train.run(cfg, str(tmp_path / "cut"), "sphere_vmf_k10", resume=True, say=lambda line: None)
    for key in ("loss", "r2", "mcc", "supervised_r2", "identity_r2"):
        assert resumed[key] == whole[key], f"resumed {key} {resumed[key]} != uninterrupted {whole[key]}"
    rows = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "10", "20", "30", "40"], f"log.csv rows: {rows}"
    if cfg.whiten:                   # the stage is stored in the run and its checkpoint
        import json
        state = train.load_checkpoint(str(tmp_path / "cut"), cfg)
        with open(tmp_path / "cut" / "whitening.json") as f:
            stored = json.load(f)
        assert np.array_equal(state["params"]["whiten"]["matrix"], np.array(stored["matrix"], cfg.dtype))


def test_restarted_run_directory_is_not_taken_for_finished(tmp_path):
    # a finished run, then a run of another configuration in the same directory
    # that is interrupted: the old metrics.json must not pass for the new run's
    import train
    train.run(TINY, str(tmp_path), "sphere_vmf_k10", say=lambda line: None)
    other = TINY.replace(steps=30)

    def stop_at_10(line):
        if line.startswith("step") and "10/30" in line:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.run(other, str(tmp_path), "sphere_vmf_k10", say=stop_at_10)
    assert train.finished_metrics(str(tmp_path), other) is None, (
        "an interrupted run was reported finished with the metrics of an earlier configuration")
    assert train.finished_metrics(str(tmp_path), TINY) is None


def test_environment_is_recorded_and_never_fails(tmp_path, monkeypatch):
    import json
    import train
    env = train.environment()
    for key in ("python", "numpy", "autograd", "matplotlib", "blas", "blas_version", "blas_kernel",
                "blas_threads", "cpu", "cores", "git_commit", "git_dirty"):
        assert key in env, f"environment() lacks {key}"
    assert env["numpy"] == np.__version__
    monkeypatch.setattr(train, "_cpu_model", lambda: 1 / 0)
    monkeypatch.setattr(train, "_git", lambda *args: 1 / 0)
    broken = train.environment()
    assert broken["cpu"] == "unknown" and broken["git_commit"] == "unknown", broken
    train.record_environment(str(tmp_path), 0)
    train.record_environment(str(tmp_path), 20)
    history = json.loads((tmp_path / "env.json").read_text())
    assert [entry["from_step"] for entry in history] == [0, 20], history


def test_run_directory_holds_config_log_metrics_and_checkpoint(tmp_path):
    import json
    import train
    train.run(TINY, str(tmp_path), "sphere_vmf_k10", say=lambda line: None)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.npz", "config.json", "env.json", "log.csv", "metrics.json"], names
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("preset", "seed", "steps", "seconds", "loss", "r2", "mcc", "identity_r2",
                "identity_mcc", "supervised_r2", "supervised_mcc"):
        assert key in metrics, f"metrics.json lacks {key}"
    config = json.loads((tmp_path / "config.json").read_text())
    assert C.Config.from_dict({k: v for k, v in config.items() if k != "preset"}) == TINY
    here = train.supervised_from_seed(TINY)   # the baseline trained in this process
    assert (metrics["supervised_r2"], metrics["supervised_mcc"]) == (here["r2"], here["mcc"]), (
        "the baseline trained alongside the run differs from the same baseline trained here")


def test_non_finite_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch):
    import train
    real_step, calls = C.train_step, []

    def failing_step(*args):
        calls.append(1)
        loss, params, state = real_step(*args)
        return (float("nan") if len(calls) == 25 else loss), params, state

    monkeypatch.setattr(C, "train_step", failing_step)
    with pytest.raises(train.NonFiniteLoss, match="step 25"):
        train.run(TINY, str(tmp_path), "sphere_vmf_k10", say=lambda line: None)
    with np.load(tmp_path / "checkpoint.npz") as data:
        assert int(data["step"]) == 20, "the checkpoint is not the last good one"


def run_cli(args, cwd):
    import subprocess
    import sys
    from pathlib import Path
    return subprocess.run([sys.executable, str(Path(__file__).parent / "train.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,named", [
    (["--preset", "nope"], "nope"), (["--kappa", "0"], "kappa"), (["--tau", "-1"], "tau"),
    (["--lam", "0"], "lam"), (["--sigma", "-2"], "sigma"), (["--beta", "0"], "beta"),
    (["--lr", "0"], "lr"), (["--batch-size", "1"], "batch_size"), (["--steps", "-5"], "steps"),
    (["--seed", "-1"], "seed"), (["--p", "0.5"], "p must"), (["--n", "1"], "n"),
    (["--preset", "box_laplace_l1", "--conditional", "vmf"], "vmf"),
    (["--preset", "unbounded_normal_l2", "--marginal", "uniform"], "uniform"), (["--widths", "8,x"], "widths"),
    (["--resume"], "no checkpoint"), (["--out", "a_file/run"], "a_file"),
    (["--grid", "--shard", "3/2"], "3/2"), (["--grid", "--shard", "-1/4"], "-1/4"),
    (["--grid", "--shard", "a/b"], "a/b"), (["--shard", "0/2"], "--grid"),
])
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, named):
    (tmp_path / "a_file").write_text("x")
    result = run_cli(args, tmp_path)
    assert result.returncode == 2, f"{args}: exit {result.returncode}, stderr {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], f"{args}: stderr {result.stderr!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"], "a bad run left files behind"


def test_cli_corrupted_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.npz").write_bytes(b"not a checkpoint")
    result = run_cli(["--resume", "--out", str(run_dir), "--steps", "5"], tmp_path)
    assert result.returncode == 2 and "corrupted" in result.stderr, result.stderr


def test_inverse_square_root_schedule_does_not_depend_on_the_step_budget():
    cfg = C.Config(lr=1e-3, warmup=10, lr_timescale=100)
    for steps in (1000, 10 ** 6):
        rates = [C.learning_rate(cfg.replace(steps=steps), t) for t in (0, 9, 10, 110, 410)]
        assert np.allclose(rates, [1e-4, 1e-3, 1e-3, 1e-3 / math.sqrt(2), 1e-3 / math.sqrt(5)]), rates


def test_run_stops_once_r2_reaches_stop_r2_twice_in_a_row(tmp_path):
    import train
    (tmp_path / "whole").mkdir()
    (tmp_path / "stop").mkdir()
    never = TINY.replace(stop_r2=1.0)         # logs the rule's R² but never reaches it
    whole = train.run(never, str(tmp_path / "whole"), say=lambda line: None, baseline=False)
    with open(tmp_path / "whole" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    rule, held_out = [float(r["stop_r2"]) for r in rows], [float(r["r2"]) for r in rows]
    assert all(a != b for a, b in zip(rule, held_out)), "the rule scored the reported samples"
    target = min(rule[1:3])          # met at least by the evaluations of steps 20 and 30
    stopped = train.run(TINY.replace(stop_r2=target), str(tmp_path / "stop"), say=lambda line: None,
                        baseline=False)
    steps = [line.split(",")[0] for line in
             (tmp_path / "stop" / "log.csv").read_text().splitlines()[1:]]
    first_pair = next(k for k in range(1, len(rule)) if min(rule[k - 1:k + 1]) >= target)
    assert stopped["steps"] == 10 * (first_pair + 1) < whole["steps"], (stopped["steps"], rule)
    assert steps == [str(10 * (k + 1)) for k in range(first_pair + 1)], steps
    assert stopped["r2"] == held_out[first_pair], "metrics.json does not hold the held-out R²"


@pytest.mark.parametrize("rule_r2,stop_at", [(1.0, 20), (0.0, 40)])
def test_stopping_rule_decides_on_its_own_samples_only(tmp_path, monkeypatch, rule_r2, stop_at):
    """The rule reads only its own R²: forced to 1.0 the run stops after two
    evaluations although the reported R² is far below the bar; forced to 0.0 it runs
    to the end although the reported R² is above the bar."""
    import train
    monkeypatch.setattr(train, "stop_score", lambda cfg, params, sets: {"stop_r2": rule_r2})
    bar = 0.99 if rule_r2 == 1.0 else 1e-9
    metrics = train.run(TINY.replace(stop_r2=bar), str(tmp_path), say=lambda line: None, baseline=False)
    assert metrics["steps"] == stop_at, f"rule R² {rule_r2}: stopped at {metrics['steps']}"
    assert (metrics["r2"] < bar) == (rule_r2 == 1.0), f"reported R² {metrics['r2']} against bar {bar}"


def test_whitening_stage_whitens_and_can_be_undone():
    """README §4: the stage maps fresh observations to mean 0 and identity
    covariance (within the sampling error of its 50 000 draws), and is an
    invertible affine map, so the encoder can still represent g⁻¹."""
    cfg = C.Config(n=10, space="box", head="none", p=1, conditional="laplace", cond_pool=500)
    g = rng(50)
    mixing = C.make_mixing(cfg.n, 3, g, cfg.cond_pool)
    mean, matrix = C.sample_whitening_stage(cfg, mixing, g)
    x = C.mix(mixing, C.sample_marginal(cfg, 50000, g))
    assert np.linalg.cond(np.cov(x, rowvar=False)) > 20, "these observations are already white"
    white = (x - mean) @ matrix
    assert np.abs(white.mean(axis=0)).max() < 0.03
    assert np.abs(np.cov(white, rowvar=False) - np.eye(cfg.n)).max() < 0.05
    assert np.allclose(matrix, matrix.T), "cov(x)^(-1/2) is symmetric"
    assert np.allclose(white @ np.linalg.inv(matrix) + mean, x, atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        C.whitening_stage(np.column_stack([x[:, 0], x[:, 0]]))


def test_whitening_stage_is_part_of_the_encoder_and_stays_fixed():
    """The stage sits in the parameters (so checkpoints hold it), encode applies it
    first, the gradient matches finite differences through it, and training moves
    every other parameter but never the stage."""
    from autograd import grad
    g = rng(51)
    x = g.standard_normal((12, 3)) @ np.array([[3.0, 0, 0], [1, 0.2, 0], [0, 0.5, 1]])
    stage = C.whitening_stage(x)
    params = C.init_encoder(3, (8, 8), "none", g, "float64", stage=stage)
    plain = {k: v for k, v in params.items() if k != "whiten"}
    assert np.allclose(C.encode(params, x, "none"), C.encode(plain, (x - stage[0]) @ stage[1], "none"))
    leaves = C.parameter_leaves(params)

    def loss(flat):
        p = C.with_leaves(params, iter(C.from_vector(flat, leaves)))
        return C.infonce(C.encode(p, x[:6], "none"), C.encode(p, x[6:], "none"), 1.0, 1)
    flat = C.to_vector(leaves)
    assert np.allclose(grad(loss)(flat), finite_difference_gradient(loss, flat), atol=1e-6)
    cfg = C.Config(n=3, widths=(8, 8), head="none", p=1.0, space="box", dtype="float64", lr=1e-2)
    state = C.adam_init(params)
    assert len(state["m"]) == len(C.parameter_leaves(C.trainable(params)))
    new = params
    for _ in range(3):
        _, new, state = C.train_step(C.contrastive_objective, new, state, (x[:6], x[6:]), cfg, cfg.lr)
    assert new["whiten"]["mean"] is params["whiten"]["mean"], "the stage's mean moved"
    assert new["whiten"]["matrix"] is params["whiten"]["matrix"], "the stage's matrix moved"
    assert not np.array_equal(new["layers"][0][0], params["layers"][0][0]), "training moved nothing"


def test_cli_resume_reads_the_saved_configuration(tmp_path):
    # a run of non-default options, cut at step 20 of 40, continues with only --out and --resume
    import json
    import train
    cfg = train.PRESETS["box_laplace_l1"].config.replace(
        n=3, widths=(8, 8), batch_size=32, steps=40, eval_every=10, eval_size=64,
        supervised_steps=0, self_pair_until=25)

    def stop_at_20(line):
        if line.startswith("step") and "20/40" in line:
            raise Interrupt

    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole = train.run(cfg, str(tmp_path / "whole"), "box_laplace_l1", say=lambda line: None)
    with pytest.raises(Interrupt):
        train.run(cfg, str(tmp_path / "cut"), "box_laplace_l1", say=stop_at_20)
    resumed = run_cli(["--out", "cut", "--resume", "--no-plots"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "box_laplace_l1" in resumed.stdout, resumed.stdout
    got = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in ("loss", "r2", "mcc"):
        assert got[key] == whole[key], f"resumed {key} {got[key]} != uninterrupted {whole[key]}"


@pytest.mark.parametrize("flag,field,saved,given", [   # a raised --steps continues the run (below)
    (["--steps", "10"], "steps", "30", "10"), (["--lr", "0.01"], "lr", "0.003", "0.01"),
    (["--preset", "sphere_vmf"], "preset", "box_laplace_l1", "sphere_vmf"),
])
def test_cli_resume_refuses_a_flag_that_contradicts_the_saved_run(tmp_path, flag, field, saved, given):
    args = ["--preset", "box_laplace_l1", "--n", "3", "--widths", "8,8", "--batch-size", "32",
            "--eval-every", "10", "--eval-size", "64", "--supervised-steps", "0", "--no-plots",
            "--steps", "30", "--out", "run"]
    assert run_cli(args, tmp_path).returncode == 0
    result = run_cli(["--out", "run", "--resume", *flag], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert field in lines[0] and saved in lines[0] and given in lines[0], lines[0]


def test_cli_resume_with_a_saved_configuration_and_a_damaged_checkpoint(tmp_path):
    args = ["--preset", "box_laplace_l1", "--n", "3", "--widths", "8,8", "--batch-size", "32",
            "--eval-every", "10", "--eval-size", "64", "--supervised-steps", "0", "--no-plots",
            "--steps", "30", "--out", "run"]
    assert run_cli(args, tmp_path).returncode == 0
    (tmp_path / "run" / "metrics.json").unlink()     # as a run interrupted before its end
    path = tmp_path / "run" / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:200])
    result = run_cli(["--out", "run", "--resume"], tmp_path)
    assert result.returncode == 2 and "corrupted" in result.stderr, result.stderr


def test_cli_list_names_every_preset(tmp_path):
    import train
    result = run_cli(["--list"], tmp_path)
    assert result.returncode == 0
    for name in train.PRESETS:
        assert name in result.stdout, f"--list misses {name}"


# ----------------------------------------------------------------------------
# Interrupting a run: SIGINT and SIGTERM keep the work (README "Interrupting, resuming, and many machines")
# ----------------------------------------------------------------------------

SLOW_TINY = ["--n", "3", "--widths", "8,8", "--batch-size", "32", "--eval-every", "500",
             "--eval-size", "64", "--supervised-steps", "0", "--no-plots"]


def start_cli(args, cwd):
    import subprocess
    import sys
    from pathlib import Path
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "train.py"), *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_after(process, marker, signum):
    """Send signum once a stdout line contains marker; return (stdout, stderr)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    return "".join(lines) + out, err


@pytest.mark.parametrize("signum,code", [(2, 130), (15, 143)])
def test_interrupted_run_saves_its_step_and_resumes_to_the_same_numbers(tmp_path, signum, code):
    import json
    import shlex
    args = ["--preset", "sphere_vmf_k10", "--steps", "2000", *SLOW_TINY]
    process = start_cli([*args, "--out", "cut"], tmp_path)
    out, err = signal_after(process, "step    500/2000", signum)
    lines = err.strip().splitlines()
    assert process.returncode == code, f"exit {process.returncode}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("interrupted at step "), f"stderr {err!r}"
    assert "Traceback" not in err and "continue with: python train.py" in lines[0]
    step = int(lines[0].split()[3])
    with np.load(tmp_path / "cut" / "checkpoint.npz") as data:
        assert int(data["step"]) == step, f"checkpoint at {int(data['step'])}, line says {step}"
    assert 500 <= step < 2000, f"stopped at step {step}"
    command = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and "--resume" in command
    assert command[command.index("--seed") + 1] == "0" and "--out" in command, command
    resumed = run_cli(command[2:], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_cli([*args, "--out", "whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr
    got, want = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("cut", "whole"))
    for key in ("loss", "r2", "mcc"):
        assert got[key] == want[key], f"resumed {key} {got[key]} != uninterrupted {want[key]}"


def test_interrupted_grid_writes_no_table_and_its_resume_matches_a_whole_grid(tmp_path):
    import shlex
    grid = ["--grid", "--seeds", "1", "--jobs", "2", "--steps", "300", *SLOW_TINY,
            "--eval-every", "100", "--supervised-steps", "20"]
    process = start_cli([*grid, "--out", "cut", "--results", "cut-results"], tmp_path)
    out, err = signal_after(process, "seed 0:", 2)
    lines = err.strip().splitlines()
    assert process.returncode == 130, f"exit {process.returncode}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("grid interrupted: "), f"stderr {err!r}"
    assert not (tmp_path / "cut-results" / "grid.csv").exists(), "an interrupted grid wrote grid.csv"
    command = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert command[-1] == "--resume", command
    assert run_cli(command[2:], tmp_path).returncode == 0
    assert run_cli([*grid, "--out", "whole", "--results", "whole-results"], tmp_path).returncode == 0
    assert_same_grid(tmp_path / "cut-results", tmp_path / "whole-results")


def assert_same_grid(a, b):
    """The grid.csv files in a and b agree in every column but the times."""
    rows = []
    for directory in (a, b):
        with open(directory / "grid.csv") as f:
            rows.append([{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)])
    assert len(rows[0]) == len(rows[1]) and rows[0] == rows[1], (
        "the two grids differ:\n" + "\n".join(str(pair) for pair in zip(*rows) if pair[0] != pair[1]))


def test_sharded_grid_assembles_the_table_of_an_unsharded_one(tmp_path):
    grid = ["--grid", "--seeds", "1", "--jobs", "1", "--n", "3", "--steps", "6", "--eval-every", "3",
            "--eval-size", "64", "--supervised-steps", "4", "--widths", "8,8", "--batch-size", "16",
            "--no-plots"]
    for shard in ("0/2", "1/2"):
        result = run_cli([*grid, "--shard", shard, "--out", "shared", "--results", "shared-results"],
                         tmp_path)
        assert result.returncode == 0 and "shard" in result.stdout, result.stderr
        assert not (tmp_path / "shared-results" / "grid.csv").exists(), "a shard wrote grid.csv"
    merged = run_cli([*grid, "--resume", "--out", "shared", "--results", "shared-results"], tmp_path)
    assert merged.returncode == 0, merged.stderr
    reran = [line for line in merged.stdout.splitlines()
             if not line.startswith("grid:") and "already finished" not in line]
    assert not reran, f"assembling the shards ran again: {reran}"
    assert run_cli([*grid, "--out", "single", "--results", "single-results"], tmp_path).returncode == 0
    assert_same_grid(tmp_path / "shared-results", tmp_path / "single-results")


def test_grid_sweep_runs_the_chosen_presets_on_the_chosen_seeds(tmp_path):
    """--first-seed and --only pick a sweep's runs: seeds 1000 and 1001 of two
    presets, written to the table with those seeds; a bad preset is refused."""
    sweep = ["--grid", "--seeds", "2", "--first-seed", "1000", "--only", "box_normal_l1,sphere_vmf_k10",
             "--n", "3", "--steps", "4", "--eval-every", "2", "--eval-size", "64",
             "--supervised-steps", "0", "--widths", "8,8", "--batch-size", "16", "--no-plots",
             "--whiten-samples", "500", "--out", "runs", "--results", "sweep"]
    result = run_cli(sweep, tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "sweep" / "grid.csv") as f:
        runs = sorted((row["preset"], row["seed"]) for row in csv.DictReader(f))
    assert runs == [("box_normal_l1", "1000"), ("box_normal_l1", "1001"),
                    ("sphere_vmf_k10", "1000"), ("sphere_vmf_k10", "1001")], runs
    bad = run_cli(["--grid", "--only", "box_normal_l3", "--out", "x", "--results", "y"], tmp_path)
    assert bad.returncode == 2 and "box_normal_l3" in bad.stderr, bad.stderr


def test_grid_gives_its_workers_the_blas_threads_asked_for(tmp_path):
    """--grid --jobs 1 --threads 1 on a 2-core machine: each run records one BLAS
    thread in its env.json (the workers used to take cores // jobs whatever --threads said)."""
    import train
    if train.blas_threads() is None:
        pytest.skip("numpy's BLAS is not OpenBLAS; its threads cannot be read")
    grid = ["--grid", "--seeds", "1", "--only", "sphere_vmf_k10", "--jobs", "1", "--threads", "1",
            "--n", "3", "--steps", "2", "--eval-every", "2", "--eval-size", "64",
            "--supervised-steps", "0", "--widths", "8,8", "--batch-size", "16", "--no-plots",
            "--whiten-samples", "500", "--out", "runs", "--results", "grid"]
    result = run_cli(grid, tmp_path)
    assert result.returncode == 0, result.stderr
    import json
    with open(tmp_path / "runs" / "sphere_vmf_k10-s0" / "env.json") as f:
        assert [stretch["blas_threads"] for stretch in json.load(f)] == [1]


def test_continue_command_keeps_the_run_options():
    import train
    line = train.continue_command(["--steps", "50", "--seed=3", "--resume", "--out", "a b"],
                                  ["--preset", "box_laplace_l1", "--seed", "3"],
                                  drop=("--resume", "--preset", "--seed"))
    assert line == "python train.py --preset box_laplace_l1 --seed 3 --steps 50 --out 'a b' --resume"


def test_official_code_comparison_on_small_shapes():
    """bench/compare_official.py on small shapes, where CLREF_OFFICIAL names a directory
    of the reference code's modules and torch imports (results/official.md)."""
    directory = os.environ.get("CLREF_OFFICIAL")
    if not directory:
        pytest.skip("CLREF_OFFICIAL is not set")
    pytest.importorskip("torch")
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "compare_official", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench",
                                         "compare_official.py"))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    torch, official = compare.load_official(directory)
    assert torch is not None, official
    torch.set_default_dtype(torch.float64)
    g = rng(30)
    rows = (compare.loss_rows(torch, official, g, batch=32) + compare.metric_rows(official, g, size=256)
            + compare.mixing_rows(torch, official, g, size=64)
            + compare.encoder_rows(torch, official, g, size=64))
    for name, diff, _ in rows:
        assert diff <= 1e-12, f"{name}: clref and the official code differ by {diff:.2e}"
    for name, diff, _ in compare.training_rows(torch, official, steps=10, batch=32):
        assert diff <= 1e-9, f"{name}: relative parameter difference {diff:.2e}"


def test_modules_import_one_way():
    """clref imports neither train nor plots; plots imports clref, not train."""
    import subprocess
    import sys
    for module, forbidden in (("clref", ("train", "plots")), ("plots", ("train",))):
        code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
        result = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.strip() == "[]", (
            f"import {module} pulled in {result.stdout.strip()} {result.stderr}")


def test_atomic_write_survives_an_interrupt_during_the_write(tmp_path):
    """A KeyboardInterrupt while a file is written leaves the old file whole."""
    import train
    path = tmp_path / "f.json"
    train.write_json(str(path), {"old": 1})

    def interrupted_write(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.write_atomic(str(path), interrupted_write)
    assert path.read_text() == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"], "a temporary file was left"


# ----------------------------------------------------------------------------
# Figures and the grid, end to end on tiny runs
# ----------------------------------------------------------------------------

def assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    assert len(data) > 5000, f"{path} is nearly empty ({len(data)} bytes)"


def test_run_figures_are_drawn(tmp_path):
    import plots
    import train
    train.run(TINY.replace(steps=30), str(tmp_path), "sphere_vmf_k10", say=lambda line: None)
    paths = plots.plot_run(str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["correlations.png", "curves.png", "latents.png"]
    for path in paths:
        assert_png(path)


@pytest.mark.parametrize("conditional", C.CONDITIONALS)
def test_every_conditional_has_a_figure_title(conditional):
    """A run's figures name its conditional; none is left without a title (a run would
    otherwise end in a KeyError after training)."""
    import plots
    cfg = C.Config(n=4, conditional=conditional, precisions=C.linear_precisions(4),
                   learn_precision=conditional == "aniso_normal")
    title = plots.setting_title(cfg)
    assert conditional in title and "N=4" in title


def test_grid_cost_is_counted_in_runs_of_the_default_preset_inside_the_grid():
    import train
    rows = [{"preset": train.DEFAULT_PRESET, "seconds": 100.0},
            {"preset": train.DEFAULT_PRESET, "seconds": 140.0},
            {"preset": "box_laplace_l1", "seconds": 500.0}]
    line = train.grid_cost(rows, 600.0, 2)
    assert "= 10.0 runs of the default preset" in line and "120 s a run" in line, line
    assert train.grid_cost(rows, 600.0, None) is None
    assert train.grid_cost(rows[2:], 600.0, 2) is None, "no default-preset run, yet a cost"
    assert train.grid_cost([{**rows[0], "reused": True}] + rows[1:], 600.0, 2) is None, \
        "a grid that reused runs has no wall time of its own to count"


def test_grid_table_gives_the_range_of_steps_when_runs_stop_at_different_steps():
    import train
    row = {"preset": "sphere_vmf", "r2": 0.99, "mcc": 0.5, "met": True, "seconds": 1.0}
    rows = [{**row, "seed": s, "steps": steps} for s, steps in enumerate((298000, 222000, 370000))]
    table = train.grid_markdown(rows, "cmd", 1.0, 64)
    assert "| 222000–370000 |" in table, table
    assert "| 12000 |" in train.grid_markdown([{**r, "steps": 12000} for r in rows], "cmd", 1.0, 64)


def test_grid_writes_csv_markdown_and_figure(tmp_path):
    import train
    code = train.main(["--grid", "--seeds", "2", "--jobs", "2", "--n", "3", "--steps", "4",
                       "--eval-every", "2", "--eval-size", "64", "--supervised-steps", "2",
                       "--widths", "8,8", "--batch-size", "16", "--out", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "results"), "--no-plots"])
    assert code == 0
    with open(tmp_path / "results" / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(train.GRID_PRESETS), f"grid.csv has {len(rows)} rows"
    assert "sphere_vmf_long" not in {r["preset"] for r in rows}, "the long preset ran in the grid"
    for column in train.GRID_COLUMNS:
        assert column in rows[0], f"grid.csv lacks the column {column}"
    table = (tmp_path / "results" / "grid.md").read_text()
    for name in train.GRID_PRESETS:
        assert f"| {name} |" in table, f"grid.md misses {name}"
    assert "Environment: Python " in table and "numpy " in table, "grid.md does not say where it ran"
    assert "Cost: 2 processes × the wall time = " in table, "grid.md does not give the grid's cost"
    assert_png(tmp_path / "results" / "grid.png")
    before = (tmp_path / "results" / "grid.csv").read_text()
    code = train.main(["--grid", "--seeds", "2", "--jobs", "1", "--n", "3", "--steps", "4",
                       "--eval-every", "2", "--eval-size", "64", "--supervised-steps", "2",
                       "--widths", "8,8", "--batch-size", "16", "--out", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "results"), "--no-plots", "--resume"])
    after = (tmp_path / "results" / "grid.csv").read_text()
    assert code == 0 and after == before, "--grid --resume did not reuse the finished runs"
    assert "Cost:" not in (tmp_path / "results" / "grid.md").read_text(), \
        "a resumed grid gave a cost from a wall time that is not the grid's"
    code = train.main(["--grid", "--seeds", "1", "--jobs", "1", "--n", "3", "--steps", "6",
                       "--eval-every", "2", "--eval-size", "64", "--supervised-steps", "0",
                       "--widths", "8,8", "--batch-size", "16", "--out", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "results"), "--no-plots", "--resume"])
    with open(tmp_path / "results" / "grid.csv") as f:
        rerun = list(csv.DictReader(f))
    assert code == 0 and {r["steps"] for r in rerun} == {"6"}, (
        "--grid --resume did not start runs whose configuration changed afresh")


def test_grid_draws_the_figures_of_runs_that_missed_their_bar(tmp_path, monkeypatch):
    import train
    cfg = train.PRESETS["sphere_vmf_k10"].config.replace(
        n=3, widths=(8, 8), batch_size=16, steps=4, eval_every=2, eval_size=64,
        supervised_steps=0, cond_pool=100)
    missed = train._run_job("sphere_vmf_k10", cfg, str(tmp_path / "missed"), True, False)
    assert not missed["met"] and (tmp_path / "missed" / "curves.png").exists(), (
        "a run that missed its bar got no figures")
    monkeypatch.setattr(train, "bars_met", lambda preset, metrics: True)
    met = train._run_job("sphere_vmf_k10", cfg, str(tmp_path / "met"), True, False)
    assert met["met"] and not (tmp_path / "met" / "curves.png").exists(), (
        "the grid drew the figures of a run that met its bar")


# ----------------------------------------------------------------------------
# Conformance vectors (conformance/)
# ----------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "conformance", "vectors.json")


def load_conformance_module(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "conformance", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clref_outputs(case):
    """clref's answer to one conformance case, keyed like case["expected"]."""
    from autograd import grad
    fn, args = case["function"], case["args"]
    a = {k: (np.array(v) if isinstance(v, list) else v) for k, v in args.items()}
    if fn == "infonce":
        call = (a["h"], a["h_tilde"], a["tau"], a["p"], a.get("self_pair", False),
                a.get("form", "paper"))
        return {"value": C.infonce(*call), "grad_h": grad(C.infonce, 0)(*call),
                "grad_h_tilde": grad(C.infonce, 1)(*call)}
    if fn in ("alignment", "uniformity"):
        return {"value": getattr(C, fn)(a["h"], a["h_tilde"], a["tau"], a["p"])}
    if fn == "linear_r2":
        return {"value": C.linear_r2(a["z"], a["h"], a.get("z_eval"), a.get("h_eval"))}
    if fn == "mcc":
        return {"value": C.mcc(a["z"], a["h"])}
    if fn == "linear_assignment":
        match = C.linear_assignment(a["cost"])
        return {"assignment": match, "cost": a["cost"][np.arange(len(match)), match].sum()}
    if fn in ("mix", "unmix"):
        mixing = [np.array(w) for w in args["mixing"]]
        return {"value": getattr(C, fn)(mixing, a["z"] if fn == "mix" else a["x"])}
    if fn == "encode":
        params = {"layers": [(np.array(l["W"]), np.array(l["b"])) for l in args["params"]["layers"]]}
        params.update({k: (np.array(v) if k != "whiten" else {s: np.array(u) for s, u in v.items()})
                       for k, v in args["params"].items() if k != "layers"})
        return {"value": C.encode(params, a["x"], a["head"])}
    if fn == "whitening_stage":
        mean, matrix = C.whitening_stage(a["x"])
        return {"mean": mean, "matrix": matrix}
    if fn in ("encode_vjp", "adam_update", "train_step"):
        return new_case_outputs(case)
    if fn == "learning_rate":
        return {"rates": [C.learning_rate(C.Config(**args["config"]), t) for t in args["steps"]]}
    if fn == "restricted_vmf_from_draws":
        z, kept = a["z"], args["kept"]
        r = np.linalg.norm(z[:, kept:], axis=1, keepdims=True)
        return {"value": np.hstack([z[:, :kept], r * C.vmf_from_draws(z[:, kept:] / r, a["cosines"], a["normals"])])}
    if fn == "aniso_normal_from_draws":
        stream = load_conformance_module("generate").Stream(a["normals"].ravel())
        value = C.sample_aniso_normal(a["z"], args["precisions"], stream)
        return {"value": value, "rows_drawn": stream.used // a["z"].shape[1]}
    if fn in ("anisotropic_infonce", "corrected_infonce"):
        f = getattr(C, fn)
        call = ((a["h"], a["h_tilde"], a["precision"], a["tau"], args["self_pair"]) if fn == "anisotropic_infonce"
                else (a["h"], a["h_tilde"], a["h_negative"], a["tau"], a["p"]))
        names = ("h", "h_tilde", "precision" if fn == "anisotropic_infonce" else "h_negative")
        return {"value": f(*call), **{f"grad_{name}": grad(f, k)(*call) for k, name in enumerate(names)}}
    g = rng(31)
    if fn == "sample_box_conditional":
        cfg = C.Config(space="box", conditional=args["conditional"], sigma=args["sigma"], lam=args["lam"],
                       beta=args["beta"], head="none", p=1)
        center = np.tile(np.array(args["z"]), (args["draws"], 1))
        draws = C.perturb_in_box(center, lambda k: C.sample_noise(cfg.conditional, k, g, sigma=cfg.sigma,
                                                                  lam=cfg.lam, beta=cfg.beta), 0.0, 1.0)
        return {"mean": draws.mean(axis=0), "variance": draws.var(axis=0)}
    if fn == "sample_vmf":
        mu = C.sample_uniform_sphere(args["draws"], args["n"], g)
        return {"mean_cosine": np.mean(np.sum(mu * C.sample_vmf(mu, args["kappa"], g), axis=1))}
    if fn == "sample_gennorm":
        u = C.sample_gennorm(args["draws"], args["beta"], args["lam"], g)
        return {"mean": u.mean(), "variance": np.mean(u ** 2), "fourth_moment": None}
    if fn == "sample_conditional":
        cfg = C.Config(space="box", n=args["n"], conditional=args["conditional"], sigma=args["sigma"],
                       lam=args["lam"], beta=args["beta"], head="none", p=1)
        z, z_tilde = C.sample_pairs(cfg, args["draws"], g)
        return {"min_at_least": z_tilde.min(), "max_at_most": z_tilde.max()}
    raise AssertionError(f"unknown conformance function {fn}")


def json_params(tree):
    """A conformance parameter tree as clref holds it."""
    params = {"layers": [(np.array(l["W"]), np.array(l["b"])) for l in tree["layers"]]}
    params.update({k: np.array(tree[k]) for k in ("bound", "radius") if k in tree})
    if "whiten" in tree:
        params["whiten"] = {k: np.array(v) for k, v in tree["whiten"].items()}
    return params


def tree_leaves(tree):
    """The arrays of a JSON or clref parameter tree, in clref's order (whiten left out)."""
    if isinstance(tree, dict) and "layers" in tree and isinstance(tree["layers"][0], dict):
        tree = json_params(tree)
    return [np.asarray(a, dtype=float) for a in C.parameter_leaves(C.trainable(tree))]


def new_case_outputs(case):
    """clref's answers to the encode_vjp, adam_update and train_step cases, parameter
    trees given as their leaves."""
    from autograd import grad
    import autograd.numpy as anp
    fn, args = case["function"], case["args"]
    params = json_params(args["params"])
    if fn == "encode_vjp":
        free, fixed = C.trainable(params), {k: params[k] for k in C.FIXED_PARAMETERS if k in params}
        g, x = np.array(args["cotangent"]), np.array(args["x"])

        def dot(free, x):
            return anp.sum(g * C.encode({**free, **fixed}, x, args["head"], args["radius"]))
        return {"grad_params": tree_leaves(grad(dot, 0)(free, x)), "grad_x": grad(dot, 1)(free, x)}
    if fn == "adam_update":
        state = {"m": tree_leaves(args["m"]), "v": tree_leaves(args["v"]), "t": args["t"]}
        new, state = C.adam_update(params, tree_leaves(args["grads"]), state, args["lr"], args["b1"],
                                   args["b2"], args["eps"])
        return {"params": tree_leaves(new), "m": state["m"], "v": state["v"], "t": state["t"]}
    cfg = C.Config(n=params["layers"][0][0].shape[0], dtype="float64", **args["config"])
    state, losses, snapshots = C.adam_init(params), [], []
    for step, (x, x_tilde) in enumerate(args["batches"]):
        loss_cfg = cfg if C.self_pair_active(cfg, step) else cfg.replace(self_pair=False, self_pair_until=None)
        loss, params, state = C.train_step(C.contrastive_objective, params, state,
                                           (np.array(x), np.array(x_tilde)), loss_cfg, C.learning_rate(cfg, step))
        losses.append(loss)
        snapshots.append({"params": tree_leaves(params), "m": [a.copy() for a in state["m"]],
                          "v": [a.copy() for a in state["v"]]})
    return {"losses": losses, "after_1": snapshots[0], "after_3": snapshots[2]}


def assert_close_tree(got, want, tol, where):
    """Compare an answer with its expected value: numbers and arrays, or dictionaries of
    them, a JSON parameter tree compared leaf by leaf."""
    if isinstance(want, dict) and "layers" in want:
        want = tree_leaves(want)
    if isinstance(want, dict):
        for key, value in want.items():
            assert_close_tree(got[key], value, tol, f"{where} {key}")
    elif isinstance(got, list) and got and isinstance(got[0], np.ndarray):
        assert len(got) == len(want), where
        for a, b in zip(got, want):
            assert np.allclose(a, np.array(b), rtol=tol["rel"], atol=tol["abs"]), f"{where} differs"
    else:
        assert np.allclose(got, np.array(want, dtype=float), rtol=tol["rel"], atol=tol["abs"]), f"{where} differs"


def test_clref_reproduces_the_conformance_vectors():
    import json
    with open(VECTORS) as f:
        cases = json.load(f)["cases"]
    assert len(cases) >= 50
    for k, case in enumerate(cases):
        got, want, tol = clref_outputs(case), case["expected"], case["tolerance"]
        where = f"case {k} ({case['function']} {case.get('note', '')})"
        if case["function"].startswith("sample_"):
            for key, value in want.items():
                if key == "min_at_least":
                    assert got[key] >= value, where
                elif key == "max_at_most":
                    assert got[key] <= value, where
                elif f"abs_{key}" in tol:
                    assert np.all(np.abs(np.array(got[key]) - value) <= tol[f"abs_{key}"]), (
                        f"{where}: {key} {got[key]} vs {value}")
            continue
        for key, value in want.items():
            if key == "assignment":
                continue  # ties allow other optimal assignments; the cost is compared
            assert_close_tree(got[key], value, tol, f"{where}: {key}")


def test_conformance_vectors_are_up_to_date_and_deterministic():
    """The generator gives the same file twice, with exactly the stored inputs (the
    expected outputs are compared to 1e-12 above: BLAS may differ in the last bit)."""
    import json
    generate = load_conformance_module("generate")
    first, second = json.dumps(generate.build()), json.dumps(generate.build())
    assert first == second, "conformance/generate.py is not deterministic"
    with open(VECTORS) as f:
        stored = json.load(f)
    built = json.loads(first)
    assert [(c["function"], c["args"]) for c in built["cases"]] == \
        [(c["function"], c["args"]) for c in stored["cases"]], (
        "conformance/vectors.json is out of date; run python conformance/generate.py")


def test_independent_torch_port_passes_every_case(capsys):
    """conformance/check_torch.py: PyTorch's autograd for every gradient, Adam written
    out, torch's random numbers for the samplers; all cases, float64."""
    pytest.importorskip("torch")
    assert load_conformance_module("check_torch").main(VECTORS) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.strip().endswith(" passed, 0 failed")


def test_every_mutant_of_the_numpy_port_fails_a_named_case():
    """conformance/mutants.py: eight bugs ports commonly have, each put into the NumPy
    port alone; each must fail at least one case, and the case that caught it is named."""
    mutants = load_conformance_module("mutants")
    assert len(mutants.MUTANTS) == 8
    caught = {name: mutants.failures(replacements, VECTORS) for name, replacements in mutants.MUTANTS}
    survivors = [name for name, failed in caught.items() if not failed]
    assert not survivors, f"mutants no case caught: {survivors}"
    assert all(line.startswith("FAIL case ") for failed in caught.values() for line in failed)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_independent_numpy_port_passes_the_vectors(capsys, dtype):
    """A second implementation (hand-written gradients, brute-force MCC) reading only
    the JSON agrees with clref, in float64 and within the float32 tolerances."""
    assert load_conformance_module("check_numpy").main(VECTORS, dtype) == 0, capsys.readouterr().out


# ----------------------------------------------------------------------------
# The cost of recovery (results/cost.md; bench/recovery_cost.py)
# ----------------------------------------------------------------------------

def load_recovery_cost():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "recovery_cost", os.path.join(HERE, "bench", "recovery_cost.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n,kappa", [(10, 1.0), (10, 10.0), (5, 30.0)])
def test_pair_information_matches_a_monte_carlo_estimate(n, kappa):
    """I(z; z_tilde) = E[log p(z_tilde | z)] - E[log p(z_tilde)]. Monte Carlo, with no
    Bessel function: kappa E[z·z_tilde] over vMF draws, minus log E[exp(kappa u_1)]
    over uniform u (the vMF normaliser relative to the uniform density)."""
    cost = load_recovery_cost()
    g, draws = rng(40), 200000
    z = C.sample_uniform_sphere(draws, n, g)
    cosines = np.sum(z * C.sample_vmf(z, kappa, g), axis=1)
    scaled = np.exp(kappa * (C.sample_uniform_sphere(draws, n, g)[:, 0] - 1))  # e^-kappa for range
    estimate = kappa * cosines.mean() - kappa - math.log(scaled.mean())
    error = math.sqrt((kappa * cosines.std()) ** 2 + (scaled.std() / scaled.mean()) ** 2) / math.sqrt(draws)
    want = cost.pair_information(n, kappa)
    assert error < 0.03 * want, f"the estimate is too noisy to test: ±{error:.2g} for I = {want:.3g}"
    assert abs(estimate - want) < 4 * error, (
        f"N={n}, kappa={kappa}: formula {want:.5f} nats, Monte Carlo {estimate:.5f} ± {error:.5f}")


def test_pair_information_in_three_dimensions_has_a_closed_form():
    """On S^2: I = log(kappa / sinh kappa) + kappa coth kappa - 1."""
    cost = load_recovery_cost()
    for kappa in (0.5, 3.0, 20.0):
        want = math.log(kappa / math.sinh(kappa)) + kappa / math.tanh(kappa) - 1
        assert cost.pair_information(3, kappa) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_cost_law_fit_recovers_known_constants():
    cost = load_recovery_cost()
    g = rng(41)
    n = np.repeat([3, 5, 10, 20], 12)
    info = np.tile(np.geomspace(0.05, 10, 12), 4)
    exact = 2e6 * n ** 0.4 * info ** -1.1
    fit = cost.fit_law(n, info, exact)
    assert (fit["c"], fit["a"], fit["b"]) == pytest.approx((2e6, 0.4, 1.1), rel=1e-9)
    assert fit["scatter"] < 1e-9
    noisy = cost.fit_law(n, info, exact * np.exp(0.1 * g.standard_normal(len(n))))
    for name, want in (("a", 0.4), ("b", 1.1)):
        assert abs(noisy[name] - want) < 3 * noisy[f"se_{name}"], (name, noisy)
        assert 0 < noisy[f"se_{name}"] < 0.1, (name, noisy)
    assert abs(math.log(noisy["c"] / 2e6)) < 3 * noisy["se_log_c"]
    assert 0.07 < noisy["scatter"] < 0.13, noisy
    single = cost.fit_law(np.full(6, 10), np.geomspace(0.1, 5, 6), 3e6 * np.geomspace(0.1, 5, 6) ** -0.9)
    assert (single["a"], single["b"]) == pytest.approx((0.0, 0.9), abs=1e-9)
    assert cost.law_pairs(fit, 10, 2.0) == pytest.approx(2e6 * 10 ** 0.4 * 2.0 ** -1.1, rel=1e-9)
    with pytest.raises(ValueError, match="needs more than 3 runs"):
        cost.fit_law([3, 5, 10], [1.0, 2.0, 3.0], [1e6, 2e6, 3e6])


def test_cost_report_gives_what_whitening_changes_run_by_run():
    cost = load_recovery_cost()
    run = dict(n=10, kappa=3.0, seed=0)
    records = [{**run, "set": "study", "pairs_099": 2e7}, {**run, "set": "plain", "pairs_099": 3e7},
               {**run, "seed": 1, "set": "plain", "pairs_099": 5e7},  # no whitened partner
               {**run, "seed": 2, "set": "plain", "pairs_099": None}]
    text = "\n".join(cost.plain_lines(records))
    assert "N = 10, kappa = 3: 1.50." in text, text
    assert cost.plain_lines(records[:1]) == []


def test_cost_ratio_of_a_point_counts_censored_runs_as_lower_bounds():
    cost = load_recovery_cost()
    run = dict(set="large-kappa", n=10, kappa=50.0, finished=True, censored=False)
    reached = [{**run, "pairs_099": p, "pairs": p} for p in (2e6, 4e6)]
    capped = {**run, "pairs_099": None, "pairs": 5e7, "censored": True}
    assert cost.measured_cells(reached + [capped], "large-kappa", 10, 50.0, 1e6) == "4.00 (3 runs, 1 censored) | 4.00"
    assert cost.measured_cells(reached[:1] + [capped, capped], "large-kappa", 10, 50.0, 1e6) == \
        "> 50.00 (3 runs, 2 censored) | > 50.00"
    assert cost.measured_cells(reached, "large-kappa", 10, 50.0, 2e6) == "3.00 (2 runs) | 1.50"
    at_cap = {**run, "pairs_099": 5e7, "pairs": 5e7}
    assert cost.measured_cells([capped, reached[0], at_cap], "large-kappa", 10, 50.0, 1e6) == \
        "50.00 (3 runs, 1 censored) | 50.00", "a run that stopped at the cap is the median, exactly"
    paused = {**capped, "finished": False, "censored": False}
    assert cost.measured_cells(reached + [paused], "large-kappa", 10, 50.0, 1e6) == "2 of 3 runs reached it | -"
    assert cost.measured_cells(reached, "study", 10, 50.0, 1e6) == "0 of 0 runs reached it | -"


def test_cost_law_is_fitted_inside_its_domain_and_registered_once(tmp_path, capsys):
    """The fit leaves out study runs beyond the domain (kappa > 20) and every other set;
    --register writes a held-out set's predictions from the fit once; --predict says
    when a point lies outside the domain."""
    import train
    cost = load_recovery_cost()
    law = dict(c=1e3, a=3.0, b=0.8)

    def run(set_name, n, kappa, factor=1.0):
        info = cost.pair_information(n, kappa)
        return {"set": set_name, "n": n, "kappa": kappa, "info": info, "finished": True,
                "fitted": set_name == "study" and cost.in_domain(n, kappa),
                "pairs_099": factor * cost.law_pairs(law, n, info)}
    records = [run("study", n, k) for n, k in ((3, 10.0), (5, 10.0), (10, 1.0), (10, 5.0), (20, 20.0))]
    outside = [run("study", 20, 50.0, 13.0), run("held-out", 5, 30.0, 2.0), run("plain", 10, 5.0, 1.3)]
    fit = cost.fit_records(records + outside, "pairs_099")
    assert (fit["c"], fit["a"], fit["b"], fit["runs"]) == pytest.approx((1e3, 3.0, 0.8, 5), rel=1e-9)
    assert not cost.in_domain(2, 10.0) and not cost.in_domain(10, 0.5) and cost.in_domain(20, 20.0)
    floor, study = cost.run_config("tau-floor", 10, 100.0, 0), cost.run_config("study", 10, 100.0, 0)
    assert (floor.tau, floor.steps, study.tau, study.steps) == (0.05, 100_000, 0.01, cost.BASE.steps)
    train.write_json(str(tmp_path / "cost.json"), {"pairs_099": fit, "pairs_jump": fit,
                                                   "pairs_per_second": 1e5})
    cost.register(str(tmp_path), "held-out-2")
    saved = train.read_json(str(tmp_path / "cost-predictions-2.json"))
    assert [(p["n"], p["kappa"]) for p in saved["points"]] == cost.HELD_OUT_2
    assert saved["points"][0]["pairs_099"] == pytest.approx(
        cost.law_pairs(law, 12, cost.pair_information(12, 3.0)), rel=1e-9)
    with pytest.raises(SystemExit, match="registered once"):
        cost.register(str(tmp_path), "held-out-2")
    cost.register(str(tmp_path), "tau-floor-2")
    floored = train.read_json(str(tmp_path / "cost-predictions-3.json"))["points"]
    assert [p["pairs_099"] for p in floored] == pytest.approx(
        [cost.law_pairs(law, n, cost.pair_information(n, 20.0)) for n, _ in cost.TAU_FLOOR_2], rel=1e-9)
    assert set(cost.read_predictions(str(tmp_path))) == {"held-out-2", "tau-floor-2"}
    capsys.readouterr()
    cost.predict(str(tmp_path), 20, 50.0)
    said = capsys.readouterr().out
    assert "outside the law's domain" in said and "with tau held at 0.05" in said, said
    cost.predict(str(tmp_path), 10, 3.0)
    assert "outside" not in capsys.readouterr().out


def test_cost_other_forms_fit_the_law_and_score_its_held_out_points():
    """Runs that follow c N^a I^(-b) exactly: every form (each contains the law) fits
    them with no scatter and predicts the held-out points exactly."""
    cost = load_recovery_cost()
    law = dict(c=1e3, a=3.0, b=0.8)

    def run(set_name, n, kappa):
        info = cost.pair_information(n, kappa)
        return {"set": set_name, "n": n, "kappa": kappa, "info": info, "finished": True,
                "fitted": set_name == "study", "pairs_099": cost.law_pairs(law, n, info)}
    records = [run("study", n, k) for n in (3, 5, 10, 20) for k in (1.0, 3.0, 10.0)]
    records += [run("held-out", 7, 2.0), run("held-out", 15, 5.0)]
    predictions = {"held-out": {"points": [{"n": 7, "kappa": 2.0}, {"n": 15, "kappa": 5.0}]}}
    rows = [line for line in cost.form_lines(records, predictions) if line.startswith("| ") and "×" in line]
    assert len(rows) == len(cost.OTHER_FORMS), rows
    assert all(row.endswith("| ×1.00 | 1.00, 1.00 |") for row in rows), rows
    assert cost.form_lines(records, {}) == []


def test_cost_records_read_the_jump_and_the_stop_from_the_log(tmp_path):
    """pairs to the jump: the first evaluation with held-out R² >= 0.95; pairs to
    0.99: the stop, two evaluations in a row at or above it on the rule's samples."""
    import train
    cost = load_recovery_cost()
    cfg = cost.run_config("study", 3, 10.0, 0, cost.BASE.replace(steps=900, batch_size=32))
    path = tmp_path / "run"
    path.mkdir()
    train.write_json(str(path / "config.json"), {"preset": None, **cfg.to_dict()})
    rows = [(100, 0.5, 0.5), (200, 0.96, 0.97), (300, 0.98, 0.991), (400, 0.989, 0.985),
            (500, 0.99, 0.992), (600, 0.995, 0.994)]
    train.write_text(str(path / "log.csv"), train.csv_text(
        [{"step": s, "loss": 0, "r2": r, "mcc": 0, "seconds": s / 100, "stop_r2": q} for s, r, q in rows],
        train.log_columns(cfg)))
    train.write_json(str(path / "metrics.json"), {"steps": 600, "seconds": 6.0, "r2": 0.995})
    record = cost.run_record(("study", 3, 10.0, cfg, str(path)))
    assert record["pairs_jump"] == 200 * 32 and record["pairs_099"] == 600 * 32
    assert not record["censored"] and record["pairs_per_second"] == pytest.approx(600 * 32 / 6.0)
    train.write_json(str(path / "metrics.json"), {"steps": 900, "seconds": 9.0, "r2": 0.99})
    train.write_text(str(path / "log.csv"), train.csv_text(
        [{"step": s, "loss": 0, "r2": r, "mcc": 0, "seconds": 1, "stop_r2": q}
         for s, r, q in rows[:4] + [(900, 0.99, 0.989)]], train.log_columns(cfg)))
    record = cost.run_record(("study", 3, 10.0, cfg, str(path)))
    assert record["censored"] and record["pairs_099"] is None and record["pairs"] == 900 * 32
    os.remove(path / "metrics.json")  # paused by SIGTERM: its pairs so far are a lower bound
    paused = cost.run_record(("study", 3, 10.0, cfg, str(path)))
    assert not paused["finished"] and not paused["censored"] and paused["pairs_099"] is None
    assert paused["pairs"] == 900 * 32 and paused["r2"] == 0.99 and paused["pairs_jump"] == 200 * 32
    finished = [{**record, "n": n, "info": info, "pairs_jump": p, "finished": True}
                for n, info, p in ((3, 1.0, 1e5), (5, 1.0, 4e5), (3, 2.0, 6e4), (5, 0.5, 9e5))]
    fit = cost.fit_records(finished, "pairs_jump")
    assert cost.fit_records(finished + [paused], "pairs_jump") == fit, "a paused run entered the fit"
    assert cost.run_record(("study", 3, 10.0, cfg.replace(seed=1), str(path))) is None, \
        "a run of another configuration was read as this one"


def test_evaluation_with_growth_is_at_most_that_fraction_late():
    import train
    cfg = TINY.replace(steps=5000, eval_every=1000, eval_growth=0.02)
    log, steps = [], []
    for step in range(1, cfg.steps + 1):
        if train.evaluation_due(cfg, step, log):
            log.append({"step": step})
            steps.append(step)
    gaps = np.diff(steps)
    assert np.all(gaps <= np.maximum(1, np.ceil(0.02 * np.array(steps[1:])))), "an evaluation came late"
    assert steps[-1] == 5000 and all(s in steps for s in (1000, 2000, 3000, 4000))
    assert len(steps) < 400, f"{len(steps)} evaluations in 5000 steps"
    with pytest.raises(ValueError, match="eval_growth"):
        C.check_config(TINY.replace(eval_growth=0.0))


COST_TOY = ["--seeds", "0", "--jobs", "1", "--points", "3:10,5:10", "--base",
            '{"widths": [8, 8], "steps": 1500, "eval_every": 500, "eval_size": 64, '
            '"whiten_samples": 500, "batch_size": 32, "cond_pool": 10}']


def run_cost(args, cwd):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, os.path.join(HERE, "bench", "recovery_cost.py"), *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_interrupted_cost_study_resumes_to_the_table_of_a_whole_one(tmp_path):
    process = run_cost([*COST_TOY, "--out", "cut", "--results", "cut-results"], tmp_path)
    out, err = signal_after(process, "s0: R²", 15)
    assert process.returncode == 143, f"exit {process.returncode}: {err}"
    assert "study interrupted" in err and not (tmp_path / "cut-results" / "cost.csv").exists()
    again = run_cost([*COST_TOY, "--out", "cut", "--results", "cut-results"], tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out.count("already finished") == 1, out
    whole = run_cost([*COST_TOY, "--out", "whole", "--results", "whole-results"], tmp_path)
    assert whole.communicate(timeout=300) and whole.returncode == 0
    tables = []
    for directory in ("cut-results", "whole-results"):
        with open(tmp_path / directory / "cost.csv") as f:
            tables.append([{k: v for k, v in r.items() if k not in ("seconds", "pairs_per_second")}
                           for r in csv.DictReader(f)])
    assert len(tables[0]) == 2 and tables[0] == tables[1], tables
    assert (tmp_path / "cut-results" / "cost.png").exists()


# ----------------------------------------------------------------------------
# The ladder (results/ladder.md; bench/ladder.py)
# ----------------------------------------------------------------------------

def load_bench(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_departures_are_exactly_the_official_recipe_plus_the_learned_radius():
    """The groups the ladder reverts cover every field --recipe official sets, with the
    official recipe's values, and nothing else but the learned radius (part of the head)."""
    import train
    fields = {}
    for name, group in train.DEPARTURES.items():
        assert not set(group) & set(fields), f"{name} repeats a field"
        fields.update(group)
    assert fields.pop("learn_radius") is False
    assert fields == train.RECIPES["official"]


@pytest.mark.parametrize("row", ["sphere_vmf_k10", "box_laplace_l1", "sphere_laplace"])
def test_each_rung_differs_from_its_preset_in_exactly_the_fields_it_names(row):
    import train
    ladder = load_bench("ladder")
    preset = train.PRESETS[row].config.replace(seed=1000)
    names = ladder.rungs(row)
    assert names[0] == "preset" and names[-1] == "official"
    assert ("learned radius" in names) == preset.learn_radius
    cadence = ("eval_every", "eval_growth", "supervised_steps")
    for rung in names:
        cfg = ladder.rung_config(row, rung, 1000)
        # every rung keeps the preset's pairs
        assert cfg.steps * cfg.batch_size == pytest.approx(preset.steps * preset.batch_size, rel=1e-3)
        assert cfg.eval_every <= 0.02 * cfg.steps and cfg.eval_growth == 0.02   # every 2 % of the pairs
        changed = {k for k, v in cfg.to_dict().items() if v != preset.to_dict()[k] and k not in cadence}
        if rung == "preset":
            assert changed == set()
            continue
        group = train.RECIPES["official"] if rung == "official" else train.DEPARTURES[rung]
        named = {k for k, v in group.items() if getattr(preset, k) != v}
        scaled = {"steps", "warmup", "self_pair_until"} & {k for k in train.STEP_FIELDS if getattr(preset, k)}
        batch_moved = cfg.batch_size != preset.batch_size
        assert changed == named | ((scaled - set(group)) if batch_moved else set()), rung
        for k in named:
            assert getattr(cfg, k) == group[k]


def test_ladder_runner_reads_finished_runs_and_resumes_an_interrupted_one(tmp_path, monkeypatch):
    """A toy ladder (one row, tiny encoder, few steps): the first pass is stopped after
    its first evaluation; the same call again continues it from its checkpoint to the
    numbers of an uninterrupted run, and a third call reads everything back."""
    import train
    ladder = load_bench("ladder")
    row = "sphere_vmf_k10"
    toy = train.PRESETS[row].config.replace(widths=(8, 8), steps=24, batch_size=64, eval_size=256,
                                            whiten_samples=2000, n=3, warmup=2)
    monkeypatch.setitem(train.PRESETS, row, train.PRESETS[row].__class__(
        **{**train.PRESETS[row].__dict__, "config": toy}))
    jobs = [j for j in ladder.ladder_jobs(str(tmp_path / "runs"), ("ladder",), [row], ["preset", "batch"],
                                          [1000])]
    assert sorted(j[2] for j in jobs) == ["batch", "preset"]
    preset_job = next(j for j in jobs if j[2] == "preset")
    # stop the preset run right after its first checkpoint
    calls = {"n": 0}
    real_save = train.save_checkpoint

    def save_then_stop(run_dir, state):
        real_save(run_dir, state)
        calls["n"] += 1
        if calls["n"] == 1:
            train.STOP["signum"] = 15
    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    monkeypatch.setattr(train, "stop_requested", lambda: train.STOP["signum"] is not None)
    monkeypatch.setitem(train.STOP, "signum", None)
    assert ladder.ladder_job(preset_job) == {"status": "interrupted"}
    partial = ladder.run_record(preset_job)
    assert partial is not None and not partial["finished"] and partial["steps"] < toy.steps
    train.STOP["signum"] = None
    assert ladder.ladder_job(preset_job) == {"status": "finished"}
    resumed = ladder.run_record(preset_job)
    assert resumed["finished"] and resumed["steps"] == toy.steps
    fresh = train.run(preset_job[4], None, row, say=lambda line: None, baseline=False)
    assert (resumed["r2"], resumed["mcc"]) == (fresh["r2"], fresh["mcc"])
    # read back, not trained again
    monkeypatch.setattr(train, "run", lambda *a, **k: 1 / 0)
    assert ladder.ladder_job(preset_job) == {"status": "finished"}
    monkeypatch.undo()


# ----------------------------------------------------------------------------
# A finished run stays finished
# ----------------------------------------------------------------------------

def _files_and_times(run_dir):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.iterdir()}


def test_resume_of_the_committed_kappa1_run_reports_its_verdict_without_training(tmp_path):
    """results/kappa1/long stopped at R² >= 0.99 twice, but its log predates the
    stopping rule's own samples: --resume must not train it on."""
    import shutil
    run_dir = tmp_path / "long"
    shutil.copytree(os.path.join(HERE, "results", "kappa1", "long"), run_dir)
    before = _files_and_times(run_dir)
    result = run_cli(["--out", str(run_dir), "--resume", "--no-plots"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "has finished (330000 steps)" in result.stdout and "recovered: held-out R² 0.990" in result.stdout
    assert _files_and_times(run_dir) == before, "a finished run was touched"


def test_resume_of_a_finished_run_with_an_old_format_log_trains_nothing(tmp_path):
    """A run with a stopping rule whose log.csv and checkpoint have no stop_r2 column
    (as logs written before the rule had its own samples): its metrics.json decides."""
    import json
    import train
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = TINY.replace(stop_r2=1.0, supervised_steps=0)
    train.run(cfg, str(run_dir), say=lambda line: None, baseline=False)
    with open(run_dir / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert "stop_r2" in rows[0]
    (run_dir / "log.csv").write_text(train.csv_text(rows, train.LOG_COLUMNS))
    with np.load(run_dir / "checkpoint.npz") as data:
        saved = dict(data)
    log = [{k: v for k, v in row.items() if k != "stop_r2"} for row in json.loads(str(saved["log"]))]
    np.savez(run_dir / "checkpoint.npz", **{**saved, "log": json.dumps(log)})
    before = _files_and_times(run_dir)
    result = run_cli(["--out", str(run_dir), "--resume", "--no-plots"], tmp_path)
    assert result.returncode == 0 and "its recorded verdict" in result.stdout, result.stderr
    assert _files_and_times(run_dir) == before


def test_resume_with_a_raised_step_budget_continues_training_and_a_lower_one_is_refused(tmp_path):
    import json
    run_dir = tmp_path / "run"
    common = ["--out", str(run_dir), "--no-plots", "--quiet"]
    first = run_cli(["--n", "3", "--widths", "8,8", "--batch-size", "32", "--steps", "20", "--eval-every",
                     "10", "--eval-size", "64", "--supervised-steps", "0", "--whiten-samples", "500",
                     *common], tmp_path)
    assert first.returncode == 0, first.stderr
    raised = run_cli(["--resume", "--steps", "30", *common], tmp_path)
    assert raised.returncode == 0, raised.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 30
    lower = run_cli(["--resume", "--steps", "10", *common], tmp_path)
    assert lower.returncode == 2 and "raised, not lowered" in lower.stderr


# ----------------------------------------------------------------------------
# The README's numbers against the files they come from
# ----------------------------------------------------------------------------

def readme_text(flat=True):
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return " ".join(text.split()) if flat else text


def read_csv(*parts):
    with open(os.path.join(HERE, *parts), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_readme_grid_table_matches_grid_csv_and_the_sweeps():
    """Each grid row of the README: bars, steps, met, mean R², mean MCC and seconds from
    results/grid.csv; fresh seeds met from the sweeps' grid.csv files."""
    import train
    rows = read_csv("results", "grid.csv")
    sweeps = [r for name in ("fresh-1000", "fresh-1000-rest", "kappa1-1000")
              for r in read_csv("results", "sweeps", name, "grid.csv")]
    symbols = {"r2": "R²", "mcc": "MCC", ">=": "≥", "<": "<"}
    lines = readme_text(flat=False).splitlines()
    for name in train.GRID_PRESETS:
        mine = [r for r in rows if r["preset"] == name]
        fresh = [r for r in sweeps if r["preset"] == name]
        assert len(mine) == 3 and fresh, name
        bars = ", ".join(f"{symbols[m]} {symbols[op]} {v:g}" for m, op, v in train.PRESETS[name].bars)
        expected = (f"| {name} | {bars} | {train.step_range([r['steps'] for r in mine])} | "
                    f"{sum(r['met'] == 'True' for r in mine)}/3 | "
                    f"{np.mean([float(r['r2']) for r in mine]):.3f} | "
                    f"{np.mean([float(r['mcc']) for r in mine]):.3f} | "
                    f"{np.mean([float(r['seconds']) for r in mine]):.0f} | "
                    f"{sum(r['met'] == 'True' for r in fresh)}/{len(fresh)} |")
        assert expected in lines, f"README's row for {name} differs from grid.csv: {expected}"
    met = sum(r["met"] == "True" for r in rows)
    assert f"grid: {met}/{len(rows)} runs met their bars" in readme_text()


def test_readme_table_of_differences_matches_list_and_the_recipes(capsys):
    """The README's table and `--list` print train.differences_table(), which is made
    from RECIPES, DEPARTURES and the presets (the test above them checks those agree)."""
    import train
    table = train.differences_table()
    readme = readme_text(flat=False).splitlines()
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table
    assert readme[start + len(table)].strip() == "", "the README's table has rows the code does not"
    train.list_presets()
    printed = capsys.readouterr().out.splitlines()
    assert all(line in printed for line in table)
    for name, group in train.DEPARTURES.items():   # every departure is a row, with its reference value
        row = next(line for line in table if line.startswith(f"| {name} |"))
        if name != "learned radius":
            cfg = train.reverted(train.CPU.replace(head="sphere"), [name])
            assert train.describe_departure(name, cfg) in row


def test_readme_cost_law_matches_cost_json_and_its_predictions_cost_md():
    import json
    readme = readme_text()
    with open(os.path.join(HERE, "results", "cost.json")) as f:
        fit = json.load(f)["pairs_099"]
    assert (f"a = {fit['a']:.2f} ± {fit['se_a']:.2f}, b = {fit['b']:.2f} ± {fit['se_b']:.2f}, "
            f"scatter ×{math.exp(fit['scatter']):.2f}") in readme
    assert f"The {fit['runs']} runs with κ ≤ 20" in readme
    with open(os.path.join(HERE, "results", "cost.md"), encoding="utf-8") as f:
        cost = f.read()
    ratios = []
    for section in cost.split("## Held-out predictions: ")[1:]:
        table = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("| ")][1:]
        ratios += [line.strip("| ").split(" | ")[-1] for line in table]
    assert len(ratios) == 10
    import re
    quoted = readme.split("scored measured/predicted ")[1].split(" (the last three")[0]
    assert re.findall(r"\d+\.\d+", quoted) == ratios
    within = sum(1 / 1.5 <= float(r) <= 1.5 for r in ratios)
    assert f": {['no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'][within]} within ×1.5" in readme


def test_readme_default_run_matches_its_metrics_json():
    import json
    with open(os.path.join(HERE, "results", "default", "metrics.json")) as f:
        m = json.load(f)
    readme = readme_text()
    assert (f"held-out R² {m['r2']:.3f}, MCC {m['mcc']:.3f} (identity {m['identity_r2']:.3f}, "
            f"supervised {m['supervised_r2']:.3f})") in readme
    assert f"Training took {m['seconds']:.2f} s" in readme


def test_readme_library_snippet_prints_the_lines_the_readme_shows():
    """The "Using the library" code, run as it stands, prints the README's lines (numbers
    to 1e-9 relative, text exactly)."""
    import contextlib
    import io
    import re
    text = readme_text(flat=False).split("## Using the library", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    shown = text.split("prints\n\n```\n", 1)[1].split("```", 1)[0].strip().splitlines()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README snippet", "exec"), {})
    printed = out.getvalue().strip().splitlines()
    number = r"-?\d+\.\d+(?:e-?\d+)?"
    assert len(printed) == len(shown)
    for got, want in zip(printed, shown):
        assert re.sub(number, "#", got) == re.sub(number, "#", want), (got, want)
        assert np.allclose([float(v) for v in re.findall(number, got)],
                           [float(v) for v in re.findall(number, want)], rtol=1e-9, atol=0), (got, want)


# ----------------------------------------------------------------------------
# Where the theory ends (bench/boundaries.py)
# ----------------------------------------------------------------------------

def test_readme_where_the_theory_ends_quotes_the_boundaries_summary():
    """README "Where the theory ends" quotes results/boundaries/summary.csv (written by
    `python bench/boundaries.py --summary`): each row's R² span, and its orthogonality gap
    or precisions' correlation; MCC for the anisotropic rows. The csv's seeds, bars met,
    R² and MCC are those of the runs' metrics.json files."""
    import train
    boundaries = load_bench("boundaries")
    rows = read_csv("results", "boundaries", "summary.csv")
    assert {r["preset"] for r in rows} == set(boundaries.SUMMARY_ROWS)
    section = readme_text().split("## Where the theory ends", 1)[1].split(" ## ", 1)[0]
    for row in rows:
        root = ("ladder" if row["preset"] == "sphere_vmf_k10" else "boundaries")
        runs = [train.read_json(os.path.join(HERE, "results", root, "runs", name, "metrics.json"))
                for name in os.listdir(os.path.join(HERE, "results", root, "runs"))
                if name.startswith(row["preset"] + ("-preset-s" if root == "ladder" else "-s"))]
        runs = [m for m in runs if m is not None]
        assert row["seeds"] == boundaries.seed_span(sorted(m["seed"] for m in runs)), row
        assert row["met"] == (f"{sum(m['met'] for m in runs)}/{len(runs)}"
                              if train.PRESETS[row["preset"]].bars else "no bar"), row
        for key in ("r2", "mcc"):
            assert float(row[f"{key}_min"]) == min(m[key] for m in runs), row
            assert float(row[f"{key}_max"]) == max(m[key] for m in runs), row
        line = boundaries.summary_line(row)
        quoted = [line.split("held-out R² ")[1].split(",")[0],
                  line.split("orthogonality gap " if row["gap_min"] else "correlation ")[1]]
        if row["preset"].startswith("aniso"):
            quoted.append(line.split("MCC ")[1].split(",")[0])
        for text in quoted:                                 # ranges with an en dash in the README
            assert text.replace("-", "–") in section, (row["preset"], text)


def test_theorem_4_5_as_a_number_restricted_support_moves_the_minimum_below_lambda_1():
    """The asymptotic loss of h_lambda(u, v) = (u, lambda v)/||.|| on S² (tau 0.3): with
    full support its slope at lambda = 1 is zero within its noise and its curvature is
    positive (the identity minimises it); with the positive keeping u the slope is
    positive by more than ten standard errors, so some lambda < 1 scores lower
    (Zaliaduonis et al., Theorem 4.5). The noise would also have shown a slope a fifth
    of the restricted one."""
    boundaries = load_bench("boundaries")
    full = boundaries.theorem_4_5("vmf", pairs=4000, seed=0)
    restricted = boundaries.theorem_4_5("restricted_vmf", pairs=4000, seed=0)
    assert restricted["slope"] > 10 * restricted["slope_se"], restricted
    assert all(restricted["losses"][lam] < 0 for lam in (0.9, 0.95, 0.98)), restricted["losses"]
    assert abs(full["slope"]) < 2 * full["slope_se"] < restricted["slope"] / 5, (full, restricted)
    assert full["curvature"] > 10 * full["curvature_se"], full
    assert all(value >= 0 for value in full["losses"].values()), full["losses"]


def test_the_boundaries_figure_draws_runs_of_a_restricted_row_and_a_learned_precision(tmp_path):
    """bench/boundaries.py --figure reads finished runs below the results directory: a
    restricted-support run gives an R² and a gap, a run with a learned precision its
    matched precisions; the figure is written."""
    import train
    boundaries = load_bench("boundaries")
    plain = train.PRESETS["restricted_plain_n3"].config.replace(
        widths=(8, 8), batch_size=32, steps=4, eval_every=2, eval_size=256, supervised_steps=0,
        cond_pool=10)
    runs = tmp_path / "boundaries" / "runs"
    for part in ("runs/restricted_plain_n3-s0", "runs/aniso_linear-s0", "tuning/aniso"):
        os.makedirs(tmp_path / "boundaries" / part)
    train.run(plain, str(runs / "restricted_plain_n3-s0"),
              preset="restricted_plain_n3", say=lambda line: None, baseline=False)
    aniso = TINY.replace(n=4, space="sphere", head="sphere", conditional="aniso_normal",
                         precisions=C.linear_precisions(4), p=2.0, tau=1.0, learn_precision=True,
                         supervised_steps=0, marginal="uniform")
    train.run(aniso, str(tmp_path / "boundaries" / "tuning" / "aniso"), say=lambda line: None,
              baseline=False)
    train.run(aniso.replace(seed=7), str(runs / "aniso_linear-s0"), preset="aniso_linear",
              say=lambda line: None, baseline=False)
    path = boundaries.figure(results=str(tmp_path), pairs=50)
    assert os.path.getsize(path) > 0
    found = dict((os.path.basename(d), preset) for preset, d in
                 boundaries.finished_runs(str(tmp_path / "boundaries")))
    assert found == {"restricted_plain_n3-s0": "restricted_plain_n3", "aniso_linear-s0": "aniso_linear",
                     "aniso": None}
    # --summary: one row per preset of the runs directory (not the tuning runs), with the
    # gap for a fixed similarity and the precisions' correlation for a learned one
    rows = {row["preset"]: row for row in boundaries.summary(results=str(tmp_path))}
    assert set(rows) == {"restricted_plain_n3", "aniso_linear"}
    plain_metrics = train.read_json(str(runs / "restricted_plain_n3-s0" / "metrics.json"))
    assert rows["restricted_plain_n3"]["r2_min"] == rows["restricted_plain_n3"]["r2_max"] == plain_metrics["r2"]
    assert rows["restricted_plain_n3"]["gap_min"] == boundaries.gap_report(str(runs / "restricted_plain_n3-s0"))[1]
    assert (rows["aniso_linear"]["correlation_max"]
            == boundaries.precision_report(str(runs / "aniso_linear-s0"))["correlation"])
    assert rows["aniso_linear"]["seeds"] == "7" and "gap_min" not in rows["aniso_linear"]
    line = boundaries.summary_line(rows["restricted_plain_n3"])
    assert line.startswith("restricted_plain_n3: seeds 0, met ") and "orthogonality gap" in line


# ----------------------------------------------------------------------------
# Anisotropic conditionals and the learned precision (README §2, §5)
# ----------------------------------------------------------------------------

def test_aniso_normal_draws_unit_vectors_whose_spread_follows_the_precisions():
    """Around the anchor e_1, the tangential coordinates of z_tilde have variances in the
    ratio of 1 / Λ_k (the normalisation scales them all alike)."""
    n = 6
    precisions = C.linear_precisions(n)
    cfg = C.check_config(C.Config(n=n, conditional="aniso_normal", precisions=precisions))
    z = np.tile(np.eye(n)[0], (40000, 1))
    z_tilde = C.sample_conditional(cfg, z, rng(42))
    assert np.allclose(np.linalg.norm(z_tilde, axis=1), 1.0)
    scaled = z_tilde[:, 1:].var(axis=0) * np.array(precisions[1:])
    assert np.allclose(scaled / scaled.mean(), 1.0, atol=0.05), scaled
    assert C.bimodal_precisions(4) == (25.0, 25.0, 5.0, 5.0)
    assert C.linear_precisions(3) == (5.0, 15.0, 25.0)


def test_aniso_normal_rejects_draws_far_from_the_sphere_and_says_when_it_cannot():
    """A draw is kept only when | 1 - ||z + delta|| | < 0.1: with Λ = 1e-4 (noise of sd 100)
    almost none is, and the sampler stops with an error naming the cause."""
    with pytest.raises(ValueError, match="precisions are too small"):
        C.sample_aniso_normal(np.tile(np.eye(5)[0], (50, 1)), (1e-4,) * 5, rng(43), max_rounds=5)
    with pytest.raises(ValueError, match="precisions must hold n = 3"):
        C.check_config(C.Config(n=3, conditional="aniso_normal", precisions=(1.0, 2.0)))


@pytest.mark.parametrize("self_pair", [False, True])
def test_learned_precision_gradient_equals_finite_differences(self_pair):
    from autograd import grad
    from autograd.misc import flatten
    # rng(1), as the other gradient tests: with rng(44) an output of the MLP lies near 0, where
    # the sphere head curves so sharply that central differences with eps 1e-5 miss by 1.1e-4
    # (1.1e-6 with eps 1e-6: the error falls as eps², the truncation of the differences)
    g = rng(1)
    cfg = C.check_config(C.Config(n=3, widths=(5, 4), head="sphere", p=2, tau=1.0, learn_precision=True,
                                  self_pair=self_pair, dtype="float64"))
    params = C.init_encoder(3, cfg.widths, "sphere", g, "float64", learn_precision=True)
    params["precision"] = np.array([-1.0, 0.5, 2.0])
    x, x_tilde = g.standard_normal((6, 3)), g.standard_normal((6, 3))
    flat, unflatten = flatten(params)
    auto = flatten(grad(C.contrastive_objective)(params, x, x_tilde, cfg))[0]
    numeric = finite_difference_gradient(lambda t: C.contrastive_objective(unflatten(t), x, x_tilde, cfg), flat)
    assert np.linalg.norm(auto - numeric) / np.linalg.norm(numeric) <= 1e-6
    assert np.linalg.norm(grad(C.contrastive_objective)(params, x, x_tilde, cfg)["precision"]) > 0


@pytest.mark.parametrize("c", [0.7, 3.0, 12.0])
def test_equal_learned_precisions_are_the_dot_product_loss_on_the_sphere(c):
    """README §5: on the unit sphere -½ c ||a - b||² = c aᵀb - c, and the constant
    cancels in every row, so Λ̂ = c 1 at tau 1 is the dot-product loss at tau = 1 / c."""
    g = rng(45)
    cfg = C.Config(n=4, widths=(9, 9), head="sphere", p=2, tau=1.0, learn_precision=True, dtype="float64")
    params = C.init_encoder(4, cfg.widths, "sphere", g, "float64", learn_precision=True)
    params["precision"] = np.full(4, math.log(math.expm1(c)))          # softplus⁻¹(c)
    x, x_tilde = g.standard_normal((16, 4)), g.standard_normal((16, 4))
    aniso = C.contrastive_objective(params, x, x_tilde, cfg)
    plain = {k: v for k, v in params.items() if k != "precision"}
    dot = C.contrastive_objective(plain, x, x_tilde, cfg.replace(p=None, tau=1 / c, learn_precision=False))
    assert aniso == pytest.approx(dot, rel=1e-12, abs=1e-12)


def test_the_learned_precision_takes_its_own_share_of_the_rate():
    """leaf_rates gives λ the rate lr * precision_lr / lr and every other leaf lr; one Adam
    step with those rates equals two steps taken with each rate alone on its leaves."""
    g = rng(46)
    cfg = C.Config(n=3, widths=(5,), head="sphere", p=2, learn_precision=True, lr=1e-3, precision_lr=5e-2,
                   dtype="float64")
    params = C.init_encoder(3, cfg.widths, "sphere", g, "float64", learn_precision=True)
    rates = C.leaf_rates(params, cfg, 2e-4)
    keys = [k for k in sorted(params) for _ in C.parameter_leaves(params[k])]
    assert [r for k, r in zip(keys, rates) if k == "precision"] == [pytest.approx(1e-2)]
    assert all(r == 2e-4 for k, r in zip(keys, rates) if k != "precision")
    grads = [g.standard_normal(np.shape(w)) for w in C.parameter_leaves(params)]
    both, _ = C.adam_update(params, grads, C.adam_init(params), rates)
    alone = [C.adam_update(params, grads, C.adam_init(params), rate)[0] for rate in (2e-4, 1e-2)]
    assert np.allclose(both["precision"], alone[1]["precision"])
    assert np.allclose(both["layers"][0][0], alone[0]["layers"][0][0])


def test_a_run_with_a_learned_precision_resumes_exactly(tmp_path):
    import train
    cfg = TINY.replace(conditional="aniso_normal", precisions=C.linear_precisions(3), p=2, tau=1.0,
                       learn_precision=True, precision_lr=1e-2, supervised_steps=0)
    whole = train.run(cfg, None, say=lambda line: None, baseline=False)
    (tmp_path / "run").mkdir()
    half = cfg.replace(steps=20)
    train.run(half, str(tmp_path / "run"), say=lambda line: None, baseline=False)
    state = train.load_checkpoint(str(tmp_path / "run"), half)
    assert "precision" in state["params"]
    train.write_json(str(tmp_path / "run" / "config.json"), {"preset": None, **cfg.to_dict()})
    resumed = train.run(cfg, str(tmp_path / "run"), resume=True, say=lambda line: None, baseline=False)
    assert (resumed["r2"], resumed["mcc"]) == (whole["r2"], whole["mcc"])


# ----------------------------------------------------------------------------
# The support-corrected loss (README §5)
# ----------------------------------------------------------------------------

def test_support_negatives_lie_in_the_anchors_own_support():
    g = rng(47)
    z = C.sample_uniform_sphere(500, 5, g)
    negatives = C.sample_support_negatives(z, 2, 40, g)
    assert negatives.shape == (500, 40, 5)
    assert np.array_equal(negatives[:, :, :2], np.broadcast_to(z[:, None, :2], (500, 40, 2)))
    assert np.allclose(np.linalg.norm(negatives, axis=2), 1.0)
    w = negatives[:, :, 2:] / np.linalg.norm(z[:, 2:], axis=1)[:, None, None]
    assert np.all(np.abs(w.reshape(-1, 3).mean(axis=0)) < 4 / math.sqrt(20000 * 3))   # uniform: mean 0


@pytest.mark.parametrize("p", [None, 1.0, 2.0])
def test_corrected_infonce_equals_a_double_loop(p):
    g = rng(48)
    h, h_tilde, h_negative = g.standard_normal((5, 3)), g.standard_normal((5, 3)), g.standard_normal((5, 4, 3))

    def s(a, b):
        return a @ b if p is None else -np.sum(np.abs(a - b) ** p)
    rows = []
    for i in range(5):
        terms = [s(h[i], h_tilde[i]) / 0.5] + [s(h[i], h_negative[i, j]) / 0.5 for j in range(4)]
        rows.append(-terms[0] + math.log(sum(math.exp(t) for t in terms)))
    assert C.corrected_infonce(h, h_tilde, h_negative, 0.5, p) == pytest.approx(np.mean(rows), rel=1e-12)


def test_corrected_objective_gradient_equals_finite_differences():
    from autograd import grad
    from autograd.misc import flatten
    g = rng(1)
    cfg = C.check_config(C.Config(n=4, widths=(9, 9), conditional="restricted_vmf", support_negatives=3,
                                  tau=0.5, dtype="float64"))
    params = C.init_encoder(4, cfg.widths, "sphere", g, "float64")
    x, x_tilde, x_negative = g.standard_normal((5, 4)), g.standard_normal((5, 4)), g.standard_normal((5, 3, 4))
    flat, unflatten = flatten(params)
    auto = flatten(grad(C.corrected_objective)(params, x, x_tilde, x_negative, cfg))[0]
    numeric = finite_difference_gradient(
        lambda t: C.corrected_objective(unflatten(t), x, x_tilde, x_negative, cfg), flat)
    assert np.linalg.norm(auto - numeric) / np.linalg.norm(numeric) <= 1e-6


def test_a_run_with_the_support_corrected_loss_trains_and_refuses_other_conditionals():
    import train
    cfg = TINY.replace(conditional="restricted_vmf", support_negatives=4, supervised_steps=0)
    metrics = train.run(cfg, None, say=lambda line: None, baseline=False)
    assert math.isfinite(metrics["loss"]) and metrics["steps"] == cfg.steps
    with pytest.raises(ValueError, match="support_negatives"):
        C.check_config(TINY.replace(support_negatives=4))


def test_beyond_rows_are_listed_apart_and_left_out_of_the_grid(capsys):
    import train
    assert train.BEYOND_PRESETS and not set(train.BEYOND_PRESETS) & set(train.GRID_PRESETS)
    train.list_presets()
    out = capsys.readouterr().out
    header = out.index("Beyond the paper's grid")
    assert all(out.index(f"\n{name} ") > header for name in train.BEYOND_PRESETS)
    assert all(out.index(f"{name} ") < header for name in train.GRID_PRESETS)
    for name in train.BEYOND_PRESETS:
        C.check_config(train.PRESETS[name].config)
    assert train.verdict({"met": True, "r2": 0.5, "mcc": 0.5, "identity_r2": 0.6, "seconds": 1.0},
                         "restricted_plain_n3").startswith("as theory expects")


# ----------------------------------------------------------------------------
# Speed (results/speed.md; bench/step.py)
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["dot", "l1"])
def test_the_step_profile_times_the_parts_of_the_real_step(loss):
    """bench/step.py --profile times the layers, head, loss and Adam one by one; the
    gradient those parts assemble is the gradient of the training step."""
    import train
    from autograd import grad
    step = load_bench("step")
    ms, grads = step.profile_step(loss, 16, (8, 8), threads=train.blas_threads() or 1,
                                  dtype="float64", reps=2, warmup=1)
    assert {"loss and its gradient", "Adam", "whole step", "rest", "layer 1 forward",
            "layer 3 backward: products"} <= set(ms)
    assert all(math.isfinite(value) and value >= 0 for name, value in ms.items() if name != "rest")
    cfg, _, params, batch, _ = step.setting(loss, "float64", 16, (8, 8))
    expected = C.parameter_leaves(grad(C.contrastive_objective)(params, *batch, cfg))
    assert len(grads) == len(expected)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
