"""Benchmark registry: packaged data and checksums, ids, limits, GPQA from a made-up CSV."""

from __future__ import annotations

import csv
import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

from harness.evaluation.benchmarks import (
    Benchmark,
    BenchmarkUnavailable,
    Problem,
    get_benchmark,
    load_benchmark,
    names,
)
from harness.evaluation.benchmarks import gpqa_diamond
from harness.core.errors import UserError

GPQA_COLUMNS = [
    "Pre-Revision Question", "Pre-Revision Correct Answer", "Pre-Revision Incorrect Answer 1",
    "Pre-Revision Incorrect Answer 2", "Pre-Revision Incorrect Answer 3", "Pre-Revision Explanation",
    "Self-reported question-writing time (minutes)", "Question", "Correct Answer",
    "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Revision Comments (from Question Writer)",
    "Subdomain", "Writer's Difficulty Estimate", "Extra Revised Question", "Extra Revised Explanation",
    "Extra Revised Correct Answer", "Extra Revised Incorrect Answer 1", "Extra Revised Incorrect Answer 2",
    "Extra Revised Incorrect Answer 3", "Non-Expert Validator Accuracy", "Majority Non-Expert Vals Incorrect",
    "Expert Validator Accuracy", "Record ID", "High-level domain", "Question Writer", "Canary String",
]
CANARY = "MADE-UP-CANARY zq7 do not publish"

# Made-up questions in GPQA's format (the real ones must never appear in this repository).
FAKE_GPQA = [
    dict(rid="recFAKE0001", q="Zorblax quiz one: which made-up particle glows teal under quasilight?",
         correct="The flumpton boson", wrong=["The gribble quark", "A snorkel lepton", "Plain dust"]),
    # Two options differ only in letter case: the gold must be found by position.
    dict(rid="recFAKE0002", q="Zorblax quiz two: which spelling does the imaginary journal demand?",
         correct="Xyloid", wrong=["xyloid", "XYLOIDAL", "Xylo-id"]),
    dict(rid="recFAKE0003", q="Zorblax quiz three: how many wobbles make one imaginary grand wobble?",
         correct="Seventeen wobbles", wrong=["Three wobbles", "Ninety wobbles", "No wobbles at all"]),
]


def write_fake_gpqa_csv(path: Path, records=FAKE_GPQA) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=GPQA_COLUMNS)
        w.writeheader()
        for r in records:
            row = {c: "" for c in GPQA_COLUMNS}
            row.update({
                "Question": r["q"], "Correct Answer": r["correct"],
                "Incorrect Answer 1": r["wrong"][0], "Incorrect Answer 2": r["wrong"][1],
                "Incorrect Answer 3": r["wrong"][2], "Record ID": r["rid"],
                "High-level domain": "Physics", "Subdomain": "Imaginary physics",
                "Explanation": "made-up explanation", "Canary String": CANARY,
            })
            w.writerow(row)
    return path


def secret_texts(records=FAKE_GPQA) -> list[str]:
    """Every made-up question stem and option text: none may appear in outputs."""
    out = []
    for r in records:
        out += [r["q"], r["correct"], *r["wrong"]]
    return out + [CANARY]


# ---------------------------------------------------------------- packaged data


def _sources_sha256() -> dict[str, str]:
    text = resources.files("harness").joinpath("data", "SOURCES.md").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*([\w.]+\.jsonl)\s*\|.*\|\s*([0-9a-f]{64})\s*\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_packaged_files_match_sources_checksums():
    expected = _sources_sha256()
    assert set(expected) == {"aime24.jsonl", "math500.jsonl"}
    for name, sha in expected.items():
        data = resources.files("harness").joinpath("data", name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha, name


def test_registry_lists_benchmarks():
    assert {"aime24", "math500", "gpqa_diamond"} <= set(names())
    assert get_benchmark("gpqa_diamond").public is False
    assert get_benchmark("aime24").public and get_benchmark("math500").public
    with pytest.raises(UserError, match="unknown benchmark"):
        get_benchmark("nope")


def test_aime24_rows_ids_and_golds():
    probs = load_benchmark("aime24")
    assert len(probs) == 30
    assert len({p.id for p in probs}) == 30
    assert probs[0].id == "60" and probs[0].gold == "204"
    assert all(p.gold.isdigit() and 0 <= int(p.gold) <= 999 for p in probs)
    padded = [p for p in probs if p.meta["answer_raw"] != p.gold]
    assert len(padded) == 7 and all(int(p.meta["answer_raw"]) == int(p.gold) for p in padded)
    assert "Aya" in probs[0].question and all(p.question.strip() for p in probs)


def test_math500_rows_ids():
    probs = load_benchmark("math500")
    assert len(probs) == 500 and len({p.id for p in probs}) == 500
    assert probs[0].id == "test/precalculus/807.json"
    assert probs[0].gold == r"\left( 3, \frac{\pi}{2} \right)"
    assert probs[0].question.startswith("Convert the point $(0,3)$")


def test_limit_and_ids():
    assert [p.id for p in load_benchmark("aime24", limit=3)] == ["60", "61", "62"]
    assert load_benchmark("aime24", limit=0) == []
    got = load_benchmark("math500", ids=["test/precalculus/807.json"])
    assert [p.id for p in got] == ["test/precalculus/807.json"]
    got = load_benchmark("aime24", ids=["65", "61", "65"])
    assert [p.id for p in got] == ["65", "61"]          # order given, duplicates dropped
    with pytest.raises(UserError, match=r"unknown problem id\(s\) for aime24: 7, nope"):
        load_benchmark("aime24", ids=["61", "7", "nope"])
    with pytest.raises(UserError, match="^--limit must be >= 0, got -1$"):
        load_benchmark("aime24", limit=-1)


def test_problem_repr_hides_question():
    p = Problem(id="x", question="SECRET-QUESTION-TEXT", gold="A")
    assert "SECRET-QUESTION-TEXT" not in repr(p)


def test_registry_accepts_new_benchmark_module(tmp_path, monkeypatch):
    """Adding a benchmark is one module defining BENCHMARK: the registry discovers it."""
    import sys

    import harness.evaluation.benchmarks as pkg
    from harness.evaluation.benchmarks import _core

    (tmp_path / "zz_tmp_bench.py").write_text(
        "from harness.evaluation.benchmarks import Benchmark, Problem\n"
        "BENCHMARK = Benchmark(name='zz_tmp', description='t', grader='arith',\n"
        "    load=lambda o: [Problem(id=str(i), question=f'{i}+{i}=?', gold=str(2*i)) for i in range(5)])\n"
    )
    # A module placed beside the built-in ones (here: on the package path) is all it takes.
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
    monkeypatch.setattr(_core, "_DISCOVERED", False)
    monkeypatch.setattr(_core, "_REGISTRY", {})
    monkeypatch.delitem(sys.modules, "harness.evaluation.benchmarks.zz_tmp_bench", raising=False)
    assert {"zz_tmp", "aime24", "math500", "gpqa_diamond"} <= set(names())
    assert [p.gold for p in load_benchmark("zz_tmp", limit=2)] == ["0", "2"]
    assert isinstance(get_benchmark("zz_tmp"), Benchmark)
    sys.modules.pop("harness.evaluation.benchmarks.zz_tmp_bench", None)


# ---------------------------------------------------------------- GPQA


def test_gpqa_from_csv_deterministic_and_gold_by_position(tmp_path, capsys):
    csv_path = write_fake_gpqa_csv(tmp_path / "gpqa.csv")
    a = load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path))
    b = load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path))
    assert [p.id for p in a] == ["recFAKE0001", "recFAKE0002", "recFAKE0003"]
    assert [(p.question, p.gold, p.meta) for p in a] == [(p.question, p.gold, p.meta) for p in b]
    for p, rec in zip(a, FAKE_GPQA):
        order = p.meta["option_order"]
        assert sorted(order) == [0, 1, 2, 3]
        assert p.meta["gold_index"] == order.index(0)
        assert p.gold == "ABCD"[order.index(0)]
        options = [rec["correct"], *rec["wrong"]]
        # The prompt shows option order[k] at letter k, in s1's format: question, blank line, options.
        shown = [options[i] for i in order]
        assert p.question == (f"{rec['q']}\n\nA) {shown[0]}\nB) {shown[1]}\nC) {shown[2]}\nD) {shown[3]}")
        assert CANARY not in p.question and CANARY not in str(p.meta)
        assert not any(t in str(p.meta) for t in options + [rec["q"]])
    # The case-only pair: gold is where the correct option sits, not where "xyloid" sits.
    p2 = a[1]
    gold_line = next(l for l in p2.question.splitlines() if l.startswith(f"{p2.gold}) "))
    assert gold_line == f"{p2.gold}) Xyloid"
    # Golds are not all "A" across records, so the permutation really shuffles (for these ids).
    assert len({tuple(p.meta["option_order"]) for p in a}) > 1
    out = capsys.readouterr()
    assert not any(t in out.out + out.err for t in secret_texts())


def test_gpqa_prompt_option(tmp_path):
    # s1's template (simplescaling/lm-evaluation-harness, gpqa_diamond_openai doc_to_text) is the
    # default; OpenAI simple-evals' instruction is a named option. A made-up problem, never GPQA text.
    rec = FAKE_GPQA[2]
    csv_path = write_fake_gpqa_csv(tmp_path / "gpqa.csv", [rec])
    s1 = load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path))[0]
    assert load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path), gpqa_prompt="s1")[0].question == s1.question
    assert s1.question.startswith(rec["q"] + "\n\nA) ") and "Answer" not in s1.question
    se = load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path), gpqa_prompt="simple-evals")[0]
    assert se.question.startswith("Answer the following multiple choice question. The last line of your response")
    assert se.question.endswith(s1.question) and "'Answer: $LETTER'" in se.question
    assert (se.gold, se.meta) == (s1.gold, s1.meta)
    with pytest.raises(UserError, match=r"gpqa_prompt 'openai' .*s1, simple-evals"):
        load_benchmark("gpqa_diamond", gpqa_csv=str(csv_path), gpqa_prompt="openai")
    assert "gpqa_prompt" in get_benchmark("gpqa_diamond").options


def test_gpqa_option_order_stable():
    # Pinned values (not the formula again): a change here silently reshuffles every GPQA run (and
    # invalidates resumable samples).
    pinned = {rid: gpqa_diamond.option_order(rid) for rid in ("recFAKE0001", "recA", "recB")}
    assert pinned == {"recFAKE0001": [2, 1, 3, 0], "recA": [3, 1, 2, 0], "recB": [0, 3, 1, 2]}


def test_gpqa_env_var_and_ids(tmp_path, monkeypatch):
    csv_path = write_fake_gpqa_csv(tmp_path / "gpqa.csv")
    monkeypatch.setenv("IWSFT_GPQA_CSV", str(csv_path))
    got = load_benchmark("gpqa_diamond", ids=["recFAKE0003"])
    assert [p.id for p in got] == ["recFAKE0003"]
    with pytest.raises(UserError, match="recNOPE"):
        load_benchmark("gpqa_diamond", ids=["recNOPE"])


def gated_hub(monkeypatch) -> None:
    """The hub answers but refuses the dataset (no token, or terms not accepted): the stub raises the
    library's error, and the message the user sees is the product's own."""
    import datasets

    import harness.core.hub

    class GatedRepoError(Exception):        # huggingface_hub's, which needs an HTTP response to build
        pass

    def gated(*a, **k):
        raise GatedRepoError("401 Client Error: access to dataset Idavidrein/gpqa is restricted")

    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setattr(harness.core.hub, "unavailable", lambda *a: None)
    monkeypatch.setattr(datasets, "load_dataset", gated)


def test_gpqa_unavailable_is_one_line(monkeypatch):
    gated_hub(monkeypatch)
    with pytest.raises(BenchmarkUnavailable) as ei:
        load_benchmark("gpqa_diamond")
    msg = str(ei.value)
    assert "\n" not in msg and "--gpqa-csv" in msg and "IWSFT_GPQA_CSV" in msg and "token" in msg.lower()
    assert "GatedRepoError" in msg and "401" not in msg      # the kind of failure, not the library's text
    assert isinstance(ei.value, UserError)


def test_gpqa_hub_failure_maps_to_unavailable(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    import harness.core.hub

    monkeypatch.setattr(harness.core.hub, "unavailable", lambda *a: None)     # the hub answers, the load fails
    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(BenchmarkUnavailable, match="hub load failed: ConnectionError"):
        load_benchmark("gpqa_diamond")


def test_gpqa_unreachable_hub_is_said_at_once(monkeypatch):
    """No network (or offline mode): said so in one line, without datasets' retries, and not
    mistaken for gated access."""
    import datasets

    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no load without a hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkUnavailable, match=r"unreachable here \(offline mode.*--gpqa-csv"):
        load_benchmark("gpqa_diamond")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # the discard port: connection refused
    with pytest.raises(BenchmarkUnavailable, match="no connection to 127.0.0.1: ConnectionRefusedError"):
        load_benchmark("gpqa_diamond")


def test_gpqa_bad_csv(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_benchmark("gpqa_diamond", gpqa_csv=str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Record ID\nq,r\n", encoding="utf-8")
    with pytest.raises(UserError, match="Correct Answer"):
        load_benchmark("gpqa_diamond", gpqa_csv=str(bad))
    dup = write_fake_gpqa_csv(tmp_path / "dup.csv", [FAKE_GPQA[0], FAKE_GPQA[0]])
    with pytest.raises(UserError, match="duplicate Record ID"):
        load_benchmark("gpqa_diamond", gpqa_csv=str(dup))


def test_arith_split_by_unordered_pair_and_transfer_level():
    """3+5 and 5+3 sit on the same side of the split (a held-out fact is not the training fact
    reversed), clusters are unordered pairs, and arith2 (two-digit addition) is a separate level."""
    import re

    from harness.evaluation.benchmarks import load_benchmark

    def pairs(name):
        out = set()
        for p in load_benchmark(name):
            a, b = map(int, re.fullmatch(r"\w+-(\d+)[-+*](\d+)-t\d+", p.id).groups())
            out.add((a, b))
        return out

    test, train = pairs("arith"), pairs("arith_train")
    assert not test & train
    assert all((b, a) in test for a, b in test) and all((b, a) in train for a, b in train)
    assert len(test | train) == 100
    probs = {p.id: p for p in load_benchmark("arith")}
    assert probs["add1-2+8-t0"].meta["cluster"] == probs["add1-8+2-t3"].meta["cluster"] == "add1-2+8"
    a2 = load_benchmark("arith2", limit=118)     # one phrasing of each of its 118 ordered pairs
    assert len(a2) == 118 and all(p.id.startswith("add2-") and p.id.endswith("-t0") for p in a2)
    assert {p.meta["cluster"] for p in a2} == {p.meta["cluster"] for p in load_benchmark("arith2")}


def test_an_lm_eval_task_name_points_at_its_benchmark(capsys):
    """`iwsft_arith` (the lm-eval task) -> `arith`; other unknown names still list the known ones."""
    from harness.cli import main
    from harness.evaluation.grading import kind_of

    with pytest.raises(UserError, match=r"unknown benchmark 'iwsft_arith'; use 'arith' \(iwsft_arith is the lm-eval"):
        get_benchmark("iwsft_arith")
    with pytest.raises(UserError, match=r"use 'aime24' \(iwsft_aime24 is the lm-eval task's name\)"):
        kind_of("iwsft_aime24")
    with pytest.raises(UserError, match="known: aime24"):
        get_benchmark("iwsft_nope")
    assert main(["eval", "--model", "m", "--benchmarks", "iwsft_math500"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use 'math500' (iwsft_math500 is the lm-eval task's name)" in err, err
