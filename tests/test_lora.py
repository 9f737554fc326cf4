"""Chat data and LoRA through the harness trainer, on a tiny random model with a real tokenizer:
step-0 weights, loss, what changes, checkpoints (adapter, merged, resume) and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.training.config import load_recipe
from harness.training.trainer import train

QA = [(a, b) for a in range(4) for b in range(3)]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    """A tiny model whose tokenizer carries Llama 3's real chat template (not ChatML), and one dataset per format."""
    from harness.core.models import load_tokenizer
    from tiny_models import tiny_random_model

    d = tmp_path_factory.mktemp("chat")
    tok = load_tokenizer("smollm2-135m")
    tok.chat_template = (Path(__file__).parent / "data" / "chat_templates" / "llama3.jinja").read_text()
    tiny_random_model(tok, hidden=32, layers=2).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    user = lambda a, b: [{"role": "user", "content": f"What is {a} + {b}?"}]  # noqa: E731
    answer = lambda a, b: [{"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]  # noqa: E731
    sets = {
        "s1": [{"question": f"What is {a} + {b}?", "deepseek_thinking_trajectory": f"{a} plus {b}.",
                "deepseek_attempt": str(a + b)} for a, b in QA],
        "messages": [{"messages": user(a, b) + answer(a, b)} for a, b in QA],
        "pc_chat": [{"prompt": user(a, b), "completion": answer(a, b)} for a, b in QA],
        "pc_text": [{"prompt": f"{a} + {b} =", "completion": f" {a + b}"} for a, b in QA],
    }
    for name, rows in sets.items():
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _cfg(d, tmp_path, data="messages", name="run", **kw):
    base = dict(model=str(d / "model"), dataset=str(d / f"{data}.jsonl"), block_size=96, global_batch_size=4,
                micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, max_steps=4, weighting="iw-sft",
                output_dir=str(tmp_path / name), ref_cache_dir=str(tmp_path / "ref"), seed=1)
    base.update(kw)
    return load_recipe(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()])


def _metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("data", ["s1", "messages", "pc_chat", "pc_text"])
def test_weights_exactly_one_at_step0_in_each_format(chat_dir, tmp_path, data, lora):
    extra = {"lora_rank": 4, "learning_rate": 3e-2} if lora else {}
    train(_cfg(chat_dir, tmp_path, data, max_steps=3, **extra))
    m = _metrics(tmp_path / "run")
    assert m[0]["w_mean"] == 1.0 and m[0]["w_max"] == 1.0 and m[0]["logw_p05"] == m[0]["logw_p95"] == 0.0
    assert m[-1]["w_mean"] != 1.0       # the policy leaves pi_ref, so the weights do move


def test_lora_trains_only_the_adapters(chat_dir, tmp_path):
    final = train(_cfg(chat_dir, tmp_path, max_steps=8, lora_rank=4, lora_alpha=8, learning_rate=3e-2,
                       lora_merge_on_save=True, peak_tflops=1))
    m = _metrics(tmp_path / "run")
    # The logged loss is w x NLL, and w grows as the policy fits the data; the per-token NLL itself
    # falls: log w = mean_t(log pi - log pi_ref) is exactly how much it fell on each sequence.
    assert m[-1]["logw_p05"] > 0.1, [(r["loss"], r["logw_p05"]) for r in m]
    assert m[-1]["loss"] / m[-1]["w_mean"] < m[0]["loss"] - 0.1
    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 4
    assert not (final / "model.safetensors").exists()
    # The merged folder: base weights untouched except W + (alpha / r) B A on each adapted layer.
    base, merged = load_file(str(chat_dir / "model" / "model.safetensors")), load_file(str(final / "merged" / "model.safetensors"))
    assert base.keys() == merged.keys()
    changed = set()
    for k in base:
        a_key = "base_model.model." + k.removesuffix(".weight") + ".lora_A.weight"
        if a_key in adapter:
            delta = (8 / 4) * adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key]
            torch.testing.assert_close(merged[k], base[k] + delta, rtol=0, atol=1e-6)
            changed.add(k) if delta.abs().max() > 0 else None
        else:
            assert torch.equal(merged[k], base[k]), k        # embeddings, norms: never trained
    assert changed and len(changed) == len(adapter) // 2     # every adapter moved its layer
    # MFU counts no weight gradients for the frozen base: 4 x (base + adapters) + 2 x adapters per token, not 6N
    n_base, n_lora = sum(v.numel() for v in base.values()), sum(v.numel() for v in adapter.values())
    for r in m:
        dense = 4 * (n_base + n_lora) + 2 * n_lora       # + attention (harness/core/flops.py): under 2% here
        assert dense < r["mfu"] * 1e12 / r["tokens_per_s"] < 1.02 * dense


def test_lora_resume_matches_uninterrupted(chat_dir, tmp_path):
    kw = dict(max_steps=4, save_every=2, lora_rank=4, learning_rate=3e-2)
    full = train(_cfg(chat_dir, tmp_path, name="full", **kw))
    cut = train(_cfg(chat_dir, tmp_path, name="cut", **kw))
    import shutil

    shutil.rmtree(cut)                                      # as if stopped after the step-2 checkpoint
    assert (tmp_path / "cut" / "checkpoints" / "step-000002" / "adapter_model.safetensors").is_file()
    resumed = train(_cfg(chat_dir, tmp_path, name="cut", **kw))
    a, b = load_file(str(full / "adapter_model.safetensors")), load_file(str(resumed / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [r["step"] for r in _metrics(tmp_path / "cut")] == [1, 2, 3, 4]


def _eval_rows(out: Path) -> tuple[dict, list[dict]]:
    (metrics,) = out.glob("*/arith/*/metrics.json")
    rows = [json.loads(x) for x in (metrics.parent / "samples.jsonl").read_text().splitlines()]
    return json.loads(metrics.read_text()), sorted(rows, key=lambda r: r["problem_id"])


@pytest.mark.slow   # a subprocess job
def test_merged_checkpoint_evaluates(chat_dir, tmp_path):
    """`iwsft eval` on the merged folder (the CLI, as a user runs it): its samples are the trained model's,
    the same as base + the saved adapter (`--adapter`), not the base model's; its metrics are its samples'."""
    final = train(_cfg(chat_dir, tmp_path, max_steps=2, lora_rank=4, learning_rate=3e-2, lora_merge_on_save=True))
    flags = ["--benchmarks", "arith", "--limit", "2", "--total-budget", "128", "--thinking-budget", "16", "--backend", "hf",
             "--no-progress"]
    r = subprocess.run([sys.executable, "-m", "harness", "eval", "--model", str(final / "merged"), *flags,
                        "--out", str(tmp_path / "merged")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "arith" in r.stdout
    m, merged = _eval_rows(tmp_path / "merged")
    assert m["n"] == len(merged) == 2 and m["samples_per_problem"] == 1
    assert m["accuracy"] == sum(bool(x["correct"]) for x in merged) / 2
    assert all(x["thinking_tokens"] <= 16 and x["response"] for x in merged)
    assert main(["eval", "--model", str(chat_dir / "model"), "--adapter", str(final), *flags, "--out", str(tmp_path / "lora")]) == 0
    assert main(["eval", "--model", str(chat_dir / "model"), *flags, "--out", str(tmp_path / "base")]) == 0
    lora, base = _eval_rows(tmp_path / "lora")[1], _eval_rows(tmp_path / "base")[1]
    assert [x["response"] for x in merged] == [x["response"] for x in lora]      # merged = base + adapter
    assert [x["response"] for x in merged] != [x["response"] for x in base]      # ... and it was trained


@pytest.mark.parametrize("overrides,message", [
    (["lora_rank=0"], "lora_rank must be >= 1"),
    (["lora_alpha=32"], "only apply to LoRA; set lora_rank"),
    (["lora_rank=4", "lora_dropout=1.0"], r"lora_dropout must be in \[0, 1\)"),
    (["lora_rank=4", "fused_lm_head=true"], "not supported with LoRA"),
    (["lora_rank=4", "lora_target_modules=[no_such_proj]"], "do not fit"),
    (["data_format=chat"], "data_format 'chat' is not one of"),
])
def test_bad_lora_and_format_settings(chat_dir, tmp_path, capsys, overrides, message):
    import re

    out = tmp_path / "bad"
    code = main(["train", "-", f"model={chat_dir / 'model'}", f"dataset={chat_dir / 'messages.jsonl'}",
                 f"output_dir={out}", f"ref_cache_dir={tmp_path / 'ref'}", "block_size=96", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()


def test_missing_peft_is_one_line(chat_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)          # `import peft` now raises ImportError
    out = tmp_path / "bad"
    code = main(["train", "-", f"model={chat_dir / 'model'}", f"dataset={chat_dir / 'messages.jsonl'}",
                 f"output_dir={out}", "lora_rank=8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "peft is not installed" in err, err
    assert not out.exists()


def test_dataset_of_no_known_format_is_one_line(chat_dir, tmp_path, capsys):
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    out = tmp_path / "bad"
    code = main(["train", "-", f"model={chat_dir / 'model'}", f"dataset={data}", f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no column(s) of any data format" in err, err
    assert not out.exists()


def test_adapters_off_is_the_base_model(chat_dir):
    """pi_ref under LoRA: with the adapters switched off, a trained adapter changes nothing."""
    from harness.core.models import load_model
    from harness.training import lora

    cfg = load_recipe(None, [f"model={chat_dir / 'model'}", "lora_rank=4"])
    base = load_model(str(chat_dir / "model"))
    ids = torch.tensor([[1, 5, 9, 200, 7, 3]])
    want = base(input_ids=ids).logits
    model = lora.wrap(load_model(str(chat_dir / "model")), cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)          # a trained adapter
    assert not torch.equal(model(input_ids=ids).logits, want)
    with lora.adapters_off(model):
        assert torch.equal(model(input_ids=ids).logits, want)
    with lora.adapters_off(base):    # a plain model: nothing to switch off
        assert torch.equal(base(input_ids=ids).logits, want)
