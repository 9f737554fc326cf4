"""MATH500: the 500 MATH test problems chosen by openai/prm800k, from harness/data/math500.jsonl."""

from __future__ import annotations

from harness.evaluation.benchmarks._core import Benchmark, Problem, read_packaged_jsonl

FILE = "math500.jsonl"


def _load(options) -> list[Problem]:
    return [
        Problem(
            id=row["unique_id"],
            question=row["problem"],
            gold=row["answer"],
            meta={"subject": row.get("subject"), "level": row.get("level")},
        )
        for row in read_packaged_jsonl(FILE)
    ]


BENCHMARK = Benchmark(
    name="math500",
    description="MATH500 (prm800k test split), 500 problems, ids like test/precalculus/807.json",
    load=_load,
    grader="math",
    title="MATH500",
    report_order=30,
    source="harness/data/math500.jsonl (openai/prm800k prm800k/math_splits/test.jsonl)",
)
