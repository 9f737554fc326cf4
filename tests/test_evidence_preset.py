"""The evidence preset, reduced (2 seeds, a few curated rows, 12 held-out problems), through every step
of `reproduce-table1`: curate D+ from the model's own samples, training (the curated rows prepared
for training by the trainer's own code; the finished runs faked, as real training of these recipes'
format is test_pipeline's), evaluate (EchoEngine: no generation model), report with the comparison
over seeds and its minimum detectable difference, then `iwsft power` on the report. Seconds, not
minutes: real training of 2 recipes x 2 seeds took 24 minutes under this machine's load."""

import json
import sys
from pathlib import Path


import pytest

from harness.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_promises import _fake_trained, echo  # noqa: E402,F401  (fixture)


@pytest.fixture(autouse=True)
def small_figure1(monkeypatch):
    """Figure 1 (tested in test_toy_and_qsource) in 5 steps: it is most of the job's time otherwise."""
    import harness.paper.figure1 as f1

    real = f1.run_toy
    monkeypatch.setattr(f1, "run_toy", lambda cfg: real(f1.ToyConfig(n_draws=200, steps=5)))


def _reduced(tmp_path, min_rows=4):
    from harness.paper.suite import suite_path

    import re

    text = suite_path("evidence").read_text()
    for old, new in ((r"\n  samples: \d+", "\n  samples: 2\n  limit: 12"), (r"min_rows: \d+", f"min_rows: {min_rows}"),
                     (r"\nseeds: \d+", "\nseeds: 2"), (r"sums: null", "sums: 12"), (r"\n  limit: 300", "\n  limit: 6")):
        assert re.search(old, text), old
        text = re.sub(old, new, text, count=1)
    f = tmp_path / "evidence-ci.yaml"
    f.write_text(text)
    return f


def test_too_few_curated_rows_stop_before_training(tmp_path, monkeypatch, capsys, echo):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce-table1", "--preset", str(_reduced(tmp_path, min_rows=10_000)), "--out", "rep"]) == 2
    err = capsys.readouterr().err
    assert "fewer than the suite's min_rows 10000" in err and "raise curate samples" in err
    assert (tmp_path / "runs" / "evidence" / "dplus-smollm2.jsonl").is_file()      # kept: raising samples resumes
    assert not (tmp_path / "runs" / "evidence" / "sft").exists()                      # nothing trained


def test_evidence_preset_reduced_runs_every_step(tmp_path, monkeypatch, capsys, echo):  # noqa: F811
    from harness.core.models import load_tokenizer
    from harness.paper.pipeline import _recipe_config
    from harness.paper.suite import load_suite
    from harness.training.data import load_rows, prepare

    monkeypatch.chdir(tmp_path)
    suite = _reduced(tmp_path)
    _fake_trained(load_suite(str(suite)), 2, [])
    assert main(["reproduce-table1", "--preset", str(suite), "--out", "rep"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs" / "evidence" / "dplus-smollm2.jsonl").read_text().splitlines()]
    assert len(rows) >= 4 and {r["task"] for r in rows} == {"sums"} and {r["temperature"] for r in rows} == {0.3}
    from harness.evaluation.benchmarks import load_benchmark

    held_out = {p.gold for p in load_benchmark("sums")}
    assert not {r["gold"] for r in rows} & held_out                # D+ never holds a held-out answer
    _, _, cfg = _recipe_config(load_suite(str(suite)), "iw-sft", 1)
    assert cfg.output_dir == "runs/evidence/iw-sft-seed43" and Path(cfg.dataset).resolve() == Path("runs/evidence/dplus-smollm2.jsonl").resolve()
    data = prepare(load_rows(cfg.dataset), load_tokenizer(cfg.model), cfg)     # what training reads
    assert len(data.examples) == len(rows)
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["base", "sft", "iw-sft"] and report["seeds"] == 2
    assert all(r["benchmarks"]["sums"]["n"] == 12 for r in report["rows"])
    assert report["rows"][1]["benchmarks"]["sums"]["seeds"] == 2
    assert any(m.startswith("Minimum detectable difference") and "2 seeds per method" in m for m in report["methods"])
    assert any("D+ as the paper defines it" in d for d in report["deviations"])
    capsys.readouterr()
    assert main(["power", "--pilot", "rep", "--diff", "3"]) == 0
    out = capsys.readouterr().out
    assert "pilot: sums, sft, iw-sft; 2 seeds per method, 12 clusters x 1 item," in out and "seeds per method needed" in out
