"""`iwsft grade` end to end: through harness.cli.main and once as `python -m harness grade`,
including the exit-2 cases, which must leave no output file behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
T = "<|im_start|>think\n"
A = "\n<|im_start|>answer\n"

ROWS = [
    {"id": "p1", "response": T + "hmm 7" + A + r"Answer: \boxed{025}", "gold": "25"},
    {"id": "p2", "response": T + "so 42 and then", "gold": "42"},  # truncated: unextracted
    {"id": "p3", "response": T + "..." + A + "Answer: 13", "gold": "12"},
]


def _write(path: Path, rows=None, text: str | None = None) -> Path:
    path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_grade_cli_happy_path(tmp_path, capsys):
    inp, out = _write(tmp_path / "in.jsonl", ROWS), tmp_path / "sub" / "out.jsonl"
    assert main(["grade", "--benchmark", "aime24", "--input", str(inp), "--output", str(out)]) == 0
    rows = _read(out)
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"]
    assert [(r["correct"], r["extracted"]) for r in rows] == [(True, "025"), (False, None), (False, "13")]
    for r, src in zip(rows, ROWS):
        assert {k: r[k] for k in src} == src  # input row kept as is
    summary = capsys.readouterr().out
    assert "n=3" in summary and "correct=1" in summary and "33.3%" in summary and "unextracted=1" in summary
    assert len(summary.strip().splitlines()) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]  # no temp file left


def test_grade_cli_choice_and_delimiter(tmp_path):
    rows = [{"response": r"<think>(A)</think>\boxed{C}", "gold": "C"},
            {"response": "<think>(A)</think>no idea", "gold": "A"}]
    inp, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["grade", "--benchmark", "gpqa_diamond", "--input", str(inp), "--output", str(out),
                 "--answer-delimiter", "</think>"]) == 0
    assert [(r["correct"], r["extracted"]) for r in _read(out)] == [(True, "C"), (False, None)]


BAD = [
    # name, input text (None = no file), benchmark, message fragment
    ("missing_input", None, "aime24", "does not exist"),
    ("malformed_json_line", json.dumps(ROWS[0]) + "\n{not json\n", "aime24", "in.jsonl:2: malformed JSON"),
    ("missing_response", json.dumps(ROWS[0]) + "\n" + json.dumps({"gold": "1"}) + "\n", "aime24",
     "in.jsonl:2: missing key 'response'"),
    ("missing_gold", json.dumps({"response": "x"}) + "\n", "aime24", "in.jsonl:1: missing key 'gold'"),
    ("empty_input", "\n\n", "aime24", "has no rows"),
    ("not_an_object", "[1, 2]\n", "aime24", "in.jsonl:1: expected a JSON object"),
    ("non_integer_gold", json.dumps({"response": "x", "gold": "1.5"}) + "\n", "aime24",
     "in.jsonl:1: gold '1.5' is not an integer"),
    ("bad_choice_gold", json.dumps({"response": "x", "gold": "E"}) + "\n", "gpqa_diamond",
     "in.jsonl:1: gold 'E' is not a letter"),
    ("unknown_benchmark", json.dumps(ROWS[0]) + "\n", "aime", "unknown benchmark 'aime'"),
]


@pytest.mark.parametrize("name,text,bench,msg", BAD, ids=[b[0] for b in BAD])
def test_grade_cli_user_errors(tmp_path, capsys, name, text, bench, msg):
    inp = tmp_path / "in.jsonl"
    if text is not None:
        _write(inp, text=text)
    out = tmp_path / "out.jsonl"
    assert main(["grade", "--benchmark", bench, "--input", str(inp), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in.jsonl"] if text is not None else [])


def test_grade_cli_refuses_to_overwrite_input(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", ROWS)
    assert main(["grade", "--benchmark", "aime24", "--input", str(inp), "--output", str(inp)]) == 2
    assert "same file" in capsys.readouterr().err
    assert _read(inp) == ROWS


def _run_module(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "harness", "grade", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_grade_subprocess_end_to_end(tmp_path):
    # MATH500 with enough rows to use the process pool from a real `python -m harness` process.
    rows = [{"response": A + rf"\boxed{{\frac{{{i}}}{{2}}}}", "gold": f"{i / 2}"} for i in range(9)]
    rows.append({"response": T + "unfinished", "gold": "1"})
    inp, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    proc = _run_module("--benchmark", "math500", "--input", str(inp), "--output", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "n=10 correct=9 accuracy=90.0% unextracted=1" in proc.stdout
    assert [r["correct"] for r in _read(out)] == [True] * 9 + [False]


def test_grade_subprocess_exit_2(tmp_path):
    inp, out = _write(tmp_path / "in.jsonl", text=json.dumps(ROWS[0]) + "\n{oops\n"), tmp_path / "out.jsonl"
    proc = _run_module("--benchmark", "aime24", "--input", str(inp), "--output", str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "in.jsonl:2: malformed JSON" in proc.stderr, proc.stderr
    assert not out.exists()


def test_grade_cli_lists_what_it_did_not_read(tmp_path, capsys):
    rows = [{"id": "q1", "response": A + "Answer: A or B", "gold": "A"},            # hedged: none read
            {"id": "q2", "response": A + r"Answer: A. On reflection \boxed{C}", "gold": "C"},  # two letters
            {"id": "q3", "response": A + "**D**", "gold": "D"},
            {"id": "q4", "response": T + "still thinking", "gold": "B"}]
    inp, out = _write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["grade", "--benchmark", "gpqa_diamond", "--input", str(inp), "--output", str(out),
                 "--list-unread"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:3] == [f"{inp}:1 (id q1): no answer read",
                         f"{inp}:2 (id q2): 2 letters stated (A, C); graded as C",
                         f"{inp}:4 (id q4): no answer read"]
    assert "unextracted=2" in lines[-1] and "multiple_letters=2" in lines[-1] and "correct=2" in lines[-1]
    from harness.evaluation.grading import GRADER_VERSION
    assert {r["grader_version"] for r in _read(out)} == {GRADER_VERSION}


def test_list_unread_names_eval_samples_by_problem_id_and_sample_index(tmp_path, capsys):
    """iwsft eval's samples.jsonl has problem_id and sample_index (no `id`): each listed line names both."""
    rows = [{"problem_id": "2024-I-3", "sample_index": 2, "response": T + "still thinking", "gold": "7"},
            {"response": T + "still thinking", "gold": "7"}]
    inp, out = _write(tmp_path / "samples.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["grade", "--benchmark", "aime24", "--input", str(inp), "--output", str(out), "--list-unread"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:2] == [f"{inp}:1 (id 2024-I-3, sample 2): no answer read", f"{inp}:2: no answer read"]
