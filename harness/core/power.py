"""Power of a between-method comparison over training seeds (`iwsft power`, the report's MDD line).

The test planned is the one the report prints: the one-sample t test over training seeds of the
per-seed paired differences B - A (seed i of A against seed i of B, S seeds, df = S - 1). Model
(docs/method.md#power): seed i's observed difference is

    diff_i = d + seed-pair effect + test-sampling error of the paired difference,

the seed-pair effect with SD `diff_sd` (how much the two methods' gap moves from one training seed
to the next; sqrt(2) x `seed_sd` when the two arms' seeds share nothing), the sampling error that of
a mean over C clusters of m items of the per-item difference Y = score_B - score_A, variance
(E[Y^2] - d^2)(1 + (m - 1) icc) / (C m), where E[Y^2] is the `discordance` (for 0/1 scores the share
of items the two checkpoints disagree on; 2p(1 - p) + d^2/2 when their errors are independent, arms at
p -+ d/2) and
(1 + (m - 1) icc) the design effect of correlated items. Power at d is the noncentral t's with
noncentrality d / sqrt(var(diff_i) / S). With one seed per arm there is no t over seeds; the z
approximation then gives the power of a test whose only noise is the stated one (a lower bound on
the real MDD when the seed noise is unknown).

A pilot with S >= 2 seeds gives the observed variance of its per-seed differences, which also holds
the pilot's own sampling variance: diff_sd^2 = max(0, observed - sampling variance of the pilot's
design) (method of moments). scipy's noncentral t is the well-kept implementation of the power
function; the root finding on top of it is a few lines of brentq.
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
    seeds: int               # training seeds per method (paired: seed i of A with seed i of B)
    accuracy: float = 0.5    # expected accuracy: sets the default discordance 2p(1 - p)
    icc: float = 0.0         # intra-cluster correlation of the items (of their paired differences, from a pilot)
    seed_sd: float = 0.0     # SD of one method's accuracy between training seeds, beyond test sampling
    alpha: float = ALPHA
    diff_sd: float | None = None       # SD of the per-seed difference B - A beyond test sampling (None: sqrt(2) seed_sd)
    discordance: float | None = None   # E[(score_B - score_A)^2] per item (None: 2p(1 - p), independent errors)

    def pair_sd(self) -> float:
        return math.sqrt(2) * self.seed_sd if self.diff_sd is None else self.diff_sd

    def disc(self, diff: float = 0.0) -> float:
        """E[Y^2] per item; with independent errors (arms at p -+ diff/2) p_A(1 - p_B) + p_B(1 - p_A)."""
        p = self.accuracy
        return 2 * p * (1 - p) + diff ** 2 / 2 if self.discordance is None else self.discordance

    def sampling_var(self, diff: float = 0.0) -> float:
        """Test-sampling variance of one seed's paired difference at true difference `diff`."""
        return pair_sampling_var(self.disc(diff), diff, self.clusters, self.items_per_cluster, self.icc)

    def diff_var(self, diff: float = 0.0) -> float:
        """Variance of one seed's observed difference B - A: seed-pair noise plus test sampling."""
        return self.pair_sd() ** 2 + self.sampling_var(diff)

    def with_(self, **kw) -> "Design":
        from dataclasses import replace

        return replace(self, **kw)


def sampling_var_of_accuracy(d: Design) -> float:
    """Test-sampling variance of one checkpoint's accuracy: p(1 - p)(1 + (m - 1) icc) / (C m)."""
    m = d.items_per_cluster
    return d.accuracy * (1 - d.accuracy) * (1 + (m - 1) * d.icc) / (d.clusters * m)


def pair_sampling_var(disc: float, diff: float, clusters: int, m: float, icc: float) -> float:
    """Variance of the mean over C clusters x m items of a per-item difference Y with E[Y^2] = disc,
    E[Y] = diff and intra-cluster correlation icc."""
    return max(disc - diff ** 2, 0.0) * (1 + (m - 1) * icc) / (clusters * m)


def power(d: Design, diff: float) -> float:
    """Two-sided power of the paired test over seeds at true difference `diff` (accuracy units)."""
    from scipy import stats as st

    se = math.sqrt(d.diff_var(diff) / d.seeds)
    if se == 0:
        return 1.0 if diff else d.alpha
    delta = abs(diff) / se
    if delta > 40:      # power is 1 to double precision (and scipy's nct returns NaN out there)
        return 1.0
    if d.seeds < 2:     # no t over seeds: z approximation with the stated noise
        z = st.norm.ppf(1 - d.alpha / 2)
        return float(st.norm.sf(z - delta) + st.norm.cdf(-z - delta))
    df = d.seeds - 1
    t = st.t.ppf(1 - d.alpha / 2, df)
    lower = float(st.nct.cdf(-t, df, delta))      # the wrong-sign tail: NaN from scipy where it underflows
    return float(st.nct.sf(t, df, delta)) + (lower if math.isfinite(lower) else 0.0)


def mdd(d: Design, target: float = POWER) -> float:
    """Smallest true difference detected with probability `target` (accuracy units)."""
    from scipy.optimize import brentq

    if d.diff_var() == 0:
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


def noise_sd_from_pilot(observed_sd: float, sampling_var: float) -> float:
    """The seed component of a pilot's observed SD over seeds (its own test-sampling variance removed,
    floored at 0): of one method's accuracy (seed_sd), or of the per-seed differences (diff_sd)."""
    return math.sqrt(max(0.0, observed_sd ** 2 - sampling_var))


def simulate_power(d: Design, diff: float, sims: int = 2000, seed: int = 0) -> float:
    """Share of simulated experiments in which the report's test (the one-sample t over seeds of the
    per-seed differences, harness.core.stats.seed_t_test) rejects at d.alpha. Each seed's difference
    is diff + a Gaussian seed-pair effect (SD d.pair_sd()) + the mean of a per-item Y in {-1, 0, 1}
    (P(1) - P(-1) = diff, P(1) + P(-1) = discordance) over clusters whose m items share one draw with
    probability icc, else draw independently: a model whose items correlate exactly icc in a cluster."""
    import numpy as np
    from scipy import stats as st

    if d.seeds < 2:
        raise ValueError("the test over seeds needs 2 or more seeds per arm")
    rng = np.random.default_rng(seed)
    m = int(round(d.items_per_cluster))
    disc = d.disc(diff)
    if disc < abs(diff):
        raise ValueError(f"discordance {disc} cannot carry a difference of {diff}")
    probs = [(disc + diff) / 2, (disc - diff) / 2, 1 - disc]          # Y = +1, -1, 0
    shape = (sims, d.seeds, d.clusters)
    counts = rng.multinomial(m, probs, size=shape)
    independent = counts[..., 0] - counts[..., 1]
    one = rng.choice([1, -1, 0], p=probs, size=shape) * m
    cluster_sums = np.where(rng.random(shape) < d.icc, one, independent)
    diffs = cluster_sums.sum(axis=2) / (d.clusters * m) + rng.normal(0.0, d.pair_sd(), size=shape[:2])
    p = st.ttest_1samp(diffs, 0.0, axis=1).pvalue
    return float(np.mean(p < d.alpha))


def items(m: float) -> str:
    """'1 item', '2 items', '11.1 items': a (mean) number of items per cluster, to one decimal."""
    text = str(int(m)) if float(m).is_integer() else f"{m:.1f}"
    return f"{text} item{'' if text == '1' else 's'}"


def describe(d: Design) -> str:
    noise = (f"seed SD {100 * d.seed_sd:.1f} points" if d.diff_sd is None else "")
    return (f"{plural(d.clusters, 'cluster')} x {items(d.items_per_cluster)}, {plural(d.seeds, 'seed')} per arm, "
            f"accuracy {100 * d.accuracy:.0f}%, icc {d.icc:.2f}, per-seed difference SD {100 * d.pair_sd():.1f} points"
            f"{' (sqrt(2) x ' + noise + ')' if noise else ''}, discordance {100 * d.disc():.1f}%"
            f"{' (independent errors)' if d.discordance is None else ''}, alpha {d.alpha:g}")
