"""Bugs that ports commonly have, put one at a time into check_numpy.py: the vectors
must catch every one (PORTING.md, "What the vectors catch").

python conformance/mutants.py [path/to/vectors.json]
    prints, for each mutant, how many cases failed and the first of them; exits 1 if
    some mutant passed every case.

A mutant is a list of (original line, mutated line) replacements in check_numpy.py's
source; each original must occur there, so a change to the port that removes the
code a mutant targets fails loudly instead of testing nothing.
"""
import contextlib
import io
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

MUTANTS = [
    ("eps inside the square root", [
        ("new_p[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)",
         "new_p[k] = params[k] - lr * m_hat / np.sqrt(v_hat + eps)")]),
    ("no bias correction", [
        ("m_hat = new_m[k] / (1 - b1 ** t)", "m_hat = new_m[k]"),
        ("v_hat = new_v[k] / (1 - b2 ** t)", "v_hat = new_v[k]")]),
    ("log-sum-exp without subtracting the maximum", [
        ("top = rows.max(axis=1, keepdims=True)", "top = np.zeros((len(rows), 1))")]),
    ("p as a norm, not a power", [
        ("return -np.sum(np.abs(h_tilde[:, None, :] - h[None, :, :]) ** p, axis=2) / tau",
         "return -np.sum(np.abs(h_tilde[:, None, :] - h[None, :, :]) ** p, axis=2) ** (1 / p) / tau")]),
    ("the positive left out of the sum", [
        ("rows = s if c is None else np.hstack([s, c[:, None]])",
         "rows = np.where(np.eye(b, dtype=bool), -np.inf, s) if c is None else np.hstack([s, c[:, None]])")]),
    ("the self pair dropped", [
        ("c = (np.sum(h * h, axis=1) / tau if p is None else np.zeros(b)) if self_pair else None",
         "c = None")]),
    ("clipping instead of redrawing", [
        ("out = center + noise(center.shape)", "out = np.clip(center + noise(center.shape), low, high)")]),
    ("the radius not squared in the score", [
        ("tau / r ** 2", "tau / r")]),
]


def mutated_port(replacements):
    """check_numpy.py with the replacements made, as a fresh module."""
    with open(os.path.join(HERE, "check_numpy.py")) as f:
        source = f.read()
    for old, new in replacements:
        if old not in source:
            raise ValueError(f"check_numpy.py no longer holds {old!r}: update the mutant")
        source = source.replace(old, new)
    module = types.ModuleType("check_numpy_mutant")
    module.__file__ = os.path.join(HERE, "check_numpy.py")
    exec(compile(source, "check_numpy_mutant", "exec"), module.__dict__)
    return module


def failures(replacements, vectors):
    """The FAIL lines the mutated port prints on the vectors (numpy's overflow warnings
    silenced: overflowing is what some mutants do)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), np.errstate(all="ignore"):
        mutated_port(replacements).main(vectors)
    return [line for line in out.getvalue().splitlines() if line.startswith("FAIL")]


def main(vectors):
    survivors = 0
    for name, replacements in MUTANTS:
        failed = failures(replacements, vectors)
        survivors += not failed
        first = failed[0][len("FAIL "):] if failed else "-"
        print(f"{name}: {len(failed)} cases failed; first: {first}")
    print(f"{len(MUTANTS) - survivors} of {len(MUTANTS)} mutants caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "vectors.json")))
