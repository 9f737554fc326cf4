"""The tiny preset end to end (reduced: 2 training steps on the first 16 rows of its training set, 2 problems
per benchmark), as `just reproduce-table1` runs it, plus Figure 2 and `iwsft table1` on the results."""

import json
from pathlib import Path

import pytest

from harness.cli import main


@pytest.mark.slow
def test_reproduce_table1_tiny_reduced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)          # recipes write runs/ relative to the working directory
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")    # no hub here: GPQA is skipped with its one-line reason
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from harness.evaluation.generation.hf import HFBackend

    loads = []                           # one engine per model: each model loads once, whatever it is asked
    real_load = HFBackend.load.__func__
    monkeypatch.setattr(HFBackend, "load", classmethod(lambda cls, resolved, **kw: loads.append(str(resolved.path))
                                                       or real_load(cls, resolved, **kw)))
    # The reference cache in this test's folder: computed here, by this code, not read from a cache that
    # an earlier run (maybe of older code) left in the user's cache folder.
    # The first 16 rows of the recipes' own D+ set: the 2 steps at batch 8 read them all, and the reference
    # cache (one forward over the first epoch) covers 16 examples, not 145 that the 2 steps never use.
    shipped = Path(__file__).parents[1] / "recipes" / "tiny" / "data" / "arith-add1-smollm2.jsonl"
    subset = tmp_path / "dplus16.jsonl"
    subset.write_text("".join(shipped.read_text().splitlines(keepends=True)[:16]))
    train = ["--train-override", "max_steps=2", "--train-override", f"ref_cache_dir={tmp_path / 'ref'}",
             "--train-override", f"dataset={subset}"]
    rc = main(["reproduce-table1", "--preset", "tiny", "--limit", "2", *train, "--out", "rep"])
    assert rc == 0
    assert list((tmp_path / "ref").glob("*.safetensors"))        # computed here (iw-sft, per-step share one)
    assert len(loads) == len(set(loads)) >= 4, loads    # base + 3 trained (+ step-curve checkpoints)
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["base", "s1.1-sft", "sft-matched", "iw-sft", "iw-sft-per-step"]
    assert any(p["a"] == "sft-matched" and p["b"] == "iw-sft" for p in report["paired"])
    assert "arith2" in report["rows"][0]["benchmarks"]
    arith = report["rows"][0]["benchmarks"]["arith"]
    assert arith["n"] == 2 and 0 <= arith["ci95"][0] <= arith["accuracy"] <= arith["ci95"][1] <= 1
    # every benchmark the suite names is scored (its total budget leaves room for AIME24's prompts)
    assert {p["benchmark"] for p in report["paired"]} == {"arith", "arith2", "aime24", "math500"}
    assert report["rows"][0]["benchmarks"]["aime24"]["n"] >= 1
    assert not any("not scored" in d for d in report["deviations"])
    assert any("gpqa_diamond: skipped" in d for d in report["deviations"])
    assert any("offline checker" in d for d in report["deviations"])
    for f in ("table1.md", "table1.txt", "figure1.png", "figure1.json", "arith_steps.png"):
        assert (tmp_path / "rep" / f).is_file(), f
    for name in ("s1.1-sft", "sft-matched", "iw-sft", "iw-sft-per-step"):
        m = [json.loads(l) for l in (tmp_path / "runs" / "tiny" / name / "metrics.jsonl").read_text().splitlines()]
        assert m[0]["w_mean"] == 1.0 and len(m) == 2 and "update_norm" in m[0]
        assert json.loads((tmp_path / "runs" / "tiny" / name / "final" / "iwsft_train.json").read_text())["data"]["examples"] == 16
    out = capsys.readouterr().out
    assert "Paired comparisons" in out and "Deviations" in out

    # Re-running reuses finished training and samples.
    loaded_first = len(loads)
    rc = main(["reproduce-table1", "--preset", "tiny", "--limit", "2", *train, "--out", "rep"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("reusing") == 4
    assert len(loads) == loaded_first, loads[loaded_first:]   # everything was stored: no model loads
    # ... but never a model trained with other settings, nor one folder for all recipes: refused
    # before any work, nothing written.
    for override, message in (("max_steps=3", "trained with other settings (max_steps: 2 -> 3)"),
                              ("output_dir=runs/same", "would both train into runs/same")):
        rc = main(["reproduce-table1", "--preset", "tiny", "--limit", "2", *train, "--train-override", override, "--out", "rep2"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "rep2").exists()

    # Figure 2 on the trained checkpoints, one cheap cell.
    import harness.paper.suite as suite_mod

    sw = tmp_path / "sweep.yaml"
    text = suite_mod.suite_path("tiny").read_text()
    sw.write_text(text.replace("limit: 60", "limit: 2"))
    assert main(["budget-sweep", "iw=runs/tiny/iw-sft/final", "--preset", str(sw), "--out", "rep"]) == 0
    fig2 = json.loads((tmp_path / "rep" / "figure2.json").read_text())
    pts = fig2["models"]["iw"]["arith"]
    assert len(pts) == 4 and all(p["n"] == 2 for p in pts)
    assert (tmp_path / "rep" / "figure2.png").is_file()
    assert (tmp_path / "rep" / "view.html").is_file()          # the page beside the reports (iwsft view)


@pytest.mark.slow
def test_table1_for_existing_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from harness.core.models import resolve_model

    # The same weights under a second path (a folder of links to the alias's files): its own run folders.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in Path(resolve_model("smollm2-135m").path).iterdir():
        (copy / f.name).symlink_to(f)
    rc = main(["table1", "--checkpoints", "base=smollm2-135m", f"again={copy}", "--preset", "tiny",
               "--limit", "1", "--out", "rep"])
    assert rc == 0
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["base", "again"]
    assert (tmp_path / "rep" / "view.html").is_file()          # the page beside the report (iwsft view)
    base, again = (r["benchmarks"] for r in report["rows"])
    assert set(base) == set(again) >= {"arith", "aime24", "math500"}
    for b in base:
        a_dir, b_dir = Path(base[b]["run_dir"]), Path(again[b]["run_dir"])
        assert a_dir != b_dir and a_dir.is_dir() and b_dir.is_dir()      # two runs, not one file read twice
        responses = [[r["response"] for r in map(json.loads, (d / "samples.jsonl").read_text().splitlines())]
                     for d in (a_dir, b_dir)]
        assert responses[0] == responses[1] and len(responses[0]) == 1, b
    # The same model twice: identical greedy outputs, so the paired test sees no discordant problem.
    assert {p["benchmark"] for p in report["paired"]} == set(base)
    assert all(p["only_a"] == p["only_b"] == 0 for p in report["paired"])
    capsys.readouterr()
    assert main(["table1", "--checkpoints", "no-equals-sign"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no-equals-sign'" in err and "NAME=PATH" in err, err
