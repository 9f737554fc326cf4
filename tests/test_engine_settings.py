"""What an engine is keyed by and what reaches it, without loading a model: the resolved dtype, the
generation library and its version, the engine options from `iwsft eval` flags and the suites; the
paper preset's check of this machine before it launches anything."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.evaluation import runner as ev
from harness.evaluation import store
from harness.evaluation.benchmarks import get_benchmark
from harness.evaluation.config import EvalConfig, validate
from harness.evaluation.engine import ENGINE_OPTIONS, Engine
from harness.evaluation.generation import precision


def test_auto_dtype_resolves_per_device(tmp_path):
    assert precision.resolve_dtype("auto", "any", "cpu") == "float32"
    assert precision.resolve_dtype("bf16", "any", "cpu") == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert precision.resolve_dtype("auto", str(tmp_path), "cuda") == "bfloat16"   # vLLM's auto for a float32 checkpoint
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert precision.resolve_dtype("auto", str(tmp_path), "cuda") == "float16"
    with pytest.raises(UserError, match="unknown dtype"):
        precision.resolve_dtype("float8", "any", "cpu")


class HubEngine(Engine):
    """An engine whose model identity needs no download."""

    def model_identity(self):
        return "hub:someone/model"


def _settings(monkeypatch, backend="hf", **kw):

    monkeypatch.setattr(ev, "Engine", HubEngine)
    cfg = EvalConfig(model="someone/model", backend=backend, **kw)
    spec = get_benchmark("aime24")
    return ev._settings(cfg, HubEngine.for_config(cfg), spec, spec.load({}))


def test_settings_record_dtype_library_and_engine_options(monkeypatch):
    import harness.core.versions as versions

    s = _settings(monkeypatch)
    assert s["dtype"] == "float32" and s["backend"] == "hf"            # "auto", resolved
    assert set(s["generation_libraries"]) == {"transformers", "torch"} and all(s["generation_libraries"].values())
    base = store.settings_hash(s)
    assert store.settings_hash(_settings(monkeypatch, dtype="float32")) == base     # auto == float32 on a CPU
    assert store.settings_hash(_settings(monkeypatch, revision="abc123")) != base
    assert store.settings_hash(_settings(monkeypatch, tokenizer="other/tok")) != base
    real = versions.version_of
    monkeypatch.setattr(versions, "version_of", lambda n: "99.0" if n == "transformers" else real(n))
    assert store.settings_hash(_settings(monkeypatch)) != base          # another library version: another folder


def test_vllm_settings_and_options(monkeypatch):
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    monkeypatch.setattr(VLLMBackend, "check_available", classmethod(lambda cls: None))
    s = _settings(monkeypatch, backend="vllm")
    assert s["dtype"] == "float32" and "vllm" in s["generation_libraries"]
    # CPU defaults (vLLM's CPU build): eager start, prefix caching; memory fraction is not an output setting
    assert s["engine_options"] == {"enable_prefix_caching": True, "enforce_eager": True, "max_model_len": None,
                                   "revision": None, "tokenizer": None}
    base = store.settings_hash(s)
    assert store.settings_hash(_settings(monkeypatch, backend="vllm", gpu_memory_utilization=0.3)) == base
    for kw in ({"max_model_len": 4096}, {"enable_prefix_caching": False}, {"enforce_eager": False}):
        assert store.settings_hash(_settings(monkeypatch, backend="vllm", **kw)) != base, kw
    e = HubEngine("someone/model", backend="vllm", max_model_len=4096, gpu_memory_utilization=0.3)
    assert e.load_options() == {"max_model_len": 4096, "gpu_memory_utilization": 0.3, "enforce_eager": True,
                                "enable_prefix_caching": True, "revision": None, "tokenizer": None}


def test_eval_flags_reach_the_config_and_bad_ones_fail(monkeypatch):
    from harness.commands import eval as eval_cmd
    from harness.cli import build_parser

    args = build_parser().parse_args(
        ["eval", "--model", "m/x", "--backend", "vllm", "--max-model-len", "4096", "--gpu-memory-utilization", "0.2",
         "--no-enforce-eager", "--no-prefix-caching", "--revision", "main", "--tokenizer", "t/x"])
    cfg = eval_cmd.config_from_args(args)
    assert (cfg.max_model_len, cfg.gpu_memory_utilization, cfg.enforce_eager, cfg.enable_prefix_caching,
            cfg.revision, cfg.tokenizer) == (4096, 0.2, False, False, "main", "t/x")
    assert set(ENGINE_OPTIONS) <= set(vars(cfg))
    with pytest.raises(UserError, match="--max-model-len applies to vllm only"):
        validate(EvalConfig(model="m/x", backend="hf", max_model_len=10))
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    monkeypatch.setattr(VLLMBackend, "check_available", classmethod(lambda cls: None))
    with pytest.raises(UserError, match="--gpu-memory-utilization must be in"):
        validate(EvalConfig(model="m/x", backend="vllm", gpu_memory_utilization=1.5))
    with pytest.raises(UserError, match="--max-model-len must be >= 1"):
        validate(EvalConfig(model="m/x", backend="vllm", max_model_len=0))
    with pytest.raises(UserError, match="--revision applies to hub models"):
        validate(EvalConfig(model="smollm2-135m", backend="hf", revision="main"))


def test_no_vllm_is_one_line_and_no_run_folder(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)     # as in an environment without vLLM
    rc = main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--limit", "1", "--backend", "vllm",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "vllm" in err and "just vllm-env" in err
    assert not (tmp_path / "out").exists()


def test_suite_engine_options_reach_the_eval_config(monkeypatch, tmp_path):
    from harness.paper.evaluations import Evaluations
    from harness.paper.suite import load_suite

    suite = load_suite("paper")
    assert suite.settings.enable_prefix_caching is False and suite.settings.dtype == "float32"   # as s1 ran vLLM
    suite.settings.revision, suite.settings.max_model_len = "abc", 2048
    seen = []

    def fake_run_eval(cfg, engine=None):
        seen.append(cfg)
        return {cfg.benchmarks[0]: {"skipped": "test"}}

    monkeypatch.setattr("harness.paper.evaluations.run_eval", fake_run_eval)
    # the suite-wide "auto" cap reads every prompt with the model's tokenizer, which is not here
    monkeypatch.setattr(Evaluations, "_suite_longest", lambda self, model: 1000)
    with Evaluations(suite) as evals:
        evals.run(suite.base_model, "aime24", 1, out=str(tmp_path))
        evals.run("runs/table1/iw-sft/final", "aime24", 1, out=str(tmp_path))
    base, checkpoint = seen
    assert (base.revision, base.max_model_len, base.enable_prefix_caching) == ("abc", 2048, False)
    assert checkpoint.revision is None and checkpoint.max_model_len == 2048   # a checkpoint is a local folder


def test_paper_preset_says_what_this_machine_lacks(tmp_path, monkeypatch, capsys):
    """No GPUs, no hub, no vLLM: one line before any process starts, nothing written."""
    import harness.evaluation.generation as gen

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(gen, "vllm_available", lambda: False)
    rc = main(["reproduce-table1", "--preset", "paper", "--out", "rep"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    for part in ("8 GPUs", "this machine has 0", "training data simplescaling/s1K-1.1", "vLLM for the evaluation",
                 "num_processes", "--train-override dataset=PATH"):
        assert part in err, part
    assert not any(tmp_path.iterdir())

    # with the GPUs, a local copy of the data and vLLM, the check passes
    from harness.paper import pipeline
    from harness.paper.suite import load_suite

    data = tmp_path / "s1k.jsonl"
    data.write_text("{}\n")
    monkeypatch.setattr(pipeline, "_gpu_count", lambda: 8)
    monkeypatch.setattr(gen, "vllm_available", lambda: True)
    pipeline.check_resources(load_suite("paper"), 1, [f"dataset={data}"])
    monkeypatch.setattr(pipeline, "_gpu_count", lambda: 4)
    with pytest.raises(UserError, match="8 GPUs .* this machine has 4"):
        pipeline.check_resources(load_suite("paper"), 1, [f"dataset={data}"])


# Every EvalConfig field, classified: either it changes the samples (a value that must give another run
# folder, below) or it does not (the folder is shared, with the reason). Derived from the dataclass, so a
# new setting fails here until it is classified (top_p dropped from the key passed every test once).
_SAMPLED = {"temperature": 0.6}          # the base run samples: top_p, seed, top_k, min_p all matter
_CHANGES_OUTPUTS = {                     # field -> (base settings, the changed ones)
    "max_new_tokens": ({}, {"max_new_tokens": 1000}),
    "thinking_budget": ({}, {"thinking_budget": 100}),
    "answer_budget": ({}, {"answer_budget": 8}),
    "wait": ({}, {"wait": 2}),
    "longest_prompt": ({}, {"longest_prompt": 50}),
    "budget_mode": ({}, {"budget_mode": "s1-compat"}),
    "delimiters": ({}, {"delimiters": "think-tags"}),
    "chat_template_kwargs": ({"delimiters": "qwen3"}, {"delimiters": "qwen3", "chat_template_kwargs": {"enable_thinking": False}}),
    "system": ({}, {"system": "Be brief."}),
    "samples": ({}, {"samples": 4}),
    "temperature": ({}, {"temperature": 1.0}),
    "top_p": ({}, {"top_p": 0.95}),
    "seed": ({}, {"seed": 1}),
    "top_k": ({}, {"top_k": 20}),
    "min_p": ({}, {"min_p": 0.05}),
    "presence_penalty": ({}, {"presence_penalty": 1.0}),
    "repetition_penalty": ({}, {"repetition_penalty": 1.05}),
    "dtype": ({}, {"dtype": "bfloat16"}),
    "backend": ({}, {"backend": "vllm"}),
    "tensor_parallel_size": ({"backend": "vllm"}, {"backend": "vllm", "tensor_parallel_size": 2}),
    "revision": ({}, {"revision": "abc123"}),
    "tokenizer": ({}, {"tokenizer": "other/tok"}),
    "max_model_len": ({"backend": "vllm"}, {"backend": "vllm", "max_model_len": 4096}),
    "enforce_eager": ({"backend": "vllm"}, {"backend": "vllm", "enforce_eager": False}),
    "enable_prefix_caching": ({"backend": "vllm"}, {"backend": "vllm", "enable_prefix_caching": False}),
}
_SHARED = {                              # field -> a value that keeps the folder (None: keyed another way, said why)
    "limit": 3, "ids": ["60"], "shard": (1, 2), "batch_size": 4, "out": "elsewhere", "aggregates": ["avg@1"],
    "grade_timeout_s": 5.0, "grade_workers": 2, "progress": False, "summary": False,
    "gpu_memory_utilization": 0.3,       # memory only (vLLM's KV cache size)
    "model": None,                       # the engine's model identity (files, not the path): test_models.py
    "adapter": None,                     # the adapter's files: test_eval_adapter.py
    "benchmarks": None,                  # one folder per benchmark: the name is in the key
    "benchmark_options": None,           # reach the key through the problems' fingerprint: test_evaluate.py
    "benchmark_files": None, "gpqa_csv": None,   # the data's bytes key the folder (file_sha256, data_sha256)
}


def test_run_folder_key_covers_every_setting_that_changes_outputs(monkeypatch):
    from dataclasses import fields

    from harness.evaluation.config import validate_settings
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    names = {f.name for f in fields(EvalConfig)}
    unclassified = names - set(_CHANGES_OUTPUTS) - set(_SHARED)
    assert not unclassified, f"classify the new EvalConfig field(s) {sorted(unclassified)} in this test"
    assert not set(_CHANGES_OUTPUTS) & set(_SHARED) and set(_CHANGES_OUTPUTS) | set(_SHARED) == names
    monkeypatch.setattr(VLLMBackend, "check_available", classmethod(lambda cls: None))

    def digest(**kw):
        validate_settings(EvalConfig(model="someone/model", **kw))   # every value here is one a user can set
        return store.settings_hash(_settings(monkeypatch, **kw))

    for name, (base, changed) in _CHANGES_OUTPUTS.items():
        assert digest(**{**_SAMPLED, **base}) != digest(**{**_SAMPLED, **changed}), f"{name} does not reach the run folder's key"
    base = digest(**_SAMPLED)
    for name, value in _SHARED.items():
        if value is not None:
            kw = {"backend": "vllm"} if name == "gpu_memory_utilization" else {}
            assert digest(**_SAMPLED, **kw, **{name: value}) == digest(**_SAMPLED, **kw), name
    assert digest(**_SAMPLED, limit=3) == base
