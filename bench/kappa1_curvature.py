"""How strongly the loss at the ideal encoder resists an error of each harmonic degree.

python bench/kappa1_curvature.py [--batch 8192] [--repeats 8]

On the sphere (N = 10, vMF pairs, tau = 1/kappa, r = 1) the ideal encoder is
h(z) = z. This perturbs it along a zonal harmonic of degree l,
h(z) = normalize(z + eps C_l(u.z) w) with C_l the Gegenbauer polynomial of
index N/2 - 1, u = e_1 and w = e_2, and the perturbation
scaled to unit mean square; and prints c_l = (loss(eps) - loss(0)) / eps²,
the loss's curvature along that error, for kappa = 1 and 10. Every loss is
computed on the same pairs (common random numbers), averaged over repeats.

If a pair at kappa = 1 told the encoder about a degree-l error only with a
weight of order kappa^l, c_l at kappa = 1 would fall by about 10x per degree
relative to kappa = 10. Its ratio to the kappa = 10 value is printed per degree.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import clref as C  # noqa: E402

N = 10
DEGREES = (1, 2, 3, 4, 5)
EPSILONS = (0.1, 0.2)


def gegenbauer(l, nu, t):
    """C_l^(nu)(t) by the three-term recurrence."""
    previous, current = np.ones_like(t), 2 * nu * t
    if l == 0:
        return previous
    for k in range(2, l + 1):
        previous, current = current, (2 * t * (k + nu - 1) * current - (k + 2 * nu - 2) * previous) / k
    return current


# Root mean square of C_l(z_1) over the uniform sphere, per degree, estimated once
# on a fixed large sample.
REFERENCE = C.sample_uniform_sphere(200000, N, np.random.default_rng(123))
RMS = {l: np.sqrt(np.mean(gegenbauer(l, N / 2 - 1, REFERENCE[:, 0]) ** 2)) for l in DEGREES}


def perturbation(z, l):
    """C_l(z_1) e_2, scaled to unit mean square over the uniform sphere."""
    field = np.zeros_like(z)
    field[:, 1] = gegenbauer(l, N / 2 - 1, z[:, 0]) / RMS[l]
    return field


def curvatures(kappa, batch, repeats, seed=0):
    rng = np.random.default_rng(seed)
    cfg = C.Config(n=N, kappa=kappa)
    totals = {(l, eps): 0.0 for l in DEGREES for eps in EPSILONS}
    for _ in range(repeats):
        z, z_tilde = C.sample_pairs(cfg, batch, rng)
        base = C.infonce(z, z_tilde, 1 / kappa)
        for l in DEGREES:
            p, p_tilde = perturbation(z, l), perturbation(z_tilde, l)
            for eps in EPSILONS:
                loss = C.infonce(C.normalize(z + eps * p), C.normalize(z_tilde + eps * p_tilde),
                                 1 / kappa)
                totals[l, eps] += (loss - base) / eps ** 2 / repeats
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)
    by_kappa = {kappa: curvatures(kappa, args.batch, args.repeats) for kappa in (1.0, 10.0)}
    print(f"c_l = (loss(eps) - loss(0)) / eps², batch {args.batch}, {args.repeats} repeats, "
          f"N = {N}, tau = 1/kappa")
    print("| degree l | eps | c_l at kappa = 1 | c_l at kappa = 10 | ratio 1 / 10 |")
    print("|---|---|---|---|---|")
    for l in DEGREES:
        for eps in EPSILONS:
            one, ten = by_kappa[1.0][l, eps], by_kappa[10.0][l, eps]
            print(f"| {l} | {eps} | {one:.4f} | {ten:.4f} | {one / ten:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
