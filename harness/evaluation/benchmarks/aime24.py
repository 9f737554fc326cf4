"""AIME 2024 I and II (30 problems, integer answers 0..999), from harness/data/aime24.jsonl."""

from __future__ import annotations

from harness.evaluation.benchmarks._core import Benchmark, Problem, read_packaged_jsonl

FILE = "aime24.jsonl"


def _load(options) -> list[Problem]:
    problems = []
    for row in read_packaged_jsonl(FILE):
        raw = str(row["answer"]).strip()
        # Some copies store answers zero-padded ("025"): the gold is the integer's canonical form.
        gold = str(int(raw)) if raw.lstrip("-").isdigit() else raw
        problems.append(Problem(
            id=str(row["id"]),
            question=row["problem"],
            gold=gold,
            meta={"url": row.get("url"), "answer_raw": raw},
        ))
    return problems


BENCHMARK = Benchmark(
    name="aime24",
    description="AIME 2024 I+II, 30 problems, integer answers (with [asy] figure code in II-8, II-15)",
    load=_load,
    grader="integer",
    title="AIME24",
    report_order=20,
    source="harness/data/aime24.jsonl (QwenLM/Qwen2.5-Math evaluation/data/aime24/test.jsonl)",
)
