"""Agreement of the grader on cases.jsonl, per source (see PROVENANCE.md).

    PYTHONPATH=. python tests/data/grader_eval/agreement.py [--show-disagreements]

Each response is graded as a plain response (answer delimiter "": the whole text is the answer
section), since these are final answers or whole solutions without a thinking phase.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

CASES = Path(__file__).with_name("cases.jsonl")


def load(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def grade_cases(rows: list[dict]) -> list[tuple[bool, str | None]]:
    from harness.evaluation.grading import grade_many_detailed
    out: list[tuple[bool, str | None]] = [(False, None)] * len(rows)
    for kind in ("math", "choice"):
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        res = grade_many_detailed(kind, [(rows[i]["response"], rows[i]["gold"]) for i in idx], workers=1,
                                  answer_delimiter="")
        for i, (v, _) in zip(idx, res):
            out[i] = (v.correct, v.extracted)
    return out


def agreement(rows: list[dict], verdicts: list[tuple[bool, str | None]]) -> dict[str, tuple[int, int]]:
    """source -> (agreeing, total), plus "all"."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, (ok, _) in zip(rows, verdicts):
        for key in (r["source"], "all"):
            acc[key][0] += ok == r["expected"]
            acc[key][1] += 1
    return {k: (a, n) for k, (a, n) in acc.items()}


if __name__ == "__main__":
    rows = load()
    verdicts = grade_cases(rows)
    for k, (a, n) in sorted(agreement(rows, verdicts).items()):
        print(f"{k:14s} {a}/{n} = {a / n:.1%}")
    if "--show-disagreements" in sys.argv:
        for r, (ok, ext) in zip(rows, verdicts):
            if ok != r["expected"]:
                resp = r["response"] if len(r["response"]) < 300 else "..." + r["response"][-300:]
                print(json.dumps({"src": r["source"], "path": r["path"], "gold": r["gold"], "exp": r["expected"],
                                  "got": ok, "extracted": ext, "resp": resp}, ensure_ascii=False))
