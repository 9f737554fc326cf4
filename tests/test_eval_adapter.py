"""`iwsft eval --adapter`: a peft LoRA adapter on the base model. It changes the outputs, keys a run
folder of its own, and computes what the manually merged model computes; bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main

FLAGS = ["--backend", "hf", "--benchmarks", "arith", "--limit", "3", "--total-budget", "96", "--thinking-budget", "8",
         "--answer-budget", "4", "--no-progress"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, smollm2_tokenizer):
    """base/ (a tiny random model), adapter/ (LoRA with random, nonzero A and B) and merged/ (base + adapter,
    merged by hand with peft)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import save_tiny_model_folder

    root = tmp_path_factory.mktemp("lora")
    save_tiny_model_folder(root / "base", smollm2_tokenizer)
    base = AutoModelForCausalLM.from_pretrained(root / "base")          # so the adapter names its base folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"), root / "adapter")
    merged.merge_and_unload().save_pretrained(root / "merged")
    smollm2_tokenizer.save_pretrained(root / "merged")
    return root


def _run(out: Path, model: Path, *extra) -> tuple[Path, list[str]]:
    assert main(["eval", "--model", str(model), *extra, *FLAGS, "--out", str(out)]) == 0
    (metrics,) = out.glob("*/arith/*/metrics.json")
    rows = [json.loads(x) for x in (metrics.parent / "samples.jsonl").read_text().splitlines()]
    return metrics.parent, [r["response"] for r in sorted(rows, key=lambda r: r["problem_id"])]


def test_adapter_changes_outputs_keys_its_folder_and_equals_the_merged_model(folders, tmp_path):
    base_dir, base = _run(tmp_path / "base", folders / "base")
    lora_dir, lora = _run(tmp_path / "lora", folders / "base", "--adapter", str(folders / "adapter"))
    _, merged = _run(tmp_path / "merged", folders / "merged")
    assert lora != base
    assert lora == merged
    assert lora_dir.name != base_dir.name                     # the settings hash, not only the folder's name
    settings = json.loads((lora_dir / "settings.json").read_text())
    assert len(settings["adapter"]["files"]) == 12 and "adapter" not in json.loads((base_dir / "settings.json").read_text())
    assert "+" in lora_dir.parent.parent.name and "+" not in base_dir.parent.parent.name   # OUT/<base>+<adapter>/

    # a retrained adapter in the same folder is another run
    copy = tmp_path / "adapter2"
    shutil.copytree(folders / "adapter", copy)
    from harness.evaluation.config import EvalConfig
    from harness.evaluation.engine import Engine

    def key():
        cfg = EvalConfig(model=str(folders / "base"), backend="hf", adapter=str(copy))
        return Engine.for_config(cfg).settings()["adapter"]["files"]

    before = key()
    cfg_file = copy / "adapter_config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"r": 4', '"r": 4 '))
    assert key() != before


def _one_line_error(capsys, *args) -> str:
    assert main(["eval", *args, *FLAGS[2:], "--backend", "hf"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_adapter_input_is_one_line(folders, tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "out")]
    other = tmp_path / "other"
    shutil.copytree(folders / "adapter", other)
    cfg = json.loads((other / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someone/another-model"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    err = _one_line_error(capsys, "--model", str(folders / "base"), "--adapter", str(other), *out)
    assert "made for base model 'someone/another-model'" in err
    err = _one_line_error(capsys, "--model", str(folders / "base"), "--adapter", str(folders / "base"), *out)
    assert "not a peft adapter" in err
    err = _one_line_error(capsys, "--model", str(folders / "base"), "--revision", "main", *out)
    assert "--revision applies to hub models" in err          # a folder has no revisions
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)             # as where peft is not installed
    err = _one_line_error(capsys, "--model", str(folders / "base"), "--adapter", str(folders / "adapter"), *out)
    assert "needs the peft package" in err and "[lora]" in err
    assert not (tmp_path / "out").exists()


def test_vllm_serves_the_adapter_with_one_lora_request(monkeypatch, tmp_path):
    """vLLM (a fake module: no vLLM here): enable_lora with a max_lora_rank holding the adapter's rank, and
    every request carries the adapter's LoRARequest."""
    import sys
    import types
    from types import SimpleNamespace

    from harness.evaluation.generation import vllm_backend
    from harness.evaluation.generation.adapter import resolve_adapter
    from harness.evaluation.generation.base import GenParams

    seen = SimpleNamespace(kwargs=None, lora=[])

    class LLM:
        def __init__(self, **kw):
            seen.kwargs = kw

        def get_tokenizer(self):
            return SimpleNamespace(eos_token_id=2, decode=lambda ids, **kw: "x" * len(ids))

        def generate(self, prompts, sps, *, use_tqdm=True, lora_request=None):
            seen.lora.append(lora_request)
            out = SimpleNamespace(token_ids=(5, 5), finish_reason="length", stop_reason=None)
            return [SimpleNamespace(outputs=[out]) for _ in prompts]

    class LoRARequest:
        def __init__(self, lora_name, lora_int_id, lora_path):
            self.args = (lora_name, lora_int_id, lora_path)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, lambda **kw: kw, "0.0-fake"
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, mod in {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(vllm_backend, "_on_cpu", lambda: False)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "peft_type": "LORA"}))
    adapter = resolve_adapter(str(tmp_path))
    b = vllm_backend.VLLMBackend("/models/x", adapter=adapter)
    assert (seen.kwargs["enable_lora"], seen.kwargs["max_loras"], seen.kwargs["max_lora_rank"]) == (True, 1, 16)
    b.generate([[1], [2]], GenParams(max_new_tokens=2))
    assert seen.lora[0].args == ("adapter", 1, str(tmp_path.resolve()))
    vllm_backend.VLLMBackend("/models/x").generate([[1]], GenParams(max_new_tokens=2))
    assert seen.lora[-1] is None and "enable_lora" not in seen.kwargs       # no adapter: no LoRA at all
