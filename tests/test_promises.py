"""What README.md promises and no other test checked: Ctrl-C / SIGTERM on a real train and eval (exit
130, then resume), `--seeds N` mean and spread, GPQA text absent from every paper job's reports and
logs, the reference cache refusing another dataset or block size, no [tokens x vocab] float32 tensor
kept for backward, `iwsft curate`, budget-sweep reusing its cells, and the MFU peak of H100/H200."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.evaluation.engine import Engine

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted; finished work is kept, re-run the same command to resume"


# ------------------------------------------------------------------------------------------ helpers


class EchoEngine(Engine):
    """No model. Each response restates the whole prompt (a GPQA question and its options included: the
    product must redact them) and answers right or wrong by a hash of (model, problem, seed), so two
    models or two seeds score differently, deterministically. Counts its generate calls."""

    calls: list[int] = []

    def model_identity(self):
        return f"echo:{self.model}"

    def backend_kind(self):
        return "hf"

    def backend_info(self):
        return {"kind": "hf", "name": "echo", "version": "0"}

    def prompt_ids(self, problem, cfg):
        self.__dict__.setdefault("_problems", {})
        ids = [int(hashlib.sha256(problem.id.encode()).hexdigest()[:6], 16)]
        self._problems[tuple(ids)] = problem
        return ids

    def budget(self, cfg, longest_prompt):
        return cfg.thinking_budget if isinstance(cfg.thinking_budget, int) else 16

    def prompt_text(self, ids):          # the question itself: a GPQA prompt written anywhere would leak it
        return self._problems[tuple(ids)].question

    def close_tokens(self, cfg):
        return 3

    def right(self, problem, seed) -> bool:
        return int(hashlib.sha256(f"{self.model}:{problem.id}:{seed}".encode()).hexdigest(), 16) % 2 == 0

    def generate(self, cfg, prompts, budget, seeds, on_result):
        from types import SimpleNamespace

        EchoEngine.calls.append(len(prompts))
        for j, (ids, seed) in enumerate(zip(prompts, seeds)):
            p = self._problems[tuple(ids)]
            ans = p.gold if self.right(p, seed) else _wrong(p.gold)
            tail = f"Answer: {ans}" if p.gold in ("A", "B", "C", "D") else f"Answer: \\boxed{{{ans}}}"
            on_result(j, SimpleNamespace(text=f"Let me restate it. {p.question}\n<|im_start|>answer\n{tail}",
                                         thinking_tokens=5, answer_tokens=3, finish_reason="stop", hit_cap=False,
                                         num_waits_used=0, thinking_cap=int(budget)))


def _wrong(gold: str) -> str:
    if gold in ("A", "B", "C", "D"):
        return "ABCD"[("ABCD".index(gold) + 1) % 4]
    return str(int(gold) + 1) if gold.lstrip("-").isdigit() else "7777"


@pytest.fixture
def echo(monkeypatch):
    """Every engine the jobs make is an EchoEngine (the paper jobs through Evaluations, eval and curate
    through the runner)."""
    import harness.evaluation.runner
    import harness.paper.evaluations

    EchoEngine.calls = []
    monkeypatch.setattr(harness.paper.evaluations, "Engine", EchoEngine)
    monkeypatch.setattr(harness.evaluation.runner, "Engine", EchoEngine)
    return EchoEngine


def _fake_trained(suite, seeds: int, overrides: list[str]) -> None:
    """Finished training runs, as `iwsft train` leaves them, for every (recipe, seed) of the suite (run
    from the current folder): the pipeline reuses them (a real training is tested elsewhere)."""
    from harness.paper.pipeline import _recipe_config

    for name in suite.recipes:
        for s in range(seeds):
            _, _, cfg = _recipe_config(suite, name, s, overrides)
            final = Path(cfg.output_dir) / "final"
            final.mkdir(parents=True)
            (final / "config.json").write_text("{}")
            (final / "iwsft_train.json").write_text(json.dumps({"config": cfg.to_dict(),
                                                                "data": {"rows": 4, "examples": 4, "truncated": 0},
                                                                # what the save recorded: the folder is whole
                                                                "files": {"config.json": {"size": 2}}}))
            (final.parent / "metrics.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in range(2)))


def _hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _all_text(root: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*") if p.is_file())


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _sigterm_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> tuple[str, str]:
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the job ended before {what}"
            assert time.time() < deadline, f"no {what} within {timeout}s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ------------------------------------------------------------------------------------------ SIGTERM


@pytest.mark.slow
def test_sigterm_stops_training_with_130_then_resumes(tiny_dir, tmp_path):
    import re

    from harness.training.trainer import latest_checkpoint

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "harness", "train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}",
           "completion_column=response", "block_size=64", "global_batch_size=4",
           "micro_batch_size=2", "learning_rate=3e-3", "max_steps=30", "save_every=2", "weighting=iw-sft",
           f"ref_cache_dir={tmp_path / 'ref'}", f"output_dir={run}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = _sigterm_when(proc, lambda: (run / "checkpoints" / "step-000002" / "trainer_state.pt").is_file(),
                             "first checkpoint")
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err[-2000:]
    assert not (run / "final").exists()
    at = int(latest_checkpoint(run).name.split("-")[1])
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"(step {at}/30)" in again.stdout
    trained = [int(s) for s in re.findall(r"^step +(\d+)/30 +loss", again.stdout, flags=re.M)]
    assert trained == list(range(at + 1, 31))
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == list(range(1, 31))   # 1-based: optimizer steps done
    assert (run / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_stops_eval_with_130_then_resumes(tiny_dir, tmp_path):
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "harness", "eval", "--model", str(tiny_dir / "model"), "--benchmarks", "arith",
           "--limit", "40", "--batch-size", "1", "--thinking-budget", "24", "--answer-budget", "8",
           "--out", str(out), "--no-progress"]

    def samples() -> list[dict]:
        files = list(out.rglob("samples.jsonl"))
        return [json.loads(l) for l in files[0].read_text().splitlines() if l.endswith("}")] if files else []

    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _sigterm_when(proc, lambda: len(samples()) >= 1, "first sample")
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err[-2000:]
    kept = len(samples())
    assert 1 <= kept < 40
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    (metrics,) = out.rglob("metrics.json")
    m = json.loads(metrics.read_text())
    assert (m["last_command"]["reused"], m["last_command"]["generated_now"], m["n"]) == (kept, 40 - kept, 40)
    rows = samples()
    assert len(rows) == len({r["problem_id"] for r in rows}) == 40


# ------------------------------------------------------------------------------------------ --seeds N


def test_seeds_report_mean_and_spread(tmp_path):
    from harness.evaluation.store import load_run
    from harness.paper.report import build_table, markdown
    from test_report import _write_run

    pids = [f"q{i}" for i in range(5)]
    base = {"arith": load_run(_write_run(tmp_path / "base", "m", "arith", {p: i < 2 for i, p in enumerate(pids)}))}
    seeds = [{"arith": load_run(_write_run(tmp_path / f"s{k}", "m", "arith", {p: i < c for i, p in enumerate(pids)}))}
             for k, c in enumerate((1, 2, 4))]                        # 20%, 40%, 80%
    report = build_table({"base": [base], "iw-sft": seeds}, [["base", "iw-sft"]], [], "Seeds")
    cell = report["rows"][1]["benchmarks"]["arith"]
    assert cell["seeds"] == 3 and cell["n"] == 5 and cell["ci95"] is None
    assert cell["accuracy"] == pytest.approx(7 / 15)
    assert cell["seed_std"] == pytest.approx(0.305505, abs=1e-6)      # sample std of 0.2, 0.4, 0.8
    assert (cell["seed_min"], cell["seed_max"]) == (0.2, 0.8)
    assert [c["accuracy"] for c in cell["per_seed"]] == [0.2, 0.4, 0.8]
    assert "| iw-sft | 40.0 [" not in markdown(report) and "46.7 ± 30.6 (n=5, 3 seeds)" in markdown(report)
    # the one base row is paired with every seed
    assert [(p["seed_index"], p["only_b"]) for p in report["paired"]] == [(0, 0), (1, 0), (2, 2)]


def test_reproduce_table1_seeds_trains_and_reports_each_seed(tmp_path, monkeypatch, capsys, echo):
    from harness.paper.suite import load_suite

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_trained(load_suite("tiny"), 2, [])
    assert main(["reproduce-table1", "--preset", "tiny", "--seeds", "2", "--limit", "6", "--out", "rep"]) == 0
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert report["seeds"] == 2
    rows = {r["model"]: r["benchmarks"] for r in report["rows"]}
    assert "seeds" not in rows["base"]["arith"]
    for name in ("s1.1-sft", "iw-sft", "iw-sft-per-step"):
        cell = rows[name]["arith"]
        runs = [Path(c["run_dir"]) for c in cell["per_seed"]]
        assert cell["seeds"] == 2 and len(set(runs)) == 2, cell              # two checkpoints, two evaluations
        accs = [c["accuracy"] for c in cell["per_seed"]]
        assert cell["accuracy"] == pytest.approx(sum(accs) / 2)
        assert cell["seed_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    assert any(r["arith"]["seed_std"] > 0 for n, r in rows.items() if n != "base")   # the fake scores seeds differently
    assert "2 seeds)" in (tmp_path / "rep" / "table1.md").read_text()
    # the methods question, over seeds, beside the per-checkpoint tests; the timing of this run kept apart
    assert report["methods_over_seeds"] and all(m["seeds"] == 2 for m in report["methods_over_seeds"])
    assert "## Methods over training seeds" in (tmp_path / "rep" / "table1.md").read_text()
    assert report["wall_time_s"] >= report["wall_time_this_run_s"] > 0


# ------------------------------------------------------------------------------------------ GPQA secrecy


@pytest.fixture
def gpqa_env(tmp_path_factory, monkeypatch):
    from test_benchmarks import write_fake_gpqa_csv

    csv = write_fake_gpqa_csv(tmp_path_factory.mktemp("gpqa_src") / "gpqa.csv")   # outside the scanned folder
    monkeypatch.setenv("IWSFT_GPQA_CSV", str(csv))
    return csv


def _assert_no_gpqa_text(*texts: str) -> None:
    from test_benchmarks import secret_texts

    for t in texts:
        for s in secret_texts():
            assert s not in t, f"GPQA text leaked: {s[:20]}..."


def test_gpqa_text_absent_from_every_paper_job(tmp_path, monkeypatch, capsys, echo, gpqa_env):
    """reproduce-table1 (reduced; trained runs faked), table1, compare and budget-sweep, with an engine
    that restates each question in its response: GPQA is evaluated (and scored), yet no question,
    option or canary reaches a report, a samples file, a log line or the terminal."""
    from harness.evaluation.store import model_slug
    from harness.paper.suite import load_suite, suite_path

    monkeypatch.chdir(tmp_path)
    _fake_trained(load_suite("tiny"), 1, [])
    assert main(["reproduce-table1", "--preset", "tiny", "--limit", "2", "--out", "rep"]) == 0
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    assert all(r["benchmarks"]["gpqa_diamond"]["n"] == 2 for r in report["rows"])      # GPQA really ran

    a, b = _hf_folder(tmp_path / "ckpt" / "a"), _hf_folder(tmp_path / "ckpt" / "b")
    assert main(["table1", "--checkpoints", f"a={a}", f"b={b}", "--preset", "tiny", "--limit", "2", "--out", "rep1"]) == 0
    assert json.loads((tmp_path / "rep1" / "table1.json").read_text())["rows"][1]["benchmarks"]["gpqa_diamond"]["n"] == 2
    ra, rb = (tmp_path / "runs" / "eval" / model_slug(str(p)) for p in (a, b))
    assert main(["compare", f"A={ra}", f"B={rb}", "--out", "rep2"]) == 0
    assert "gpqa_diamond" in json.loads((tmp_path / "rep2" / "compare.json").read_text())["benchmarks"]

    sweep = tmp_path / "sweep.yaml"
    text = suite_path("tiny").read_text()
    sweep.write_text(text[: text.index("budget_sweep:")] + "budget_sweep:\n  benchmarks: [gpqa_diamond]\n  limit: 2\n"
                     "  cells:\n    - {thinking_budget: 8, wait: 0}\n    - {thinking_budget: 16, wait: 1}\n")
    assert main(["budget-sweep", f"a={a}", "--preset", str(sweep), "--out", "rep3"]) == 0
    assert len(json.loads((tmp_path / "rep3" / "figure2.json").read_text())["models"]["a"]["gpqa_diamond"]) == 2

    out = capsys.readouterr()
    _assert_no_gpqa_text(_all_text(tmp_path), out.out, out.err)
    # ... where there was text to leak: every GPQA response restated its question, and was redacted
    from harness.evaluation.store import REDACTED

    gpqa = [json.loads(l) for f in tmp_path.rglob("gpqa_diamond/*/samples.jsonl") for l in f.read_text().splitlines()]
    assert len(gpqa) >= 2 * 4 + 2 * 2 + 2 * 2 and all(REDACTED in r["response"] for r in gpqa)


# ------------------------------------------------------------------------------------------ budget-sweep reuse


def test_budget_sweep_reuses_evaluated_cells(tmp_path, monkeypatch, capsys, echo):
    from harness.paper.suite import suite_path

    monkeypatch.chdir(tmp_path)
    a = _hf_folder(tmp_path / "ckpt" / "a")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(suite_path("tiny").read_text().replace("limit: 60", "limit: 3"))
    assert main(["budget-sweep", f"a={a}", "--preset", str(sweep), "--out", "rep"]) == 0
    first = (tmp_path / "rep" / "figure2.json").read_text()
    assert len(EchoEngine.calls) == 4 and sum(EchoEngine.calls) == 4 * 3      # 4 cells x 3 problems
    assert main(["budget-sweep", f"a={a}", "--preset", str(sweep), "--out", "rep"]) == 0
    assert len(EchoEngine.calls) == 4                                        # nothing generated again
    assert (tmp_path / "rep" / "figure2.json").read_text() == first
    # a new cell is the only work
    sweep.write_text(sweep.read_text().replace("    - {thinking_budget: 48, wait: 2}",
                                               "    - {thinking_budget: 48, wait: 2}\n    - {thinking_budget: 40, wait: 0}"))
    assert main(["budget-sweep", f"a={a}", "--preset", str(sweep), "--out", "rep"]) == 0
    assert EchoEngine.calls[4:] == [3]


# ------------------------------------------------------------------------------------------ curate


def test_curate_keeps_only_graded_correct_samples_once(tmp_path, monkeypatch, capsys, echo):
    """`iwsft curate` writes exactly the samples the grader accepted, one row per (problem, sample), in
    the training format; a resumed run generates nothing and a duplicated line in the raw samples
    (left by an interrupted append) does not duplicate a training row."""
    from harness.evaluation.benchmarks import load_benchmark
    from harness.evaluation.runner import sample_seed

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "curated.jsonl"
    argv = ["curate", "--model", "m0", "--task", "arith", "--samples", "3", "--limit", "6", "--seed", "5",
            "--eval-dir", "raw", "--out", str(out)]
    assert main(argv) == 0
    problems = load_benchmark("arith_train", limit=6)
    engine = EchoEngine(model="m0")
    expected = [(p.id, s) for p in problems for s in range(3) if engine.right(p, sample_seed(5, p.id, s))]
    assert 0 < len(expected) < 18                                               # some right, some wrong
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted(expected)
    gold = {p.id: p for p in problems}
    for r in rows:
        p = gold[r["problem_id"]]
        assert r["question"] == p.question and r["gold"] == p.gold and r["attempt"] == f"\\boxed{{{p.gold}}}"
        assert r["response"].endswith(f"<|im_start|>answer\nAnswer: \\boxed{{{p.gold}}}")
    assert f"kept {len(expected)} correct samples" in capsys.readouterr().out

    calls = len(EchoEngine.calls)
    (raw,) = (tmp_path / "raw").rglob("samples.jsonl")
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(lines) + lines[0])                                   # a line written twice
    assert main(argv) == 0
    assert len(EchoEngine.calls) == calls                                       # resumed: nothing generated
    assert [json.loads(l) for l in out.read_text().splitlines()] == rows


# ------------------------------------------------------------------------------------------ reference cache


@pytest.mark.parametrize("key,what", [("data", "dataset"), ("block_size", "block size"), ("model", "reference model")])
def test_reference_cache_refuses_another_dataset_or_block_size(tmp_path, key, what):
    from harness.core.errors import UserError
    from harness.training.refcache import load_cache, save_cache

    meta = {"model": "m1", "data": "d1", "block_size": 96, "layout": [2, 4, 1, 1, "no"]}
    path = tmp_path / "ref.safetensors"
    save_cache(path, {0: torch.tensor([-1.0, -2.0]), 3: torch.tensor([-0.5])}, meta)
    got = load_cache(path, meta)
    assert sorted(got) == [0, 3] and torch.equal(got[0], torch.tensor([-1.0, -2.0]))
    other = {**meta, key: 128 if key == "block_size" else "other"}
    with pytest.raises(UserError, match=f"computed for another {what} ") as e:
        load_cache(path, other)
    assert "\n" not in str(e.value) and "delete it or set ref_cache_dir elsewhere" in str(e.value)


# ------------------------------------------------------------------------------------------ memory


@pytest.mark.parametrize("fused", [False, True])
def test_no_tokens_by_vocab_float32_tensor_is_saved_for_backward(fused):
    """The policy's log-probs and the objective under bf16 autocast (the GPU path): autograd keeps no
    float32 [tokens x vocab] tensor (the chunked / fused log-softmax keeps the bf16 logits, or only
    the hidden states, and one float32 log-sum-exp per token)."""
    from test_fused_head import _batch, _model

    from harness.training.batching import batch_logprobs
    from harness.training.objective import iw_objective, preset

    vocab = 3000
    model, b = _model(True, vocab=vocab), _batch(vocab=vocab)
    tokens = int(b.input_ids.numel())
    saved = []

    def pack(t):
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        pol = batch_logprobs(model, b, fused_head=fused)
        ref = pol.detach() - 0.01
        out = iw_objective(pol, pol.detach(), ref, b.loss_mask, preset("iw-sft"))
    out.loss.backward()
    assert any(s[-1:] == (vocab,) or s[:1] == (vocab,) for s, _ in saved)     # the hook saw the head's tensors
    big = [(s, d) for s, d in saved if d == torch.float32 and vocab in s and torch.Size(s).numel() >= tokens * vocab // 2]
    assert big == [], big


# ------------------------------------------------------------------------------------------ MFU peak


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla T4", None)])
def test_mfu_peak_is_detected_for_h100_and_h200(monkeypatch, name, peak):
    from harness.training.config import load_recipe
    from harness.training.trainer import _peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    cfg = load_recipe(None, [])
    assert _peak_flops(cfg, torch.device("cuda", 0)) == peak
    assert _peak_flops(load_recipe(None, ["peak_tflops=312"]), torch.device("cuda", 0)) == 312e12   # the recipe wins
    assert _peak_flops(cfg, torch.device("cpu")) is None


# ------------------------------------------------------------------------------------------ presets


def test_presets_are_the_readme_table():
    """Each preset's fields as README.md's table and the docstrings give them (mutation testing found
    the names and several values unchecked)."""
    from harness.training.objective import PRESETS, WeightSpec, preset

    assert list(PRESETS) == ["sft", "iw-sft", "iw-sft-paper", "per-step"]
    assert {n: preset(n).name for n in PRESETS} == {n: n for n in PRESETS}
    assert preset("sft") == WeightSpec("sft", level="none")
    assert preset("iw-sft") == WeightSpec("iw-sft", level="sequence", reduce="mean", g="linear", k=1.0, w_clip=(0.0, 16.0),
                                          self_normalize=False, loss_norm="tokens")
    assert preset("iw-sft-paper") == WeightSpec("iw-sft-paper", level="sequence", reduce="sum", g="clip", k=0.1,
                                                g_clip=(0.2, 1.8), w_clip=None, self_normalize=False)
    assert preset("per-step") == WeightSpec("per-step", level="token", token_clip=(0.2, 1.8))
