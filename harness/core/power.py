"""Power of a between-method comparison over training seeds (`iwsft power`, the report's MDD line).

Model (docs/method.md#power). One training seed of one method scores accuracy

    acc = mu_method + seed effect + test-sampling error,

the seed effect with SD `seed_sd` (run-to-run noise of training), the sampling error that of a mean
over C clusters of m correlated items each (intra-cluster correlation icc), variance
p(1 - p)(1 + (m - 1) icc) / (C m): the design effect of a clustered proportion. The methods are
compared by a two-sample t test over seeds (S per arm, df = 2S - 2) at level alpha; its power at a
true difference d is the noncentral t's, with noncentrality d / sqrt(2 var / S). The two arms are
treated as independent, so pairing on shared test items (which removes part of the item variance)
is ignored: the planned design is, if anything, conservative. With one seed per arm there is no t
test over seeds; the z approximation then gives the power of a test whose only noise is the
test sample (seed noise unknown, so a lower bound on the real MDD).

A pilot with S >= 2 seeds gives the observed between-seed variance, which also holds the pilot's own
sampling variance: seed_sd^2 = max(0, observed - sampling variance of the pilot's design) (method of
moments). scipy's noncentral t is the well-kept implementation of the power function; the root
finding on top of it is a few lines of brentq.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

from harness.core.stats import ALPHA, plural

POWER = 0.80
MAX_SEEDS = 1000
MAX_CLUSTERS = 10**6


@dataclass(frozen=True)
class Design:
    clusters: int            # independent units of the test set (e.g. arith's operand pairs)
    items_per_cluster: float
    seeds: int               # training seeds per method
    accuracy: float = 0.5    # expected accuracy (p(1 - p) is the per-item variance; 0.5 is the worst case)
    icc: float = 0.0         # intra-cluster correlation of the items' outcomes
    seed_sd: float = 0.0     # SD of accuracy between training seeds, beyond test sampling
    alpha: float = ALPHA

    def sampling_var(self) -> float:
        return sampling_var(self.accuracy, self.clusters, self.items_per_cluster, self.icc)

    def seed_var(self) -> float:
        """Variance of one seed's accuracy: seed noise plus test sampling."""
        return self.seed_sd ** 2 + self.sampling_var()

    def with_(self, **kw) -> "Design":
        from dataclasses import replace

        return replace(self, **kw)


def sampling_var(p: float, clusters: int, m: float, icc: float) -> float:
    """Variance of a mean of C clusters x m items of a proportion p with intra-cluster correlation icc."""
    return p * (1 - p) * (1 + (m - 1) * icc) / (clusters * m)


def power(d: Design, diff: float) -> float:
    """Two-sided power of the between-method test at true difference `diff` (accuracy units)."""
    from scipy import stats as st

    se = math.sqrt(2 * d.seed_var() / d.seeds)
    if se == 0:
        return 1.0 if diff else d.alpha
    delta = abs(diff) / se
    if delta > 40:      # power is 1 to double precision (and scipy's nct returns NaN out there)
        return 1.0
    if d.seeds < 2:     # no t over seeds: z approximation, sampling noise only
        z = st.norm.ppf(1 - d.alpha / 2)
        return float(st.norm.sf(z - delta) + st.norm.cdf(-z - delta))
    df = 2 * d.seeds - 2
    t = st.t.ppf(1 - d.alpha / 2, df)
    lower = float(st.nct.cdf(-t, df, delta))      # the wrong-sign tail: NaN from scipy where it underflows
    return float(st.nct.sf(t, df, delta)) + (lower if math.isfinite(lower) else 0.0)


def mdd(d: Design, target: float = POWER) -> float:
    """Smallest true difference detected with probability `target` (accuracy units)."""
    from scipy.optimize import brentq

    if d.seed_var() == 0:
        return 0.0
    hi = 1.0
    while power(d, hi) < target:       # a very noisy design can need more than 100 points
        hi *= 2
    return float(brentq(lambda x: power(d, x) - target, 0.0, hi, xtol=1e-6))


def seeds_needed(d: Design, diff: float, target: float = POWER) -> int | None:
    """Fewest seeds per arm (>= 2) reaching `target` power at `diff`; None past MAX_SEEDS."""
    if power(d.with_(seeds=MAX_SEEDS), diff) < target:
        return None
    lo, hi = 2, MAX_SEEDS           # power increases with seeds: bisection
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power(d.with_(seeds=mid), diff) >= target else (mid + 1, hi)
    return lo


def clusters_needed(d: Design, diff: float, target: float = POWER) -> int | None:
    """Fewest clusters (items per cluster as in `d`) reaching `target` power at `diff` with d.seeds
    seeds per arm; None when no number does (the seed noise alone is too large) or past MAX_CLUSTERS."""
    if power(d.with_(clusters=MAX_CLUSTERS), diff) < target:
        return None
    lo, hi = 1, MAX_CLUSTERS
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power(d.with_(clusters=mid), diff) >= target else (mid + 1, hi)
    return lo


def icc_anova(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """One-way ANOVA estimate of the intra-cluster correlation of 0/1 outcomes, clipped to [0, 1]
    (the usual estimator for unequal cluster sizes, with n0 the adjusted mean size)."""
    groups: dict[Hashable, list[float]] = {}
    for v, g in zip(values, clusters, strict=True):
        groups.setdefault(g, []).append(float(v))
    k, n = len(groups), len(values)
    if k < 2 or n <= k:
        return 0.0
    mean = sum(values) / n
    ssb = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
    ssw = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups.values())
    msb, msw = ssb / (k - 1), ssw / (n - k)
    n0 = (n - sum(len(g) ** 2 for g in groups.values()) / n) / (k - 1)
    den = msb + (n0 - 1) * msw
    return 0.0 if den <= 0 else min(1.0, max(0.0, (msb - msw) / den))


def seed_sd_from_pilot(observed_sd: float, pilot: Design) -> float:
    """The seed component of a pilot's observed between-seed SD (its own test-sampling variance removed)."""
    return math.sqrt(max(0.0, observed_sd ** 2 - pilot.sampling_var()))


def simulate_power(d: Design, diff: float, sims: int = 2000, seed: int = 0) -> float:
    """Share of simulated experiments (the model above, clusters as beta-binomial draws with the
    design's icc) in which the two-sample t test over seeds rejects at d.alpha."""
    import numpy as np
    from scipy import stats as st

    rng = np.random.default_rng(seed)
    m = int(round(d.items_per_cluster))

    def arm(p: float) -> "np.ndarray":            # sims x seeds accuracies
        if d.icc > 0:
            a = p * (1 / d.icc - 1)
            b = (1 - p) * (1 / d.icc - 1)
            pc = rng.beta(a, b, size=(sims, d.seeds, d.clusters))
        else:
            pc = np.full((sims, d.seeds, d.clusters), p)
        acc = rng.binomial(m, pc).sum(axis=2) / (d.clusters * m)
        return acc + rng.normal(0.0, d.seed_sd, size=(sims, d.seeds))

    x, y = arm(d.accuracy - diff / 2), arm(d.accuracy + diff / 2)
    p = st.ttest_ind(y, x, axis=1).pvalue
    return float(np.mean(p < d.alpha))


def items(m: float) -> str:
    """'1 item', '2 items', '11.1 items': a (mean) number of items per cluster, to one decimal."""
    text = str(int(m)) if float(m).is_integer() else f"{m:.1f}"
    return f"{text} item{'' if text == '1' else 's'}"


def describe(d: Design) -> str:
    return (f"{plural(d.clusters, 'cluster')} x {items(d.items_per_cluster)}, {plural(d.seeds, 'seed')} per arm, "
            f"accuracy {100 * d.accuracy:.0f}%, icc {d.icc:.2f}, seed SD {100 * d.seed_sd:.1f} points, alpha {d.alpha:g}")
