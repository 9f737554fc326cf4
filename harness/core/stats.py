"""Intervals and paired tests for comparing checkpoints on the same problems.

Thirty AIME problems make a 3-point difference noise: every accuracy carries a 95% interval and
every comparison a paired test on the problems both runs answered.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (well-behaved at 0% and 100%, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)     # no problems: no information
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)     # exact at the edges (no 1e-17 residue)
    hi = 1.0 if correct >= n else min(1.0, centre + half)
    return (lo, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = right only in A, c = right only in B."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(b) - mean(a), resampling problems (pairs kept together)."""
    n = len(a)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    diffs = [bi - ai for ai, bi in zip(a, b)]
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return (stats[int(0.025 * resamples)], stats[min(resamples - 1, int(0.975 * resamples))])


@dataclass
class Paired:
    n: int                  # problems both runs answered
    acc_a: float
    acc_b: float
    diff: float             # acc_b - acc_a
    diff_ci95: tuple[float, float]
    only_a: int             # problems right in A only (per-problem majority when K > 1)
    only_b: int
    both: int
    neither: int
    p_mcnemar: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "diff_ci95": list(self.diff_ci95)}


def paired_compare(a: dict[str, float], b: dict[str, float], seed: int = 0) -> Paired:
    """Compare per-problem scores (fraction of samples correct) of two runs on their common problems."""
    common = sorted(set(a) & set(b))
    xa = [a[k] for k in common]
    xb = [b[k] for k in common]
    ra = [x >= 0.5 for x in xa]
    rb = [x >= 0.5 for x in xb]
    only_a = sum(x and not y for x, y in zip(ra, rb))
    only_b = sum(y and not x for x, y in zip(ra, rb))
    n = len(common)
    return Paired(
        n=n,
        acc_a=sum(xa) / n if n else 0.0,
        acc_b=sum(xb) / n if n else 0.0,
        diff=(sum(xb) - sum(xa)) / n if n else 0.0,
        diff_ci95=paired_bootstrap(xa, xb, seed=seed),
        only_a=only_a,
        only_b=only_b,
        both=sum(x and y for x, y in zip(ra, rb)),
        neither=sum(not x and not y for x, y in zip(ra, rb)),
        p_mcnemar=mcnemar_exact(only_a, only_b),
    )
