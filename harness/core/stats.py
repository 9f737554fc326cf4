"""Intervals and paired tests for comparing checkpoints on the same problems.

Thirty AIME problems make a 3-point difference noise: every accuracy carries a 95% interval and
every comparison a paired test on the problems both runs answered.

Independent problems, one sample each (AIME, MATH500, GPQA at K = 1): Wilson intervals, the exact
McNemar test, and for the difference an interval that agrees with that test and covers the true
difference whatever the number of discordant problems (paired_difference_interval).
Correlated items (arith: 6 phrasings of each operand pair; K > 1 samples of one problem): the unit
of resampling and of the test is the cluster (the operand pair; else the problem), never the row.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Hashable, Sequence

Z95 = 1.959963984540054
ALPHA = 0.05


def plural(n: int, noun: str) -> str:
    """'1 cluster', '2 clusters'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion: the inversion of the two one-sided
    exact binomial tests at alpha/2 each."""
    from scipy.special import betaincinv     # the Beta quantile (beta.ppf), without scipy.stats' per-call overhead

    if n == 0:
        return (0.0, 1.0)
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return (lo, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = right only in A, c = right only in B."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_interval(b: int, c: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Conditional interval for acc_B - acc_A: Clopper-Pearson for pi (the share of the m = b + c
    discordant problems that favour B) times the observed m/n. Kept for callers, no longer printed:
    treating m/n as known under-covers (80% at n = 30 with discordance 2% / 8%), ends at the point
    estimate when every discordant problem favours one side, and is [0, 0] when m = 0."""
    m = b + c
    if n == 0 or m == 0:
        return (0.0, 0.0)
    lo, hi = clopper_pearson(c, m, alpha)
    return (m / n * (2 * lo - 1), m / n * (2 * hi - 1))


def _scaled(pi_lo: float, pi_hi: float, q_lo: float, q_hi: float) -> tuple[float, float]:
    """Bounds of q (2 pi - 1) over pi in [pi_lo, pi_hi] and q in [q_lo, q_hi] (q >= 0)."""
    lo, hi = 2 * pi_lo - 1, 2 * pi_hi - 1
    return (lo * (q_hi if lo < 0 else q_lo), hi * (q_hi if hi > 0 else q_lo))


def paired_difference_interval(b: int, c: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Interval for acc_B - acc_A = q (2 pi - 1) from paired binary outcomes (b = right only in A,
    c = right only in B, n problems), where q is the discordance rate and pi the share of discordant
    problems favouring B: every (pi, q) in Clopper-Pearson(c of b + c) x Clopper-Pearson(b + c of n).

    The pi interval inverts exact McNemar's test and the q factor is positive when b + c > 0, so the
    interval excludes 0 exactly when mcnemar_exact(b, c) < alpha. Unlike mcnemar_interval it does not
    treat the discordance rate as known: its exact coverage is >= 96% over n in {30, 198, 500} and
    discordance 0-10% each way (tests/test_stats.py enumerates it), and it is never [0, 0]."""
    m = b + c
    if n == 0:
        return (-1.0, 1.0)
    pi_lo, pi_hi = clopper_pearson(c, m, alpha)       # m = 0: (0, 1), the sign is unknown
    q_lo, q_hi = clopper_pearson(m, n, alpha)
    return _scaled(pi_lo, pi_hi, q_lo, q_hi)


def min_attainable_p(units_differing: int) -> float:
    """Smallest two-sided p exact McNemar / the sign-flip test can give with this many units whose
    difference is not 0 (every one in the same direction: 2 / 2^k). At 5 or fewer it is >= 0.0625:
    such a test can never reject at 5%."""
    return 1.0 if units_differing <= 0 else min(1.0, 2.0 / 2 ** units_differing)


def seed_t_test(diffs: Sequence[float], alpha: float = ALPHA) -> tuple[float | None, tuple[float, float] | None]:
    """One-sample t test of mean(diffs) = 0 over training seeds (one paired accuracy difference per
    seed) with its 1 - alpha interval (N - 1 degrees of freedom). (None, None) with fewer than 2
    seeds, or when the seeds' differences do not vary (the t statistic is undefined)."""
    from scipy import stats as st

    n = len(diffs)
    if n < 2:
        return None, None
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd <= 1e-15:
        return None, None
    se = sd / math.sqrt(n)
    t = mean / se
    half = float(st.t.ppf(1 - alpha / 2, n - 1)) * se
    return float(2 * st.t.sf(abs(t), n - 1)), (mean - half, mean + half)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(b) - mean(a), resampling problems (pairs kept together).
    Kept for callers; paired_compare no longer uses it (its interval could exclude 0 where the exact
    McNemar test is not significant)."""
    n = len(a)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    diffs = [bi - ai for ai, bi in zip(a, b)]
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return (stats[int(0.025 * resamples)], stats[min(resamples - 1, int(0.975 * resamples))])


# ---- clusters ------------------------------------------------------------------------------------

def _group(values: Sequence[float], clusters: Sequence[Hashable] | None) -> tuple[list[float], list[int]]:
    """Per-cluster sums and sizes, clusters in order of first appearance (each item alone when None)."""
    if clusters is None:
        return [float(v) for v in values], [1] * len(values)
    sums: dict[Hashable, float] = {}
    sizes: dict[Hashable, int] = {}
    for v, g in zip(values, clusters, strict=True):
        sums[g] = sums.get(g, 0.0) + float(v)
        sizes[g] = sizes.get(g, 0) + 1
    return list(sums.values()), list(sizes.values())


def cluster_bootstrap(values: Sequence[float], clusters: Sequence[Hashable] | None = None, *,
                      resamples: int = 2000, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile interval of the mean of `values`, resampling whole clusters with replacement (the
    mean is over items: sum of the drawn clusters' sums / sum of their sizes)."""
    import numpy as np

    sums, sizes = _group(values, clusters)
    if not sums:
        return (0.0, 1.0)
    s, w = np.asarray(sums), np.asarray(sizes, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(s), size=(resamples, len(s)))
    means = s[idx].sum(axis=1) / w[idx].sum(axis=1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def accuracy_interval(per_problem: Sequence[float], clusters: Sequence[Hashable] | None = None,
                      samples_per_problem: int = 1, *, resamples: int = 2000, seed: int = 0) -> tuple[tuple[float, float], str]:
    """95% interval of mean accuracy over problems and the name of the method used.

    per_problem: each problem's fraction of samples correct; clusters: each problem's cluster key
    (problems sharing one are correlated, e.g. the phrasings of one arith operand pair), None when
    all are independent. Independent problems with one sample: Wilson. Otherwise a bootstrap over
    clusters (each problem its own cluster when there are none), never narrower than Wilson with
    one trial per cluster: the percentile bootstrap collapses to [0, 0] when every sample is wrong.
    This is what a per-run metric (compute_metrics) should use too."""
    n = len(per_problem)
    if n == 0:
        return (0.0, 1.0), "no problems"
    acc = sum(per_problem) / n
    n_clusters = n if clusters is None else len(set(clusters))
    if n_clusters == n and samples_per_problem == 1:
        return wilson(sum(per_problem), n), "Wilson score"
    blo, bhi = cluster_bootstrap(per_problem, clusters if n_clusters < n else None, resamples=resamples, seed=seed)
    wlo, whi = wilson(acc * n_clusters, n_clusters)
    unit = "problems" if n_clusters == n else f"{plural(n_clusters, 'cluster')} of correlated problems"
    return (min(blo, wlo), max(bhi, whi)), (f"bootstrap over {unit} ({resamples} resamples, percentile), "
                                            f"at least Wilson with one trial per {'problem' if n_clusters == n else 'cluster'}")


def _integer_scale(xs: Sequence[float]) -> int | None:
    """Smallest L making every x * L an integer when each x is a fraction with a small denominator
    (scores are counts / K); None otherwise."""
    scale = 1
    for x in xs:
        f = Fraction(x).limit_denominator(1024)
        if abs(float(f) - x) > 1e-9:
            return None
        scale = math.lcm(scale, f.denominator)
        if scale > 1 << 20:
            return None
    return scale


def _signed_sum_distribution(magnitudes: Sequence[int], pi: float):
    """P(sum_g s_g * v_g = t) for t in [-total, total], each s_g = +1 with probability pi, else -1."""
    import numpy as np

    total = sum(magnitudes)
    dist = np.zeros(2 * total + 1)    # index t + total
    dist[total] = 1.0
    for x in magnitudes:               # |t| <= total throughout, so np.roll never wraps a nonzero mass
        dist = pi * np.roll(dist, x) + (1 - pi) * np.roll(dist, -x)
    return dist


def _as_integers(diffs: Sequence[float]) -> tuple[list[int], int, int]:
    """(nonzero |d| * L, observed signed sum * L, L) for the smallest L that makes them integers."""
    scale = _integer_scale(diffs)
    if scale is None:
        raise ValueError("the sign test needs differences that are fractions with small denominators (counts / K)")
    ints = [round(d * scale) for d in diffs]
    return [abs(x) for x in ints if x], sum(ints), scale


def sign_flip_test(diffs: Sequence[float]) -> float:
    """Exact two-sided paired randomisation (sign-flip) test of "no difference": under the null each
    unit's difference is as likely to have either sign; p = P(|sum of randomly signed diffs| >=
    |observed sum|), enumerated exactly (dynamic programme over integer sums). With single binary
    items it is the exact McNemar test."""
    import numpy as np

    v, observed, _ = _as_integers(diffs)
    if not v:
        return 1.0
    dist = _signed_sum_distribution(v, 0.5)
    t = np.arange(-sum(v), sum(v) + 1)
    return float(min(1.0, dist[np.abs(t) >= abs(observed)].sum()))


def sign_test_interval(diffs: Sequence[float], n_items: int, p_two_sided: float | None = None,
                       alpha: float = ALPHA, sizes: Sequence[int] | None = None) -> tuple[float, float]:
    """Interval for the mean difference per item, sum(diffs) / n_items, consistent with sign_flip_test.

    diffs: each unit's sum of per-item differences (each in [-1, 1]); sizes: its number of items
    (None: one each). The expected difference is reach x (2 pi - 1): pi, the chance a unit's
    difference favours B, has the interval that inverts the two exact one-sided sign-flip tests at
    alpha/2 (conditional on the units' |differences|; Clopper-Pearson for single binary items), and
    reach, the mean |difference| per item, is not taken as known: Clopper-Pearson on the units'
    |d_g| / size_g (in [0, 1]) as fractional successes of one trial per unit, rescaled to items. For
    single binary items this is paired_difference_interval. Since the sign-flip p is twice the
    one-sided tail and the reach bounds are positive, the interval excludes 0 exactly when p < alpha;
    `p_two_sided` (that p, computed if None) anchors the search so floating point cannot break it."""
    sizes = [1] * len(diffs) if sizes is None else list(sizes)
    if n_items == 0 or not diffs:
        return (-1.0, 1.0)
    v, observed, scale = _as_integers(diffs)
    u = sum(abs(d) / s for d, s in zip(diffs, sizes))     # discordance mass, in units
    q_lo, q_hi = clopper_pearson(min(u, len(diffs)), len(diffs), alpha)
    # per unit of u, how much per-item reach (1 when units are equal-sized)
    per_u = (sum(abs(d) for d in diffs) / n_items) / (u / len(diffs)) if u > 0 else sum(sizes) / n_items
    if not v:
        return _scaled(0.0, 1.0, q_lo * per_u, q_hi * per_u)
    import numpy as np

    total = sum(v)
    t = np.arange(-total, total + 1)

    def upper_tail(pi: float) -> float:     # P_pi(T >= observed): increases with pi
        return float(_signed_sum_distribution(v, pi)[t >= observed].sum())

    def lower_tail(pi: float) -> float:     # P_pi(T <= observed): decreases with pi
        return float(_signed_sum_distribution(v, pi)[t <= observed].sum())

    def solve(f, increasing: bool, lo: float, hi: float) -> float:
        """pi in [lo, hi] where f(pi) crosses alpha/2 (f monotone)."""
        for _ in range(50):
            mid = (lo + hi) / 2
            if (f(mid) > alpha / 2) == increasing:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    p = sign_flip_test(diffs) if p_two_sided is None else p_two_sided
    zero_in = p >= alpha
    # pi_lo: smallest pi whose upper tail exceeds alpha/2; pi_hi: largest whose lower tail does.
    if observed <= -total:
        pi_lo = 0.0
    else:
        pi_lo = solve(upper_tail, True, 0.0, 0.5) if (zero_in or observed <= 0) else solve(upper_tail, True, 0.5, 1.0)
    if observed >= total:
        pi_hi = 1.0
    else:
        pi_hi = solve(lower_tail, False, 0.5, 1.0) if (zero_in or observed >= 0) else solve(lower_tail, False, 0.0, 0.5)
    return _scaled(pi_lo, pi_hi, q_lo * per_u, q_hi * per_u)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error over all the tests given), input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# ---- paired comparison -----------------------------------------------------------------------------

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
    p_mcnemar: float        # the paired test's p: exact McNemar, or its cluster form (see method)
    method: str = ""        # how diff_ci95 and the p-value were computed
    clusters: int = 0       # independent units the test and interval use
    p_min: float = 1.0      # smallest p this test could give with its discordant units (>= 0.05: cannot reject)

    def to_dict(self) -> dict:
        return {**self.__dict__, "diff_ci95": list(self.diff_ci95)}


METHOD_EXACT = ("exact McNemar test; interval: Clopper-Pearson for the share of discordant problems favouring B, "
                "times Clopper-Pearson for the discordance rate (excludes 0 exactly when p < 0.05)")


def paired_compare(a: dict[str, float], b: dict[str, float], seed: int = 0,
                   clusters: dict[str, Hashable] | None = None) -> Paired:
    """Compare per-problem scores (fraction of samples correct) of two runs on their common problems.

    clusters: problem id -> cluster key for correlated problems (None or a missing id: the problem
    is its own cluster). Independent problems with binary scores: the exact McNemar test and its
    consistent interval (paired_difference_interval). Otherwise (clusters, or K > 1 samples): the exact
    sign-flip test on per-cluster sums of differences (McNemar's test when clusters are single
    binary items) and the interval that inverts it. Both methods are exact: `seed` is unused (kept
    for callers)."""
    common = sorted(set(a) & set(b))
    xa = [a[k] for k in common]
    xb = [b[k] for k in common]
    ra = [x >= 0.5 for x in xa]
    rb = [x >= 0.5 for x in xb]
    only_a = sum(x and not y for x, y in zip(ra, rb))
    only_b = sum(y and not x for x, y in zip(ra, rb))
    n = len(common)
    keys = [(clusters or {}).get(k, ("problem", k)) for k in common]
    n_clusters = len(set(keys))
    binary = all(x in (0.0, 1.0) for x in xa + xb)
    if n_clusters == n and binary:
        p = mcnemar_exact(only_a, only_b)
        ci = paired_difference_interval(only_a, only_b, n)
        method = METHOD_EXACT
        differing = only_a + only_b
    else:
        sums, sizes = _group([y - x for x, y in zip(xa, xb)], keys)
        p = sign_flip_test(sums)
        ci = sign_test_interval(sums, n, p, sizes=sizes)
        differing = sum(1 for d in sums if abs(d) > 1e-12)
        units = (plural(n_clusters, "problem") if n_clusters == n
                 else f"{plural(n_clusters, 'cluster')} of correlated problems")
        method = (f"exact sign-flip test on the per-unit differences B - A ({units}; McNemar's test for single "
                  "binary items); interval: exact inversion of its one-sided tests (the direction) times "
                  "Clopper-Pearson for the mean |difference| per unit (excludes 0 exactly when p < 0.05)")
    return Paired(
        n=n,
        acc_a=sum(xa) / n if n else 0.0,
        acc_b=sum(xb) / n if n else 0.0,
        diff=(sum(xb) - sum(xa)) / n if n else 0.0,
        diff_ci95=ci,
        only_a=only_a,
        only_b=only_b,
        both=sum(x and y for x, y in zip(ra, rb)),
        neither=sum(not x and not y for x, y in zip(ra, rb)),
        p_mcnemar=p,
        method=method,
        clusters=n_clusters,
        p_min=min_attainable_p(differing),
    )


def points(x: float) -> str:
    """A signed difference in points to one decimal; a bound that is not 0 but rounds to it keeps two
    significant digits (+0.04, not +0.0), so an interval that excludes 0 never reads as touching it."""
    v = 100 * x
    text = f"{v:+.1f}"
    return f"{v:+.2g}" if v != 0 and float(text) == 0 else text


def points_interval(lo: float, hi: float) -> str:
    return f"[{points(lo)}, {points(hi)}]"
