"""iw-SFT from TRL: `IWSFTTrainer(SFTTrainer)` with `IWSFTConfig(SFTConfig)`.

    from harness.integrations.trl import IWSFTConfig, IWSFTTrainer
    args = IWSFTConfig(output_dir="out", weighting="iw-sft", q_source="lag0", bf16=False)
    IWSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()

The math is the harness's own: per-token log-probs through `batching.batch_logprobs` (float32,
chunked log-softmax), q from `qsource`, the loss and weights from `objective.iw_objective`, the
reference log-probs cached on disk with `refcache`. What this module adds is the TRL plumbing:

- Reference log-probs: before the first forward of step 0 the trainer runs the policy (= pi_ref)
  without gradient over the first epoch of its OWN train dataloader (same sampler, collator,
  padding and micro-batches as training), so at step 0 every weight is exactly 1. Keyed like the
  harness's cache (model identity, data fingerprint, max_length, batch layout).
- Data order: the harness's `DataOrder` (a permutation per epoch seeded by (seed, epoch)), so the
  order is replayable for the cache and equal to `iwsft train`'s with the same seed.
- Loss normalisation per optimizer step (`get_batch_samples` sees all micro-batches of a step):
  `accumulation_window` (TRL/transformers: the step's response tokens over all processes) or
  `micro_batch` (the released code). `loss_is_scaled_for_ga` tells transformers not to rescale.
- Evaluation loss is TRL's plain SFT loss (no reference is cached for eval data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from harness.core.errors import UserError

try:
    import datasets
    from trl import SFTConfig, SFTTrainer
except ImportError:
    raise UserError("the TRL integration needs trl: pip install 'iwsft-harness[trl]'") from None

from harness.training import refcache
from harness.training.batching import Batch, batch_logprobs
from harness.training.data import fingerprint
from harness.training.objective import (PRESETS, iw_objective, loss_normalizer, preset, sequence_log_weights,
                                        weight_diagnostics)
from harness.training.qsource import Q_SOURCES, make_q_source
from harness.training.trainer import DataOrder

INDEX = "iwsft_index"   # the column that carries each training example's row, for the reference cache
LOSS_NORMALIZATIONS = ("accumulation_window", "micro_batch")


@dataclass
class IWSFTConfig(SFTConfig):
    """SFTConfig plus the harness's weighting keys (same names and meaning as in a recipe)."""

    weighting: str = field(default="iw-sft", metadata={"help": f"objective preset: {', '.join(PRESETS)}"})
    weighting_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "preset fields to override, e.g. {\"w_clip\": [0, 8]}"})
    q_source: str = field(default="lag0", metadata={"help": f"where pi_q comes from: {', '.join(Q_SOURCES)}"})
    q_every: int = field(default=1, metadata={"help": "periodic: theta_q <- theta every q_every optimizer steps"})
    q_ema_decay: float = field(default=0.9, metadata={"help": "ema: theta_q <- a theta_q + (1 - a) theta per step"})
    ref_cache_dir: str | None = field(default=None, metadata={"help": "reference cache folder ($IWSFT_CACHE/ref)"})
    loss_normalization: str = field(
        default="accumulation_window",
        metadata={"help": "accumulation_window (TRL's: over the optimizer step) or micro_batch (the released code)"})

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["weighting_overrides"]

    def __post_init__(self):
        super().__post_init__()
        if self.weighting not in PRESETS:
            raise UserError(f"weighting {self.weighting!r} is not one of {', '.join(PRESETS)}")
        spec = self.weight_spec()
        if spec.level == "sequence" and spec.reduce == "sum" and spec.w_clip is None and not spec.self_normalize:
            raise UserError(f"weighting {self.weighting!r} sums log-ratios over every response token with no overall "
                            "clip: set weighting_overrides={'w_clip': [0, 16]} or {'self_normalize': True}")
        if self.q_source not in Q_SOURCES:
            raise UserError(f"q_source {self.q_source!r} is not one of {', '.join(Q_SOURCES)}")
        if self.weighting == "sft" and self.q_source != "lag0":
            raise UserError("q_source only matters for importance weighting; with weighting='sft' leave q_source='lag0'")
        if self.q_every < 1 or not 0 <= self.q_ema_decay < 1:
            raise UserError(f"q_every must be >= 1 and q_ema_decay in [0, 1) (got {self.q_every}, {self.q_ema_decay})")
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise UserError(f"loss_normalization {self.loss_normalization!r} is not one of {', '.join(LOSS_NORMALIZATIONS)}")
        if self.packing or self.padding_free:
            raise UserError("IWSFTTrainer weights whole examples and caches their reference log-probs per example: "
                            "set packing=False and padding_free=False")
        if self.train_sampling_strategy not in ("random", "sequential"):
            raise UserError(f"train_sampling_strategy {self.train_sampling_strategy!r} draws a new order each time; the "
                            "reference cache replays the first epoch: use 'random' (seeded per epoch) or 'sequential'")

    def weight_spec(self):
        overrides = self.weighting_overrides or {}
        if isinstance(overrides, str):   # HfArgumentParser hands dict fields over as JSON text
            import json

            overrides = json.loads(overrides)
        try:
            return preset(self.weighting, **overrides)
        except (TypeError, ValueError) as e:
            raise UserError(f"weighting_overrides {overrides!r} holds a value of the wrong type ({e}); "
                            "e.g. {'w_clip': [0, 16]}") from None


class EpochOrderSampler(torch.utils.data.Sampler):
    """The harness's data order: epoch e is a permutation seeded by (seed, e); `set_epoch` picks e.
    Replayable (no global RNG), which the reference cache needs."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.order, self.n, self.shuffle, self.epoch = DataOrder(n, seed), n, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self.order._perm(self.epoch) if self.shuffle else range(self.n))

    def __len__(self) -> int:
        return self.n


class _IndexedCollator:
    """TRL's collator, plus each example's row (popped before TRL sees the example)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        if not examples or INDEX not in examples[0]:
            return self.inner(examples)
        ids = [e[INDEX] for e in examples]
        out = self.inner([{k: v for k, v in e.items() if k != INDEX} for e in examples])
        out[INDEX] = torch.tensor(ids, dtype=torch.long)
        return out


class IWSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the iw-SFT objective (harness.training.objective) in `compute_loss`."""

    loss_is_scaled_for_ga = True   # compute_loss divides by the step's normaliser itself

    def __init__(self, *args, **kwargs):
        cfg = kwargs.get("args", args[1] if len(args) > 1 else None)
        if not isinstance(cfg, IWSFTConfig):
            raise UserError("IWSFTTrainer needs args=IWSFTConfig(...) (SFTConfig plus weighting, q_source, ref_cache_dir)")
        train = kwargs.get("train_dataset", args[2] if len(args) > 2 else None)
        if not isinstance(train, datasets.Dataset):
            raise UserError("IWSFTTrainer needs train_dataset as a datasets.Dataset (not iterable, not a dict): the "
                            "reference log-probs are cached per example row")
        super().__init__(*args, **kwargs)
        self.spec = cfg.weight_spec()
        if self.accelerator.num_processes > 1 and cfg.q_source != "lag0":
            raise UserError(f"q_source={cfg.q_source} keeps an unsharded copy of the model and runs in one process only; "
                            "use q_source='lag0' (the released code's choice) for multi-GPU runs")
        self.train_dataset = self.train_dataset.add_column(INDEX, list(range(len(self.train_dataset))))
        self.data_collator = _IndexedCollator(self.data_collator)
        self._data_fp = fingerprint([SimpleNamespace(input_ids=r["input_ids"], loss_mask=[x != -100 for x in r["labels"]])
                                     for r in self.train_dataset.select_columns(["input_ids", "labels"])])
        model = self.accelerator.unwrap_model(self.model)
        self._model_id = refcache.model_identity(model, str(getattr(model.config, "_name_or_path", "") or type(model).__name__))
        self._ref: dict[int, torch.Tensor] | None = None
        self._q = None
        self._q_step = 0
        self._step: dict | None = None
        self.weight_history: list[dict] = []   # one row per optimizer step: step, w_mean, w_max, ...

    # -- data order -----------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if INDEX not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX]

    def _get_train_sampler(self, train_dataset=None):
        ds = self.train_dataset if train_dataset is None else train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochOrderSampler(len(ds), seed, shuffle=self.args.train_sampling_strategy == "random")

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint and self.args.q_source != "lag0":
            raise UserError(f"resuming with q_source={self.args.q_source}: its q copy is not in TRL's checkpoints; "
                            "start over or use q_source='lag0'")
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # -- batches ----------------------------------------------------------------------------------------
    @staticmethod
    def _batch(inputs: dict) -> Batch:
        att = inputs["attention_mask"]
        ids = inputs[INDEX].tolist()
        return Batch(inputs["input_ids"], att, inputs["labels"][:, 1:] != -100, ids, att.sum(1).tolist())

    def _logprobs(self, model, b: Batch) -> torch.Tensor:
        """Policy, q and reference all go through here: one code path, so weights are 1 at step 0."""
        return batch_logprobs(model, b)

    def _ref_for(self, b: Batch) -> torch.Tensor:
        out = torch.zeros(b.loss_mask.shape, dtype=torch.float32)
        for i, (row, start, n) in zip(b.example_ids, b.spans()):
            if i not in self._ref:
                raise UserError(f"no cached reference log-probs for training row {i} (not in the first epoch's "
                                "batches: dataloader_drop_last?); set dataloader_drop_last=False")
            out[row, start : start + n - 1] = self._ref[i]
        return out.to(b.input_ids.device)

    # -- reference cache --------------------------------------------------------------------------------
    def _cache_meta(self) -> dict:
        a = self.args
        world = self.accelerator.num_processes
        return {"model": self._model_id, "data": self._data_fp, "block_size": a.max_length,
                "layout": [a.per_device_train_batch_size, a.per_device_train_batch_size * a.gradient_accumulation_steps * world,
                           world, a.data_seed if a.data_seed is not None else a.seed, a.train_sampling_strategy,
                           self.accelerator.mixed_precision, "trl"]}

    def _ensure_reference(self) -> None:
        if self._ref is not None or self.spec.level == "none":
            return
        meta = self._cache_meta()
        path = refcache.cache_path(self.args.ref_cache_dir, meta)
        if path.is_file():
            self._ref = refcache.load_cache(path, meta)
            return
        if self.state.global_step > 0:
            raise UserError(f"resuming at step {self.state.global_step} needs the reference cache made at step 0, and "
                            f"{path} is missing: set ref_cache_dir to where the run wrote it, or start over")
        # The policy is still theta_0: replay the first epoch of the trainer's own dataloader.
        model = self.model_wrapped
        loader = self.get_train_dataloader()
        loader.set_epoch(0)
        inner = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(0)
        model.train()
        with torch.no_grad(), self.compute_loss_context_manager():
            ref = refcache.collect((self._batch(self._prepare_inputs(x)) for x in loader),
                                   lambda b: self._logprobs(model, b), self.accelerator, path, meta)
        self._ref = ref

    # -- one optimizer step -----------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        samples, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not samples:
            return samples, n_items
        self._ensure_reference()
        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        if self._q is None:
            self._q = make_q_source(self.args.q_source, unwrapped, every=self.args.q_every, decay=self.args.q_ema_decay)
            copy = getattr(self._q, "model", None)
            if copy is not None and "forward" in copy.__dict__:
                # TRL's fused-head patch is a closure over the policy's own forward: a deep copy would keep
                # running the policy (q = theta, silently lag 0). The class's forward is the copy's own.
                del copy.__dict__["forward"]
            self._q_step = self.state.global_step
        if self.state.global_step > self._q_step:   # after optimizer step s, before step s + 1's forwards
            self._q.update(unwrapped, self.state.global_step)
            self._q_step = self.state.global_step
        batches = [self._batch(self._prepare_inputs(dict(s))) for s in samples]
        self._step = {"divisors": self._loss_divisors(batches), "j": 0, "n": len(samples), "w": [], "logw": [],
                      "clip": 0, "units": 0,
                      "log_mean": self._step_log_mean(batches) if self.spec.self_normalize else None}
        return samples, n_items

    def _loss_divisors(self, batches: list[Batch]) -> list[float]:
        """As the harness trainer: micro_batch divides by the micro-batch's own normaliser times the
        accumulation steps; accumulation_window by the step's normaliser over all processes, over the
        process count (DDP averages gradients over processes)."""
        norms = [loss_normalizer(b.loss_mask, self.spec) for b in batches]
        if self.args.loss_normalization == "micro_batch":
            return [max(n, 1) * len(batches) for n in norms]
        total = torch.tensor(float(sum(norms)), device=self.accelerator.device)
        world = self.accelerator.num_processes
        if world > 1:
            total = self.accelerator.reduce(total, "sum")
        return [max(float(total), 1.0) / world] * len(batches)

    def _step_log_mean(self, batches: list[Batch]) -> float:
        """log mean clipped weight over every sequence of the step (all processes), for self_normalize:
        a no-grad pass before any backward, like the reference cache, so it is exactly 0 at step 0."""
        model, lws = self.model_wrapped, []
        with torch.no_grad(), self.compute_loss_context_manager():
            for b in batches:
                pol = self._logprobs(model, b)
                q = self._q.logprobs(pol, lambda m, b=b: self._logprobs(m, b))
                lws.append(sequence_log_weights(q, self._ref_for(b), b.loss_mask, self.spec).float())
        lw = torch.cat(lws)
        part = torch.stack([torch.logsumexp(lw, 0) if lw.numel() else torch.tensor(-math.inf, device=lw.device),
                            torch.tensor(float(lw.numel()), device=lw.device)])[None]
        if self.accelerator.num_processes > 1:
            part = self.accelerator.gather(part).reshape(-1, 2)
        return float(torch.logsumexp(part[:, 0], 0) - math.log(float(part[:, 1].sum())))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training or INDEX not in inputs or self._step is None:
            inputs.pop(INDEX, None)    # evaluation: TRL's own (unweighted) loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        st, b = self._step, self._batch(inputs)
        j = st["j"]
        pol = self._logprobs(model, b)
        weighted = self.spec.level != "none"
        q = self._q.logprobs(pol, lambda m: self._logprobs(m, b)) if weighted else None
        r = self._ref_for(b) if weighted else None
        out = iw_objective(pol, q, r, b.loss_mask, self.spec, step_log_mean=st["log_mean"],
                           batch_id=f"step {self.state.global_step} micro-batch {j} (rows {b.example_ids})")
        loss = out.loss_sum / st["divisors"][j]
        st["w"].append(out.seq_weights.float().cpu())
        st["logw"].append(out.log_weights.float().cpu())
        st["clip"] += out.diagnostics.get("clip_count", 0)
        st["units"] += out.diagnostics.get("clip_units", 0)
        st["j"] += 1
        if st["j"] == st["n"]:
            self._log_weights(st)
        return (loss, None) if return_outputs else loss

    def _log_weights(self, st: dict) -> None:
        from accelerate.utils import gather_object

        w, lw, clip, units = torch.cat(st["w"]), torch.cat(st["logw"]), st["clip"], st["units"]
        if self.accelerator.num_processes > 1:
            parts = gather_object([(w, lw, clip, units)])
            w, lw = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            clip, units = sum(p[2] for p in parts), sum(p[3] for p in parts)
        d = weight_diagnostics(w, lw)
        row = {"w_mean": d["w_mean"], "w_max": d["w_max"], "w_min": d["w_min"], "ess_frac": d["ess_frac"],
               "logw_p50": d["logw_p50"], "w_clip_frac": clip / units if units else 0.0}
        self.weight_history.append({"step": self.state.global_step + 1, **row})
        for k, v in row.items():   # TRL averages these over each logging window
            self._metrics["train"][k].append(v)
