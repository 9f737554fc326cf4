"""The eval runner: metrics, the samples file, resume, GPQA secrecy, and end to end with SmolLM2-135M
(through `harness.cli.main` and as a killed-then-resumed `python -m harness eval` subprocess)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.core.stats import wilson
from harness.evaluation import metrics, store
from harness.evaluation import runner as ev
from harness.evaluation.config import EvalConfig
from harness.evaluation.engine import Engine
from harness.evaluation.benchmarks import Problem, get_benchmark
from harness.cli import main
from harness.core.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from test_benchmarks import secret_texts, write_fake_gpqa_csv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHES = ("aime24", "math500", "gpqa_diamond")
ROW_FIELDS = ("problem_id", "sample_index", "response", "thinking_tokens", "total_tokens", "extracted",
              "correct", "finish_reason", "hit_cap", "num_waits")


def eval_args(out: Path, csv: Path, subset: tuple[str, ...] = ("--limit", "2"),
              benches: tuple[str, ...] = BENCHES) -> list[str]:
    return ["eval", "--model", "smollm2-135m", "--benchmarks", ",".join(benches), *subset,
            "--thinking-budget", "32", "--answer-budget", "16", "--batch-size", "1",
            "--gpqa-csv", str(csv), "--out", str(out), "--no-progress"]


def run_dirs(out: Path, benches: tuple[str, ...] = BENCHES) -> dict[str, Path]:
    found = {}
    for b in benches:
        dirs = [d for d in (out / "smollm2-135m" / b).iterdir() if d.is_dir()]
        assert len(dirs) == 1, dirs
        found[b] = dirs[0]
    return found


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def all_written_text(out: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in out.rglob("*") if p.is_file())


def assert_no_secrets(*texts: str) -> None:
    for t in texts:
        for s in secret_texts():
            assert s not in t, f"GPQA text leaked: {s[:20]}..."


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------ pure functions


def test_wilson_and_pass_at_k():
    lo, hi = wilson(0, 2)
    assert lo == 0.0 and hi == pytest.approx(0.6576, abs=1e-4)
    lo, hi = wilson(18, 30)  # 42% to 75% around 60% (docs/method.md#known-limitations)
    assert lo == pytest.approx(0.4232, abs=1e-3) and hi == pytest.approx(0.7541, abs=1e-3)
    assert metrics.pass_at_k(4, 0, 1) == 0.0 and metrics.pass_at_k(4, 4, 4) == 1.0
    assert metrics.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))


def test_compute_metrics_k_samples():
    probs = [Problem(id=str(i), question="q", gold="1") for i in range(4)]
    rows = {}
    for i in range(4):
        for s in range(4):
            rows[(str(i), s)] = {"correct": s < i, "extracted": None if s == 3 else "1",
                                 "thinking_tokens": 10 * s, "total_tokens": 10 * s + 1,
                                 "finish_reason": "length" if s == 0 else "stop", "hit_cap": s == 0}
    m = metrics.compute_metrics(probs, rows, 4)
    assert m["n"] == 4 and m["n_samples"] == 16
    assert m["accuracy"] == pytest.approx((0 + 1 + 2 + 3) / 16) == m["avg_at_k"]
    assert m["pass_at_k"]["1"] == pytest.approx(m["accuracy"])
    assert m["pass_at_k"]["4"] == pytest.approx(3 / 4)
    assert set(m["pass_at_k"]) == {"1", "2", "4"}
    assert m["ci_method"].startswith("bootstrap") and m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    assert m["unextracted"] == 4 and m["truncated"] == 4 and m["hit_thinking_cap"] == 4
    # every sample wrong: the bootstrap alone would say [0, 0]; the interval still says how little 2 problems tell
    wrong = {(str(i), s): {**rows[("0", s)], "correct": False} for i in range(2) for s in range(2)}
    m0 = metrics.compute_metrics(probs[:2], wrong, 2)
    assert m0["accuracy"] == 0 and m0["ci95"][0] == 0 and m0["ci95"][1] == pytest.approx(wilson(0, 2)[1])
    assert m0["ci95"][1] > 0.5
    assert m["thinking_tokens_mean"] == 15 and m["thinking_tokens_median"] == 15
    m1 = metrics.compute_metrics(probs, rows, 1)
    assert m1["ci_method"] == "Wilson score" and "pass_at_k" not in m1 and m1["n_samples"] == 4


def test_sample_store_drops_malformed_and_duplicates(tmp_path):
    path = tmp_path / "samples.jsonl"
    good = [{"problem_id": "a", "sample_index": 0, "correct": True},
            {"problem_id": "b", "sample_index": 0, "correct": False}]
    text = "".join(json.dumps(r) + "\n" for r in good) + json.dumps(good[0]) + "\n" + '{"problem_id": "c", "sam'
    path.write_text(text)
    warnings: list[str] = []
    rows = store.SampleStore(path, warnings.append).load()
    assert set(rows) == {("a", 0), ("b", 0)}
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "malformed" in warnings[0] and "the last line" in warnings[0] and "duplicate" in warnings[1]
    assert read_rows(path) == good and path.read_text().endswith("\n")
    # A complete last row without its newline is kept, and the newline restored before appending.
    path.write_text(json.dumps(good[0]) + "\n" + json.dumps(good[1]))
    sample_store = store.SampleStore(path, warnings.append)
    assert len(sample_store.load()) == 2
    sample_store.append({"problem_id": "c", "sample_index": 0, "correct": True})
    sample_store.close()
    assert [r["problem_id"] for r in read_rows(path)] == ["a", "b", "c"]


def test_split_ids_and_slug_and_redact(tmp_path):
    assert ev.split_ids(None, ["aime24"]) == {"aime24": None}
    assert ev.split_ids(["60", "61"], ["aime24"]) == {"aime24": ["60", "61"]}
    got = ev.split_ids(["aime24:60", "math500:test/algebra/1.json"], ["aime24", "math500"])
    assert got == {"aime24": ["60"], "math500": ["test/algebra/1.json"]}
    with pytest.raises(UserError, match="math500"):
        ev.split_ids(["aime24:60"], ["aime24", "math500"])
    with pytest.raises(UserError, match="not in --benchmarks"):
        ev.split_ids(["gpqa_diamond:rec1"], ["aime24"])
    assert store.model_slug("Qwen/Qwen2.5-32B-Instruct") == "Qwen--Qwen2.5-32B-Instruct"
    assert store.model_slug("smollm2-135m") == "smollm2-135m"
    a, b = tmp_path / "a" / "ckpt" / "step-10", tmp_path / "b" / "ckpt" / "step-10"   # two runs' step-10
    a.mkdir(parents=True), b.mkdir(parents=True)
    assert store.model_slug(str(a)).startswith("ckpt--step-10-") and store.model_slug(str(a)) != store.model_slug(str(b))
    c = tmp_path / "runs" / "tiny" / "iw-sft" / "checkpoints" / "step-000010"    # a trainer checkpoint: its recipe's run
    c.mkdir(parents=True)
    assert store.model_slug(str(c)).startswith("iw-sft--step-000010-")
    red = store.redact("I think A) Zorblax thing is right.\nZorblax thing. ab", ["Zorblax thing", "ab"])
    assert "Zorblax" not in red and red.count(store.REDACTED) == 2
    assert red.endswith(". ab")  # texts under 4 characters are left alone (they would mangle the response)
    stem = "A made-up stem with two sentences in it for the test. And a second sentence that is long enough?"
    red = store.redact("echo: And a second sentence that is long enough? done", [stem])
    assert red == f"echo: {store.REDACTED} done"


def test_dir_lock_refuses_second_writer(tmp_path):
    with store.run_lock(tmp_path):
        with pytest.raises(UserError, match="another eval"):
            with store.run_lock(tmp_path):
                pass
    with store.run_lock(tmp_path):  # released
        pass


# ------------------------------------------------------------------------------ runner, fake model


class FakeEngine(Engine):
    """No model: answers "\\boxed{204}" (AIME problem 60's answer) when the request seed is even."""

    calls = 0

    def model_identity(self):
        return "fake:model"

    def weights_id(self):
        return "fakeweights0"

    def close_tokens(self, cfg):
        return 3

    def backend_kind(self):
        return "hf"

    def prompt_ids(self, problem, cfg):
        return [1] * (1 + len(problem.question) % 7)

    def budget(self, cfg, longest_prompt):
        return longest_prompt

    def generate(self, cfg, prompts, budget, seeds, on_result):
        FakeEngine.calls += len(prompts)
        for j, seed in enumerate(seeds):
            ans = "204" if seed % 2 == 0 else "7"
            on_result(j, SimpleNamespace(text=f"thinking<|im_start|>answer\nAnswer: \\boxed{{{ans}}}",
                                         thinking_tokens=5, answer_tokens=3, finish_reason="stop",
                                         hit_cap=False, num_waits_used=0, thinking_cap=budget))

    def backend_info(self):
        return {"kind": "hf", "name": "fake", "version": "0"}

    def prompt_text(self, ids):
        return f"<prompt of {len(ids)} tokens>"


def test_run_eval_skips_unavailable_gpqa_and_samples_k(tmp_path, monkeypatch, capsys):
    from test_benchmarks import gated_hub

    monkeypatch.setattr(ev, "Engine", FakeEngine)
    gated_hub(monkeypatch)
    argv = ["eval", "--model", "fake", "--benchmarks", "aime24,gpqa_diamond", "--limit", "1",
            "--samples", "4", "--temperature", "0.7", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr()
    skip_lines = [l for l in out.err.splitlines() if l.startswith("skipping gpqa_diamond")]
    assert len(skip_lines) == 1 and "--gpqa-csv" in skip_lines[0]
    assert "gpqa_diamond skipped" in out.out
    m = json.loads(next((tmp_path / "fake" / "aime24").glob("*/metrics.json")).read_text())
    rows = read_rows(next((tmp_path / "fake" / "aime24").glob("*/samples.jsonl")))
    assert sorted(r["sample_index"] for r in rows) == [0, 1, 2, 3]
    # Pinned: the fake answers 204 (AIME problem 60's gold) on even request seeds, and the seeds of
    # (seed 0, problem 60, samples 0..3) are odd, odd, even, odd.
    assert [r["correct"] for r in sorted(rows, key=lambda r: r["sample_index"])] == [False, False, True, False]
    assert [r["extracted"] for r in sorted(rows, key=lambda r: r["sample_index"])] == ["7", "7", "204", "7"]
    assert m["n"] == 1 and m["samples_per_problem"] == 4 and m["accuracy"] == 0.25
    assert m["pass_at_k"] == {"1": 0.25, "2": 0.5, "4": 1.0}       # 1 - C(3,k)/C(4,k)
    assert len({r["seed"] for r in rows}) == 4          # one seed per (problem, sample)
    assert main(argv + ["--benchmarks", "gpqa_diamond"]) == 2   # nothing could run: said in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skipping gpqa_diamond") and "--gpqa-csv" in err, err
    calls = FakeEngine.calls
    assert main(argv) == 0 and FakeEngine.calls == calls  # resumed: nothing generated


def test_samples_carry_the_prompt_but_never_for_gpqa(tmp_path, monkeypatch, gpqa_csv):
    """As lm-eval's --log_samples, each sample row holds the prompt; a GPQA row does not (its prompt is the
    question and the options)."""
    monkeypatch.setattr(ev, "Engine", FakeEngine)
    assert main(["eval", "--model", "fake", "--benchmarks", "aime24,gpqa_diamond", "--limit", "1", "--gpqa-csv",
                 str(gpqa_csv), "--out", str(tmp_path), "--no-progress"]) == 0
    aime = read_rows(next((tmp_path / "fake" / "aime24").glob("*/samples.jsonl")))
    gpqa = read_rows(next((tmp_path / "fake" / "gpqa_diamond").glob("*/samples.jsonl")))
    assert aime and all(r["prompt"].startswith("<prompt of ") for r in aime)
    assert gpqa and not any("prompt" in r for r in gpqa)
    # one results JSON for the call, beside the run folders: every benchmark, the settings, the versions
    (res,) = (tmp_path / "fake").glob("results_*.json")
    doc = json.loads(res.read_text())
    assert set(doc["results"]) == {"aime24", "gpqa_diamond"} and doc["config"]["limit"] == 1
    assert doc["versions"]["torch"] and doc["results"]["aime24"]["run_dir"]
    assert not any(t in res.read_text() for t in secret_texts())


def test_settings_hash_ignores_subset_but_not_budgets(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "Engine", FakeEngine)
    spec = get_benchmark("aime24")
    probs = spec.load({})

    def digest(**kw):
        cfg = EvalConfig(model="fake", **kw)
        return store.settings_hash(ev._settings(cfg, FakeEngine.for_config(cfg), spec, probs))

    base = digest()
    assert digest(limit=3) == base and digest(ids=["60"]) == base and digest(batch_size=4) == base
    assert digest(seed=1) == base  # greedy: the seed changes nothing
    assert digest(temperature=0.5, seed=1) != digest(temperature=0.5, seed=2)
    for kw in ({"thinking_budget": 100}, {"wait": 2}, {"max_new_tokens": 1000},
               {"temperature": 0.5}, {"temperature": 0.5, "seed": 1}, {"dtype": "bfloat16"}, {"answer_budget": 8}, {"system": "s"},
               {"budget_mode": "s1-compat"}, {"delimiters": "think-tags"}):
        assert digest(**kw) != base, kw

    class VLLMFake(FakeEngine):
        def backend_kind(self):
            return "vllm"

    cfg = EvalConfig(model="fake")
    assert store.settings_hash(ev._settings(cfg, VLLMFake.for_config(cfg), spec, probs)) != base


def test_benchmark_options_reach_the_loader(tmp_path, monkeypatch):
    from harness.evaluation.benchmarks import Benchmark, _core, register

    _core._discover()
    monkeypatch.setattr(_core, "_REGISTRY", dict(_core._REGISTRY))
    register(Benchmark(name="zz_opt", description="t", grader="arith", load=lambda o: [
        Problem(id=str(i), question=f"{i}+1", gold=str(i + 1)) for i in range(int(o.get("n", 2)))]))
    monkeypatch.setattr(ev, "Engine", FakeEngine)
    base = dict(model="fake", benchmarks=["zz_opt"], out=str(tmp_path), progress=False, summary=False)
    m2 = ev.run_eval(EvalConfig(**base))["zz_opt"]
    m3 = ev.run_eval(EvalConfig(**base, benchmark_options={"n": "3"}))["zz_opt"]
    assert (m2["n"], m3["n"]) == (2, 3) and m2["run_dir"] != m3["run_dir"]


# ------------------------------------------------------------------------------ end to end, SmolLM2


@pytest.fixture(scope="module")
def gpqa_csv(tmp_path_factory):
    return write_fake_gpqa_csv(tmp_path_factory.mktemp("gpqa") / "gpqa_diamond.csv")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread, here and in subprocesses: on a shared 2-core machine the default two
    OpenMP threads spin against other processes (measured 6x slower), and the killed/resumed
    subprocess must compute exactly what the in-process reference computed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1"}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, gpqa_csv, one_thread):
    """One uninterrupted run: 2 problems of each benchmark, thinking cap 32, answer 16 tokens."""
    out = tmp_path_factory.mktemp("eval_ref")
    t0 = time.time()
    rc, stdout, stderr = run_cli(eval_args(out, gpqa_csv))
    return SimpleNamespace(out=out, rc=rc, stdout=stdout, stderr=stderr, wall=time.time() - t0)


@pytest.mark.slow
def test_eval_end_to_end(reference):
    assert reference.rc == 0, reference.stderr
    dirs = run_dirs(reference.out)
    for b, d in dirs.items():
        assert len(d.name) == 12
        assert {p.name for p in d.iterdir()} >= {"settings.json", "samples.jsonl", "metrics.json"}
        settings = json.loads((d / "settings.json").read_text())
        assert settings["benchmark"] == b and settings["settings_sha256"].startswith(d.name)
        assert settings["thinking_budget"] == 32 and settings["answer_budget"] == 16
        rows = read_rows(d / "samples.jsonl")
        assert len(rows) == 2 and len({(r["problem_id"], r["sample_index"]) for r in rows}) == 2
        for r in rows:
            assert all(f in r for f in ROW_FIELDS), r.keys()
            assert 0 <= r["thinking_tokens"] <= 32 and r["total_tokens"] <= 48
            assert r["finish_reason"] in ("stop", "length")
            if b == "gpqa_diamond":
                assert r["extracted"] in (None, "A", "B", "C", "D")
        m = json.loads((d / "metrics.json").read_text())
        for key in ("accuracy", "ci95", "n", "thinking_tokens_mean", "thinking_tokens_median",
                    "unextracted", "truncated", "settings", "versions", "backend", "weights_id", "no_room", "missing"):
            assert key in m, key
        assert m["last_command"]["tokens_per_s"] > 0 and m["last_command"]["wall_time_s"] > 0
        assert m["n"] == 2 and m["last_command"]["generated_now"] == 2 and m["ci_method"] == "Wilson score"
        assert m["problem_ids"] == [r["problem_id"] for r in rows]
        assert m["accuracy"] == sum(r["correct"] for r in rows) / 2
        assert m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
        assert m["unextracted"] == sum(r["extracted"] is None for r in rows)
        assert {"torch", "transformers", "math-verify", "vllm"} <= set(m["versions"])
        assert m["backend"]["name"] == "hf" and "transformers" in m["backend"]["version"]
        assert m["thinking_cap_tokens"] == 32
    for b in BENCHES:
        assert b in reference.stdout  # summary table
    assert_no_secrets(all_written_text(reference.out), reference.stdout, reference.stderr)


@pytest.mark.slow
def test_eval_resume_subset_and_malformed_line(reference, gpqa_csv, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference.out, out)
    dirs = run_dirs(out)
    before = {b: (d / "samples.jsonl").read_text() for b, d in dirs.items()}

    # same command: nothing generated, nothing duplicated, same metrics
    rc, stdout, stderr = run_cli(eval_args(out, gpqa_csv))
    assert rc == 0, stderr
    for b, d in dirs.items():
        assert (d / "samples.jsonl").read_text() == before[b]
        m = json.loads((d / "metrics.json").read_text())
        ref = json.loads((reference.out / d.relative_to(out) / "metrics.json").read_text())
        assert m["last_command"]["generated_now"] == 0 and m["last_command"]["reused"] == 2
        assert (m["n"], m["accuracy"], m["unextracted"]) == (ref["n"], ref["accuracy"], ref["unextracted"])

    # an explicit id subset reuses the same directory; the folder's metrics still cover all it holds
    first = {b: read_rows(d / "samples.jsonl")[0]["problem_id"] for b, d in dirs.items()}
    rc, _, stderr = run_cli(eval_args(out, gpqa_csv, ("--ids", *(f"{b}:{i}" for b, i in first.items()))))
    assert rc == 0, stderr
    for b, d in dirs.items():
        m = json.loads((d / "metrics.json").read_text())
        assert m["n"] == 2 and m["last_command"]["generated_now"] == 0 and m["last_command"]["ids"] == [first[b]]
        assert first[b] in m["problem_ids"] and len(m["problem_ids"]) == 2
        assert (d / "samples.jsonl").read_text() == before[b]

    # a partial trailing line (a write cut by a kill) is reported in one line and dropped
    path = dirs["aime24"] / "samples.jsonl"
    text = path.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[: last_start + 25])
    rc, stdout, stderr = run_cli(eval_args(out, gpqa_csv))
    assert rc == 0, stderr
    notes = [l for l in stderr.splitlines() if "malformed" in l]
    assert len(notes) == 1 and "samples.jsonl" in notes[0]
    rows = read_rows(path)
    assert len(rows) == 2 and len({(r["problem_id"], r["sample_index"]) for r in rows}) == 2
    m = json.loads((dirs["aime24"] / "metrics.json").read_text())
    assert m["last_command"]["generated_now"] == 1 and m["n"] == 2
    assert path.read_text() == before["aime24"]  # greedy: the regenerated sample is the same
    assert_no_secrets(all_written_text(out), stdout, stderr)


@pytest.mark.slow
def test_eval_killed_subprocess_resumes(reference, gpqa_csv, tmp_path, one_thread):
    """Kill `python -m harness eval` after its first samples are written, run it again, and get
    what an uninterrupted run gets: same rows (greedy), same metrics, no duplicates.
    (Two of the three benchmarks, to keep the test short; directories are per benchmark.)"""
    benches = ("aime24", "gpqa_diamond")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness", *eval_args(out, gpqa_csv, benches=benches)]
    env = {**os.environ, **one_thread,
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out / "smollm2-135m" / "aime24"
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            files = list(first.glob("*/samples.jsonl"))
            if files and files[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        o1, e1 = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_rows = sum(len(read_rows(p)) for p in out.rglob("samples.jsonl"))
    assert 1 <= killed_rows < 2 * len(benches)

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    dirs, ref_dirs = run_dirs(out, benches), run_dirs(reference.out, benches)
    for b in benches:
        assert dirs[b].name == ref_dirs[b].name  # same settings hash
        rows, ref_rows = read_rows(dirs[b] / "samples.jsonl"), read_rows(ref_dirs[b] / "samples.jsonl")
        keys = [(r["problem_id"], r["sample_index"]) for r in rows]
        assert len(keys) == len(set(keys)) == 2
        strip = lambda rs: sorted((r["problem_id"], r["response"], r["correct"], r["extracted"]) for r in rs)  # noqa: E731
        assert strip(rows) == strip(ref_rows)
        m = json.loads((dirs[b] / "metrics.json").read_text())
        ref = json.loads((ref_dirs[b] / "metrics.json").read_text())
        for key in ("n", "accuracy", "ci95", "unextracted", "truncated", "thinking_tokens_mean"):
            assert m[key] == ref[key], (b, key)
    assert_no_secrets(all_written_text(out), o1.decode(errors="replace"), e1.decode(errors="replace"),
                      done.stdout, done.stderr)


# ------------------------------------------------------------------------------ vLLM: chunks and live tokens

def test_vllm_requests_go_in_chunks_each_stored_as_it_ends(tmp_path, monkeypatch):
    """vLLM gets VLLM_CHUNK requests per call, not all at once: a kill loses at most one chunk and the
    progress moves per chunk (a vLLM call returns nothing before it ends)."""
    sizes = []

    class VLLMFake(FakeEngine):
        def backend_kind(self):
            return "vllm"

        def generate(self, cfg, prompts, budget, seeds, on_result):
            sizes.append(len(prompts))
            if len(sizes) == 3:
                raise KeyboardInterrupt
            super().generate(cfg, prompts, budget, seeds, on_result)

    monkeypatch.setattr(ev, "Engine", VLLMFake)
    monkeypatch.setattr(ev, "VLLM_CHUNK", 3)
    cfg = EvalConfig(model="fake", benchmarks=["math500"], limit=8, out=str(tmp_path), progress=False, summary=False)
    with pytest.raises(KeyboardInterrupt):
        ev.run_eval(cfg)
    assert sizes == [3, 3, 2]
    assert len(read_rows(next((tmp_path / "fake" / "math500").glob("*/samples.jsonl")))) == 6   # two whole chunks kept


def test_vllm_live_token_count_follows_its_progress_hook():
    """What LLM.generate(use_tqdm=callable) builds: vLLM sets postfix "... output: X toks/s" from elapsed it
    read just before; X x elapsed is the round's tokens so far (vllm/entrypoints/common/offline.py _run_engine)."""
    from harness.evaluation.generation.vllm_backend import _LiveTokens

    backend = SimpleNamespace(tokens_generated=100)
    bar = _LiveTokens(backend)
    for total in (40, 95):
        in_spd = 7 / bar.format_dict["elapsed"]
        elapsed = bar.format_dict["elapsed"]
        bar.postfix = f"est. speed input: {in_spd:.2f} toks/s, output: {total / elapsed:.2f} toks/s"
        bar.update(1)
        assert abs(backend.tokens_generated - (100 + total)) <= 1
    bar.postfix = "another vLLM's words"
    assert abs(backend.tokens_generated - 195) <= 1 and bar.n == 2
    bar.refresh(), bar.close()


def test_eval_log_has_a_heartbeat_between_results(capsys, monkeypatch):
    """In a log, a vLLM round that returns nothing for minutes still prints a line every LINE_EVERY_S with the
    tokens generated so far; a finished task says nothing more."""
    import time

    import harness.evaluation.summary as summary

    monkeypatch.setattr(summary.Progress, "LINE_EVERY_S", 0.12)
    count = [0]
    with summary.Progress(True, tokens=lambda: count[0]) as p:
        t = p.add("sums (smollm2-135m)", total=10, done=2)
        count[0] = 1234
        time.sleep(0.5)
        p.update(t, 10, 5.0, 0.5)
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    beats = [line for line in lines if "generating: 1,234 tokens so far" in line]
    assert beats and beats[0].startswith("sums (smollm2-135m): 2/10 samples, generating: 1,234 tokens so far"), lines
    assert lines[-1].startswith("sums (smollm2-135m): 10/10 samples"), lines


def test_run_eval_stops_the_engine_it_made(tmp_path, monkeypatch):
    """An engine run_eval made is closed when it returns (or fails): a vLLM engine left behind by the evidence
    preset's curate step kept polling a core through all of training. One given to it stays open."""
    closed = []

    class Closing(FakeEngine):
        def close(self):
            closed.append(True)
            super().close()

    monkeypatch.setattr(ev, "Engine", Closing)
    cfg = EvalConfig(model="fake", benchmarks=["aime24"], limit=1, out=str(tmp_path), progress=False, summary=False)
    ev.run_eval(cfg)
    assert closed == [True]
    engine = Closing.for_config(cfg)
    ev.run_eval(cfg, engine)
    assert closed == [True]
