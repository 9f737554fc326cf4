"""The memory plan (harness/training/memory_plan.py): exact components, the estimate against a measured
peak at tiny shapes on CPU, the paper recipes planned offline, and the refusals."""

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.core.errors import UserError
from harness.training import memory_plan as mp

ROOT = Path(__file__).parents[1]
TABLE1 = ROOT / "recipes" / "table1"
GiB = 2**30

# The plan against torch's MemTracker (below): within this fraction either way. Stated in docs/performance.md.
TOLERANCE = 0.05


def _tiny(vocab=4096, layers=4):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=176, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=False, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg)
    model.config.use_cache = False
    return model, mp.Architecture.from_config(cfg.to_dict(), "tiny")


def _measure(model, tokens, dtype, checkpointing, fused):
    """Peak of live tensor bytes over two optimizer steps of two micro-batches each, the trainer's own
    code path (batch_logprobs, fused AdamW, autocast around forward and backward). MemTracker is torch's
    dispatch-mode tracker: it sees every tensor storage created and freed (rounded to 512 B, as the CUDA
    allocator does), so its peak is the sum of live tensor sizes; allocator caching is not in it."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from harness.training.batching import Batch, batch_logprobs, enable_checkpointing
    from harness.training.optim import adamw

    model.train()
    if checkpointing:
        enable_checkpointing(model)
    opt = adamw(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens))
    batch = Batch(ids, torch.ones_like(ids), torch.ones(1, tokens - 1, dtype=torch.bool), [0], [tokens])
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        for _ in range(2):
            for _ in range(2):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16-mixed"):
                    loss = -batch_logprobs(model, batch, fused).sum()
                loss.backward()          # outside autocast, as the trainer
                tracker.reset_mod_stats()   # per-module stats only; the overall peak is kept
            opt.step()
            opt.zero_grad(set_to_none=True)
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return {str(k).split(".")[-1]: v for k, v in peak.items()}, opt


def test_components_are_exact():
    """Weights, gradients and AdamW states: the plan's bytes are the model's and the optimizer's."""
    from harness.training.optim import adamw

    model, arch = _tiny()
    p = mp.plan(arch, mp.Launch(), dtype="fp32", block_size=64)
    assert arch.n_params() == sum(t.numel() for t in model.parameters())
    assert p.row("weights").gpu == sum(t.numel() * t.element_size() for t in model.parameters())
    opt = adamw(model.parameters(), lr=1e-3)
    model(input_ids=torch.randint(0, 4096, (1, 8))).logits.sum().backward()
    assert p.row("gradients").gpu == sum(t.grad.numel() * t.grad.element_size() for t in model.parameters())
    opt.step()
    states = sum(s[k].numel() * s[k].element_size() for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert p.row("optimizer states").gpu == states
    # Sharded over 8 and offloaded: nothing of them on the GPU, all of a node's 8 shards in its RAM.
    off = mp.plan(arch, mp.Launch(processes=8, fsdp=True, offload=True, gpu=True), dtype="bf16-mixed", block_size=64)
    assert off.row("weights").gpu == 0 and off.row("optimizer states").cpu == states


def test_qwen25_32b_architecture_shipped_with_the_recipes():
    """The shipped config.json gives the model's parameter count, as transformers builds it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = TABLE1 / "qwen2.5-32b-instruct-config.json"
    arch = mp.Architecture.from_config(json.loads(path.read_text()))
    assert arch.n_params() == 32_763_876_352
    config = AutoConfig.for_model(**{k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(t.numel() for t in model.parameters()) == arch.n_params()


@pytest.mark.parametrize("dtype,checkpointing,fused,vocab", [
    ("fp32", False, False, 4096), ("fp32", True, False, 4096), ("bf16-mixed", True, False, 4096),
    ("bf16-mixed", False, True, 4096), ("bf16-mixed", True, True, 512),
])
def test_plan_matches_measured_peak_at_tiny_shapes(dtype, checkpointing, fused, vocab):
    """1536 tokens (more than one log-softmax chunk); vocabulary 4096 (the head a large share, as at 32B)
    or 512 (the decoder layers' share larger)."""
    model, arch = _tiny(vocab)
    peak, _ = _measure(model, 1536, dtype, checkpointing, fused)
    p = mp.plan(arch, mp.Launch(), dtype=dtype, block_size=1536, gradient_checkpointing=checkpointing,
                fused_lm_head=fused, gpu_memory_gib=1)
    assert abs(p.peak - peak["Total"]) <= TOLERANCE * peak["Total"], (p.peak / 2**20, peak)
    # At this peak (the start of backward) every saved activation is alive: the activation rows alone.
    saved = p.row("saved activations").gpu + (1536 * arch.vocab * (4 if dtype == "fp32" else 2) if not fused else 0)
    saved += p.row("autocast weight copies").gpu if dtype == "bf16-mixed" else 0   # they count as activations there
    assert abs(saved - peak["ACT"]) <= TOLERANCE * peak["ACT"], (saved / 2**20, peak)


def test_paper_recipes_plan_offline_and_fit_8_h100(capsys, monkeypatch):
    """`iwsft train recipes/table1/RECIPE --check` with no hub access: a plan that fits 8 x 80 GB
    under the shipped config (FSDP2 full shard + CPU offload)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for recipe in ("iw-sft", "iw-sft-per-step", "s1.1-sft"):
        assert main(["train", str(TABLE1 / f"{recipe}.yaml"), "--check"]) == 0
        out = " ".join(capsys.readouterr().out.split())   # rich wraps at the terminal's width
        assert "memory plan fits" in out and "FSDP full shard + CPU offload" in out and "qwen2.5-32b" in out


def _paper_plan(**launch):
    from harness.training.config import load_recipe

    cfg = load_recipe(TABLE1 / "iw-sft.yaml")
    base = mp.launch_from_accelerate_config(TABLE1 / "accelerate_fsdp_8xh100.yaml")
    from dataclasses import replace

    return mp.plan_recipe(cfg, launch=replace(base, **launch)), cfg


def test_paper_plan_without_offload_is_refused_with_the_fix():
    p, _ = _paper_plan(offload=False)
    assert p.peak > p.budget and not p.fits     # (78 GiB per GPU: gradients appear during backward, set_to_none)
    with pytest.raises(UserError, match=r"does not fit .* fits with: fsdp_offload_params: true") as e:
        mp.check(p)
    assert "\n" not in str(e.value)
    # 16 processes would fit, but the recipe's global batch 8 does not split over them: not offered.
    assert "2 nodes" not in str(e.value)
    off, _ = _paper_plan(offload=True)
    assert off.fits and off.peak < 40 * GiB
    assert 500 * GiB < off.cpu_per_node < 700 * GiB   # 16 B x 32.8B params, plus one full float32 copy


@pytest.mark.parametrize("overrides,message", [
    (["gpu_memory_gib=34"], r"GiB per GPU > 30.6 GiB usable .*fits with: fused_lm_head=true"),
    (["cpu_memory_gib=256"], r"CPU offload needs \d+ GiB of RAM per node > 256 GiB"),
    (["accelerate_config=recipes/table1/accelerate_fsdp_2x8xh100.yaml"], r"global_batch_size 8 is not divisible .*\(1 x 16"),
])
def test_check_refuses_in_one_line(capsys, overrides, message):
    assert main(["train", str(TABLE1 / "iw-sft.yaml"), "--check", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    import re

    assert re.search(message, err), err


def test_two_nodes_plan_for_s1_without_offload(capsys):
    assert main(["train", str(TABLE1 / "s1.1-sft.yaml"), "--check",
                 "accelerate_config=recipes/table1/accelerate_fsdp_2x8xh100.yaml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 nodes x 8 GPU processes, FSDP full shard (" in out and "memory plan fits" in out


def test_more_processes_than_gpus_is_refused(monkeypatch):
    p, _ = _paper_plan()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(UserError, match="asks for 8 processes per node .* has 4 GPUs"):
        mp.check(p)


def test_paper_preset_plans_before_anything_starts(tmp_path, monkeypatch):
    from harness.paper.pipeline import check_arguments, check_memory
    from harness.paper.suite import load_suite

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)   # no finished runs to compare against
    suite = load_suite("paper")
    assert all("memory plan fits" in line for line in check_memory(suite))
    # The plan is checked first (a laptop can plan; what this machine lacks is said after it fits).
    with pytest.raises(UserError, match="memory plan does not fit"):
        check_arguments(suite, 1, None, str(tmp_path / "out"), ["gpu_memory_gib=24"])
    assert not (tmp_path / "out").exists()


def test_ddp_fsdp_offload_and_one_process_are_planned_apart(tmp_path, monkeypatch):
    """The same recipe (paper iw-SFT, 32B, bf16-mixed) under each launch: one process and DDP hold the
    whole model state on every GPU (DDP adds its gradient buckets); FSDP divides it by the processes;
    offload moves it to CPU RAM. A DDP launch planned as if sharded would say "fits" and run out of memory."""
    from dataclasses import replace

    p_fsdp, cfg = _paper_plan(offload=False)
    P, m = p_fsdp.arch.n_params(), 4        # bf16-mixed: float32 master weights
    state = {"weights": P * m, "gradients": P * m, "optimizer states": 2 * P * m}
    one = mp.plan_recipe(cfg, launch=mp.Launch(gpu=True))
    # a DDP launch as each source describes it: an accelerate config (MULTI_GPU), torchrun's environment
    (tmp_path / "ddp.yaml").write_text("distributed_type: MULTI_GPU\nnum_processes: 8\nnum_machines: 1\n")
    ddp_launch = mp.launch_from_accelerate_config(tmp_path / "ddp.yaml")
    env_launch = mp.launch_from_env({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"})
    assert not ddp_launch.fsdp and not env_launch.fsdp and ddp_launch.processes == env_launch.processes == 8
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert not mp.recipe_launch(cfg).fsdp                      # the launch this process is part of
    ddp = mp.plan_recipe(cfg, launch=replace(ddp_launch, gpu=True))
    p_off = mp.plan_recipe(cfg, launch=replace(p_fsdp.launch, offload=True))
    for name, full in state.items():
        assert one.row(name).gpu == ddp.row(name).gpu == full and one.row(name).cpu == ddp.row(name).cpu == 0
        assert p_fsdp.row(name).gpu == full / 8 and p_fsdp.row(name).cpu == 0
        assert p_off.row(name).gpu == 0 and p_off.row(name).cpu == full       # 8 shards in one node's RAM
    assert ddp.row("DDP gradient buckets").gpu == P * m
    assert not any(r.name == "DDP gradient buckets" for r in (*one.rows, *p_fsdp.rows, *p_off.rows))
    # Batch 8 over 8 DDP processes is one micro-batch a step (gradients appear during backward), while one
    # process accumulates 8: compare DDP with one process that also runs one micro-batch a step.
    one_step = mp.plan_recipe(replace(cfg, global_batch_size=cfg.micro_batch_size), launch=mp.Launch(gpu=True))
    assert ddp.peak == pytest.approx(one_step.peak + P * m, rel=1e-12)       # same activations, + the buckets
    assert one.peak > one_step.peak                                           # accumulating holds every gradient
    assert ddp.peak > 16 * P and not ddp.fits and "DDP" in ddp.launch.describe()
    assert p_off.peak < p_fsdp.peak < one.peak
    with pytest.raises(UserError, match=r"memory plan does not fit \(8 GPU processes, DDP .*fits with: FSDP full shard \+ CPU offload over 8 GPUs "
                       r"\(recipes/table1/accelerate_fsdp_8xh100.yaml\) \(peak"):
        mp.check(ddp)
