"""Every stored result belongs to the model and settings that produced it: weights identity, problems
with no room, folder metrics over all samples, one accuracy/paired definition, and sharded runs
(fake engine here; two real `iwsft eval` processes in the slow test)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.evaluation import runner as ev
from harness.evaluation.config import EvalConfig
from harness.evaluation.engine import Engine

REPO = Path(__file__).resolve().parents[1]


class Fake(Engine):
    """No model (as tests/test_evaluate.py's FakeEngine): right when the request seed is even; the
    weights identity is NOT faked, so a local model folder is fingerprinted for real."""

    calls = 0
    answer_parity = 0

    def backend_kind(self):
        return "hf"

    def prompt_ids(self, problem, cfg):
        return [1] * (1 + len(problem.question) % 7)

    def prompt_text(self, ids):
        return f"<prompt of {len(ids)} tokens>"

    def close_tokens(self, cfg):
        return 3

    def budget(self, cfg, longest_prompt):
        return longest_prompt

    def generate(self, cfg, prompts, budget, seeds, on_result):
        type(self).calls += len(prompts)
        for j, seed in enumerate(seeds):
            ans = "204" if seed % 2 == self.answer_parity else "7"
            on_result(j, SimpleNamespace(text=f"t<|im_start|>answer\nAnswer: \\boxed{{{ans}}}", thinking_tokens=5,
                                         answer_tokens=3, finish_reason="stop", hit_cap=False, num_waits_used=0,
                                         thinking_cap=budget))

    def backend_info(self):
        return {"kind": "hf", "name": "fake", "version": "0"}


class FakeHub(Fake):
    def weights_id(self):
        return None

    def model_identity(self):
        return "fake:model"


class FakeHubOdd(FakeHub):
    answer_parity = 1


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _write_model(folder: Path, value: float) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.full((64, 64), value)}, str(folder / "model.safetensors"))


def _metrics(run_dir) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


# ------------------------------------------------------------------------------ weights identity


def test_retrained_checkpoint_never_reuses_the_old_models_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "Engine", Fake)
    model = tmp_path / "run" / "final"
    _write_model(model, 0.0)
    cfg = EvalConfig(model=str(model), benchmarks=["aime24"], limit=2, out=str(tmp_path / "eval"), progress=False,
                     summary=False)
    first = ev.run_eval(cfg)["aime24"]
    assert first["generated_now"] == 2
    # delete the run, train again into the same folder, evaluate into the same --out
    import shutil

    shutil.rmtree(tmp_path / "run")
    _write_model(model, 1.0)
    second = ev.run_eval(cfg)["aime24"]
    assert second["generated_now"] == 2 and second["reused"] == 0
    assert first["weights_id"] and second["weights_id"] != first["weights_id"] and second["run_dir"] != first["run_dir"]
    assert _metrics(second["run_dir"])["weights_id"] == second["weights_id"]
    # the same weights again: reused
    assert ev.run_eval(cfg)["aime24"]["generated_now"] == 0
    # compare shows which weights each scored
    rc, stdout, _ = _run(["compare", f"old={first['run_dir']}", f"new={second['run_dir']}"])
    assert rc == 0 and first["weights_id"] in stdout and second["weights_id"] in stdout


# ------------------------------------------------------------------------------ no room


def test_problem_whose_prompt_leaves_no_room_is_counted_not_scored(tmp_path, monkeypatch):
    from harness.evaluation.benchmarks import get_benchmark
    from harness.paper.report import build_table
    from harness.evaluation.store import load_run

    monkeypatch.setattr(ev, "Engine", FakeHub)
    problems = get_benchmark("aime24").load({})[:10]
    total = 8          # room = 8 - prompt - 3 (close) < 1  <=>  prompt > 4 tokens
    roomless = [p.id for p in problems if 1 + len(p.question) % 7 > 4]
    assert 0 < len(roomless) < 10
    FakeHub.calls = 0
    rc, stdout, stderr = _run(["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "10", "--thinking-budget",
                               "2", "--answer-budget", "2", "--total-budget", str(total), "--out", str(tmp_path), "--no-progress"])
    assert rc == 0, stderr
    assert FakeHub.calls == 10 - len(roomless)          # never generated
    run_dir = next((tmp_path / "fake" / "aime24").iterdir())
    m = _metrics(run_dir)
    assert m["no_room"] == len(roomless) and sorted(m["no_room_ids"]) == sorted(roomless)
    assert m["n"] == 10 - len(roomless) and not set(roomless) & set(m["problem_ids"])
    assert f"{len(roomless)} problem(s) not scored" in stdout
    assert len([l for l in stderr.splitlines() if "no room" in l]) == 1
    run = load_run(run_dir)
    assert sorted(run.no_room) == sorted(roomless) and not set(roomless) & set(run.scores)
    report = build_table({"base": [{"aime24": run}]}, [], [], "t")
    assert any(f"{len(roomless)} problem(s) not scored" in d for d in report["deviations"])


def test_max_new_tokens_is_a_deprecated_alias_of_total_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "Engine", FakeHub)
    rc, _, stderr = _run(["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "1", "--max-new-tokens", "64",
                          "--thinking-budget", "8", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0 and "deprecated" in stderr and "--total-budget" in stderr
    assert _metrics(next((tmp_path / "fake" / "aime24").iterdir()))["settings"]["max_new_tokens"] == 64


def test_thinking_budget_none_leaves_the_answer_budget_room(smollm2_tokenizer):
    from harness.evaluation.generation.budget import BudgetConfig
    from harness.evaluation.generation.prompts import S1, delimiter_ids

    ids = delimiter_ids(smollm2_tokenizer, S1)
    close = len(ids.final_answer_close_no_newline)
    cfg = BudgetConfig(thinking_budget=None, max_answer_tokens=500, total_budget=2000)
    assert cfg.resolve_caps([100], ids) == [2000 - 100 - close - 500]
    assert BudgetConfig(thinking_budget=None, total_budget=2000).resolve_caps([100], ids) == [2000 - 100 - close - 100]


# ------------------------------------------------------------------------------ folder metrics


def test_folder_metrics_describe_all_its_samples_not_the_latest_subset(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "Engine", FakeHub)
    cfg = dict(model="fake", benchmarks=["aime24"], out=str(tmp_path), progress=False, summary=False)
    assert ev.run_eval(EvalConfig(**cfg, limit=4))["aime24"]["n"] == 4
    sub = ev.run_eval(EvalConfig(**cfg, limit=2))["aime24"]
    assert sub["n"] == 2                                   # the command's own output: its subset
    run_dir = Path(sub["run_dir"])
    assert _metrics(run_dir)["n"] == 4 and len(_metrics(run_dir)["problem_ids"]) == 4
    rc, _, _ = _run(["compare", f"a={run_dir}", f"b={run_dir}", "--out", str(tmp_path / "rep")])
    assert rc == 0
    assert json.loads((tmp_path / "rep" / "compare.json").read_text())["benchmarks"]["aime24"]["runs"][0]["n"] == 4
    # --limit 0: refused in one line, nothing written
    rc, _, stderr = _run(["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "0",
                          "--out", str(tmp_path / "zero"), "--no-progress"])
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and "--limit" in stderr
    assert not (tmp_path / "zero").exists()


# ------------------------------------------------------------------------------ one definition, K > 1


def test_compare_and_eval_agree_with_k_samples(tmp_path, monkeypatch):
    common = ["--benchmarks", "aime24", "--limit", "6", "--samples", "2", "--temperature", "0.7", "--no-progress"]
    monkeypatch.setattr(ev, "Engine", FakeHub)
    assert _run(["eval", "--model", "even", *common, "--out", str(tmp_path / "a")])[0] == 0
    monkeypatch.setattr(ev, "Engine", FakeHubOdd)
    assert _run(["eval", "--model", "odd", *common, "--out", str(tmp_path / "b")])[0] == 0
    da, db = next((tmp_path / "a" / "even" / "aime24").iterdir()), next((tmp_path / "b" / "odd" / "aime24").iterdir())
    ma, mb = _metrics(da), _metrics(db)
    rc, stdout, _ = _run(["compare", f"A={da}", f"B={db}", "--out", str(tmp_path / "rep")])
    assert rc == 0
    rep = json.loads((tmp_path / "rep" / "compare.json").read_text())["benchmarks"]["aime24"]
    for r, m in zip(rep["runs"], (ma, mb)):
        assert r["accuracy"] == pytest.approx(m["accuracy"]) and r["ci95"] == pytest.approx(m["ci95"])
        assert r["n"] == m["n"] == 6 and r["samples_per_problem"] == 2
    p = rep["paired"][0]
    assert p["only_a"] + p["only_b"] + p["both"] + p["neither"] == 6 * 2
    assert p["diff"] == pytest.approx(mb["accuracy"] - ma["accuracy"])
    assert p["diff"] == pytest.approx((p["only_b"] - p["only_a"]) / 12)
    assert "6 x2" in stdout and "(problem, sample) pair" in stdout


# ------------------------------------------------------------------------------ shards


def _eval_argv(out, *extra):
    return ["eval", "--model", "fake", "--benchmarks", "aime24,math500", "--limit", "5", "--samples", "2",
            "--temperature", "0.5", "--out", str(out), "--no-progress", *extra]


def test_two_shards_report_as_one_run(tmp_path, monkeypatch):
    from harness.evaluation.store import load_run
    from harness.paper.report import cell

    monkeypatch.setattr(ev, "Engine", FakeHub)
    assert _run(_eval_argv(tmp_path / "one"))[0] == 0
    rc, stdout, _ = _run(_eval_argv(tmp_path / "sh", "--shard", "1/2"))
    assert rc == 0 and "not evaluated yet" in stdout
    part = next((tmp_path / "sh" / "fake" / "aime24").iterdir())
    m = _metrics(part)
    assert m["n"] == 3 and m["missing"] == 2 and len(m["missing_ids"]) == 2
    rc, stdout, _ = _run(["compare", f"x={part}", f"y={next((tmp_path / 'one' / 'fake' / 'aime24').iterdir())}"])
    assert rc == 0 and "incomplete" in stdout
    with pytest.raises(UserError, match="incomplete"):
        cell(load_run(part))
    assert _run(_eval_argv(tmp_path / "sh", "--shard", "2/2"))[0] == 0
    for bench in ("aime24", "math500"):
        one = next((tmp_path / "one" / "fake" / bench).iterdir())
        sharded = next((tmp_path / "sh" / "fake" / bench).iterdir())
        assert one.name == sharded.name
        assert sorted(p.name for p in sharded.glob("samples*.jsonl")) == ["samples.shard-1-of-2.jsonl",
                                                                         "samples.shard-2-of-2.jsonl"]
        a, b = _metrics(one), _metrics(sharded)
        for key in ("n", "n_samples", "correct", "accuracy", "ci95", "missing", "pass_at_k"):
            assert a[key] == b[key], key
        assert sorted(a["problem_ids"]) == sorted(b["problem_ids"]) and b["missing"] == 0
        assert cell(load_run(one))["ci95"] == cell(load_run(sharded))["ci95"]


@pytest.mark.parametrize("spec", ["3/2", "0/2", "a/b", "2", "1/0"])
def test_bad_shard_spec_one_line_exit_2_nothing_made(tmp_path, monkeypatch, spec):
    monkeypatch.setattr(ev, "Engine", FakeHub)
    rc, _, stderr = _run(_eval_argv(tmp_path / "out", "--shard", spec))
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and "--shard" in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_shard_split_is_every_nth_problem():
    probs = list(range(7))
    assert ev.shard_of(probs, (1, 3)) == [0, 3, 6] and ev.shard_of(probs, (3, 3)) == [2, 5]
    assert sorted(sum((ev.shard_of(probs, (k, 3)) for k in (1, 2, 3)), [])) == probs


# ------------------------------------------------------------------------------ smaller fixes


def test_compare_checks_its_out_before_printing(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "Engine", FakeHub)
    run = ev.run_eval(EvalConfig(model="fake", benchmarks=["aime24"], limit=2, out=str(tmp_path), progress=False,
                                 summary=False))["aime24"]["run_dir"]
    (tmp_path / "file").write_text("x")
    rc, stdout, stderr = _run(["compare", f"a={run}", f"b={run}", "--out", str(tmp_path / "file" / "sub")])
    assert rc == 2 and stdout == "" and "--out" in stderr


def test_eval_of_a_training_run_folder_suggests_final(tmp_path):
    run = tmp_path / "myrun"
    (run / "final").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text("x: 1\n")
    rc, _, stderr = _run(["eval", "--model", str(run), "--benchmarks", "arith", "--out", str(tmp_path / "o")])
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and str(run / "final") in stderr


# ------------------------------------------------------------------------------ two real workers


@pytest.mark.slow
def test_two_real_shard_processes_match_one_process(tmp_path):
    """Two `python -m harness eval --shard K/2` processes at once on the embedded model, against one
    unsharded process: the same metrics and the same compare report; no transformers deprecation
    warning and no loading bar under --no-progress. Most AIME24 prompts do not fit the 128-token total:
    counted as no_room, never scored."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def cmd(out, *extra):
        return [sys.executable, "-m", "harness", "eval", "--model", "smollm2-135m", "--benchmarks", "arith,aime24",
                "--limit", "3", "--thinking-budget", "12", "--answer-budget", "8", "--total-budget", "128",
                "--batch-size", "2", "--out", str(out), "--no-progress", *extra]

    workers = [subprocess.Popen(cmd(tmp_path / "sharded", "--shard", f"{k}/2"), cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in (1, 2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outs]
    one = subprocess.run(cmd(tmp_path / "one"), cwd=REPO, env=env, text=True, capture_output=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    for text in [e for _, e in outs] + [one.stderr]:
        assert "past_key_values" not in text and "Loading weights" not in text and "forward_call" not in text, text
    reports = {}
    for name in ("one", "sharded"):
        rc, _, _ = _run(["compare", f"x={tmp_path / name / 'smollm2-135m'}", f"y={tmp_path / 'one' / 'smollm2-135m'}",
                         "--out", str(tmp_path / f"rep-{name}")])
        assert rc == 0
        reports[name] = json.loads((tmp_path / f"rep-{name}" / "compare.json").read_text())
    for bench in ("arith", "aime24"):
        a = _metrics(next((tmp_path / "one" / "smollm2-135m" / bench).iterdir()))
        b = _metrics(next((tmp_path / "sharded" / "smollm2-135m" / bench).iterdir()))
        for key in ("n", "correct", "accuracy", "ci95", "no_room", "missing", "thinking_tokens_mean", "weights_id"):
            assert a[key] == b[key], (bench, key)
        ra = reports["one"]["benchmarks"][bench]["runs"][0]
        rb = reports["sharded"]["benchmarks"][bench]["runs"][0]
        assert {k: v for k, v in ra.items() if k != "path"} == {k: v for k, v in rb.items() if k != "path"}
    aime = _metrics(next((tmp_path / "one" / "smollm2-135m" / "aime24").iterdir()))
    assert aime["no_room"] >= 2 and aime["n"] + aime["no_room"] == 3       # most AIME prompts exceed 128 tokens
    assert _metrics(next((tmp_path / "one" / "smollm2-135m" / "arith").iterdir()))["n"] == 3


def test_shards_share_a_run_folder_and_an_unsharded_run_has_it_alone(tmp_path):
    from harness.evaluation import store

    with store.run_lock(tmp_path, (1, 2)), store.run_lock(tmp_path, (2, 2)):    # two shards side by side
        with pytest.raises(UserError, match="shard 1/2 is already running"):
            with store.run_lock(tmp_path, (1, 2)):
                pass
        with pytest.raises(UserError, match="another eval"):
            with store.run_lock(tmp_path):
                pass
    with store.run_lock(tmp_path):
        with pytest.raises(UserError, match="unsharded eval"):
            with store.run_lock(tmp_path, (1, 2)):
                pass
    # the union: first file holding a pair wins; a shard's line being written now is skipped
    (tmp_path / "samples.shard-1-of-2.jsonl").write_text(json.dumps({"problem_id": "a", "sample_index": 0, "correct": True})
                                                         + "\n" + '{"problem_id": "b", "sam')
    (tmp_path / "samples.shard-2-of-2.jsonl").write_text(json.dumps({"problem_id": "c", "sample_index": 0, "correct": False}) + "\n")
    assert set(store.read_samples(tmp_path)) == {("a", 0), ("c", 0)}
