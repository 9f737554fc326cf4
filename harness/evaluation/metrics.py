"""Per-run metrics over a set of problems x K samples: accuracy, its interval, pass@k, token counts."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from harness.core import stats
from harness.evaluation.benchmarks import Problem

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k > n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def accuracy_interval(per_problem: Sequence[Sequence[bool]], clusters: dict[str, object] | Sequence[object] | None = None,
                      ) -> tuple[tuple[float, float] | None, str]:
    """The one 95% interval of a run's accuracy (mean over problems of the fraction of K samples
    right), shared by `iwsft eval`, compare and the reports: Wilson for independent problems with one
    sample each; with correlated problems (`clusters`: a key per problem, in order, e.g. arith's
    operand pair) or K > 1 samples, a bootstrap over clusters never narrower than Wilson with one trial
    per cluster (harness.core.stats.accuracy_interval)."""
    per_problem = list(per_problem)
    if not per_problem:
        return None, "no problems"
    if isinstance(clusters, dict):
        clusters = list(clusters.values())
    means = [sum(c) / len(c) for c in per_problem]
    return stats.accuracy_interval(means, clusters, len(per_problem[0]))


def _pid(p) -> str:
    return p if isinstance(p, str) else p.id


def compute_metrics(problems: Sequence[Problem | str], rows: dict[tuple[str, int], dict], k: int,
                    clusters: dict[str, object] | None = None) -> dict:
    """Metrics over `problems` x range(k). A problem is scored when all its K samples are stored;
    one marked no_room (its prompt left no room under the total budget) is counted in `no_room`
    and left out of n and accuracy; any other is listed in `missing_ids` (not generated yet: an
    interrupted run, or shards still to finish). `clusters`: problem id -> cluster key of correlated
    problems (default: each Problem's meta["cluster"], else independent)."""
    if clusters is None:
        clusters = {p.id: p.meta["cluster"] for p in problems if not isinstance(p, str) and "cluster" in p.meta} or None
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
    ci, ci_method = accuracy_interval(per_problem_correct, [clusters.get(pid, pid) for pid in scored] if clusters else None)
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
        "unextracted": sum(1 for r in samples if r.get("extracted") is None),  # the grader read no answer
        # multiple choice: responses that state more than one letter (hedged, or corrected); None
        # for other graders and for rows stored before candidate letters were recorded
        "multiple_letters": (sum(1 for r in samples if len(r.get("candidate_letters") or ()) > 1)
                             if any("candidate_letters" in r for r in samples) else None),
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


PAIRED_UNIT_NOTE = ("the difference is that of mean accuracies over the common problems; its p-value and interval treat "
                    "each problem (or cluster of correlated problems, e.g. an arith operand pair) as one unit; with K > 1 "
                    "samples, 'A only' / 'B only' count (problem, sample) pairs (sample i of A with sample i of B), so "
                    "diff = (B only - A only) / (n x K)")


def paired_runs(a, b, seed: int = 0) -> dict:
    """The paired comparison of two runs (harness.evaluation.store.Run) on their common problems, one
    definition for compare and the reports: per-problem scores over the first K samples (K the
    smaller of the two runs'), the test and interval of harness.core.stats.paired_compare over
    problems or clusters; with K > 1 the discordant counts are over (problem, sample) pairs, which
    agree with the difference (no per-problem majority)."""
    from harness.evaluation.benchmarks import clusters_for

    common = [q for q in a.outcomes if q in b.outcomes]
    ka, kb = a.samples_per_problem, b.samples_per_problem
    k = min(ka, kb)
    sa = {q: sum(a.outcomes[q][:k]) / k for q in common}
    sb = {q: sum(b.outcomes[q][:k]) / k for q in common}
    p = stats.paired_compare(sa, sb, seed=seed, clusters=clusters_for(a.benchmark, common)).to_dict()
    if k > 1:
        pairs = [(a.outcomes[q][s], b.outcomes[q][s]) for q in common for s in range(k)]
        p.update(only_a=sum(x and not y for x, y in pairs), only_b=sum(y and not x for x, y in pairs),
                 both=sum(x and y for x, y in pairs), neither=sum(not x and not y for x, y in pairs))
    p.update({"n_problems": len(common), "samples_per_problem": k,
              "unit": "problem" if k == 1 else "(problem, sample) pair"})
    return p


def n_text(n_problems: int, k: int) -> str:
    """n as shown everywhere: problems, times samples when K > 1."""
    return f"{n_problems}" + (f" x{k}" if k > 1 else "")
