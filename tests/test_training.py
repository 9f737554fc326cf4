"""The trainer on a tiny random model (real tokenizer): loss, weights, reference cache, resume, errors."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.core.errors import UserError
from harness.training.config import load_recipe
from harness.training.trainer import train


def _cfg(tiny_dir, tmp_path, name="run", **kw):
    base = dict(model=str(tiny_dir / "model"), dataset=str(tiny_dir / "data.jsonl"), block_size=96,
                global_batch_size=4, micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, max_steps=6,
                output_dir=str(tmp_path / name), ref_cache_dir=str(tmp_path / "ref"), seed=1)
    base.update(kw)
    return load_recipe(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()])


def _metrics(run_dir):
    return [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _params(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_sft_loss_falls(tiny_dir, tmp_path):
    out = train(_cfg(tiny_dir, tmp_path, max_steps=8))
    m = _metrics(tmp_path / "run")
    assert len(m) == 8 and m[-1]["loss"] < m[0]["loss"] - 0.5
    for key in ("step", "loss", "lr", "grad_norm", "w_mean", "w_max", "ess", "tokens_per_s", "mfu", "peak_mem_gb"):
        assert key in m[0]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("weighting,overrides", [("iw-sft", {}), ("per-step", {}), ("iw-sft-paper", {"w_clip": [0, 16]}),
                                                 ("iw-sft-paper", {"self_normalize": True})])
def test_weights_exactly_one_at_step0(tiny_dir, tmp_path, weighting, overrides):
    train(_cfg(tiny_dir, tmp_path, weighting=weighting, weighting_overrides=overrides, max_steps=3))
    m = _metrics(tmp_path / "run")
    assert m[0]["w_mean"] == 1.0 and m[0]["w_max"] == 1.0 and m[0]["logw_p95"] == 0.0
    assert m[-1]["w_mean"] != 1.0     # the weights do move once the policy leaves pi_ref


def test_iw_sft_with_unit_weights_reproduces_sft(tiny_dir, tmp_path):
    sft = train(_cfg(tiny_dir, tmp_path, "sft", max_steps=3))
    iw = train(_cfg(tiny_dir, tmp_path, "iw1", weighting="iw-sft", weighting_overrides={"w_clip": [1, 1]}, max_steps=3))
    a, b = _params(sft), _params(iw)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_tensorboard_option_logs_the_metrics(tiny_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_cfg(tiny_dir, tmp_path, weighting="iw-sft", max_steps=3, tensorboard=True))
    ea = EventAccumulator(str(tmp_path / "run" / "tb" / "iwsft"))   # accelerate writes to logging_dir/project
    ea.Reload()
    assert {"loss", "w_mean", "ess", "tokens_per_s", "grad_norm"} <= set(ea.Tags()["scalars"])
    m = _metrics(tmp_path / "run")
    assert [e.step for e in ea.Scalars("loss")] == [1, 2, 3]   # optimizer steps done, as the console
    assert [e.value for e in ea.Scalars("w_mean")][0] == 1.0
    assert ea.Scalars("loss")[-1].value == pytest.approx(m[-1]["loss"], rel=1e-6)


def _assert_reference_cache_layout(cfg, packed: bool) -> None:
    """The run's reference cache: keyed by its batch layout (padded and packed never share a file), one
    entry per example of its own span's length, and each value what the base model gives that example
    inside the layout's first-epoch micro-batches (padded rows, or examples end to end in one row)."""
    from safetensors import safe_open

    from harness.core.models import load_tokenizer
    from harness.training.batching import batch_logprobs, collate, collate_packed
    from harness.training.data import load_rows, prepare
    from harness.training.refcache import load_cache
    from harness.training.trainer import DataOrder, micro_batches
    from transformers import AutoModelForCausalLM

    layout = [cfg.micro_batch_size, cfg.global_batch_size, 1, cfg.seed, "no"] + (["packed"] if packed else [])
    found = {}
    for path in Path(cfg.ref_cache_dir).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
        found[json.dumps(meta["layout"])] = (path, meta)
    path, meta = found[json.dumps(layout)]
    cached = load_cache(path, meta)
    tok = load_tokenizer(cfg.model)
    data = prepare(load_rows(cfg.dataset), tok, cfg)
    assert sorted(cached) == list(range(len(data.examples)))
    assert all(cached[i].numel() == len(e.input_ids) - 1 for i, e in enumerate(data.examples))
    model = AutoModelForCausalLM.from_pretrained(cfg.model).train()     # the trainer computes it in train mode
    ids = micro_batches(DataOrder(len(data.examples), cfg.seed).step_indices(0, cfg.global_batch_size),
                        cfg.micro_batch_size, 0, 1)[1]                  # the second micro-batch of step 0
    ex = [data.examples[i] for i in ids]
    b = collate_packed(ex, ids) if packed else collate(ex, ids, tok.pad_token_id)
    with torch.no_grad():
        lp = batch_logprobs(model, b)
    for i, (row, start, n) in zip(ids, b.spans()):
        torch.testing.assert_close(cached[i], lp[row, start : start + n - 1], rtol=0, atol=0)     # bitwise: step 0 is w = 1


@pytest.mark.parametrize("weighting", ["sft", "iw-sft"])
def test_packing_trains_like_padding(tiny_dir, tmp_path, weighting):
    """Packed rows (no padding) see the same examples with the same attention: same parameters. Both
    layouts: weights exactly 1 at step 0 and a reference cache of their own layout (packed first: a
    cache key blind to the layout would hand its values to the padded run, whose step 0 then fails)."""
    packed = train(_cfg(tiny_dir, tmp_path, "packed", weighting=weighting, max_steps=4, packing=True))
    padded = train(_cfg(tiny_dir, tmp_path, "padded", weighting=weighting, max_steps=4))
    m = _metrics(tmp_path / "packed")
    for layout in ("padded", "packed"):
        first = _metrics(tmp_path / layout)[0]
        assert first["w_mean"] == first["w_max"] == 1.0 and first["logw_p05"] == first["logw_p95"] == 0.0, layout
    assert [r["tokens"] for r in m] == [r["tokens"] for r in _metrics(tmp_path / "padded")]
    if weighting != "sft":
        for layout in ("padded", "packed"):
            _assert_reference_cache_layout(_cfg(tiny_dir, tmp_path, layout, weighting=weighting, max_steps=4,
                                                packing=layout == "packed"), packed=layout == "packed")
    a, b = _params(padded), _params(packed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5)


def test_bf16_mixed_precision_on_cpu(tiny_dir, tmp_path):
    """The GPU precision path (accelerate bf16: float32 master weights, bf16 autocast, the fp32 output
    cast removed) in one CPU process: weights exactly 1 at step 0, and the same training as float32
    up to bf16 rounding."""
    fp32 = train(_cfg(tiny_dir, tmp_path, "fp32", weighting="iw-sft", max_steps=4))
    with pytest.raises(UserError, match="its own process"):    # accelerate: one precision per process
        train(_cfg(tiny_dir, tmp_path, "bf16", weighting="iw-sft", max_steps=4, dtype="bf16-mixed"))
    args = [f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96", "global_batch_size=4",
            "micro_batch_size=2", "learning_rate=3e-3", "warmup_ratio=0.0", "max_steps=4", "weighting=iw-sft",
            f"output_dir={tmp_path / 'bf16'}", f"ref_cache_dir={tmp_path / 'ref'}", "seed=1", "dtype=bf16-mixed"]
    r = _run_cli(["train", "-", *args])
    assert r.returncode == 0, r.stderr[-2000:]
    bf16 = tmp_path / "bf16" / "final"
    m = _metrics(tmp_path / "bf16")
    assert m[0]["w_mean"] == 1.0 and m[0]["logw_p95"] == 0.0
    loss16, loss32 = [r["loss"] for r in m], [r["loss"] for r in _metrics(tmp_path / "fp32")]
    assert loss16 != loss32                                                # autocast really was on
    assert loss16 == pytest.approx(loss32, rel=2e-2)                       # ... and the same training
    a, b = _params(fp32), _params(bf16)
    assert all(t.dtype == torch.float32 for t in b.values())
    _assert_same_update(_params(tiny_dir / "model"), a, b, rel=0.05)


def _assert_same_update(init, ref, got, rel):
    """`got` trained like `ref`: both moved from `init` by about the whole update, and they differ by
    under `rel` of it (an absolute tolerance would pass a run that never trained: updates are ~1e-2)."""
    flat = lambda d: torch.cat([d[k].float().flatten() for k in sorted(init)])  # noqa: E731
    i, r, g = flat(init), flat(ref), flat(got)
    update = float((r - i).norm())

    assert update > 0 and float((g - i).norm()) > 0.5 * update, "the run did not train"
    assert float((g - r).norm()) < rel * update, (float((g - r).norm()), update)


def test_run_from_an_older_harness_is_still_recognised(tiny_dir, tmp_path):
    """A run whose config.yaml predates a recipe key (it used the default) is the same run."""
    import yaml

    cfg = _cfg(tiny_dir, tmp_path, max_steps=1)
    final = train(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for key in ("packing", "fused_lm_head"):
        saved.pop(key)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(_cfg(tiny_dir, tmp_path, max_steps=1)) == final
    with pytest.raises(UserError, match="different settings"):
        train(_cfg(tiny_dir, tmp_path, max_steps=1, packing=True))


def test_fused_lm_head_trains_like_plain(tiny_dir, tmp_path):
    plain = train(_cfg(tiny_dir, tmp_path, "plain", weighting="iw-sft", max_steps=3))
    fused = train(_cfg(tiny_dir, tmp_path, "fused", weighting="iw-sft", max_steps=3, fused_lm_head=True, packing=True))
    assert _metrics(tmp_path / "fused")[0]["w_mean"] == 1.0
    a, b = _params(plain), _params(fused)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5)


def test_packed_logprobs_equal_padded(tiny_dir):
    from harness.training.batching import batch_logprobs, collate, collate_packed
    from harness.core.models import load_tokenizer
    from harness.training.config import load_recipe
    from harness.training.data import load_rows, prepare
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(tiny_dir / "model"))
    cfg = load_recipe(None, [f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96"])
    data = prepare(load_rows(cfg.dataset), tok, cfg)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model").eval()
    ids = [0, 5, 7]
    ex = [data.examples[i] for i in ids]
    with torch.no_grad():
        pad = collate(ex, ids, tok.pad_token_id)
        pk = collate_packed(ex, ids)
        lp_pad, lp_pk = batch_logprobs(model, pad), batch_logprobs(model, pk)
    assert pk.input_ids.shape == (1, sum(len(e.input_ids) for e in ex)) and int(pk.loss_mask.sum()) == int(pad.loss_mask.sum())
    for (r1, s1, n1), (r2, s2, n2) in zip(pad.spans(), pk.spans()):
        assert n1 == n2
        torch.testing.assert_close(lp_pad[r1, s1 : s1 + n1 - 1], lp_pk[r2, s2 : s2 + n2 - 1], rtol=0, atol=1e-5)
    # every loss-carrying target lies inside its own example
    assert all(int(pk.seq_index[0, t]) == int(pk.seq_index[0, t - 1]) or not pk.loss_mask[0, t]
               for t in range(1, pk.loss_mask.shape[1]))


def test_lagged_q_sources_train(tiny_dir, tmp_path):
    """Step 0 is the same update for every q source (w = 1), so step 1 sees the same policy theta_1:
    lag 0 weighs with q = theta_1; periodic (q_every=2) still has q = theta_0 = ref, so w = 1 exactly,
    and after its refresh at step 2 w moves; EMA (decay 0.9) has q = 0.9 theta_0 + 0.1 theta_1, a weight
    between 1 and lag 0's."""
    w = {}
    for q_source in ("lag0", "periodic", "ema"):
        train(_cfg(tiny_dir, tmp_path, q_source, weighting="iw-sft", q_source=q_source, q_every=2, q_ema_decay=0.9,
                   max_steps=3, save_every=1 if q_source == "ema" else None))
        w[q_source] = [r["w_mean"] for r in _metrics(tmp_path / q_source)]
    assert w["lag0"][0] == w["periodic"][0] == w["ema"][0] == 1.0
    assert w["lag0"][1] != 1.0
    assert w["periodic"][1] == 1.0 and w["periodic"][2] != 1.0          # stale until the refresh, then not
    lo, hi = sorted((1.0, w["lag0"][1]))
    assert lo < w["ema"][1] < hi, w
    # A tenth of the way, in parameters (log-probs are not linear in them, so the weights' ratio is not
    # 0.1): the q copy in each checkpoint is 0.9 q_before + 0.1 theta after that step, q_0 = theta_0.
    q_before = _params(tiny_dir / "model")
    for step in (1, 2):
        ckpt = tmp_path / "ema" / "checkpoints" / f"step-{step:06d}"
        theta, q = _params(ckpt), torch.load(ckpt / "trainer_state.pt", weights_only=False)["q_source"]["model"]
        assert q.keys() >= theta.keys() and any(not torch.equal(theta[k], q_before[k]) for k in theta)  # moved
        for k in theta:
            torch.testing.assert_close(q[k], 0.9 * q_before[k] + 0.1 * theta[k], rtol=1e-6, atol=1e-7)
        q_before = {k: q[k] for k in theta}


@pytest.mark.parametrize("q_source", ["ema", "periodic"])
def test_resume_restores_the_q_copy(tiny_dir, tmp_path, q_source):
    """A run resumed from its step-3 checkpoint continues with q as it was there (EMA's running average;
    periodic's copy of theta_2, refreshed every 2 steps), not the base model nor the resumed policy:
    steps 4-5 weigh and update exactly as the uninterrupted run's."""
    cfg = _cfg(tiny_dir, tmp_path, weighting="iw-sft", q_source=q_source, q_every=2, q_ema_decay=0.5, max_steps=5,
               save_every=3)
    full = _params(train(cfg))
    before = _metrics(tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3 and state["q_source"]["model"]          # the q copy is in the checkpoint
    shutil.rmtree(tmp_path / "run" / "final")
    resumed = _params(train(cfg))
    after = _metrics(tmp_path / "run")
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5]
    assert all(r["w_mean"] != 1.0 for r in before[3:])                 # q differs from the policy there
    for a, b in zip(before[3:], after[3:]):                            # the resumed steps
        assert (b["w_mean"], b["w_max"], b["loss"]) == pytest.approx((a["w_mean"], a["w_max"], a["loss"]), rel=1e-6, abs=0)
    for k in full:
        torch.testing.assert_close(full[k], resumed[k], rtol=0, atol=1e-6)


def test_cached_reference_equals_on_the_fly(tiny_dir, tmp_path):
    from harness.training.batching import batch_logprobs, collate
    from harness.core.models import load_model, load_tokenizer
    from harness.training.refcache import load_cache
    from harness.training.data import load_rows, prepare

    cfg = _cfg(tiny_dir, tmp_path, weighting="iw-sft", max_steps=1)
    train(cfg)
    (cache_file,) = (tmp_path / "ref").glob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(cache_file), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    cached = load_cache(cache_file, meta)
    tok = load_tokenizer(cfg.model)
    data = prepare(load_rows(cfg.dataset), tok, cfg)
    model = load_model(cfg.model)
    ids = [0, 5, 7]
    with torch.no_grad():
        b = collate([data.examples[i] for i in ids], ids, tok.pad_token_id)
        fresh = batch_logprobs(model, b)
    assert len(cached) == len(data.examples)
    for row, i in enumerate(ids):
        torch.testing.assert_close(cached[i], fresh[row, : b.lengths[row] - 1], rtol=0, atol=1e-5)


def _trained_steps(stdout: str) -> list[int]:
    """The steps a run's log lines report ("step     3/6  loss ..."), 1-based."""
    import re

    return [int(m) for m in re.findall(r"^step +(\d+)/\d+ +loss", stdout, flags=re.M)]


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, **kw)


def test_kill_and_resume_matches_uninterrupted(tiny_dir, tmp_path):
    common = [f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96", "global_batch_size=4",
              "micro_batch_size=2", "learning_rate=3e-3", "max_steps=6", "save_every=2", "weighting=iw-sft",
              f"ref_cache_dir={tmp_path / 'ref'}", "seed=3"]
    full = _run_cli(["train", "-", *common, f"output_dir={tmp_path / 'full'}"])
    assert full.returncode == 0, full.stderr[-2000:]
    # Start again elsewhere, kill it once the first checkpoint exists, then re-run the same command.
    cmd = [sys.executable, "-m", "harness", "train", "-", *common, f"output_dir={tmp_path / 'killed'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "step-000002" / "trainer_state.pt").exists():
        assert time.time() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists()
    from harness.training.trainer import latest_checkpoint

    at = int(latest_checkpoint(tmp_path / "killed").name.split("-")[1])        # 2, or 4 on a slow poll
    resumed = _run_cli(cmd[3:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"(step {at}/6)" in resumed.stdout                                  # resumed there, not from 0
    assert _trained_steps(resumed.stdout) == list(range(at + 1, 7)), resumed.stdout
    a, b = _params(tmp_path / "full" / "final"), _params(tmp_path / "killed" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = [r["step"] for r in _metrics(tmp_path / "killed")]
    assert steps == sorted(set(steps)) == list(range(1, 7))


def test_ctrl_c_before_the_first_checkpoint_saves_one_and_keeps_the_log(tiny_dir, tmp_path, monkeypatch, capsys):
    """SIGINT at step 2 of 4 with save_every=10: a checkpoint of the 2 steps is saved and the re-run resumes
    there; a run that restarts from 0 moves the old rows to metrics.superseded.jsonl, never erasing them."""
    import signal

    from harness.training.trainer import Trainer

    args = ["train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96",
            "global_batch_size=4", "micro_batch_size=2", "learning_rate=3e-3", "max_steps=4", "save_every=10",
            "weighting=iw-sft", f"ref_cache_dir={tmp_path / 'ref'}", "seed=3", f"output_dir={tmp_path / 'run'}"]
    real = Trainer._optimizer_step

    def step(self, run, i, *rest):
        out = real(self, run, i, *rest)
        if i == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "_optimizer_step", step)
    assert main(args) == 130
    out = capsys.readouterr()
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.pt").is_file(), out.out
    assert "2/4 steps saved" in out.out and "re-run the same command to resume" in out.err
    assert [r["step"] for r in _metrics(tmp_path / "run")] == [1, 2]
    monkeypatch.setattr(Trainer, "_optimizer_step", real)
    shutil.rmtree(tmp_path / "run" / "checkpoints")             # as if no checkpoint: training restarts at 0
    assert main(args) == 0
    assert [r["step"] for r in _metrics(tmp_path / "run")] == [1, 2, 3, 4]
    old = [json.loads(l) for l in (tmp_path / "run" / "metrics.superseded.jsonl").read_text().splitlines()]
    assert [r["step"] for r in old] == [1, 2]


AMP_SCRIPT = """
import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM
from harness.training.trainer import drop_fp32_output_wrapper
acc = Accelerator(mixed_precision="bf16", cpu=True)
m = acc.prepare(LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=4, num_key_value_heads=2)))
ids = torch.randint(0, 300, (1, 8))
with acc.autocast():
    before = m(input_ids=ids).logits
removed = drop_fp32_output_wrapper(acc.unwrap_model(m))
with acc.autocast():
    after = m(input_ids=ids).logits
print(before.dtype, removed, after.dtype, torch.equal(before, after.float()))
"""


def test_mixed_precision_keeps_logits_in_bf16():
    """accelerate's bf16 patch casts the model's outputs to float32 ([tokens x vocab] at 2x the memory);
    the trainer removes it (own process: accelerate's state is one per process)."""
    r = subprocess.run([sys.executable, "-c", AMP_SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["torch.float32", "True", "torch.bfloat16", "True"]


def _torchrun(args, nproc=2, env=None, script=None):
    """`python -m harness ARGS` (or `script ARGS`) on nproc processes over gloo."""
    env = env or {**os.environ, "OMP_NUM_THREADS": "1"}   # 2 ranks x 1 thread on 2 cores: no spin-wait collapse
    entry = [str(script)] if script else ["-m", "harness"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *entry, *args], capture_output=True, text=True, env=env, timeout=600)


def _multi_process_args(tiny_dir, tmp_path):
    """The run the multi-process tests compare against one process (micro-batch 1: 4 micro-batches a step)."""
    return [f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96", "global_batch_size=4",
            "micro_batch_size=1", "learning_rate=3e-3", "max_steps=6", "save_every=3", "weighting=iw-sft",
            f"ref_cache_dir={tmp_path / 'ref'}", "seed=5", "peak_tflops=1"]


@pytest.fixture(scope="module")
def one_process_run(tiny_dir, tmp_path_factory):
    """That run in one process, trained once for the DDP and the FSDP2 test (both compare their weights to it)."""
    tmp = tmp_path_factory.mktemp("one-process")
    one = _run_cli(["train", "-", *_multi_process_args(tiny_dir, tmp), f"output_dir={tmp / 'one'}"],
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    return tmp / "one"


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tiny_dir, tmp_path, one_process_run):
    """The multi-process path (DDP over gloo here; FSDP on GPUs shares every line but the wrapping):
    rank-split micro-batches, gathered reference cache and weights, sharded optimizer checkpoints."""
    common = _multi_process_args(tiny_dir, tmp_path)    # its own reference cache: gathered over 2 ranks
    two = _torchrun(["train", "-", *common, f"output_dir={tmp_path / 'two'}"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "1 x 2 accum x 2 proc" in two.stdout and two.stdout.count("saved") == 1   # rank 1 prints nothing
    assert _metrics(tmp_path / "two")[0]["w_mean"] == 1.0
    a, b = _params(one_process_run / "final"), _params(tmp_path / "two" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    _assert_same_logs(_metrics(one_process_run), _metrics(tmp_path / "two"))
    n_params = sum(v.numel() for v in a.values())
    for run, nproc in ((one_process_run, 1), (tmp_path / "two", 2)):   # tokens/s is summed over ranks, MFU is per accelerator
        for r in _metrics(run):
            per_token = r["mfu"] * 1e12 * nproc / r["tokens_per_s"]   # 6N + attention (harness/core/flops.py)
            assert 6 * n_params < per_token < 6.06 * n_params
    shards = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-000003" / "optimizer").iterdir())
    assert ".metadata" in shards and sum(s.endswith(".distcp") for s in shards) == 2
    # Resume under two processes from the step-3 checkpoint: the same final weights.
    first = b
    shutil.rmtree(tmp_path / "two" / "final")
    again = _torchrun(["train", "-", *common, f"output_dir={tmp_path / 'two'}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(step 3/6)" in again.stdout and _trained_steps(again.stdout) == [4, 5, 6]
    b = _params(tmp_path / "two" / "final")
    for k in first:
        torch.testing.assert_close(first[k], b[k], rtol=0, atol=1e-6)
    assert [r["step"] for r in _metrics(tmp_path / "two")] == list(range(1, 7))
    # ... and in ONE process from the same 2-process checkpoint (the optimizer shards are re-split).
    shutil.rmtree(tmp_path / "two" / "final")
    single = _run_cli(["train", "-", *common, f"output_dir={tmp_path / 'two'}"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-2000:]
    assert "(step 3/6)" in single.stdout and _trained_steps(single.stdout) == [4, 5, 6]
    c = _params(tmp_path / "two" / "final")
    for k in first:
        torch.testing.assert_close(first[k], c[k], rtol=0, atol=1e-6)


def _assert_same_logs(one: list[dict], many: list[dict]) -> None:
    """A multi-process run logs the whole step's numbers (gathered or reduced over ranks), equal to
    one process's: the weighted loss, the unweighted NLL per token, the weights, the clip fraction."""
    assert [r["step"] for r in many] == [r["step"] for r in one]
    for a, b in zip(one, many):
        assert b["tokens"] == a["tokens"]
        for key in ("loss", "nll", "w_mean", "w_max", "ess", "w_clip_frac"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key, a[key], b[key])


def _accelerate_env(config: Path, nproc: int) -> dict:
    """The environment `accelerate launch --config_file CONFIG` gives its processes (FSDP_* etc.)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", str(nproc),
                                               "--mixed_precision", "no", "-m", "harness"])
    args, _, _ = _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}


def _assert_fsdp_sharded(stdout: str) -> None:
    """Both ranks prepared the model under FSDP with every parameter a DTensor shard (what
    tests/fsdp_cpu_launch.py reports), not plain data parallel."""
    import re

    got = re.findall(r"fsdp-launch: rank (\d) distributed_type=(\w+) dtensor_params=(\d+)/(\d+)", stdout)
    assert sorted(r for r, *_ in got) == ["0", "1"], stdout[-2000:]
    for _, kind, sharded, total in got:
        assert kind == "FSDP" and int(total) > 0 and sharded == total, got


@pytest.mark.slow
def test_fsdp2_matches_one_process_and_resumes(tiny_dir, tmp_path, one_process_run):
    """The shipped FSDP config, on 2 CPU processes: same weights as one process, sharded optimizer
    checkpoints, and a resumed run that ends bitwise where the uninterrupted one did."""
    config = Path(__file__).parents[1] / "recipes" / "table1" / "accelerate_fsdp_8xh100.yaml"
    env = {**os.environ, **_accelerate_env(config, 2), "OMP_NUM_THREADS": "1", "COLUMNS": "200",
           # CPU-only differences: the tiny model is a Llama, and sync_module_states only picks the
           # accelerator that meta-initialised shards are moved to (there is none here)
           "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_SYNC_MODULE_STATES": "false"}
    assert env["FSDP_VERSION"] == "2" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    common = _multi_process_args(tiny_dir, tmp_path)    # its own reference cache, computed under FSDP2

    def fsdp(*overrides):
        return _torchrun(["train", "-", *common, *overrides], env=env, script=Path(__file__).parent / "fsdp_cpu_launch.py")

    first = fsdp(f"output_dir={tmp_path / 'fsdp'}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 x 2 accum x 2 proc" in first.stdout and _metrics(tmp_path / "fsdp")[0]["w_mean"] == 1.0
    _assert_fsdp_sharded(first.stdout)
    # The shipped config offloads (its header: 93 GiB per GPU without): FSDP2's CPUOffloadPolicy, unpinned here.
    assert env["FSDP_OFFLOAD_PARAMS"] == "true" and "FSDP CPU offload" in " ".join(first.stdout.split())
    a, b = _params(one_process_run / "final"), _params(tmp_path / "fsdp" / "final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    shards = [p.name for p in (tmp_path / "fsdp" / "checkpoints" / "step-000003" / "optimizer").iterdir()]
    assert sum(s.endswith(".distcp") for s in shards) == 2
    shutil.rmtree(tmp_path / "fsdp" / "final")
    again = fsdp(f"output_dir={tmp_path / 'fsdp'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(step 3/6)" in again.stdout and _trained_steps(again.stdout) == [4, 5, 6]
    c = _params(tmp_path / "fsdp" / "final")
    for k in b:
        torch.testing.assert_close(b[k], c[k], rtol=0, atol=0)
    # The fused LM head and packing under FSDP2: the head's weight is read after the root's forward.
    r = fsdp("fused_lm_head=true", "packing=true", "save_every=null", f"output_dir={tmp_path / 'fused'}")
    assert r.returncode == 0, r.stderr[-3000:]
    d = _params(tmp_path / "fused" / "final")
    for k in a:
        torch.testing.assert_close(a[k], d[k], rtol=0, atol=2e-6)
    # Compiled decoder layers under FSDP2 (FSDP2's hooks stay outside the compiled graphs).
    r = fsdp("compile_layers=true", "save_every=null", f"output_dir={tmp_path / 'compiled'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _metrics(tmp_path / "compiled")[0]["w_mean"] == 1.0
    g = _params(tmp_path / "compiled" / "final")
    for k in a:
        torch.testing.assert_close(a[k], g[k], rtol=0, atol=1e-5)
    # bf16 mixed precision (what GPUs run: FSDP2's bf16 MixedPrecisionPolicy + autocast), on CPU.
    r = fsdp("dtype=bf16-mixed", "save_every=null", f"output_dir={tmp_path / 'bf16'}")
    assert r.returncode == 0, r.stderr[-3000:]
    m = _metrics(tmp_path / "bf16")
    assert m[0]["w_mean"] == 1.0 and m[0]["logw_p95"] == 0.0 and m[-1]["w_mean"] != 1.0
    e = _params(tmp_path / "bf16" / "final")
    assert all(t.dtype == torch.float32 for t in e.values())            # float32 master weights
    _assert_same_update(_params(tiny_dir / "model"), a, e, rel=0.05)   # bf16 rounding, same training
    _assert_fsdp_sharded(r.stdout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_the_shipped_multi_node_config(tiny_dir, tmp_path):
    """recipes/table1/accelerate_fsdp_2x8xh100.yaml through `accelerate launch` itself, as each node runs
    it: 2 "nodes" of 1 CPU process on this machine (machine_rank 0 and 1, main_process_ip 127.0.0.1,
    a main_process_port), FSDP2 without offload over gloo. Same weights as one process; resumed from a
    checkpoint, the same end. What cannot run here: two hosts, NCCL, a filesystem that is not shared.
    Off the default weighting: self_normalize (the step's mean weight, gathered over ranks) and an upper
    clip at 1.4 (at step 4, 3 of the 4 weights sit at it): the logged loss, NLL and clip fraction are the
    whole step's, equal to one process's."""
    config = Path(__file__).parents[1] / "recipes" / "table1" / "accelerate_fsdp_2x8xh100.yaml"
    common = [f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96", "global_batch_size=4",
              "micro_batch_size=1", "learning_rate=3e-3", "max_steps=4", "save_every=2", "weighting=iw-sft",
              "weighting_overrides={self_normalize: true, w_clip: [0, 1.4]}",
              f"ref_cache_dir={tmp_path / 'ref'}", "seed=5", f"output_dir={tmp_path / 'nodes'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

    def two_nodes():
        port = _free_port()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
             "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
             "--main_process_port", str(port), "--mixed_precision", "no",
             # CPU-only differences, as in the FSDP2 test: a Llama tiny model, no accelerator to sync onto
             "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_sync_module_states", "false",
             str(Path(__file__).parent / "fsdp_cpu_launch.py"), "train", "-", *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        return outs[0][0]

    one = _run_cli(["train", "-", *common[:-1], f"output_dir={tmp_path / 'one'}"], env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    out = two_nodes()
    assert "1 x 2 accum x 2 proc" in out and "offload" not in out
    assert _metrics(tmp_path / "nodes")[0]["w_mean"] == 1.0
    a, b = _params(tmp_path / "one" / "final"), _params(tmp_path / "nodes" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    _assert_same_logs(_metrics(tmp_path / "one"), _metrics(tmp_path / "nodes"))
    assert 0 < _metrics(tmp_path / "one")[-1]["w_clip_frac"] < 1       # some weights at the clip, not all
    assert sum(s.name.endswith(".distcp") for s in (tmp_path / "nodes" / "checkpoints" / "step-000002" / "optimizer").iterdir()) == 2
    shutil.rmtree(tmp_path / "nodes" / "final")
    out = two_nodes()
    assert "resuming" in out and "(step 2/4)" in out
    c = _params(tmp_path / "nodes" / "final")
    for k in b:
        torch.testing.assert_close(b[k], c[k], rtol=0, atol=0)


def test_every_shipped_recipe_validates():
    recipes = sorted(p for p in Path(__file__).parents[1].joinpath("recipes").rglob("*.yaml") if not p.name.startswith("accelerate"))
    from harness.training.objective import preset

    assert len(recipes) >= 6
    row_preset = {"s1.1-sft": "sft", "sft-matched": "sft", "iw-sft": "iw-sft", "iw-sft-per-step": "per-step",   # README: Table 1's rows
                  "iw-sft-lora": "iw-sft",                                                                   # the LoRA example
                  "sft": "sft"}                                                                              # the evidence preset's SFT arm
    tiny = {}
    for r in recipes:
        cfg = load_recipe(r)
        assert cfg.weight_spec() == preset(row_preset[r.stem]), r
        text = r.read_text()
        assert "iwsft train" in text or "accelerate launch" in text, f"{r} carries no launch command"
        if r.parent.name == "tiny":
            tiny[r.stem] = cfg.to_dict()
    # iw-sft, per-step and the step-matched control differ only in weighting and output_dir: their
    # comparison is about the objective alone; s1.1-sft adds the paper's s1.1 batch (16, half the steps).
    assert len(tiny) == 5
    lora = tiny.pop("iw-sft-lora")      # iw-sft's data and objective; LoRA and its learning rate
    assert {k for k in lora if str(lora[k]) != str(tiny["iw-sft"][k])} - {"save_every"} == {
        "lora_rank", "lora_alpha", "lora_merge_on_save", "learning_rate", "output_dir",
        "warmup_start"}                  # a demo: its weights move from step 1 (the Table 1 rows keep s1's zero)
    def differ(names):   # save_every aside: the step curve's recipes save more often, which trains the same
        return {k for k in tiny[names[0]] if len({str(tiny[n][k]) for n in names}) > 1} - {"save_every"}
    assert differ(["iw-sft", "iw-sft-per-step", "sft-matched"]) == {"weighting", "output_dir"}
    assert differ(["sft-matched", "s1.1-sft"]) == {"global_batch_size", "output_dir"}


def test_tiny_recipes_state_their_true_step_count():
    """The learning_rate comment of each tiny recipe gives the steps the recipe really runs (rows x epochs
    / global batch), not a stale count."""
    import re

    from harness.training.data import load_rows
    from harness.training.trainer import total_steps

    for r in sorted(Path(__file__).parents[1].joinpath("recipes", "tiny").glob("*.yaml")):
        said = re.search(r"^learning_rate:.*# .*?(\d+) steps instead of 32B and (\d+)", r.read_text(), re.M)
        if said is None:
            continue                       # the LoRA example's comment compares learning rates only
        cfg = load_recipe(r)
        assert int(said.group(1)) == total_steps(cfg, len(load_rows(cfg.dataset))), r
        assert int(said.group(2)) == (313 if cfg.global_batch_size == 16 else 625), r     # recipes/table1's


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["learning_rat=1e-5"], "unknown recipe key 'learning_rat'.*did you mean 'learning_rate'"),
        (["question_column=prompt"], "has no column"),
        (["block_size=8"], "block_size 8 is shorter than the prompt"),
        (["weighting=iw_sft"], "weighting 'iw_sft' is not one of"),
        (["global_batch_size=3"], "not a multiple of micro_batch_size"),
    ],
)
def test_bad_input_exit_2_one_line(tiny_dir, tmp_path, overrides, message):
    import re

    out = tmp_path / "bad"
    r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}",
                  "micro_batch_size=2", f"output_dir={out}", *overrides])
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and re.search(message, r.stderr), r.stderr
    assert not (out / "config.yaml").exists() and not (out / "final").exists()


def test_empty_dataset_and_unwritable_dir(tiny_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={empty}", f"output_dir={tmp_path / 'o'}"])
    assert r.returncode == 2 and "is empty" in r.stderr
    assert not (tmp_path / "o").exists()          # nothing half-written, not even an empty folder
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", f"output_dir={blocker / 'x'}"])
    assert r.returncode == 2 and "is a file, not a folder; choose another output_dir" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n{not json\n')
    r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={bad}", f"output_dir={tmp_path / 'o2'}"])
    assert r.returncode == 2 and "bad.jsonl:2: malformed JSON" in r.stderr


def test_reference_cache_from_another_model_is_refused(tiny_dir, tmp_path):
    from harness.core.models import load_tokenizer
    from tiny_models import tiny_random_model

    other = tmp_path / "other"
    tok = load_tokenizer(str(tiny_dir / "model"))
    tiny_random_model(tok, hidden=32, layers=2, seed=9).save_pretrained(other)
    tok.save_pretrained(other)
    train(_cfg(tiny_dir, tmp_path, "a", weighting="iw-sft", max_steps=1))
    train(_cfg(tiny_dir, tmp_path, "b", weighting="iw-sft", max_steps=1, model=str(other)))
    files = sorted((tmp_path / "ref").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2
    files[0].replace(files[1])      # model b's cache slot now holds model a's log-probs
    r = _run_cli(["train", "-", f"model={other}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96", "global_batch_size=4",
                  "micro_batch_size=2", "max_steps=1", "weighting=iw-sft", "seed=1", "warmup_ratio=0.0", "learning_rate=3e-3",
                  f"ref_cache_dir={tmp_path / 'ref'}", f"output_dir={tmp_path / 'c'}"])
    assert r.returncode == 2 and "computed for another reference model" in r.stderr, r.stderr[-1500:]


def test_quality_oversampling_counts(tiny_dir, tmp_path):
    from harness.training.data import quality_oversample

    rows = [{"score": s} for s in range(100)]
    idx = quality_oversample(rows, "score", [90, 95, 98])
    counts = {i: idx.count(i) for i in set(idx)}
    assert counts[99] == 3 and counts[96] == 2 and counts[91] == 1 and 50 not in counts


def test_train_cli_check_and_help_keys(capsys):
    assert main(["train", "--help-keys"]) == 0
    assert "block_size" in capsys.readouterr().out


@pytest.mark.slow
def test_compiled_layers_train_like_eager(tiny_dir, tmp_path):
    """compile_layers: the reference cache goes through the compiled training graph, so step-0
    weights are exactly 1; training matches eager up to float rounding; checkpoints keep their names."""
    eager = train(_cfg(tiny_dir, tmp_path, "eager", weighting="iw-sft", max_steps=4))
    comp = train(_cfg(tiny_dir, tmp_path, "comp", weighting="iw-sft", max_steps=4, compile_layers=True, save_every=2))
    m = _metrics(tmp_path / "comp")
    assert m[0]["w_mean"] == 1.0 and m[0]["logw_p05"] == m[0]["logw_p95"] == 0.0 and m[-1]["w_mean"] != 1.0
    a, b = _params(eager), _params(comp)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}",
                  "weighting=iw-sft", "compile_layers=true", "q_source=periodic", f"output_dir={tmp_path / 'bad'}"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "compile_layers" in r.stderr and "q_source" in r.stderr, r.stderr


def test_second_trainer_on_one_output_dir_is_refused(tiny_dir, tmp_path):
    """Two trainers writing one run folder would interleave checkpoints: the second is refused."""
    from harness.core.io import dir_lock

    (tmp_path / "run").mkdir()
    with dir_lock(tmp_path / "run", "held"):
        r = _run_cli(["train", "-", f"model={tiny_dir / 'model'}", f"dataset={tiny_dir / 'data.jsonl'}", "block_size=96",
                      "global_batch_size=4", "micro_batch_size=2", "max_steps=1", f"output_dir={tmp_path / 'run'}",
                      f"ref_cache_dir={tmp_path / 'ref'}"])
    assert r.returncode == 2 and "another training run is writing to" in r.stderr, r.stderr[-500:]


def test_one_numbering_one_unit_and_start_warnings(tiny_dir, tmp_path):
    """console `step 1/N` = metrics.jsonl "step": 1 = checkpoints/step-000001; ess in one unit; a
    1-step run under warm-up (lr 0: the base weights saved) and a batch larger than the data say so;
    weights and reference caches are as readable as the run's other files."""
    import re

    from rich.console import Console

    old = os.umask(0o022)
    try:
        con = Console(record=True, width=250)
        train(_cfg(tiny_dir, tmp_path, "num", weighting="iw-sft", max_steps=2, save_every=1, keep_checkpoints=5), con)
        text = con.export_text()
        rows = _metrics(tmp_path / "num")
        assert [r["step"] for r in rows] == [1, 2]
        assert (tmp_path / "num" / "checkpoints" / "step-000001").is_dir()
        lines = [l for l in text.splitlines() if re.match(r"step\s+\d+/2", l)]
        assert [int(re.match(r"step\s+(\d+)/", l).group(1)) for l in lines] == [1, 2]
        for line, row in zip(lines, rows):
            assert f"ess_frac {row['ess_frac']:.2f}" in line
        assert "warning" not in text

        con = Console(record=True, width=400)
        final = train(_cfg(tiny_dir, tmp_path, "one", weighting="iw-sft", max_steps=1, warmup_ratio=0.1,
                           global_batch_size=16), con)
        warnings = [l for l in con.export_text().splitlines() if l.startswith("warning")]
        assert len(warnings) == 2 and "learning rate 0" in warnings[0] and "repeats examples" in warnings[1]
        base = _params(tiny_dir / "model")
        for k, v in _params(final).items():       # what the warning says: the base model, unchanged
            torch.testing.assert_close(v, base[k], rtol=0, atol=0)
        for f in [final / "model.safetensors", *(tmp_path / "ref").glob("*.safetensors")]:
            assert f.stat().st_mode & 0o777 == 0o644, f
    finally:
        os.umask(old)


def test_warmup_start_first_step_moves_the_weights_at_step_one(tiny_dir, tmp_path):
    """The 1-step run the warning above is about, with warmup_start=first-step: lr > 0 at step 1, the
    weights move, and no warning."""
    from rich.console import Console

    con = Console(record=True, width=400)
    final = train(_cfg(tiny_dir, tmp_path, "first", weighting="iw-sft", max_steps=1, warmup_ratio=0.1,
                       warmup_start="first-step"), con)
    assert _metrics(tmp_path / "first")[0]["lr"] == 3e-3 and "warning" not in con.export_text()
    base = _params(tiny_dir / "model")
    assert any(not torch.equal(v, base[k]) for k, v in _params(final).items())


def test_step_lines_fit_80_columns_and_logs_get_one_line_per_step(tiny_dir, tmp_path):
    """An 80-column terminal gets a step line that fits; a log (not a terminal) gets the full line unwrapped;
    both say once why loss and nll differ."""
    import io

    from rich.console import Console

    term = Console(force_terminal=True, width=80, record=True)
    train(_cfg(tiny_dir, tmp_path, "term", max_steps=1), term)
    shown = term.export_text(styles=False)
    log = io.StringIO()
    train(_cfg(tiny_dir, tmp_path, "log", max_steps=1), Console(file=log, width=80))
    for text in (" ".join(shown.split()), log.getvalue()):
        assert "nll = unweighted NLL per response token" in text and "even for SFT" in text, text
    steps = [l for l in shown.splitlines() if l.startswith("step ")]
    assert len(steps) == 1 and len(steps[0]) <= 80 and "loss " in steps[0] and "nll " in steps[0], shown
    steps = [l for l in log.getvalue().splitlines() if "/1 " in l or l.startswith("step ")]
    assert len(steps) == 1 and "ess_frac" in steps[0] and "mem " in steps[0], log.getvalue()   # unwrapped


# -- controls: what the optimizer did, normalisations -----------------------------------------------

@pytest.fixture(scope="module")
def uneven_data(tiny_dir):
    """Responses of very different lengths, so per-micro-batch and per-window normalisers differ."""
    rows = [{"question": f"What is {a} + {b}?", "deepseek_thinking_trajectory": " ".join(["step"] * (1 + 9 * (a % 3) * b)),
             "deepseek_attempt": str(a + b)} for a in range(4) for b in range(2)]
    path = tiny_dir / "uneven.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_self_normalisation_spans_the_optimizer_step(tiny_dir, tmp_path):
    """At micro-batch 1 a per-micro-batch mean turned every weight into 1 (SFT); normalised over the
    whole step, weights differ across sequences and average exactly 1 over the step."""
    train(_cfg(tiny_dir, tmp_path, weighting="iw-sft-paper", micro_batch_size=1, global_batch_size=4, max_steps=4,
               weighting_overrides={"g": "linear", "k": 1.0, "reduce": "mean", "self_normalize": True}))
    m = _metrics(tmp_path / "run")
    assert m[0]["w_max"] == 1.0
    assert all(r["w_mean"] == pytest.approx(1.0, abs=1e-5) for r in m)
    assert max(r["w_max"] for r in m[1:]) > 1.001


@pytest.mark.parametrize("overrides,message", [
    (["weighting=iw-sft-paper"], r"w overflows on long sequences.*w_clip: \[0, 16\].*self_normalize"),
    (["weighting=iw-sft", "weighting_overrides={self_normalize: true}", "global_batch_size=1", "micro_batch_size=1"],
     "global_batch_size 1 every weight becomes 1"),
    (["weighting=per-step", "weighting_overrides={self_normalize: true}"], "self_normalize applies to sequence weights"),
    (["loss_normalization=window"], "loss_normalization 'window' is not one of"),
])
def test_no_op_or_overflowing_weightings_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        load_recipe(None, overrides)


def test_iw_sft_paper_with_its_fix_trains(tiny_dir, tmp_path):
    """Each fix of the paper's summed weights trains: w = 1 at step 0, then the weights move as the fix
    says (under the clip at 16; averaging exactly 1 over each step when self-normalised), and the
    unweighted NLL falls."""
    for name, fix in (("clip", {"w_clip": [0, 16]}), ("norm", {"self_normalize": True})):
        train(_cfg(tiny_dir, tmp_path, name, weighting="iw-sft-paper", weighting_overrides=fix, max_steps=4))
        m = _metrics(tmp_path / name)
        assert len(m) == 4 and all(math.isfinite(r["loss"]) and math.isfinite(r["w_max"]) for r in m)
        assert m[0]["w_mean"] == m[0]["w_max"] == 1.0 and m[0]["logw_p05"] == m[0]["logw_p95"] == 0.0
        assert m[-1]["nll"] < m[0]["nll"] - 0.1, [r["nll"] for r in m]
        assert m[-1]["w_max"] > 1.001                                          # the weights moved
        if name == "clip":
            assert all(r["w_max"] <= 16.0 for r in m) and m[-1]["w_mean"] > 1.001    # fitting the data raises w
        else:
            assert all(r["w_mean"] == pytest.approx(1.0, abs=1e-5) for r in m)


def test_optimizer_effect_is_logged(tiny_dir, tmp_path, capsys):
    """clip coefficient min(1, max_norm / grad_norm), fraction of weights at w_clip, and the update norm,
    which equals ||theta_1 - theta_0|| of the step."""
    cfg = _cfg(tiny_dir, tmp_path, weighting="iw-sft", weighting_overrides={"w_clip": [0, 1.0]}, max_steps=1,
               max_grad_norm=0.5)
    final = train(cfg)
    m = _metrics(tmp_path / "run")[0]
    assert m["clip_coef"] == pytest.approx(min(1.0, 0.5 / m["grad_norm"]), rel=1e-5) and m["clip_coef"] < 1
    assert m["w_clip_frac"] == 1.0        # theta = ref at step 0: log w = 0 sits on the clip at 1
    a, b = _params(final), _params(tiny_dir / "model")
    moved = math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a))
    assert m["update_norm"] == pytest.approx(moved, rel=1e-4)
    out = capsys.readouterr().out
    assert "clip x" in out and "upd " in out and "at clip 1.00" in out


def test_loss_normalization_accumulation_window(tiny_dir, uneven_data, tmp_path):
    """accumulation_window divides by the tokens of the whole step: two micro-batches of 2 then train
    like one micro-batch of 4; per-micro-batch normalisation (the default) does not."""
    common = dict(dataset=str(uneven_data), global_batch_size=4, max_steps=2, block_size=160)
    one = train(_cfg(tiny_dir, tmp_path, "one", micro_batch_size=4, **common))
    win = train(_cfg(tiny_dir, tmp_path, "win", micro_batch_size=2, loss_normalization="accumulation_window", **common))
    mb = train(_cfg(tiny_dir, tmp_path, "mb", micro_batch_size=2, **common))
    a, b, c = _params(one), _params(win), _params(mb)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-4


def test_weight_decay_spares_biases_and_norms_as_transformers_trainer(tiny_model):
    from transformers import Trainer

    from harness.training.optim import adamw, decay_groups

    import copy

    model = copy.deepcopy(tiny_model[0])         # the fixture is shared: this test adds a bias and takes a step
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(model.config.hidden_size))  # a bias too
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, spared = decay_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    no_decay = sorted(names[id(p)] for p in spared["params"])
    assert no_decay == sorted(n for n in names.values() if n.endswith("norm.weight") or n.endswith(".bias"))
    assert "model.norm.weight" in no_decay and "model.layers.0.self_attn.q_proj.bias" in no_decay
    # transformers' own list (which also names the tied lm_head.weight, one tensor with the embedding)
    assert {names[id(p)] for p in decayed["params"]} == set(Trainer.get_decay_parameter_names(None, model)) & set(names.values())
    (every,) = decay_groups(model, 0.1, decay_all=True)
    assert len(every["params"]) == len(names) and every["weight_decay"] == 0.1
    # one step with zero gradients: only decay moves a parameter, so the norms stay put and the rest shrink
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    norm0, w0 = model.model.norm.weight.detach().clone(), model.lm_head.weight.detach().clone()
    adamw(decay_groups(model, 0.1), lr=0.5, fused=False).step()
    assert torch.equal(model.model.norm.weight, norm0)
    torch.testing.assert_close(model.lm_head.weight, w0 * (1 - 0.5 * 0.1))
