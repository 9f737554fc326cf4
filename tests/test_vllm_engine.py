"""The real vLLM engine (vLLM's CPU build) against the HF backend on the embedded SmolLM2-135M: greedy,
`--dtype auto` (float32 on a CPU, on both), the same samples through `run_eval`, budget forcing
included; and what a user meets when vLLM cannot start.

Runs in the vLLM virtual environment (`just vllm-env`; `just test` runs `pytest -m vllm` there).
One vLLM engine for the whole module, reused by every config through run_eval(cfg, engine=...).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.evaluation.config import EvalConfig
from harness.evaluation.engine import Engine
from harness.evaluation.runner import run_eval

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "smollm2-135m"
# Compared per row: everything a sample says about the generation and its grading.
FIELDS = ("response", "thinking_tokens", "answer_tokens", "total_tokens", "extracted", "correct",
          "finish_reason", "hit_cap", "num_waits", "thinking_cap")
TIE_GAP = 1e-4   # two logits this close are a tie in float32 between two kernel libraries

# name -> EvalConfig keywords: caps that are hit (forced "Final Answer:" close), one and two "Wait"s,
# s1's round loop, and a few MATH500 problems (longer prompts, LaTeX).
CONFIGS = {
    "arith_cap": dict(benchmarks=["arith"], limit=8, thinking_budget=12, answer_budget=16, max_new_tokens=256),
    "arith_wait1": dict(benchmarks=["arith"], limit=8, thinking_budget=48, wait=1, answer_budget=16, max_new_tokens=256),
    "arith_wait2": dict(benchmarks=["arith"], limit=8, thinking_budget=48, wait=2, answer_budget=16, max_new_tokens=256),
    "arith_s1compat": dict(benchmarks=["arith"], limit=8, thinking_budget=24, wait=1, answer_budget=16,
                           max_new_tokens=256, budget_mode="s1-compat"),
    "math500_wait1": dict(benchmarks=["math500"], limit=3, thinking_budget=40, wait=1, answer_budget=24,
                          max_new_tokens=512),
}


def _recording(engine: Engine, log: dict):
    """Keep each result's token ids (as the model saw them: thinking, Waits, close, answer) on their way to
    the runner, in log["now"] (a dict prompt -> ids the caller swaps per config)."""
    generate = engine.generate

    def wrapped(cfg, prompts, budget, seeds, on_result):
        def keep(j, res):
            log["now"][tuple(prompts[j])] = list(res.token_ids)
            on_result(j, res)

        generate(cfg, prompts, budget, seeds, keep)

    engine.generate = wrapped
    return engine


@pytest.fixture(scope="module")
def engines():
    logs = {"vllm": {"now": {}}, "hf": {"now": {}}}
    vllm_engine = _recording(Engine(MODEL, backend="vllm", dtype="auto"), logs["vllm"])
    hf_engine = _recording(Engine(MODEL, backend="hf", dtype="auto"), logs["hf"])
    yield {"vllm": vllm_engine, "hf": hf_engine}, logs
    vllm_engine.close()
    hf_engine.close()


@pytest.fixture(scope="module")
def runs(engines, tmp_path_factory):
    """Every config on both backends: {config: {backend: (metrics, rows by (problem_id, sample), ids by prompt)}}."""
    engs, logs = engines
    out = {}
    for name, kw in CONFIGS.items():
        for backend, engine in engs.items():
            root = tmp_path_factory.mktemp(f"{name}-{backend}")
            cfg = EvalConfig(model=MODEL, backend=backend, dtype="auto", out=str(root), progress=False,
                             summary=False, **kw)
            (bench,) = kw["benchmarks"]
            logs[backend]["now"] = ids = {}
            m = run_eval(cfg, engine=engine)[bench]
            rows = [json.loads(l) for l in (Path(m["run_dir"]) / "samples.jsonl").read_text().splitlines() if l]
            out.setdefault(name, {})[backend] = (m, {(r["problem_id"], r["sample_index"]): r for r in rows}, ids)
    return out


def _tie_at_divergence(hf_engine: Engine, prompt: tuple, a: list[int], b: list[int]) -> str | None:
    """Why two greedy continuations may part: at their first different token the HF model's two best
    logits are within TIE_GAP. Returns the explanation, or None when there is no tie there."""
    import torch

    j = next(i for i, (x, y) in enumerate(zip(a + [None], b + [None])) if x != y)
    model = hf_engine.backend.model
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + a[:j]])).logits[0, -1].float()
    top = torch.topk(logits, 2)
    gap = float(top.values[0] - top.values[1])
    if gap <= TIE_GAP:
        return f"token {j}: top-2 logits {top.indices.tolist()} differ by {gap:.2e}"
    return None


def test_auto_dtype_is_float32_on_both_backends(engines, runs):
    engs, _ = engines
    assert engs["vllm"].resolved_dtype() == engs["hf"].resolved_dtype() == "float32"
    import torch

    assert engs["vllm"].backend.llm.llm_engine.model_config.dtype == torch.float32   # what vLLM really runs
    assert next(engs["hf"].backend.model.parameters()).dtype == torch.float32
    m_v, m_h = runs["arith_cap"]["vllm"][0], runs["arith_cap"]["hf"][0]
    assert m_v["settings"]["dtype"] == m_h["settings"]["dtype"] == "float32"
    # two engines never share a run folder: the backend, its library and version key the settings
    assert m_v["settings"]["generation_libraries"]["vllm"] and "vllm" not in m_h["settings"]["generation_libraries"]
    assert m_v["settings_sha256"] != m_h["settings_sha256"]


def test_same_samples_and_token_ids_as_hf(engines, runs):
    """Row by row: every sample field and the token ids are equal, or the row parts at a logit tie."""
    from harness.evaluation.benchmarks import get_benchmark

    engs, _ = engines
    explained, differing = [], []
    seen = {"cap": 0, "wait1": 0, "wait2": 0, "final_answer": 0, "s1_rows": 0, "math500": 0}
    for name, per in runs.items():
        (_, rows_v, ids_v), (_, rows_h, ids_h) = per["vllm"], per["hf"]
        assert rows_v.keys() == rows_h.keys() and rows_v, name
        assert ids_v.keys() == ids_h.keys() and len(ids_h) == len(rows_h), name
        (bench,) = CONFIGS[name]["benchmarks"]
        problems = {p.id: p for p in get_benchmark(bench).load({})}
        cfg = EvalConfig(model=MODEL, **CONFIGS[name])
        for key, a in rows_h.items():
            b = rows_v[key]
            seen["cap"] += a["hit_cap"]
            seen["wait1"] += a["num_waits"] == 1
            seen["wait2"] += a["num_waits"] == 2
            seen["final_answer"] += "Final Answer:" in a["response"]
            seen["s1_rows"] += name == "arith_s1compat"
            seen["math500"] += bench == "math500"
            prompt = tuple(engs["hf"].prompt_ids(problems[key[0]], cfg))
            diff = [f for f in FIELDS if a[f] != b[f]] + (["token_ids"] if ids_h[prompt] != ids_v[prompt] else [])
            if not diff:
                continue
            why = _tie_at_divergence(engs["hf"], prompt, ids_h[prompt], ids_v[prompt])
            (explained if why else differing).append(f"{name} {key}: {diff} {why or ''}")
    # the configs exercised what they are for
    assert all(seen.values()), seen
    assert not differing, "rows differ between vLLM and HF without a logit tie:\n" + "\n".join(differing)
    if explained:
        print("rows that part at a logit tie:\n" + "\n".join(explained))


def test_engine_options_reach_vllm(engines, tmp_path):
    engs, _ = engines
    kw = engs["vllm"].backend.llm_kwargs
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True and kw["enable_prefix_caching"] is True
    assert kw["gpu_memory_utilization"] == 0.15       # on a CPU: the fraction of RAM, not vLLM's 0.9
    assert kw["enable_chunked_prefill"] is False       # on a CPU: sampled requests need whole prompts (below)
    with pytest.raises(UserError, match="other settings"):
        run_eval(EvalConfig(model=MODEL, backend="vllm", benchmarks=["arith"], limit=1, max_model_len=512,
                            out=str(tmp_path), progress=False, summary=False), engine=engs["vllm"])
    assert not any(tmp_path.iterdir())


def test_many_sampled_requests_on_a_cpu(engines, tmp_path):
    """More prompt tokens than one scheduler step takes (vLLM's CPU default: 4096), sampled with per-request
    seeds: with chunked prefill, vLLM 0.32's CPU worker died on the first split prompt (EngineDeadError)."""
    engs, _ = engines
    before = engs["vllm"].tokens_generated()
    cfg = EvalConfig(model=MODEL, backend="vllm", benchmarks=["arith"], limit=120, temperature=1.0, seed=3,
                     thinking_budget=2, answer_budget=2, max_new_tokens=128, out=str(tmp_path), progress=False,
                     summary=False)
    m = run_eval(cfg, engine=engs["vllm"])["arith"]
    from harness.evaluation.benchmarks import load_benchmark

    prompts = [engs["vllm"].prompt_ids(p, cfg) for p in load_benchmark("arith", limit=120)]
    assert sum(map(len, prompts)) > 4096                 # the batch really is larger than one chunked step
    assert m["n"] == 120
    # the live counter (vLLM's use_tqdm hook) saw every generated token: at least one per request and round
    assert engs["vllm"].tokens_generated() - before >= 120


# ------------------------------------------------------------------ bad input, no engine left running


def _eval_cli(tmp_path, capsys, *extra, model=MODEL):
    """`iwsft eval` in this process (vllm is imported already): (exit code, last stderr line)."""
    from harness.cli import main

    rc = main(["eval", "--model", model, "--benchmarks", "arith", "--limit", "2", "--backend", "vllm",
               "--thinking-budget", "8", "--out", str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def test_too_little_memory_for_the_kv_cache(tmp_path, capsys):
    rc, line = _eval_cli(tmp_path, capsys, "--gpu-memory-utilization", "0.0005")
    assert rc == 2, line
    assert "too little memory for vLLM's KV cache" in line and "fix:" in line and "--max-model-len" in line, line
    assert not any((tmp_path / "out").rglob("settings.json"))      # no run folder left half-made


def test_more_memory_than_free(tmp_path, capsys):
    rc, line = _eval_cli(tmp_path, capsys, "--gpu-memory-utilization", "1.0")
    assert rc == 2, line
    assert "reserves --gpu-memory-utilization x RAM" in line and "fix: --gpu-memory-utilization" in line, line
    assert not any((tmp_path / "out").rglob("settings.json"))


def test_a_model_vllm_cannot_load(tmp_path, capsys):
    from harness.core.models import resolve_model

    src = Path(resolve_model(MODEL).path)
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            (bad / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["NoSuchModelForCausalLM"], model_type="no_such_model")
    (bad / "config.json").write_text(json.dumps(config))
    rc, line = _eval_cli(tmp_path, capsys, model=str(bad))
    assert rc == 2, line
    assert "vLLM cannot load" in line and "no_such_model" in line and "fix:" in line, line
    assert not any((tmp_path / "out").rglob("settings.json"))


# ------------------------------------------------------------------ lm-eval's vLLM model on this build


def test_lm_eval_vllm_model_runs_our_task(tmp_path):
    """`lm_eval --model vllm` through the shim (lm-eval asks for the `vllm` distribution, which the CPU build
    is not called), on our arith task, --limit 2; its verdicts are our grader's."""
    from harness.core.models import resolve_model
    from harness.evaluation import lmeval_tasks
    from harness.evaluation.grading import grade_one

    path = resolve_model(MODEL).path
    cmd = [sys.executable, "-m", "harness.evaluation.lmeval_tasks.vllm_cpu", "--model", "vllm", "--model_args",
           f"pretrained={path},dtype=float32,enforce_eager=True,gpu_memory_utilization=0.15,max_model_len=1024",
           "--tasks", "iwsft_arith", "--include_path", lmeval_tasks.include_path(), "--gen_kwargs", "max_gen_toks=32",
           "--limit", "2", "--output_path", str(tmp_path), "--log_samples"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (samples,) = tmp_path.rglob("samples_iwsft_arith_*.jsonl")
    rows = [json.loads(l) for l in samples.read_text().splitlines() if l]
    assert len(rows) == 2
    for row in rows:
        response = row["resps"][0][0]
        assert row["exact_match"] == int(grade_one("arith", response, row["doc"]["gold"]).correct)
