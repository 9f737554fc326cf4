"""The training loop: SFT, iw-SFT and per-step iw-SFT on accelerate (one process or FSDP).

Per optimizer step:
    for each micro-batch of this process:
        policy log-probs (float32 log-softmax)          -> harness.training.batching.batch_logprobs
        q log-probs: lag 0 = the same tensor detached, or a no-grad forward of the q copy
        reference log-probs: from the on-disk cache (computed once before step 0)
        loss = iw_objective(...).loss_sum / divisor ; backward   (divisor: recipe loss_normalization)
    (self_normalize: a first no-grad pass computes the step's mean weight before any backward)
    clip grad norm, AdamW step, cosine schedule step, q source update, log, maybe checkpoint
    (logged: loss, weights, clip coefficient, fraction of weights at the clip, update norm)

The data order is a pure function of (seed, step), so resuming from a checkpoint continues with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.training.batching import Batch, batch_logprobs, collate, collate_packed, compile_decoder_layers, enable_checkpointing
from harness.core.errors import UserError
from harness.core.io import (atomic_write_text, check_writable_dir, dir_lock, disk_full_as_user_error, ensure_writable_dir,
                             fsync_dir, fsync_tree, give_plain_mode)
from harness.core.versions import harness_commit
from harness.training.objective import iw_objective, loss_normalizer, sequence_log_weights, weight_diagnostics
from harness.training.qsource import make_q_source
from harness.training.config import TrainConfig, settings_diff
from harness.training import checkpoint
from harness.training import lora
from harness.training import optim
from harness.training import refcache
from harness.training import tracking


class DataOrder:
    """Example indices of step s: an endless stream of per-epoch permutations seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perms = n, seed, {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            # modulo 2**64: the same seed as ever below that, and defined for any seed above it
            g = torch.Generator().manual_seed((self.seed * 100_003 + epoch) % 2**64)
            self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[epoch]

    def step_indices(self, step: int, global_batch: int) -> list[int]:
        return [self._perm(k // self.n)[k % self.n] for k in range(step * global_batch, (step + 1) * global_batch)]


def micro_batches(indices: list[int], micro: int, rank: int, world: int) -> list[list[int]]:
    chunks = [indices[i : i + micro] for i in range(0, len(indices), micro)]
    return chunks[rank::world]


def total_steps(cfg: TrainConfig, n_examples: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_epochs * n_examples / cfg.global_batch_size))


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    return math.ceil(cfg.warmup_ratio * steps)


def start_warnings(cfg: TrainConfig, steps: int, n_examples: int) -> list[str]:
    """One line each for a run that would silently do less than it seems."""
    out = []
    if warmup_steps(cfg, steps) >= 1 and steps == 1 and cfg.warmup_start == "zero":
        out.append(f"warning: step 1 runs at learning rate 0 (linear warm-up from 0, as the reference code; warmup_ratio "
                   f"{cfg.warmup_ratio:g}), so this 1-step run saves the base model's weights unchanged; raise "
                   "max_steps, or set warmup_start=first-step or warmup_ratio=0")
    if n_examples < cfg.global_batch_size:
        out.append(f"warning: {n_examples} training examples for a global batch of {cfg.global_batch_size}: every step "
                   "repeats examples (the batch wraps around the data); lower global_batch_size to avoid it")
    return out


def model_flops_per_token(n_params: int, n_trainable: int) -> float:
    """The dense part of harness.core.flops's convention (n_params: less an untied input embedding). Forward
    2 x all parameters, backward 2 x all (activation gradients) + 2 x the trained ones (weight gradients):
    6N for full fine-tuning, about 4N with LoRA (a frozen base has no weight gradients). Attention FLOPs are
    added per step from the documents' lengths (`_StepStats.len_sq`)."""
    return 4.0 * n_params + 2.0 * n_trainable


def _peak_flops(cfg: TrainConfig, device) -> float | None:
    """The recipe's peak_tflops, else the card's dense bf16 spec (989 TFLOP/s on H100/H200 SXM), else None."""
    from harness.core.flops import spec_peak_tflops

    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if device.type == "cuda":
        tf = spec_peak_tflops(torch.cuda.get_device_name(device))
        return tf * 1e12 if tf else None
    return None


def _peak_mem_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux -> GiB


def drop_fp32_output_wrapper(model) -> bool:
    """Undo accelerate's mixed-precision forward patch (autocast + outputs cast to float32).

    Cast to float32, the [tokens x vocab] logits take 2x their bf16 memory, and their float32 gradient
    as much again (50 GB at 32k tokens x 152k vocab, against 20 GB in bf16): the very buffer that
    `token_logprobs` avoids. Every model call in the trainer runs inside `acc.autocast()`, so the
    autocast half of the patch is redundant. Returns whether a patch was removed."""
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return False
    model.forward = original
    return True


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (their trainer state written), oldest first."""
    root = out / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "trainer_state.pt").is_file()) if root.is_dir() else []


def latest_checkpoint(out: Path) -> Path | None:
    done = checkpoints(out)
    return done[-1] if done else None


def usable_checkpoint(out: Path, say=print) -> Path | None:
    """The newest resumable checkpoint whose files are as saved; each newer one skipped for damage is said,
    with why (older checkpoints holding weights only, resumable_checkpoints, are passed over quietly)."""
    for ckpt in reversed(checkpoints(out)):
        if not checkpoint.resumable(ckpt):
            continue
        why = checkpoint.damage(ckpt)
        if why is None:
            return ckpt
        say(f"skipping checkpoint {ckpt}: {why}; resuming from an earlier one")
    return None


def _saved_settings(out: Path) -> tuple[dict | None, str | None]:
    """The run's settings: config.yaml, or where that is damaged the newest checkpoint's (or final's)
    copy; and a line saying so when config.yaml was damaged."""
    from harness.core.io import load_yaml_text

    try:
        saved = load_yaml_text((out / "config.yaml").read_text(encoding="utf-8"), str(out / "config.yaml"))
        if isinstance(saved, dict):
            return saved, None
    except (UserError, OSError, UnicodeDecodeError):
        pass
    for folder in [*reversed(checkpoints(out)), out / "final"]:
        try:
            settings = json.loads((folder / checkpoint.MARKER).read_text(encoding="utf-8"))["config"]
            return settings, f"{out / 'config.yaml'} is damaged: checked against {folder.name}'s settings and written again"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None, f"{out / 'config.yaml'} is damaged: written again"


def _check_resumable(out: Path, cfg: TrainConfig) -> str | None:
    """A UserError when `out` holds a run with other settings; else a note to print, or None."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return None
    settings, note = _saved_settings(out)
    if settings is None:
        if latest_checkpoint(out) or (out / "final").is_dir():
            raise UserError(f"{saved} is damaged and no checkpoint records this run's settings; delete {out} to "
                            "start over, or use a new output_dir")
        return note          # nothing to resume: config.yaml is rewritten when training starts
    diff = settings_diff(settings, cfg)
    if diff and (latest_checkpoint(out) or (out / "final").is_dir()):
        raise UserError(f"{out} holds a run with different settings ({', '.join(diff[:3])}); "
                        "use a new output_dir, or delete the old run to start over")
    return note


@dataclass
class _RunState:
    """What the training loop carries from set-up to the last step."""
    model: Any
    opt: Any
    sched: Any
    ref: dict
    q_source: Any
    order: DataOrder
    steps: int
    start: int                  # optimizer steps already done (a resumed run)
    n_params: int
    flops_per_token: float      # dense model FLOPs of one trained token (model_flops_per_token), for MFU
    attn_coeff: int             # attention FLOPs of a token per token of its document (harness.core.flops)
    peak_flops: float | None
    metrics_path: Path


@dataclass
class _StepStats:
    """One optimizer step's numbers on this rank, for the log."""
    loss_sum: Any = 0.0         # device tensors (float64) while the step runs: read on logged steps only
    weights: list = field(default_factory=list)
    logw: list = field(default_factory=list)
    n_tok: int = 0
    len_sq: int = 0             # sum of each document's length squared: the attention FLOPs' share
    nll_sum: Any = 0.0          # unweighted: whether the model fits the data, whatever the weights do;
    n_loss_tok: Any = 0         # device tensors while the step runs (no sync per micro-batch)
    n_clip: int = 0
    clip_units: int = 0
    gnorm: Any = 0.0            # a device tensor until logged
    lr: float = 0.0
    update_norm: float | None = None   # computed on logged steps only (a pass over AdamW's states)


class Trainer:
    def __init__(self, cfg: TrainConfig, console=None):
        from accelerate import Accelerator
        from rich.console import Console

        self.cfg = cfg
        self.out = check_writable_dir(Path(cfg.output_dir), "output_dir")   # created once the data and model load
        self._settings_note = _check_resumable(self.out, cfg)
        use_cuda = torch.cuda.is_available()
        from harness.training.attention import check_device

        check_device(cfg.attention, "cuda" if use_cuda else "cpu")   # before anything loads
        mixed = "bf16" if cfg.dtype == "bf16-mixed" or (use_cuda and cfg.dtype == "auto") else "no"
        try:
            self.acc = Accelerator(mixed_precision=mixed, cpu=not use_cuda, **tracking.accelerator_kwargs(cfg, self.out))
        except ValueError as e:   # accelerate keeps one state per process
            if "already been initialized" not in str(e):
                raise
            raise UserError(f"this process already trained with another precision than dtype={cfg.dtype!r} (accelerate "
                            "allows one per process); run each `iwsft train` in its own process") from None
        # One voice: other ranks print nothing (their numbers are gathered into rank 0's lines).
        self.console = console or Console()
        if not self.acc.is_main_process:
            self.console = Console(quiet=True)
        world = self.acc.num_processes
        if cfg.global_batch_size % (cfg.micro_batch_size * world):
            raise UserError(f"global_batch_size {cfg.global_batch_size} is not divisible by micro_batch_size x processes "
                            f"({cfg.micro_batch_size} x {world})")
        self.grad_accum = cfg.global_batch_size // (cfg.micro_batch_size * world)
        if world > 1 and cfg.q_source != "lag0":
            raise UserError(f"q_source={cfg.q_source} keeps an unsharded copy of the model and runs in one process only; "
                            "use q_source=lag0 (the released code's choice) for multi-GPU runs")
        self.spec = cfg.weight_spec()
        if world > 1:
            self._check_shared_dirs()
        if cfg.fused_lm_head and self.acc.distributed_type.name == "FSDP" and not getattr(self.acc, "is_fsdp2", False):
            raise UserError("fused_lm_head reads the output layer after the model's forward, where FSDP1 may have "
                            "re-sharded it; use FSDP2 (fsdp_version: 2, as the shipped config) or fused_lm_head=false")

    def _check_shared_dirs(self) -> None:
        """Collective, before anything loads: every rank must see the folder rank 0 writes checkpoints
        and the reference cache to (on several nodes: a shared filesystem). Rank 0 drops a probe file
        in the nearest existing folder of each; every rank looks for it."""
        import uuid

        from accelerate.utils import broadcast_object_list, gather_object

        acc, token = self.acc, broadcast_object_list([uuid.uuid4().hex])[0]
        folders = {"output_dir": self.out, "ref_cache_dir": Path(self.cfg.ref_cache_dir) if self.cfg.ref_cache_dir
                   else refcache.default_dir()}
        probes = {}
        for key, folder in folders.items():
            folder = folder.absolute()
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            probes[key] = folder / f".iwsft-shared-{token}"
        if acc.is_main_process:
            for probe in probes.values():
                probe.touch()
        acc.wait_for_everyone()
        seen = {key: probe.exists() for key, probe in probes.items()}
        blind = gather_object([(acc.process_index, [k for k, ok in seen.items() if not ok])])
        acc.wait_for_everyone()
        if acc.is_main_process:
            for probe in probes.values():
                probe.unlink(missing_ok=True)
        missing = sorted({k for _, ks in blind for k in ks})
        if missing:
            ranks = sorted(r for r, ks in blind if ks)
            raise UserError(f"ranks {ranks} do not see {' and '.join(f'{k} {folders[k]}' for k in missing)} as rank 0 "
                            "writes it: on several nodes it must be on a filesystem all nodes share (NFS, Lustre); "
                            "set output_dir / ref_cache_dir to such a folder")

    # -- set-up -------------------------------------------------------------------------------------
    def _load(self):
        from harness.core.models import load_model, load_tokenizer, resolve_model
        from harness.training.data import load_rows, prepare

        cfg = self.cfg
        rows = load_rows(cfg.dataset, cfg.dataset_split, getattr(cfg, "_recipe_dir", None))
        self.tokenizer = load_tokenizer(cfg.model)
        self.data = prepare(rows, self.tokenizer, cfg)
        s = self.data.summary()
        self.console.print(f"data: {s['rows']} rows -> {s['examples']} examples, {s['tokens']} tokens, "
                           f"max {s['max_len']}; over block_size {cfg.block_size}: {s['truncated']} "
                           f"({'dropped' if cfg.truncation == 'drop' else 'right-truncated'})")
        dtype = "bfloat16" if cfg.dtype == "bf16" else "float32"
        self.model_name = str(resolve_model(cfg.model).path)
        self.harness_commit = harness_commit()      # the code that trains, recorded in every checkpoint
        from harness.training.attention import HF_IMPLEMENTATION

        model = load_model(cfg.model, dtype=dtype, device=None, attn_implementation=HF_IMPLEMENTATION[cfg.attention])
        model.config.use_cache = False
        if cfg.gradient_checkpointing:
            enable_checkpointing(model)
        if cfg.compile_layers and not compile_decoder_layers(model):
            raise UserError(f"compile_layers: {cfg.model} names no decoder layer class (_no_split_modules); "
                            "set compile_layers=false")
        if cfg.fused_lm_head:
            from harness.training.fused_head import fused_supported

            why = fused_supported(model)
            if why:
                raise UserError(f"fused_lm_head does not apply to {cfg.model}: {why}; set fused_lm_head=false")
        if cfg.lora_rank:
            lora.check_targets(model, cfg)
        model.train()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return model

    def _attention_name(self, model) -> str:
        """The recipe's attention and the implementation the model runs: sdpa (sdpa), cudnn (sdpa, cuDNN kernel
        only), flex (flex_attention)."""
        impl = getattr(getattr(self.acc.unwrap_model(model), "config", None), "_attn_implementation", None) or "?"
        return f"{self.cfg.attention} ({impl}{', cuDNN kernel only' if self.cfg.attention == 'cudnn' else ''})"

    def _batch(self, ids: list[int]) -> Batch:
        examples = [self.data.examples[i] for i in ids]
        b = collate_packed(examples, ids) if self.cfg.packing else collate(examples, ids, self.pad_id)
        return b.to(self.acc.device)

    def _logprobs(self, model, batch: Batch) -> torch.Tensor:
        """Policy, q and reference all go through here: one code path, so weights are 1 at step 0."""
        return batch_logprobs(model, batch, self.cfg.fused_lm_head, self.cfg.fused_head_compile)

    def _ref_for(self, batch: Batch, ref: dict[int, torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
        for i, (row, start, n) in zip(batch.example_ids, batch.spans()):
            out[row, start : start + n - 1] = ref[i]
        return out.to(self.acc.device)

    def _reference_cache(self, model, order: DataOrder) -> dict[int, torch.Tensor]:
        cfg = self.cfg
        meta = {
            "model": self.model_id,
            "data": self.data.fingerprint,
            "block_size": cfg.block_size,
            "layout": [cfg.micro_batch_size, cfg.global_batch_size, self.acc.num_processes, cfg.seed, self.acc.mixed_precision]
                      + (["packed"] if cfg.packing else []) + (["fused-head"] if cfg.fused_lm_head else [])
                      + (["fused-head-compiled"] if cfg.fused_head_compile else [])
                      + (["compiled"] if cfg.compile_layers else []) + (["lora-base"] if cfg.lora_rank else [])
                      + ([f"attention-{cfg.attention}"] if cfg.attention != "sdpa" else []),   # sdpa: the key as before
        }
        path = refcache.cache_path(cfg.ref_cache_dir, meta)
        if path.is_file():
            try:
                ref = refcache.load_cache(path, meta)
                why = refcache.incomplete(ref, self.data.examples)
            except refcache.DamagedCache as e:
                ref, why = None, str(e)
            if not self._any_rank(why is not None):   # all ranks have read it before any rewrites it
                self.console.print(f"reference log-probs: cached {path}")
                return ref
            self.console.print(f"reference cache {path} is damaged ({why}): computing it again", style="yellow",
                               markup=False, highlight=False)
        # Same micro-batches as the first epoch of training, so step 0 sees bitwise-equal values.
        t0 = time.time()
        steps_epoch0 = math.ceil(len(self.data.examples) / cfg.global_batch_size)
        mbs = [mb for step in range(steps_epoch0)
               for mb in micro_batches(order.step_indices(step, cfg.global_batch_size), cfg.micro_batch_size,
                                       self.acc.process_index, self.acc.num_processes)]
        from harness.core.progress import track

        shown = track(mbs, len(mbs), "reference log-probs", self.console, "micro-batches") \
            if self.acc.is_main_process else mbs                # a long pass (30 min under load) is never silent
        batches = (self._batch(mb) for mb in shown)
        # Compiled: inference and training are different graphs, free to fuse (and round) differently;
        # the training graph, its output detached, gives what step 0's policy forward will give.
        no_sync = self.acc.no_sync(model) if cfg.compile_layers else contextlib.nullcontext()   # no backward follows
        with torch.set_grad_enabled(cfg.compile_layers), no_sync, self.acc.autocast():
            # one process, eager: the pass resumes from a partial file (compiled graphs may recompile
            # differently after a restart, and ranks would need to agree: those start the pass again)
            partial = refcache.partial_path(path) if self.acc.num_processes == 1 and not cfg.compile_layers else None
            say = lambda m: self.console.print(m, style="yellow", markup=False, highlight=False)  # noqa: E731
            ref = refcache.collect(batches, lambda b: self._logprobs(model, b), self.acc, path, meta, partial, say=say)
        self.console.print(f"reference log-probs: computed for {len(ref)} examples in {time.time() - t0:.1f}s -> {path}")
        return ref

    # -- checkpoints --------------------------------------------------------------------------------
    def _save(self, model, folder: Path, opt=None, state: dict | None = None) -> None:
        """Collective. Write to a temp folder and rename: a run killed mid-save leaves the previous one intact."""
        acc = self.acc
        tmp = folder.parent / f".{folder.name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        sd = acc.get_state_dict(model)                    # full weights on rank 0 (gathered under FSDP)
        for key in checkpoint.tied_keys(model):           # gathered copies of tied weights: one is enough
            sd.pop(key, None)
        # about what this save writes: weights (+ AdamW's two moments), for the full-disk message
        needed = sum(t.numel() * t.element_size() for t in sd.values()) * (3 if opt is not None else 1)
        try:
            with disk_full_as_user_error(folder.parent, needed or None):
                if opt is not None:
                    checkpoint.save_optimizer(model, opt.optimizer, tmp / "optimizer")   # every rank its shard
                if acc.is_main_process:
                    self._write_folder(model, sd, tmp, state)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)    # a half-written folder frees its space
            raise
        if acc.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            fsync_dir(folder.parent)
        acc.wait_for_everyone()

    def _write_folder(self, model, sd: dict, tmp: Path, state: dict | None) -> None:
        """Rank 0: weights, tokenizer, the marker with every file's size and checksum, the trainer state
        last (a checkpoint is complete when it exists), all fsync'd before the caller renames `tmp`."""
        acc = self.acc
        if self.cfg.lora_rank:   # the adapter (PEFT format), and on request base + adapter merged
            lora.save_adapter(acc.unwrap_model(model), sd, tmp, self.model_name)
            if self.cfg.lora_merge_on_save:
                lora.save_merged(self.model_name, tmp, tmp / "merged", self.tokenizer,
                                 "bfloat16" if self.cfg.dtype == "bf16" else "float32")
        else:
            acc.unwrap_model(model).save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "iwsft_train.json", json.dumps({"config": self.cfg.to_dict(), "data": self.data.summary(),
                                                            "harness_commit": self.harness_commit,
                                                            "files": checkpoint.file_manifest(tmp)}, indent=1))
        give_plain_mode(tmp)            # safetensors writes 0600: readable like the run's other files
        if state is not None:
            torch.save(state, tmp / "trainer_state.pt")   # last: its presence marks a complete checkpoint
        fsync_tree(tmp)

    def _prune(self) -> None:
        """Keep the newest keep_checkpoints (and push_steps); of those, only the newest resumable_checkpoints
        keep their optimizer state."""
        done = checkpoints(self.out)
        for p in done[: -self.cfg.keep_checkpoints]:
            if int(p.name.split("-")[1]) not in self.cfg.push_steps:    # to be pushed when training ends
                shutil.rmtree(p, ignore_errors=True)
        if self.cfg.resumable_checkpoints is not None:
            for p in checkpoints(self.out)[: -self.cfg.resumable_checkpoints]:
                checkpoint.drop_optimizer(p)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> Path:
        from harness.training.attention import attention_context

        with contextlib.ExitStack() as self._held:     # the output folder's lock, for the whole run
            # cudnn: every forward and backward (reference cache, self-normalise pass, q, policy) under SDPA's cuDNN
            # kernel only; the flags are torch's process-wide ones, restored when the run ends
            self._held.enter_context(attention_context(self.cfg.attention))
            return self._run()

    def _run(self) -> Path:
        final = self.out / "final"
        if (final / "iwsft_train.json").is_file():
            why = checkpoint.damage(final, need_state=False) if self.acc.is_main_process else None
            if not self._any_rank(why is not None):
                self.console.print(f"[green]already trained[/]: {final} (delete it to train again)")
                return final
            self.console.print(f"[yellow]{final} is damaged[/] ({why}): rebuilding it from the last checkpoint")
            if self.acc.is_main_process:
                shutil.rmtree(final)
        run = self._setup()
        with _stop_at_step_end(self.acc.num_processes == 1, self.console) as stop:
            for step in range(run.start, run.steps):
                t0 = time.perf_counter()
                logged = step % self.cfg.log_every == 0 or step == run.steps - 1
                stats = self._optimizer_step(run, step, logged)
                if logged:
                    self._log(run, step, stats, time.perf_counter() - t0)
                self._maybe_save(run, step + 1)
                if stop and step + 1 < run.steps:     # Ctrl-C / SIGTERM: keep the steps done, then stop
                    folder = self.out / "checkpoints" / f"step-{step + 1:06d}"
                    if not (folder / "trainer_state.pt").is_file():
                        self._save_resumable(run, step + 1)
                    self.console.print(f"[yellow]stopped[/]: {step + 1}/{run.steps} steps saved in {folder}; "
                                       "re-run the same command to resume")
                    raise KeyboardInterrupt
        self._save(run.model, final)
        self.console.print(f"[green]saved[/] {final}")
        if stop:
            raise KeyboardInterrupt
        return final

    def _any_rank(self, flag: bool) -> bool:
        """Collective: whether `flag` holds on any rank (one answer for all)."""
        if self.acc.num_processes == 1:
            return flag
        from accelerate.utils import gather_object

        return any(gather_object([flag]))

    def _clean_stale_temps(self) -> None:
        """Leftovers of a run killed mid-write: a half-written checkpoint or final folder, temp files of
        atomic writes (never read: a complete write renames its temp file)."""
        stale = [*(self.out / "checkpoints").glob(".step-*.tmp"), *self.out.glob(".*.tmp"),    # .final.tmp too
                 *(self.out / "checkpoints").glob("step-*/.optimizer.dropping")]               # drop_optimizer cut short
        for p in stale:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if stale:
            self.console.print(f"removed {len(stale)} unfinished temp file(s) of an interrupted run: "
                               f"{', '.join(p.name for p in stale[:3])}")

    def _resume(self, model, opt, sched, q_source, steps: int) -> int:
        """Collective. Load the newest checkpoint whose files are as saved (rank 0 checks, every rank
        loads it) and return its step; 0 when there is none."""
        from accelerate.utils import broadcast_object_list

        acc = self.acc
        say = lambda m: self.console.print(m, style="yellow", markup=False, highlight=False)  # noqa: E731
        ckpt = broadcast_object_list([usable_checkpoint(self.out, say) if acc.is_main_process else None])[0]
        if ckpt is None:
            if checkpoints(self.out):
                weights_only = "" if any(checkpoint.resumable(c) for c in checkpoints(self.out)) else \
                    " (the older checkpoints hold weights only: resumable_checkpoints)"
                say(f"no checkpoint is usable{weights_only}: training from the start")
            return 0
        try:
            state = checkpoint.load_state(ckpt / checkpoint.STATE)
            # the optimizer first: a damaged one fails before the model's weights are touched
            checkpoint.load_optimizer(model, opt.optimizer, ckpt / "optimizer")
            load = lora.load_adapter_weights if self.cfg.lora_rank else checkpoint.load_model_weights
            load(model, ckpt, acc.is_main_process, acc.num_processes)
        except (UserError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:     # torch.distributed.checkpoint's CheckpointException is a BaseException
            raise UserError(f"checkpoint {ckpt} does not load ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                            "delete that folder to resume from an earlier checkpoint") from None
        sched.load_state_dict(state["scheduler"])
        q_source.load_state_dict(state["q_source"])
        self.console.print(f"[yellow]resuming[/] from {ckpt} (step {state['step']}/{steps})")
        return state["step"]

    def _trim_metrics(self, path: Path, start: int) -> None:
        """Keep the logged rows up to the step we resume from (later ones move to metrics.superseded.jsonl, never
        erased); a torn line (a write cut by a kill) is dropped."""
        rows, torn = [], 0
        lines = path.read_bytes().split(b"\n") if path.is_file() else []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    raise ValueError
            except (ValueError, UnicodeDecodeError, RecursionError):
                torn += 1
                continue
            rows.append(row)
        if torn:
            self.console.print(f"{path}: dropped {torn} malformed line(s) (a write cut short); the steps after the "
                               "checkpoint are logged again", style="yellow", markup=False, highlight=False)
        later = [r for r in rows if r["step"] > start]
        if later:
            superseded = self.out / "metrics.superseded.jsonl"
            with open(superseded, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in later))
            self.console.print(f"[yellow]{len(later)} metrics rows after step {start} (trained again now) moved to "
                               f"{superseded}[/]")
        if torn or later:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= start))

    # -- set-up: model, optimizer, schedule, reference log-probs, q source, resume point
    def _setup(self) -> "_RunState":
        cfg, acc = self.cfg, self.acc
        from accelerate.utils import broadcast_object_list

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.manual_seed(cfg.seed)
        model = self._load()
        if acc.is_main_process:
            ensure_writable_dir(self.out, "output_dir")
            self._held.enter_context(dir_lock(self.out, f"another training run is writing to {self.out}; wait for it "
                                                        "to end or use another output_dir"))
            self._clean_stale_temps()
            if self._settings_note:
                self.console.print(self._settings_note, style="yellow", markup=False, highlight=False)
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        order = DataOrder(len(self.data.examples), cfg.seed)
        steps = total_steps(cfg, len(self.data.examples))
        # Before sharding: under FSDP the wrapped parameters are per-rank shards (and, with
        # cpu_ram_efficient_loading, only rank 0 holds real weights), so identity and size come from here.
        n_params = sum(p.numel() for p in model.parameters())
        self.model_id = broadcast_object_list(
            [refcache.model_identity(model, self.model_name) if acc.is_main_process else None])[0]
        from harness.core.flops import attn_coeff_of, dense_params

        emb = model.get_input_embeddings().weight
        untied_emb = n_params - dense_params(model)     # not a matmul: not counted (torchtitan's convention)
        attn_coeff = attn_coeff_of(model.config)
        if cfg.lora_rank:   # after the identity: pi_ref is the base model
            model = lora.wrap(model, cfg)
        flops_per_token = model_flops_per_token(
            sum(p.numel() for p in model.parameters()) - untied_emb,
            sum(p.numel() for p in model.parameters() if p.requires_grad) - (untied_emb if emb.requires_grad else 0))

        def adamw(m):
            return optim.adamw(optim.decay_groups(m, cfg.weight_decay, cfg.decay_biases_and_norms), lr=cfg.learning_rate,
                               betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)

        if getattr(acc, "is_fsdp2", False):   # FSDP2: accelerate remaps the optimizer; both go in together
            model, opt = acc.prepare(model, adamw(model))
        else:                                 # FSDP1 replaces the parameters: build the optimizer on the wrapped model
            model = acc.prepare(model)
            opt = acc.prepare(adamw(model))
        drop_fp32_output_wrapper(acc.unwrap_model(model))
        sched = optim.cosine_schedule(opt.optimizer, warmup_steps(cfg, steps), steps, cfg.warmup_start)
        with lora.adapters_off(model):   # pi_ref: the base model (a no-op without LoRA)
            ref = self._reference_cache(model, order) if self.spec.level != "none" else {}
        q_source = make_q_source(cfg.q_source, acc.unwrap_model(model), every=cfg.q_every, decay=cfg.q_ema_decay)

        start = self._resume(model, opt, sched, q_source, steps)
        metrics_path = self.out / "metrics.jsonl"
        if acc.is_main_process:   # rows logged after the checkpoint we resume from: moved aside, never erased
            self._trim_metrics(metrics_path, start)
        tracking.start(acc, cfg, self.out, start)
        self._held.callback(tracking.finish, acc)      # closed on any exit (an MLflow run is not left running)
        self.console.print(f"training {cfg.weighting} (q: {cfg.q_source}) for {steps} steps: global batch "
                           f"{cfg.global_batch_size} = {cfg.micro_batch_size} x {self.grad_accum} accum x {acc.num_processes} proc, "
                           f"{n_params / 1e6:.1f}M params on {acc.device}, attention {self._attention_name(model)}"
                           + (" (FSDP CPU offload: weights, gradients and AdamW states in CPU RAM)" if self._offloaded() else ""))
        peak = _peak_flops(cfg, acc.device)
        from harness.core.flops import CONVENTION

        self.console.print(f"MFU: {CONVENTION}; peak " + (f"{peak / 1e12:g} TFLOP/s per accelerator"
                           + (" (peak_tflops)" if cfg.peak_tflops else "") if peak else "unknown here (set peak_tflops)"),
                           markup=False, highlight=False)
        # why the two numbers of each step line differ, said once where they are printed
        why = ("each micro-batch's own mean, averaged over the step's micro-batches (loss_normalization=micro_batch): "
               "it differs from nll even for SFT when micro-batches hold unequal numbers of response tokens"
               if cfg.loss_normalization == "micro_batch" else "normalised over the whole step, as nll")
        self.console.print(f"columns: loss = the objective (w x NLL), {why}; nll = unweighted NLL per response token "
                           "of the step; metrics.jsonl holds every column", soft_wrap=not self.console.is_terminal,
                           markup=False, highlight=False)
        for line in start_warnings(cfg, steps, len(self.data.examples)):
            self.console.print(line, style="yellow", markup=False, highlight=False)
        return _RunState(model=model, opt=opt, sched=sched, ref=ref, q_source=q_source, order=order, steps=steps,
                         start=start, n_params=n_params, flops_per_token=flops_per_token, attn_coeff=attn_coeff,
                         peak_flops=peak, metrics_path=metrics_path)

    # -- one optimizer step: the weighted loss over this rank's micro-batches, clip, AdamW, q update
    def _optimizer_step(self, run: "_RunState", step: int, logged: bool = True) -> "_StepStats":
        """One step. No host sync per micro-batch (the log's numbers stay on the device until `_log`), and the
        update norm, a pass over AdamW's states, only on `logged` steps: the same training either way."""
        cfg, acc, model = self.cfg, self.acc, run.model
        mbs = micro_batches(run.order.step_indices(step, cfg.global_batch_size), cfg.micro_batch_size,
                            acc.process_index, acc.num_processes)
        batches = [self._batch(mb) for mb in mbs]
        divisors = self._loss_divisors(batches)
        log_mean = self._step_log_mean(model, batches, run.q_source, run.ref) if self.spec.self_normalize else None
        st = _StepStats()
        for j, b in enumerate(batches):
            ctx = acc.no_sync(model) if j < len(batches) - 1 else contextlib.nullcontext()
            with ctx:
                with acc.autocast():
                    pol = self._logprobs(model, b)
                    q = run.q_source.logprobs(pol, lambda m: self._logprobs(m, b)) if self.spec.level != "none" else None
                    r = self._ref_for(b, run.ref) if self.spec.level != "none" else None
                    out = iw_objective(pol, q, r, b.loss_mask, self.spec, seq_index=b.seq_index, step_log_mean=log_mean,
                                       batch_id=f"step {step} micro-batch {j} (examples {b.example_ids})")
                    loss = out.loss_sum / divisors[j]
                # Backward outside autocast (torch's advice): its weight-cast cache is freed before backward
                # instead of living through it; checkpointed layers re-enter autocast for their recompute.
                acc.backward(loss)
            st.loss_sum = st.loss_sum + loss.detach().double()
            st.nll_sum = st.nll_sum - torch.where(b.loss_mask, pol.detach().float(), 0.0).sum()
            st.n_loss_tok = st.n_loss_tok + b.loss_mask.sum()
            st.weights.append(out.seq_weights.detach().float())
            st.logw.append(out.log_weights.detach().float())
            st.n_tok += b.n_tokens
            st.len_sq += sum(n * n for n in b.lengths)
            st.n_clip += out.diagnostics.get("clip_count", 0)
            st.clip_units += out.diagnostics.get("clip_units", 0)
        st.gnorm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        st.lr = run.sched.get_last_lr()[0]
        run.opt.step()
        if logged:   # before the scheduler moves the learning rate
            st.update_norm = self._update_norm(run.opt)
        run.sched.step()
        run.opt.zero_grad(set_to_none=True)
        run.q_source.update(acc.unwrap_model(model), step + 1)
        if logged and acc.device.type == "cuda":   # the logged step time is the GPU's, not the launch queue's
            torch.cuda.synchronize(acc.device)
        return st

    # -- log: metrics.jsonl (the source of truth), the trackers, the console
    def _log(self, run: "_RunState", step: int, st: "_StepStats", dt: float) -> None:
        cfg, acc = self.cfg, self.acc
        w_all, lw_all, n_tok, loss_sum = torch.cat(st.weights).cpu(), torch.cat(st.logw).cpu(), st.n_tok, float(st.loss_sum)
        n_clip, clip_units, len_sq = st.n_clip, st.clip_units, st.len_sq
        nll_sum, n_loss_tok = float(st.nll_sum), float(st.n_loss_tok)
        gnorm = float(st.gnorm)
        if acc.num_processes > 1:
            w_all, lw_all = acc.gather(w_all.to(acc.device)).cpu(), acc.gather(lw_all.to(acc.device)).cpu()
            n_tok, len_sq = (int(v) for v in acc.gather(torch.tensor([[n_tok, len_sq]], device=acc.device)).sum(0))
            loss_sum = float(acc.reduce(torch.tensor(loss_sum, device=acc.device), "mean"))
            n_clip, clip_units = (int(v) for v in acc.reduce(torch.tensor([n_clip, clip_units], device=acc.device), "sum"))
            nll_sum, n_loss_tok = (float(v) for v in acc.reduce(torch.tensor([nll_sum, n_loss_tok], device=acc.device,
                                                                             dtype=torch.float64), "sum"))
        d = weight_diagnostics(w_all, lw_all)
        tps = n_tok / dt
        # MFU by harness.core.flops's convention: dense FLOPs of every token, attention by each document's length
        tflops = (run.flops_per_token * n_tok + run.attn_coeff * len_sq) / dt / 1e12 / acc.num_processes
        # "step": optimizer steps done, as the console's "step 1/N" and checkpoints/step-000001
        clip_coef = min(1.0, cfg.max_grad_norm / (gnorm + 1e-6))   # the factor clip_grad_norm_ applied
        # loss: the weighted objective (it can rise while the weights grow); nll: mean NLL per response token
        row = {"step": step + 1, "loss": loss_sum, "nll": nll_sum / n_loss_tok if n_loss_tok else None, "lr": st.lr, "grad_norm": gnorm, "clip_coef": clip_coef,
               "update_norm": st.update_norm, "w_clip_frac": n_clip / clip_units if clip_units else 0.0,
               "w_mean": d["w_mean"], "w_max": d["w_max"],
               "ess": d["ess"], "ess_frac": d["ess_frac"], "logw_p05": d["logw_p05"], "logw_p50": d["logw_p50"],
               "logw_p95": d["logw_p95"], "tokens": n_tok, "tokens_per_s": tps,
               "model_tflops_per_s": tflops,    # per accelerator
               "mfu": tflops * 1e12 / run.peak_flops if run.peak_flops else None,
               "peak_mem_gb": _peak_mem_gb(acc.device),
               "step_time_s": dt}
        if acc.is_main_process:
            with disk_full_as_user_error(self.out), open(run.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
            tracking.log_step(acc, row, lw_all.numpy())
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
            full = (f"step {step + 1:>5}/{run.steps}  loss {row['loss']:.4f}  nll {row['nll'] or 0:.4f}  lr {st.lr:.2e}  gnorm {gnorm:.3f} (clip x{clip_coef:.2f})  "
                    f"upd {st.update_norm:.2e}  w {d['w_mean']:.4f} (max {d['w_max']:.3f}, at clip {row['w_clip_frac']:.2f}, "
                    f"ess_frac {d['ess_frac']:.2f})  "
                    f"{tps:,.0f} tok/s  mfu {mfu}  mem {row['peak_mem_gb']:.1f}GB")
            if self.console.is_terminal and self.console.width < len(full):   # 80 columns: what fits, all in metrics.jsonl
                full = (f"step {step + 1}/{run.steps} loss {row['loss']:.4f} nll {row['nll'] or 0:.4f} lr {st.lr:.1e} "
                        f"w {d['w_mean']:.3f} ess {d['ess_frac']:.2f} {tps:,.0f} tok/s")
            self.console.print(full, soft_wrap=True, markup=False, highlight=False)   # a log: one line per step

    # -- maybe save: a resumable checkpoint every save_every steps (the final one is saved by _run)
    def _maybe_save(self, run: "_RunState", done: int) -> None:
        if self.cfg.save_every and done % self.cfg.save_every == 0 and done < run.steps:
            self._save_resumable(run, done)

    def _save_resumable(self, run: "_RunState", done: int) -> None:
        state = {"step": done, "scheduler": run.sched.state_dict(), "q_source": run.q_source.state_dict()}
        self._save(run.model, self.out / "checkpoints" / f"step-{done:06d}", run.opt, state)
        if self.acc.is_main_process:
            self._prune()

    def _offloaded(self) -> bool:
        plugin = getattr(self.acc.state, "fsdp_plugin", None)
        if plugin is None:
            return False
        from torch.distributed.fsdp import CPUOffloadPolicy

        return isinstance(plugin.cpu_offload, CPUOffloadPolicy)

    # -- per-step helpers -----------------------------------------------------------------------------
    def _loss_divisors(self, batches: list[Batch]) -> list[float]:
        """What each micro-batch's summed loss is divided by. micro_batch: its own normaliser times the
        accumulation steps. accumulation_window: the normaliser of the whole step over all processes,
        over the process count (gradients are averaged over processes), as transformers >= 4.46."""
        norms = [loss_normalizer(b.loss_mask, self.spec, b.seq_index) for b in batches]
        if self.cfg.loss_normalization == "micro_batch":
            return [max(n, 1) * self.grad_accum for n in norms]
        total = float(sum(norms))
        if self.acc.num_processes > 1:
            total = float(self.acc.reduce(torch.tensor(total, device=self.acc.device), "sum"))
        return [max(total, 1.0) / self.acc.num_processes] * len(batches)

    def _step_log_mean(self, model, batches: list[Batch], q_source, ref) -> float:
        """log of the mean clipped weight over every sequence of the optimizer step (all micro-batches,
        all processes), for self_normalize. A first pass: weights carry no gradient, so one extra
        forward per micro-batch computes them all before any backward. Run like the reference cache
        (no grad unless the layers are compiled), so at step 0 every log weight is exactly 0."""
        cfg, acc = self.cfg, self.acc
        no_sync = acc.no_sync(model) if cfg.compile_layers else contextlib.nullcontext()
        lws = []
        with torch.set_grad_enabled(cfg.compile_layers), no_sync, acc.autocast():
            for b in batches:
                pol = self._logprobs(model, b).detach()
                q = q_source.logprobs(pol, lambda m: self._logprobs(m, b)).detach()
                lws.append(sequence_log_weights(q, self._ref_for(b, ref), b.loss_mask, self.spec, b.seq_index).float())
        lw = torch.cat(lws) if lws else torch.zeros(0, device=acc.device)
        part = torch.stack([torch.logsumexp(lw, 0) if lw.numel() else torch.tensor(-math.inf, device=lw.device),
                            torch.tensor(float(lw.numel()), device=lw.device)])
        if acc.num_processes > 1:
            part = acc.gather(part[None].to(acc.device)).reshape(-1, 2)
        else:
            part = part[None]
        return float(torch.logsumexp(part[:, 0], 0) - math.log(float(part[:, 1].sum())))

    def _update_norm(self, opt) -> float:
        """||theta_after - theta_before|| of the step just taken, from AdamW's own state (no copy of
        the parameters); each rank's shard under FSDP, summed over ranks."""
        sq = optim.adamw_update_sq_norm(opt.optimizer)
        if self.acc.distributed_type.name == "FSDP" and self.acc.num_processes > 1:
            sq = float(self.acc.reduce(torch.tensor(sq, device=self.acc.device), "sum"))
        return math.sqrt(sq)


class _StopFlag:
    def __init__(self):
        self.signals: list[int] = []
        self.first = 0.0

    def __bool__(self) -> bool:
        return bool(self.signals)


@contextlib.contextmanager
def _stop_at_step_end(enabled: bool, console):
    """The first SIGINT/SIGTERM only sets a flag, so the loop saves a checkpoint at the end of the step
    instead of losing every step since the last one; a second one (2 s later: not the first one
    forwarded) stops at once. Off under several processes: each rank would stop at its own step and the collective
    save would hang."""
    import signal
    import threading

    stop = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in sigs}

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    def handler(signum, frame):
        now = time.monotonic()
        if stop.signals and now - stop.first < 2.0:   # the same Ctrl-C, forwarded by a parent (reproduce-table1)
            return
        if stop.signals:                               # a second one: stop now, as before
            h = old[signum]
            restore()
            if callable(h):
                h(signum, frame)
            raise KeyboardInterrupt
        stop.first = now
        stop.signals.append(signum)
        console.print("[yellow]stopping[/] at the end of this step to save a checkpoint (again to stop now, "
                      "losing the steps since the last checkpoint)")

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        restore()


def train(cfg: TrainConfig, console=None) -> Path:
    return Trainer(cfg, console).run()
