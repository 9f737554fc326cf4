"""iw-SFT from TRL (harness/integrations/trl.py) against the harness's own trainer, on a tiny random model.

The two trainers are configured equal where they differ by design:
- data: TRL gets the harness's tokenised examples (input_ids, labels = -100 off the loss mask), so the
  chat template and masks are the harness's; IWSFTTrainer's sampler is the harness's DataOrder, so
  with the same seed both see the same micro-batches in the same order (2 epochs here).
- optimizer: transformers exempts biases and norm weights from weight decay, the harness decays every
  parameter: the TRL side here decays every parameter too (`_DecayAll`); both use torch's fused AdamW,
  the same betas, eps 1e-8, grad-norm clip 1.0.
- schedule: linear warm-up then cosine to 0, warm-up ceil(0.2 x 6) = 2 steps on both sides
  (transformers reads warmup_steps < 1 as a ratio and rounds up, as the harness does).
- loss: the harness's loss_normalization=accumulation_window is TRL's (the step's response tokens).
- precision: float32, no gradient checkpointing, no bf16 autocast (TRL's default bf16 is switched off).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.core.errors import UserError

pytest.importorskip("trl")

STEPS, LR = 6, 3e-3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from harness.core.models import load_tokenizer
    from tiny_models import tiny_random_model

    d = tmp_path_factory.mktemp("trl")
    tok = load_tokenizer("smollm2-135m")
    tiny_random_model(tok, hidden=32, layers=2).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    rows = [{"question": f"What is {a} + {b}?", "deepseek_thinking_trajectory": f"{a} plus {b} is {a + b}." + " so" * (a * 3 + b),
             "deepseek_attempt": f"\\boxed{{{a + b}}}"} for a in range(4) for b in range(3)]
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _harness_cfg(tiny_dir, out, **kw):
    from harness.training.config import load_recipe

    base = dict(model=str(tiny_dir / "model"), dataset=str(tiny_dir / "data.jsonl"), block_size=96,
                global_batch_size=4, micro_batch_size=2, learning_rate=LR, warmup_ratio=0.2, max_steps=STEPS,
                weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0, loss_normalization="accumulation_window",
                output_dir=str(out), ref_cache_dir=str(out.parent / "ref-harness"), seed=1)
    base.update(kw)
    return load_recipe(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()])


def _dataset(cfg):
    """The harness's own examples, as a pre-tokenised dataset TRL trains on as is."""
    import datasets

    from harness.core.models import load_tokenizer
    from harness.training.data import load_rows, prepare

    data = prepare(load_rows(cfg.dataset), load_tokenizer(cfg.model), cfg)
    return datasets.Dataset.from_list([{"input_ids": e.input_ids,
                                        "labels": [t if m else -100 for t, m in zip(e.input_ids, e.loss_mask)]}
                                       for e in data.examples])


def _trl_trainer(tiny_dir, out, cfg, micro=2, accum=2, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.integrations.trl import IWSFTConfig, IWSFTTrainer

    args = IWSFTConfig(output_dir=str(out), per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                       max_steps=STEPS, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.2,
                       weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, optim="adamw_torch_fused",
                       max_grad_norm=1.0, seed=1, bf16=False, gradient_checkpointing=False, max_length=96,
                       logging_steps=1, save_strategy="no", report_to="none", weighting=cfg.weighting,
                       weighting_overrides=dict(cfg.weighting_overrides) or None, q_source=cfg.q_source,
                       q_ema_decay=cfg.q_ema_decay, ref_cache_dir=str(out.parent / "ref-trl"),
                       loss_normalization=cfg.loss_normalization, **kw)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    return IWSFTTrainer(model=model, args=args, train_dataset=_dataset(cfg), processing_class=tok)


@pytest.mark.parametrize("weighting,q_source,overrides", [
    ("iw-sft", "lag0", {}),
    ("per-step", "lag0", {}),
    ("iw-sft", "ema", {}),
    ("iw-sft-paper", "lag0", {"self_normalize": True}),
])
def test_trl_trains_like_the_harness(tiny_dir, tmp_path, weighting, q_source, overrides):
    from harness.training.trainer import train

    cfg = _harness_cfg(tiny_dir, tmp_path / "harness", weighting=weighting, q_source=q_source,
                       weighting_overrides=overrides)
    final = train(cfg)
    hm = [json.loads(line) for line in (tmp_path / "harness" / "metrics.jsonl").read_text().splitlines()]

    tr = _trl_trainer(tiny_dir, tmp_path / "trl", cfg)
    tr.train()
    tw = tr.weight_history
    assert [r["step"] for r in tw] == list(range(1, STEPS + 1))
    # Step 1 (the first): theta = q = ref, every weight exactly 1, on both sides.
    assert tw[0]["w_mean"] == tw[0]["w_max"] == tw[0]["w_min"] == 1.0 and tw[0]["logw_p50"] == 0.0
    assert hm[0]["w_mean"] == hm[0]["w_max"] == 1.0
    # Then the weights move, identically.
    assert tw[-1]["w_mean"] != 1.0
    for h, t in zip(hm, tw):
        assert t["w_mean"] == pytest.approx(h["w_mean"], rel=1e-4, abs=1e-6), (h["step"], h["w_mean"], t["w_mean"])
        assert t["w_max"] == pytest.approx(h["w_max"], rel=1e-4, abs=1e-6)
    losses = [r["loss"] for r in tr.state.log_history if "loss" in r]
    assert losses == pytest.approx([r["loss"] for r in hm], rel=1e-4)
    mine = tr.accelerator.unwrap_model(tr.model).state_dict()
    theirs = load_file(str(final / "model.safetensors"))
    for k, v in theirs.items():
        torch.testing.assert_close(mine[k], v, rtol=0, atol=2e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_trl_micro_batch_normalization_trains_like_the_harness(tiny_dir, tmp_path):
    """loss_normalization=micro_batch (the released code's): each micro-batch's summed loss over its own
    response tokens, times the accumulation steps. Micro-batch 2 x 3 accumulation steps (the two differ;
    the examples' lengths differ): the same losses, weights and parameters as the harness."""
    from harness.training.trainer import train

    cfg = _harness_cfg(tiny_dir, tmp_path / "harness", weighting="iw-sft", loss_normalization="micro_batch",
                       global_batch_size=6, micro_batch_size=2)
    final = train(cfg)
    hm = [json.loads(line) for line in (tmp_path / "harness" / "metrics.jsonl").read_text().splitlines()]
    tr = _trl_trainer(tiny_dir, tmp_path / "trl", cfg, micro=2, accum=3)
    tr.train()
    losses = [r["loss"] for r in tr.state.log_history if "loss" in r]
    assert len(losses) == STEPS and losses == pytest.approx([r["loss"] for r in hm], rel=1e-4)
    for h, t in zip(hm, tr.weight_history):
        assert t["w_mean"] == pytest.approx(h["w_mean"], rel=1e-4, abs=1e-6)
    mine = tr.accelerator.unwrap_model(tr.model).state_dict()
    for k, v in load_file(str(final / "model.safetensors")).items():
        torch.testing.assert_close(mine[k], v, rtol=0, atol=2e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("micro,accum,pad", [(1, 4, None), (4, 1, 16), (3, 2, 8)])
def test_trl_weights_are_one_at_step_zero_whatever_the_batching(tiny_dir, tmp_path, micro, accum, pad):
    cfg = _harness_cfg(tiny_dir, tmp_path / "unused", weighting="iw-sft")
    tr = _trl_trainer(tiny_dir, tmp_path / "a", cfg, micro=micro, accum=accum, pad_to_multiple_of=pad)
    tr.train()
    w0 = tr.weight_history[0]
    assert w0["w_mean"] == w0["w_max"] == w0["w_min"] == 1.0
    assert tr.weight_history[-1]["w_mean"] != 1.0
    # A second run reuses the cache from disk (computed over the same micro-batches): still exactly 1.
    files = list((tmp_path / "ref-trl").glob("*.safetensors"))
    assert len(files) == 1
    tr2 = _trl_trainer(tiny_dir, tmp_path / "b", cfg, micro=micro, accum=accum, pad_to_multiple_of=pad)
    tr2.train()
    assert tr2.weight_history[0]["w_max"] == tr2.weight_history[0]["w_min"] == 1.0
    assert len(list((tmp_path / "ref-trl").glob("*.safetensors"))) == 1


def test_trl_config_bad_input_is_one_line():
    from harness.integrations.trl import IWSFTConfig

    for kw, words in [({"weighting": "iw"}, "is not one of"), ({"q_source": "lag1"}, "q_source"),
                      ({"packing": True}, "packing=False"), ({"loss_normalization": "x"}, "loss_normalization"),
                      ({"weighting": "iw-sft-paper"}, "w_clip"),
                      ({"weighting_overrides": {"w_clp": [0, 8]}}, "unknown weighting option")]:
        with pytest.raises(UserError, match=words):
            IWSFTConfig(output_dir="unused", bf16=False, **kw)


def test_without_trl_the_import_names_the_extra():
    code = ("import sys; sys.modules['trl'] = None\n"
            "from harness.core.errors import UserError\n"
            "try:\n    import harness.integrations.trl\nexcept UserError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.stdout.strip() == "the TRL integration needs trl: pip install 'iwsft-harness[trl]'", r.stderr[-800:]


@pytest.mark.slow
def test_example_script_trains_the_embedded_model(tmp_path):
    root = Path(__file__).parents[1]
    # 16 rows: the 2 steps at batch 8 read them all; the reference forward covers those, not all 145
    r = subprocess.run([sys.executable, str(root / "examples" / "trl_iwsft.py"), "--max-steps", "2", "--examples", "16",
                        "--output-dir", str(tmp_path / "out"), "--ref-cache-dir", str(tmp_path / "ref")],
                       capture_output=True, text=True, cwd=root, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step 1: w_mean 1.0000" in r.stdout, r.stdout[-2000:]
    assert "step 2: w_mean" in r.stdout and "step 2: w_mean 1.0000" not in r.stdout, r.stdout[-2000:]   # lr > 0 at step 1
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(next((tmp_path / "ref").glob("*.safetensors"))), "pt") as f:
        assert f.get_tensor("ids").tolist() == list(range(16))      # the reference covers the 16 rows trained on
