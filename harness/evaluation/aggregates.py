"""The aggregates the leaderboards report over K samples per problem: avg@k, maj@k and pass@k.

- avg@k: mean over problems of the fraction of the first k samples graded correct (what open-r1 /
  lighteval call "pass@1" estimated from k samples). Interval: harness.core.stats.accuracy_interval
  on the per-problem means, so a problem's k samples count as one cluster (a bootstrap over problems,
  or over the benchmark's clusters of correlated problems), never as k independent trials.
- maj@k: majority vote over the answers extracted from the first k samples; answers the grader deems
  equivalent (harness.evaluation.grading.equivalence.judge, with the group's first answer in the gold's
  place) form one group. A problem scores when the winning group's first answer was graded correct.
  Unextracted samples do not vote; with no answer at all the problem scores 0. Ties: the tied group
  whose first answer came earliest (lowest sample index) wins, so the vote is deterministic; the
  number of problems decided by that rule is reported as `ties`.
- pass@k: the unbiased estimator of Chen et al. 2021 over all n samples of a problem,
  1 - C(n-c, k) / C(n, k), averaged over problems (harness.evaluation.metrics.pass_at_k).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from harness.core import stats
from harness.core.errors import UserError

KINDS = ("avg", "maj", "pass")
_SPEC = re.compile(r"^\s*(avg|maj|pass)@(\d+)\s*$")


@dataclass(frozen=True)
class Aggregate:
    kind: str
    k: int

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.k}"


def parse_aggregates(specs: str | Sequence[str] | None, samples: int) -> list[Aggregate]:
    """'avg@16,maj@16' or a list of such names -> Aggregates (duplicates dropped); each k must be
    between 1 and the samples per problem."""
    if specs is None:
        return []
    items = specs.split(",") if isinstance(specs, str) else [x for s in specs for x in str(s).split(",")]
    out: list[Aggregate] = []
    for item in (x for x in items if x.strip()):
        m = _SPEC.match(item)
        if not m:
            raise UserError(f"aggregate {item.strip()!r} is not avg@K, maj@K or pass@K (e.g. --aggregate maj@16)")
        agg = Aggregate(m.group(1), int(m.group(2)))
        if not 1 <= agg.k <= samples:
            raise UserError(f"aggregate {agg.name} needs K between 1 and the samples per problem; "
                            f"use --samples {max(agg.k, 1)} or a K <= {samples}")
        if agg not in out:
            out.append(agg)
    return out


def majority_index(answers: Sequence[str | None], equal) -> tuple[int | None, bool]:
    """(index of the winning group's first answer, whether the vote was a tie broken by first
    appearance); (None, False) when no sample has an answer. `equal(a, b)` says whether answer a is
    equivalent to answer b (b in the gold's place)."""
    groups: list[list[int]] = []           # sample indices, in order of first appearance
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if equal(a, answers[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return None, False
    top = max(len(g) for g in groups)
    winners = [g for g in groups if len(g) == top]
    return winners[0][0], len(winners) > 1


def _equivalence(kind: str, pairs: set[tuple[str, str]], timeout_s: float, workers: int | None) -> dict:
    """judge(kind, a, b) for each (a, b), b in the gold's place; the math judge runs under the
    grading pool's timeout (a timed-out pair counts as different)."""
    from harness.evaluation.grading.equivalence import judge
    from harness.evaluation.grading.pool import map_with_timeout

    todo = sorted(pairs)
    if kind != "math":
        return {p: judge(kind, *p) for p in todo}
    outcomes = map_with_timeout(judge, [(kind, a, b) for a, b in todo], timeout_s=timeout_s, workers=workers)
    return {p: bool(o.value) if o.ok else False for p, o in zip(todo, outcomes)}


def compute_aggregates(aggregates: Sequence[Aggregate], problem_ids: Sequence[str], rows: dict[tuple[str, int], dict],
                       samples: int, grader_kind: str, clusters: dict[str, object] | None = None, *,
                       timeout_s: float = 10.0, workers: int | None = None) -> dict[str, dict]:
    """{name: {value, ci95, ci_method, n, k, ...}} over the scored problems (every one with all its
    `samples` rows stored); `clusters`: problem id -> key of correlated problems."""
    from harness.evaluation.metrics import pass_at_k

    pids = list(problem_ids)
    per = {pid: [rows[(pid, s)] for s in range(samples)] for pid in pids}
    keys = [clusters.get(pid, pid) for pid in pids] if clusters else None
    answers = {pid: [_answer(r) for r in rs] for pid, rs in per.items()}
    maj_k = [a.k for a in aggregates if a.kind == "maj"]
    equal_of = {}
    if maj_k:
        pairs = {(a, b) for pid in pids for j, a in enumerate(answers[pid][:max(maj_k)])
                 for b in answers[pid][:j] if a is not None and b is not None and a != b}
        equal_of = _equivalence(grader_kind, pairs, timeout_s, workers)
    out: dict[str, dict] = {}
    for agg in aggregates:
        extra: dict = {}
        if agg.kind == "avg":
            values = [sum(bool(r["correct"]) for r in per[pid][:agg.k]) / agg.k for pid in pids]
            trials = agg.k
        elif agg.kind == "pass":
            values = [pass_at_k(samples, sum(bool(r["correct"]) for r in per[pid]), agg.k) for pid in pids]
            trials = samples
        else:
            values, ties = [], 0
            for pid in pids:
                idx, tie = majority_index(answers[pid][:agg.k], lambda a, b: a == b or equal_of.get((a, b), False))
                values.append(float(idx is not None and bool(per[pid][idx]["correct"])))
                ties += tie
            trials = 1
            extra = {"ties": ties, "no_answer": sum(all(a is None for a in answers[pid][:agg.k]) for pid in pids)}
        if values:
            ci, method = stats.accuracy_interval(values, keys, trials)
            value = sum(values) / len(values)
        else:
            ci, method, value = None, "no problems", None
        out[agg.name] = {"value": value, "ci95": list(ci) if ci else None, "ci_method": method, "n": len(values),
                         "k": agg.k, "samples_per_problem": samples, **extra}
    return out


def _answer(row: dict) -> str | None:
    a = row.get("extracted")
    return None if a is None else str(a).strip()


def aggregate_line(name: str, aggs: dict[str, dict]) -> str:
    """One line for the summary: 'arith: avg@2 50.0 [20.0, 80.0]; maj@2 ...'."""
    parts = []
    for agg_name, a in aggs.items():
        if a["value"] is None:
            parts.append(f"{agg_name} -")
            continue
        ci = a["ci95"]
        tie = f" ({a['ties']} tie(s) to the earliest answer)" if a.get("ties") else ""
        parts.append(f"{agg_name} {100 * a['value']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]{tie}")
    return f"{name}: " + "; ".join(parts) + " (%, 95% CI)"
