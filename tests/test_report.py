"""Report rendering from fixed sample files (golden output) and the paired statistics."""

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.paper.report import build_table, markdown
from harness.evaluation.store import find_runs, load_run
from harness.core.stats import mcnemar_exact, paired_compare, wilson

DATA = Path(__file__).parent / "data"


def _write_run(root: Path, model: str, bench: str, correct: dict[str, bool], thinking: int = 20) -> Path:
    d = root / model / bench / "abc123"
    d.mkdir(parents=True)
    rows = [{"problem_id": pid, "sample_index": 0, "response": "r", "thinking_tokens": thinking, "correct": ok,
             "extracted": "1" if ok else None, "finish_reason": "stop"} for pid, ok in correct.items()]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    n, c = len(rows), sum(correct.values())
    (d / "metrics.json").write_text(json.dumps({"benchmark": bench, "n": n, "accuracy": c / n, "ci95": list(wilson(c, n)),
                                                "samples_per_problem": 1, "thinking_tokens_mean": thinking,
                                                "unextracted": n - c, "truncated": 0,
                                                "problem_ids": list(correct), "subset": {"limit": None, "ids": None}}))
    return d


A = {"q1": True, "q2": True, "q3": False, "q4": False, "q5": True}
B = {"q1": True, "q2": False, "q3": True, "q4": True, "q5": True}


def test_paired_hand_computed():
    p = paired_compare({k: float(v) for k, v in A.items()}, {k: float(v) for k, v in B.items()})
    assert (p.n, p.only_a, p.only_b, p.both, p.neither) == (5, 1, 2, 2, 0)
    assert p.diff == pytest.approx(0.2)
    # Exact McNemar: discordant 1 vs 2 -> p = 2 * P(X <= 1 | n=3, 1/2) = 2 * 4/8 = 1.
    assert p.p_mcnemar == pytest.approx(1.0)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 3) == 1.0
    lo, hi = p.diff_ci95
    assert lo <= 0.2 <= hi


def test_wilson_matches_reference_values():
    lo, hi = wilson(18, 30)   # 60% on 30 AIME problems: about +/- 17 points
    assert lo == pytest.approx(0.4232, abs=1e-3) and hi == pytest.approx(0.7541, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0


def test_table_golden_markdown(tmp_path):
    runs = {
        "base": [{"arith": load_run(_write_run(tmp_path, "base", "arith", A))}],
        "iw-sft": [{"arith": load_run(_write_run(tmp_path, "iw", "arith", B, thinking=30))}],
    }
    report = build_table(runs, [["base", "iw-sft"]], ["Grader: offline."], "Golden")
    got = markdown(report)
    golden = DATA / "golden_table1.md"
    assert got == golden.read_text()   # regenerate deliberately (and review) when the format changes
    assert report["rows"][0]["benchmarks"]["arith"]["n"] == 5


def test_compare_command(tmp_path, capsys):
    _write_run(tmp_path / "a", "m", "arith", A)
    _write_run(tmp_path / "b", "m", "arith", B)
    assert main(["compare", f"A={tmp_path / 'a' / 'm'}", f"B={tmp_path / 'b' / 'm'}", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "McNemar" in out and "+20.0" in out and "Question answered: do these runs (checkpoints) differ" in out
    rep = json.loads((tmp_path / "rep" / "compare.json").read_text())
    assert rep["benchmarks"]["arith"]["agreement"]["A"]["B"] == 2
    assert find_runs(tmp_path / "a" / "m")["arith"].scores["q3"] == 0.0
    assert find_runs(tmp_path / "a")["arith"].path == find_runs(tmp_path / "a" / "m")["arith"].path   # eval --out folder
    _write_run(tmp_path / "a", "m2", "arith", B)
    with pytest.raises(UserError, match="holds evaluations of 2 models"):
        find_runs(tmp_path / "a")
    import shutil   # a second arith run of the same model, other settings: which one is meant is not guessed

    first = tmp_path / "a" / "m" / "arith" / "abc123"
    shutil.copytree(first, first.parent / "def456")
    (first / "settings.json").write_text(json.dumps({"wait": 0, "model": "x"}))
    (first.parent / "def456" / "settings.json").write_text(json.dumps({"wait": 2, "model": "x"}))
    with pytest.raises(UserError, match=r"2 finished arith runs with different settings \(wait\)"):
        find_runs(tmp_path / "a" / "m")


def test_compare_missing_path_is_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope'} does not exist; give evaluation output folders (see `iwsft eval --out`)\n"


def test_paired_rows_name_their_seed(tmp_path):
    a = {"arith": load_run(_write_run(tmp_path / "a", "m", "arith", A))}
    b = {"arith": load_run(_write_run(tmp_path / "b", "m", "arith", B))}
    report = build_table({"base": [a], "iw-sft": [b, b]}, [["base", "iw-sft"]], [], "Seeds")
    md = markdown(report)
    assert "| base | iw-sft | arith (seed 1) |" in md and "| base | iw-sft | arith (seed 2) |" in md


def test_compare_notes_other_differing_settings(tmp_path, capsys):
    a = _write_run(tmp_path / "a", "m", "arith", A)
    b = _write_run(tmp_path / "b", "m", "arith", B)
    (a / "settings.json").write_text(json.dumps({"model": "x", "wait": 0, "thinking_budget": 48}))
    (b / "settings.json").write_text(json.dumps({"model": "y", "wait": 1, "thinking_budget": 48}))
    assert main(["compare", f"A={a}", f"B={b}", "--out", str(tmp_path / "rep")]) == 0
    assert "also differ in wait" in capsys.readouterr().out
    assert json.loads((tmp_path / "rep" / "compare.json").read_text())["benchmarks"]["arith"]["settings_differ"] == ["wait"]


def test_compare_names_the_flag_of_a_renamed_setting(tmp_path, capsys):
    """settings.json's max_new_tokens is set by --total-budget: the note names the flag (compare.json keeps the key)."""
    a = _write_run(tmp_path / "a", "m", "arith", A)
    b = _write_run(tmp_path / "b", "m", "arith", B)
    (a / "settings.json").write_text(json.dumps({"model": "x", "wait": 0, "max_new_tokens": 256}))
    (b / "settings.json").write_text(json.dumps({"model": "y", "wait": 1, "max_new_tokens": 512}))
    assert main(["compare", f"A={a}", f"B={b}", "--out", str(tmp_path / "rep")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "also differ in --total-budget (max_new_tokens in settings.json), wait (see each run's settings.json)" in out
    differ = json.loads((tmp_path / "rep" / "compare.json").read_text())["benchmarks"]["arith"]["settings_differ"]
    assert differ == ["max_new_tokens", "wait"]


def _arith_runs(root: Path, name: str, correct_pairs: set[int], k_pairs: int = 10) -> Path:
    """An arith run on real arith ids: k_pairs unordered operand pairs (both orders) x 6 phrasings, all
    problems of a pair right or wrong together."""
    from harness.evaluation.benchmarks import load_benchmark

    problems = load_benchmark("arith")
    pairs = sorted({p.meta["cluster"] for p in problems})[:k_pairs]
    chosen = [p for p in problems if p.meta["cluster"] in pairs]
    return _write_run(root, name, "arith", {p.id: pairs.index(p.meta["cluster"]) in correct_pairs for p in chosen})


def test_report_resamples_and_tests_arith_clusters(tmp_path):
    base = load_run(_arith_runs(tmp_path / "a", "m", set(range(2))))
    iw = load_run(_arith_runs(tmp_path / "b", "m", set(range(7))))
    report = build_table({"base": [{"arith": base}], "iw-sft": [{"arith": iw}]}, [["base", "iw-sft"]], [], "Clusters")
    (pc,) = report["paired"]
    # 5 unordered pairs (54 problems: both orders x 6 phrasings, one pair a double) won by iw-sft:
    # 5 independent wins, p = 2/32, not 54 (p = 2/2^54).
    assert (pc["only_a"], pc["only_b"], pc["clusters"]) == (0, 54, 10)
    assert pc["p_mcnemar"] == pytest.approx(0.0625) and pc["diff_ci95"][0] <= 0
    # Every differing cluster favours iw-sft, yet the interval does not end at the estimate (it did:
    # "+72.8 [+54.8, +72.8]" in a tiny report): how many clusters differ is itself uncertain.
    assert pc["diff_ci95"][1] > pc["diff"] + 0.1
    cell = report["rows"][0]["benchmarks"]["arith"]
    assert cell["ci_method"].startswith("bootstrap over 10 clusters")
    md = markdown(report)
    assert "## Statistical methods" in md and "10 clusters of correlated problems" in md and "Holm" not in md


def test_report_adjusts_many_paired_tests(tmp_path):
    a = {"arith": load_run(_write_run(tmp_path / "a", "m", "arith", A))}
    b = {"arith": load_run(_write_run(tmp_path / "b", "m", "arith", B))}
    c = {"arith": load_run(_write_run(tmp_path / "c", "m", "arith", {k: True for k in A}))}
    report = build_table({"base": [a], "iw-sft": [b], "sft": [c]}, [["base", "iw-sft"], ["base", "sft"]], [], "Many")
    # base vs iw-sft: discordant 1 / 2, p = 1; base vs sft: 0 / 2, p = 2/4. Neither can reach 0.05
    # (3 and 2 discordant problems): both are left out of Holm's family, not counted against others.
    assert [p["p_mcnemar"] for p in report["paired"]] == pytest.approx([1.0, 0.5])
    assert [p["p_holm"] for p in report["paired"]] == [None, None]
    md = markdown(report)
    assert "| p (exact) | Holm p |" in md and "over the 0 tests that can reach p < 0.05" in md
    assert "2 tests with 5 or fewer discordant units cannot reject" in md and "| 0.5 | - (n.s.) |" in md


def _tens(root: Path, name: str, right: int) -> dict:
    """An arith run on 10 problem ids, the first `right` of them right."""
    return {"arith": load_run(_write_run(root, name, "arith", {f"q{i}": i < right for i in range(10)}))}


def test_marks_follow_holm_and_the_family_is_the_tests_that_can_reject(tmp_path):
    base, x, y, z = (_tens(tmp_path / k, "m", r) for k, r in (("a", 0), ("x", 6), ("y", 6), ("z", 2)))
    report = build_table({"base": [base], "x": [x], "y": [y], "z": [z]},
                         [["base", "x"], ["base", "y"], ["base", "z"]], [], "Holm")
    px, py, pz = report["paired"]
    # x and y: 6 of 6 discordant, exact p = 2/64 each, Holm over the two that can reject: 0.0625. z:
    # 2 discordant, smallest attainable p 0.5, left out (the old family of 3 gave x and y 0.094).
    assert px["p_mcnemar"] == pytest.approx(2 / 64) and px["p_holm"] == pytest.approx(4 / 64)
    assert (px["in_holm_family"], pz["in_holm_family"], pz["p_holm"]) == (True, False, None)
    md = markdown(report)
    # Significant before adjustment, not after: the mark follows the Holm p printed beside it.
    assert "| 0.0312 | 0.0625 (n.s.) |" in md and "| 0.5 | - (n.s.) |" in md
    assert "over the 2 tests that can reach p < 0.05" in md and "1 test with 5 or fewer" in md
    assert "do these two checkpoints differ" in md


def test_methods_are_tested_over_seeds(tmp_path):
    base = _tens(tmp_path / "a", "m", 2)
    seeds = [_tens(tmp_path / f"s{i}", "m", r) for i, r in enumerate((6, 8, 9))]
    report = build_table({"base": [base], "iw-sft": seeds}, [["base", "iw-sft"]], [], "Seeds")
    assert [c["question"] for c in report["paired"]] == ["these two checkpoints, on these problems"] * 3
    (m,) = report["methods_over_seeds"]
    # Per-seed differences +40, +60, +70 points: mean 56.7, sd 15.3, t = 6.43 on 2 df.
    assert m["seed_diffs"] == pytest.approx([0.4, 0.6, 0.7]) and m["seeds"] == 3
    assert m["p"] == pytest.approx(0.02335, abs=2e-4) and m["diff_ci95"][0] == pytest.approx(0.5667 - 0.3795, abs=1e-3)
    assert "over 3 training seeds" in m["question"]
    md = markdown(report)
    assert "## Methods over training seeds" in md and "do these two methods differ" in md
    assert "| +40.0 +60.0 +70.0 | +56.7 [+18.7, +94.6] | 0.0234 |" in md
    assert "Checkpoints, not methods" not in md


def test_one_seed_report_says_it_cannot_answer_the_methods_question(tmp_path):
    report = build_table({"base": [_tens(tmp_path / "a", "m", 0)], "iw-sft": [_tens(tmp_path / "b", "m", 9)]},
                         [["base", "iw-sft"]], [], "One seed")
    assert report["methods_over_seeds"] == []
    md = markdown(report)
    assert "Checkpoints, not methods" in md and "--seeds N (N >= 2)" in md and "## Methods over" not in md


def test_a_rerun_keeps_the_original_wall_time(tmp_path):
    from harness.paper.pipeline import wall_times

    prev = tmp_path / "table1.json"
    assert wall_times(prev, "T", 700.0) == {"wall_time_s": 700.0, "wall_time_this_run_s": 700.0}   # first run
    prev.write_text(json.dumps({"title": "T", "wall_time_s": 700.0}))
    assert wall_times(prev, "T", 4.0) == {"wall_time_s": 700.0, "wall_time_this_run_s": 4.0}     # everything reused
    assert wall_times(prev, "other preset", 4.0)["wall_time_s"] == 4.0


def test_markdown_carries_what_the_terminal_text_shows(tmp_path):
    from harness.paper.report import write_report

    runs = {"base": [{"arith": load_run(_write_run(tmp_path, "base", "arith", A))}],
            "iw-sft": [{"arith": load_run(_write_run(tmp_path, "iw", "arith", B, thinking=30))}]}
    write_report(build_table(runs, [["base", "iw-sft"]], [], "Parity"), tmp_path / "out")
    txt, md = ((tmp_path / "out" / f"table1.{x}").read_text() for x in ("txt", "md"))
    for shown in ("think tok", "← ours: iw-sft", "LLM-judged", "Holm" if "Holm" in txt else "p (exact)", "(n.s.)"):
        assert shown in txt and shown in md, shown


def test_compare_holm_over_every_pair_of_the_call(tmp_path, capsys):
    """Three runs make three tests: each raw p of 0.031 (0 / 6 discordant) is 0.094 after Holm over the family,
    and "(n.s.)" follows the Holm p printed beside it."""
    ids = [f"q{i}" for i in range(20)]
    a = {q: False for q in ids}
    b = {q: i < 6 for i, q in enumerate(ids)}
    c = {q: 6 <= i < 12 for i, q in enumerate(ids)}
    for name, outcomes in (("a", a), ("b", b), ("c", c)):
        _write_run(tmp_path / name, "m", "math500", outcomes)
    argv = ["compare", *(f"{n.upper()}={tmp_path / n / 'm'}" for n in "abc"), "--out", str(tmp_path / "rep")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80                      # the terminal (80 when piped) ...
    out = (tmp_path / "rep" / "compare.txt").read_text()              # ... and the file, at 150
    assert "Holm p" in out and "0.0938 (n.s.)" in out and "0.0312" in out, out
    assert "| A | B | 20 | +30.0 [+1.0, +54.3] | 0 / 6 | 0.0312 | 0.0938 (n.s.) |" in (tmp_path / "rep" / "compare.md").read_text()
    paired = json.loads((tmp_path / "rep" / "compare.json").read_text())["benchmarks"]["math500"]["paired"]
    got = {(p["a"], p["b"]): (round(p["p_mcnemar"], 4), p["p_holm"] and round(p["p_holm"], 4)) for p in paired}
    assert got == {("A", "B"): (0.0312, 0.0938), ("A", "C"): (0.0312, 0.0938), ("B", "C"): (1.0, 1.0)}


def test_think_tokens_pool_benchmarks_by_their_samples():
    """Table 1's think tok: 312 arith samples at 12 tokens and 2 AIME ones at 48 read 12, not (12 + 48) / 2."""
    from harness.paper.report import _think_text

    row = {"benchmarks": {"arith": {"thinking_tokens_mean": 12.0, "n": 312, "samples_per_problem": 1},
                          "aime24": {"thinking_tokens_mean": 48.0, "n": 2, "samples_per_problem": 1},
                          "gpqa_diamond": {"skipped": "no access"}}}
    assert _think_text(row) == "12"
    row["benchmarks"]["aime24"]["samples_per_problem"] = 312          # K samples count as samples
    assert _think_text(row) == "36"                                  # (12 x 312 + 48 x 624) / 936


def test_a_bound_that_rounds_to_zero_keeps_its_sign():
    """'+4.5 [+0.0, +22.9]' beside p = 0.0498 read as an interval touching 0; it excludes it."""
    from harness.core.stats import points, points_interval

    assert points_interval(0.0004, 0.229) == "[+0.04, +22.9]"
    assert points(-0.00004) == "-0.004" and points(0.0) == "+0.0" and points(0.045) == "+4.5"
    assert points_interval(-0.012, 0.0) == "[-1.2, +0.0]"


def test_compare_labels_a_bare_run_folder_by_its_model(tmp_path, capsys):
    """A run folder's own name is a settings hash: the label is its model folder's name."""
    a = _write_run(tmp_path / "x", "sft-matched--final-29afd8", "arith", A)
    b = _write_run(tmp_path / "y", "iw-sft--final-dabeb9", "arith", B)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    rep = json.loads((tmp_path / "rep" / "compare.json").read_text())
    assert rep["runs"] == ["sft-matched--final-29afd8", "iw-sft--final-dabeb9"]
    assert "…" not in capsys.readouterr().out                   # names fold over lines, never cut


def test_answer_reads_the_printed_tests(tmp_path):
    """The answer line follows the p printed beside each test (Holm's in a family): a significant checkpoint
    difference is named with its direction; with seeds the methods-over-seeds tests answer instead."""
    from harness.paper.report import answer_lines

    def t(a, b, bench, diff, p, holm, fam=True):
        return {"a": a, "b": b, "benchmark": bench, "diff": diff, "p_mcnemar": p, "p": p, "p_holm": holm,
                "in_holm_family": fam}

    checks = [t("sft", "iw-sft", "arith", 0.05, 0.01, 0.02), t("sft", "iw-sft", "arith2", -0.10, 0.001, 0.004),
              t("sft", "iw-sft", "aime24", 0.0, 1.0, None, fam=False), t("sft", "iw-sft", "math500", 0.02, 0.03, 0.09),
              t("base", "iw-sft", "arith", 0.5, 1e-9, 1e-8)]
    (line,) = answer_lines(checks, [])
    assert line.startswith("iw-sft vs sft, one checkpoint each: this compares these two checkpoints, not the methods")
    assert "iw-sft higher on arith; sft higher on arith2; aime24: too few differing problems" in line
    assert "math500" not in line.split("aime24")[0]                   # raw p 0.03 but Holm 0.09: not significant
    over = [t("sft", "iw-sft", "arith", 0.04, 0.2, 0.2) | {"seeds": 3}]
    (line,) = answer_lines(checks, over)
    assert line == "iw-sft vs sft, over 3 training seeds each (the methods' question): no significant difference on arith (family-wise 5%, Holm)."
