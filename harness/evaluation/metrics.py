"""Per-run metrics over a set of problems x K samples: accuracy, its interval, pass@k, token counts."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from harness.core.stats import accuracy_interval
from harness.evaluation.benchmarks import Problem

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k > n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def compute_metrics(problems: Sequence[Problem], rows: dict[tuple[str, int], dict], k: int) -> dict:
    """Metrics over `problems` x range(k); every pair must have a row."""
    per_problem_correct: list[list[bool]] = []
    samples: list[dict] = []
    for p in problems:
        rs = [rows[(p.id, s)] for s in range(k)]
        samples.extend(rs)
        per_problem_correct.append([bool(r["correct"]) for r in rs])
    n = len(problems)
    n_samples = len(samples)
    n_correct = sum(sum(c) for c in per_problem_correct)
    per_problem_mean = [sum(c) / k for c in per_problem_correct]
    accuracy = (sum(per_problem_mean) / n) if n else None
    # Wilson for independent single samples; with correlated problems (a cluster key in their meta, e.g.
    # arith's operand pair) or K > 1 samples, a bootstrap over clusters, never narrower than Wilson.
    (lo, hi), ci_method = accuracy_interval(per_problem_mean, [p.meta.get("cluster", p.id) for p in problems], k)
    thinking = [int(r.get("thinking_tokens") or 0) for r in samples]
    total = [int(r.get("total_tokens") or 0) for r in samples]
    m: dict[str, Any] = {
        "n": n,
        "samples_per_problem": k,
        "n_samples": n_samples,
        "correct": n_correct,
        "accuracy": accuracy,
        "ci95": [lo, hi] if n else None,
        "ci_method": ci_method,
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

