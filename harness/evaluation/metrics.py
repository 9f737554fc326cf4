"""Per-run metrics over a set of problems x K samples: accuracy, its interval, pass@k, token counts."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from harness.core.stats import wilson
from harness.evaluation.benchmarks import Problem

wilson_interval = wilson   # one implementation, in harness.core.stats


def bootstrap_interval(per_problem: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean over problems."""
    import numpy as np

    x = np.asarray(per_problem, dtype=float)
    if len(x) == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k > n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def accuracy_interval(per_problem: Sequence[Sequence[bool]]) -> tuple[tuple[float, float] | None, str]:
    """The one 95% interval of a run's accuracy (mean over problems of the fraction of K samples
    right), shared by `iwsft eval`, compare and the reports: Wilson over samples when K = 1; with
    K > 1 the percentile bootstrap over problems, never narrower than Wilson with each problem as
    one trial (the bootstrap collapses to [0, 0] when every sample is wrong)."""
    n = len(per_problem)
    if n == 0:
        return None, "wilson"
    k = len(per_problem[0])
    means = [sum(c) / len(c) for c in per_problem]
    if k == 1:
        return wilson_interval(sum(means), n), "wilson"
    blo, bhi = bootstrap_interval(means)
    wlo, whi = wilson_interval(sum(means), n)
    return (min(blo, wlo), max(bhi, whi)), "bootstrap over problems (2000 resamples, percentile), at least Wilson over problems"


def _pid(p) -> str:
    return p if isinstance(p, str) else p.id


def compute_metrics(problems: Sequence[Problem | str], rows: dict[tuple[str, int], dict], k: int) -> dict:
    """Metrics over `problems` x range(k). A problem is scored when all its K samples are stored;
    one marked no_room (its prompt left no room under the total budget) is counted in `no_room`
    and left out of n and accuracy; any other is listed in `missing_ids` (not generated yet: an
    interrupted run, or shards still to finish)."""
    per_problem_correct: list[list[bool]] = []
    samples: list[dict] = []
    scored, no_room, missing = [], [], []
    for p in problems:
        pid = _pid(p)
        rs = [rows.get((pid, s)) for s in range(k)]
        if any(r is not None and r.get("no_room") for r in rs):
            no_room.append(pid)
            continue
        if any(r is None for r in rs):
            missing.append(pid)
            continue
        scored.append(pid)
        samples.extend(rs)
        per_problem_correct.append([bool(r["correct"]) for r in rs])
    n = len(per_problem_correct)
    n_samples = len(samples)
    n_correct = sum(sum(c) for c in per_problem_correct)
    per_problem_mean = [sum(c) / k for c in per_problem_correct]
    accuracy = (sum(per_problem_mean) / n) if n else None
    ci, ci_method = accuracy_interval(per_problem_correct)
    thinking = [int(r.get("thinking_tokens") or 0) for r in samples]
    total = [int(r.get("total_tokens") or 0) for r in samples]
    m: dict[str, Any] = {
        "n": n,
        "samples_per_problem": k,
        "n_samples": n_samples,
        "correct": n_correct,
        "accuracy": accuracy,
        "ci95": list(ci) if ci else None,
        "ci_method": ci_method,
        "accuracy_definition": "mean over problems of the fraction of their samples graded correct",
        "problem_ids": scored,                 # what n, accuracy and the interval cover
        "no_room": len(no_room),
        "no_room_ids": no_room,
        "missing": len(missing),
        "missing_ids": missing,
        "thinking_tokens_mean": statistics.fmean(thinking) if thinking else None,
        "thinking_tokens_median": statistics.median(thinking) if thinking else None,
        "total_tokens_mean": statistics.fmean(total) if total else None,
        "unextracted": sum(1 for r in samples if r.get("extracted") is None),
        "truncated": sum(1 for r in samples if r.get("finish_reason") == "length"),
        "hit_thinking_cap": sum(1 for r in samples if r.get("hit_cap")),
    }
    if k > 1:
        m["avg_at_k"] = accuracy
        ks = sorted({j for j in (1, 2, 4, 8, 16, 32, 64, 128) if j <= k} | {k})
        m["pass_at_k"] = {
            str(j): (sum(pass_at_k(k, sum(c), j) for c in per_problem_correct) / n if n else None)
            for j in ks
        }
    return m


PAIRED_UNIT_NOTE = ("with K > 1 samples, paired counts and McNemar are over (problem, sample) pairs (sample i of A "
                    "with sample i of B), so diff = (B only - A only) / (n x K) = the difference of mean accuracies; "
                    "the diff's interval resamples problems")


def paired_runs(a, b, seed: int = 0) -> dict:
    """The paired comparison of two runs (harness.evaluation.store.Run) on their common problems, one
    definition for compare and the reports. K = 1: per problem. K > 1: per (problem, sample index)
    pair, so the discordant counts, McNemar and the difference all agree with the mean accuracy
    (no per-problem majority); the difference's interval still resamples whole problems."""
    from harness.core.stats import paired_bootstrap, paired_compare

    common = [q for q in a.outcomes if q in b.outcomes]
    ka, kb = a.samples_per_problem, b.samples_per_problem
    k = min(ka, kb)
    if ka == kb == 1:
        p = paired_compare({q: a.scores[q] for q in common}, {q: b.scores[q] for q in common}, seed=seed).to_dict()
    else:
        xa = {f"{q}\0{s}": float(a.outcomes[q][s]) for q in common for s in range(k)}
        xb = {f"{q}\0{s}": float(b.outcomes[q][s]) for q in common for s in range(k)}
        p = paired_compare(xa, xb, seed=seed).to_dict()
        ma = [sum(a.outcomes[q][:k]) / k for q in common]
        mb = [sum(b.outcomes[q][:k]) / k for q in common]
        p["diff_ci95"] = list(paired_bootstrap(ma, mb, seed=seed))
    p.update({"n_problems": len(common), "samples_per_problem": k,
              "unit": "problem" if k == 1 and ka == kb else "(problem, sample) pair"})
    return p


def n_text(n_problems: int, k: int) -> str:
    """n as shown everywhere: problems, times samples when K > 1."""
    return f"{n_problems}" + (f" x{k}" if k > 1 else "")
