"""Paired tests and intervals that agree with each other; correlated items resampled and tested as
clusters; Holm's adjustment."""

from __future__ import annotations

import itertools
import random

import pytest

from harness.core.stats import (
    accuracy_interval,
    clopper_pearson,
    holm,
    mcnemar_exact,
    mcnemar_interval,
    min_attainable_p,
    paired_bootstrap,
    paired_difference_interval,
    paired_compare,
    sign_flip_test,
    seed_t_test,
    sign_test_interval,
    wilson,
)


def _runs(n: int, only_a: int, only_b: int, both: int) -> tuple[dict, dict]:
    a, b = {}, {}
    for i in range(n):
        k = f"p{i:03d}"
        if i < only_a:
            a[k], b[k] = 1.0, 0.0
        elif i < only_a + only_b:
            a[k], b[k] = 0.0, 1.0
        elif i < only_a + only_b + both:
            a[k], b[k] = 1.0, 1.0
        else:
            a[k], b[k] = 0.0, 0.0
    return a, b


def _includes_zero(ci) -> bool:
    return ci[0] <= 0 <= ci[1]


@pytest.mark.parametrize("discordant,significant", [(4, False), (5, False), (6, True)])
def test_aime_sized_case_interval_agrees_with_mcnemar(discordant, significant):
    # 30 problems, every discordant pair one way: exact McNemar p = 2 / 2^m (0.125, 0.0625, 0.031).
    a, b = _runs(30, 0, discordant, 10)
    p = paired_compare(a, b)
    assert p.p_mcnemar == pytest.approx(2 / 2 ** discordant)
    assert _includes_zero(p.diff_ci95) == (p.p_mcnemar >= 0.05) == (not significant)
    assert p.diff_ci95[0] <= p.diff <= p.diff_ci95[1]
    assert "McNemar" in p.method and p.clusters == 30


def test_the_old_bootstrap_interval_disagreed():
    # Why paired_compare no longer uses it: 5 discordant of 30, p = 0.0625, yet 0 is outside.
    a, b = _runs(30, 0, 5, 10)
    keys = sorted(a)
    lo, hi = paired_bootstrap([a[k] for k in keys], [b[k] for k in keys])
    assert lo > 0 and mcnemar_exact(0, 5) > 0.05


@pytest.mark.parametrize("n", [5, 12, 30, 60])
def test_sweep_interval_includes_zero_exactly_when_not_significant(n):
    for b, c in itertools.product(range(n + 1), repeat=2):
        if b + c > n or b + c > 40:
            continue
        p = mcnemar_exact(b, c)
        ci = paired_difference_interval(b, c, n)
        assert _includes_zero(ci) == (p >= 0.05), (n, b, c, p, ci)
        assert ci[0] <= (c - b) / n <= ci[1] and -1 <= ci[0] and ci[1] <= 1


def test_mcnemar_interval_is_clopper_pearson_mapped():
    lo, hi = clopper_pearson(2, 3)       # Beta(2, 2) and Beta(3, 1) quantiles, by hand
    assert lo == pytest.approx(0.094299, abs=1e-6) and hi == pytest.approx(0.975 ** (1 / 3))
    assert mcnemar_interval(1, 2, 5) == pytest.approx((0.6 * (2 * lo - 1), 0.6 * (2 * hi - 1)))
    assert mcnemar_interval(0, 0, 30) == (0.0, 0.0)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))


def test_sign_flip_test_is_mcnemar_for_single_binary_items():
    for b, c in itertools.product(range(12), repeat=2):
        d = [1.0] * c + [-1.0] * b + [0.0] * 7
        assert sign_flip_test(d) == pytest.approx(mcnemar_exact(b, c), abs=1e-12)
        assert sign_test_interval(d, len(d)) == pytest.approx(paired_difference_interval(b, c, len(d)), abs=1e-9)


def test_sign_flip_test_matches_enumeration():
    rng = random.Random(3)
    for _ in range(20):
        d = [rng.choice([-1, 0, 1, 2, 3, -2]) / 4 for _ in range(rng.randint(1, 11))]
        obs = abs(sum(d))
        flips = [abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
                 for signs in itertools.product((-1, 1), repeat=len(d))]
        assert sign_flip_test(d) == pytest.approx(sum(flips) / len(flips), abs=1e-12)


def _arith_like(rng: random.Random, pairs: int, phrasings: int, k: int, effect: float):
    """Per-problem scores of two runs with a shared per-pair difficulty (correlated phrasings)."""
    a, b, clusters = {}, {}, {}
    for g in range(pairs):
        base = rng.random()
        for t in range(phrasings):
            pid = f"add1-{g}-t{t}"
            clusters[pid] = f"add1-{g}"
            a[pid] = sum(rng.random() < base for _ in range(k)) / k
            b[pid] = sum(rng.random() < min(1.0, base + effect) for _ in range(k)) / k
    return a, b, clusters


def test_clustered_interval_agrees_with_cluster_test():
    rng = random.Random(0)
    seen = set()
    for trial in range(60):
        pairs, k = rng.choice([(6, 1), (10, 1), (8, 2), (12, 4)])
        a, b, clusters = _arith_like(rng, pairs, 6, k, rng.choice([0.0, 0.05, 0.15, 0.4]))
        p = paired_compare(a, b, clusters=clusters)
        assert p.clusters == pairs and "sign-flip" in p.method
        assert _includes_zero(p.diff_ci95) == (p.p_mcnemar >= 0.05), (trial, p)
        assert p.diff_ci95[0] - 1e-9 <= p.diff <= p.diff_ci95[1] + 1e-9
        seen.add(p.p_mcnemar < 0.05)
    assert seen == {True, False}     # the sweep covers both verdicts


def test_clusters_not_rows_are_the_unit():
    # 50 operand pairs x 6 phrasings; B beats A on every phrasing of 5 pairs. Row-level McNemar
    # would see 30 discordant problems (p ~ 2e-9); there are 5 independent wins (p = 0.0625).
    a, b, clusters = {}, {}, {}
    for g in range(50):
        for t in range(6):
            pid = f"add1-{g}-t{t}"
            clusters[pid] = f"add1-{g}"
            a[pid], b[pid] = (0.0, 1.0) if g < 5 else (float(g % 2), float(g % 2))
    rows = paired_compare(a, b)
    clustered = paired_compare(a, b, clusters=clusters)
    assert rows.p_mcnemar < 1e-8 and not _includes_zero(rows.diff_ci95)
    assert clustered.p_mcnemar == pytest.approx(0.0625) and _includes_zero(clustered.diff_ci95)
    assert clustered.diff == rows.diff == pytest.approx(30 / 300)
    assert clustered.clusters == 50 and "50 clusters" in clustered.method


def test_k_samples_per_problem_use_the_problem_as_unit():
    a = {f"q{i}": s for i, s in enumerate([0.25, 0.5, 0.75, 0.0, 1.0])}
    b = {f"q{i}": s for i, s in enumerate([0.5, 0.75, 1.0, 0.25, 1.0])}
    p = paired_compare(a, b)
    # Four problems each +1/4 (one of 4 samples): all 2^4 sign patterns, 2 as extreme -> 1/8.
    assert p.p_mcnemar == pytest.approx(2 / 16) and _includes_zero(p.diff_ci95)
    assert "5 problems" in p.method and p.diff == pytest.approx(0.2)


def test_accuracy_interval_methods():
    (lo, hi), method = accuracy_interval([1.0] * 18 + [0.0] * 12)
    assert (lo, hi) == wilson(18, 30) and method == "Wilson score"
    # 50 pairs x 6 phrasings, outcome shared by all phrasings of a pair: 50 trials' worth, not 300.
    scores = [1.0 if g < 30 else 0.0 for g in range(50) for _ in range(6)]
    clusters = [g for g in range(50) for _ in range(6)]
    (clo, chi), cmethod = accuracy_interval(scores, clusters)
    rlo, rhi = wilson(180, 300)
    assert chi - clo > 1.4 * (rhi - rlo)
    assert (clo, chi) == pytest.approx(wilson(30, 50), abs=0.03)
    assert cmethod.startswith("bootstrap over 50 clusters")
    # All wrong: never the bootstrap's degenerate [0, 0].
    (zlo, zhi), _ = accuracy_interval([0.0] * 300, clusters)
    assert zlo == 0.0 and zhi == pytest.approx(wilson(0, 50)[1])
    assert accuracy_interval([1.0, 0.0], ["pair", "pair"])[1].startswith("bootstrap over 1 cluster of correlated")   # not "1 clusters"
    (_, _), kmethod = accuracy_interval([0.5, 0.25, 1.0], None, samples_per_problem=4)
    assert kmethod.startswith("bootstrap over problems")


def test_clustered_interval_resamples_the_clusters():
    """One cluster of 16 right problems, seven of 2 wrong ones (accuracy 16/30): a resample without the
    big cluster (probability (7/8)^8 = 0.34) scores 0, so the 95% interval over the 8 independent units
    reaches 0 and about 0.83; resampling the 30 problems as if independent (or Wilson with 8 trials,
    [0.24, 0.81]) is narrower. The reference is a plain cluster bootstrap written here."""
    import numpy as np

    scores = [1.0] * 16 + [0.0] * 14
    clusters = ["big"] * 16 + [f"s{g}" for g in range(7) for _ in range(2)]
    (lo, hi), method = accuracy_interval(scores, clusters)
    rng = np.random.default_rng(1)
    sums, sizes = np.array([16.0] + [0.0] * 7), np.array([16.0] + [2.0] * 7)
    draw = rng.integers(0, 8, size=(20000, 8))
    means = sums[draw].sum(1) / sizes[draw].sum(1)
    ref_lo, ref_hi = np.quantile(means, [0.025, 0.975])
    assert (ref_lo, round(float(ref_hi), 3)) == (0.0, 0.828)
    assert lo <= ref_lo + 0.01 and hi >= ref_hi - 0.01, ((lo, hi), (ref_lo, ref_hi))
    wlo, whi = wilson(16 / 30 * 8, 8)
    assert lo < wlo - 0.2 and hi > whi + 0.015         # the resampling, not the Wilson floor, sets the interval
    assert method.startswith("bootstrap over 8 clusters")


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3]) == [0.3] and holm([]) == []
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])


def _exact_coverage(interval, n: int, p10: float, p01: float, memo: dict) -> float:
    """P(interval(b, c, n) contains p01 - p10) when (b, c, rest) ~ Multinomial(n; p10, p01, rest),
    summed over every outcome with probability above 1e-13 (the rest is below 1e-9 in all)."""
    import numpy as np
    from scipy.stats import binom

    q = p10 + p01
    pi = p01 / q if q > 0 else 0.5
    truth, cover = p01 - p10, 0.0
    pm = binom.pmf(np.arange(n + 1), n, q)
    for m in np.flatnonzero(pm >= 1e-13):
        pc = pm[m] * binom.pmf(np.arange(m + 1), m, pi)
        for c in np.flatnonzero(pc >= 1e-13):
            key = (int(m), int(c))
            if key not in memo:
                memo[key] = interval(key[0] - key[1], key[1], n)
            lo, hi = memo[key]
            cover += pc[c] * (lo - 1e-12 <= truth <= hi + 1e-12)
    return float(cover)


GRID = sorted({0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 1 / 30})     # discordance each way, 0-10%


@pytest.mark.parametrize("n", [30, 198, 500])
def test_paired_interval_covers_over_the_grid(n):
    # Exact coverage (enumeration, no simulation error) of the interval paired_compare prints for
    # independent binary problems. The old conditional interval (mcnemar_interval) fails this: 64%
    # at n = 30 with 0% / 3.3%, about 89% at n = 198 and 500.
    memo: dict = {}
    worst = min((_exact_coverage(paired_difference_interval, n, a, b, memo), a, b)
                for a, b in itertools.product(GRID, repeat=2))
    assert worst[0] >= 0.95, worst


def test_the_conditional_interval_under_covers():
    # Why paired_compare no longer prints mcnemar_interval: it treats the discordance rate as known.
    assert _exact_coverage(mcnemar_interval, 30, 0.0, 1 / 30, {}) < 0.70
    assert mcnemar_interval(0, 0, 30) == (0.0, 0.0)
    lo, hi = paired_difference_interval(0, 0, 30)          # no discordance: the size of an effect is unknown
    assert lo < 0 < hi and hi == pytest.approx(clopper_pearson(0, 30)[1])
    # Every discordant problem one way: the upper end is no longer the point estimate itself.
    assert mcnemar_interval(0, 8, 30)[1] == pytest.approx(8 / 30)
    assert paired_difference_interval(0, 8, 30)[1] > 8 / 30 + 0.1


def _clustered_draw(rng: random.Random, clusters: int, qa: float, qb: float):
    """Correlated clusters (arith-like: 12 items, every 7th a 6-item 'double'): a cluster favours B
    with probability qb, A with qa, and then each of its items is discordant with a cluster-level
    probability h ~ U(0.3, 1). True difference per item: (qb - qa) x E[h] = (qb - qa) x 0.65."""
    sums, sizes = [], []
    for g in range(clusters):
        size = 6 if g % 7 == 0 else 12
        r, h = rng.random(), rng.uniform(0.3, 1.0)
        sign = 1 if r < qb else (-1 if r < qb + qa else 0)
        sums.append(float(sign * sum(rng.random() < h for _ in range(size))))
        sizes.append(size)
    return sums, sizes


@pytest.mark.parametrize("clusters,qa,qb", [(28, 0.0, 0.3), (28, 0.1, 0.1), (10, 0.0, 0.4)])
def test_clustered_paired_interval_covers(clusters, qa, qb):
    # Seeded simulation, 150 draws (standard error about 1.8 points at 95%). The old interval,
    # conditional on the observed |differences|, covered 45% / 97% / 44% here (400 draws): with
    # every discordant cluster one way it ended at the point estimate.
    rng, draws, covered = random.Random(1), 150, 0
    for _ in range(draws):
        sums, sizes = _clustered_draw(rng, clusters, qa, qb)
        lo, hi = sign_test_interval(sums, sum(sizes), sizes=sizes)
        covered += lo <= (qb - qa) * 0.65 <= hi
        assert _includes_zero((lo, hi)) == (sign_flip_test(sums) >= 0.05)
    assert covered / draws >= 0.92


def test_min_attainable_p_marks_tests_that_cannot_reject():
    assert [min_attainable_p(k) for k in (0, 1, 5, 6)] == pytest.approx([1.0, 1.0, 0.0625, 0.03125])
    a, b = _runs(30, 0, 5, 10)
    assert paired_compare(a, b).p_min == pytest.approx(mcnemar_exact(0, 5))


def test_seed_t_test():
    # Hand computation: diffs 0.02, 0.04, 0.06 -> mean 0.04, sd 0.02, se 0.02/sqrt(3), t = 3.464, 2 df.
    p, (lo, hi) = seed_t_test([0.02, 0.04, 0.06])
    assert p == pytest.approx(0.07418, abs=1e-4)
    assert (lo, hi) == pytest.approx((0.04 - 4.302653 * 0.02 / 3 ** 0.5, 0.04 + 4.302653 * 0.02 / 3 ** 0.5), abs=1e-6)
    assert seed_t_test([0.1]) == (None, None)
    assert seed_t_test([0.0, 0.0]) == (None, None) == seed_t_test([0.1, 0.1])      # no spread: t undefined
