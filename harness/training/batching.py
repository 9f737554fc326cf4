"""Micro-batches and the one code path that turns a model and a batch into per-token log-probs.

Policy, q and reference log-probs all come from `batch_logprobs`, so at theta = q = ref they are
bitwise equal and every importance weight is exactly 1 (docs/method.md#numerics).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from harness.core.errors import UserError
from harness.training.objective import token_logprobs
from harness.training.data import Example


@dataclass
class Batch:
    input_ids: torch.Tensor        # [B, L] right-padded (packed: [1, sum of lengths])
    attention_mask: torch.Tensor   # [B, L]
    loss_mask: torch.Tensor        # [B, L-1] True where the target token (position t+1) carries loss
    example_ids: list[int]         # indices into PreparedData.examples
    lengths: list[int]
    position_ids: torch.Tensor | None = None   # packed only: positions restart at 0 for every example
    seq_index: torch.Tensor | None = None      # packed only: [B, L-1] example slot of each target token

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device),
                     self.example_ids, self.lengths, move(self.position_ids), move(self.seq_index))

    @property
    def n_tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def packed(self) -> bool:
        return self.position_ids is not None

    def spans(self) -> list[tuple[int, int, int]]:
        """(row, start, length) of each example, in example_ids order; its own next-token log-probs
        are lp[row, start : start + length - 1]."""
        if not self.packed:
            return [(i, 0, n) for i, n in enumerate(self.lengths)]
        starts = [sum(self.lengths[:j]) for j in range(len(self.lengths))]
        return [(0, s, n) for s, n in zip(starts, self.lengths)]


def collate(examples: list[Example], example_ids: list[int], pad_id: int) -> Batch:
    L = max(len(e.input_ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    att = torch.zeros(B, L, dtype=torch.long)
    lmask = torch.zeros(B, L, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        att[i, :n] = 1
        lmask[i, :n] = torch.tensor(e.loss_mask)
    return Batch(ids, att, lmask[:, 1:], list(example_ids), [len(e.input_ids) for e in examples])


def collate_packed(examples: list[Example], example_ids: list[int]) -> Batch:
    """The examples end to end in one row, no padding. Positions restart at 0 for each example, and
    transformers (>= 5) turns such position ids, given without an attention mask, into attention that
    stays inside each example (a block-diagonal causal mask; varlen kernels under flash attention).
    The target of an example's last token is the next example's first token: a prompt token, so the
    loss mask is already False there."""
    ids = torch.tensor([t for e in examples for t in e.input_ids], dtype=torch.long)[None]
    lmask = torch.tensor([m for e in examples for m in e.loss_mask], dtype=torch.bool)[None]
    pos = torch.cat([torch.arange(len(e.input_ids)) for e in examples])[None]
    slot = torch.cat([torch.full((len(e.input_ids),), j) for j, e in enumerate(examples)])[None]
    if any(e.loss_mask[0] for e in examples):
        raise UserError("packing needs every example to start with a prompt token (no loss on token 0); set packing=false")
    return Batch(ids, torch.ones_like(ids), lmask[:, 1:], list(example_ids), [len(e.input_ids) for e in examples],
                 position_ids=pos, seq_index=slot[:, 1:])


def packing_supported() -> bool:
    """Packed rows rely on transformers deriving per-example attention from position ids."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        return False
    return True


def batch_logprobs(model, batch: Batch, fused_head: bool = False, fused_head_compile: bool = False) -> torch.Tensor:
    """[B, L-1] float32 log-probs of each next token under `model` (0 where padded).

    fused_head: the model returns hidden states and harness.training.fused_head computes the log-probs
    without materialising the logits (same numbers; see that module). fused_head_compile: its chunk loops'
    math through torch.compile (the same numbers to rounding)."""
    kwargs = dict(input_ids=batch.input_ids, use_cache=False)
    if batch.packed:   # no attention mask: transformers reads the example boundaries from position_ids
        kwargs["position_ids"] = batch.position_ids
    else:
        kwargs["attention_mask"] = batch.attention_mask
    targets = batch.input_ids[:, 1:]
    if fused_head:
        from harness.training.fused_head import fused_token_logprobs, head_passthrough

        with head_passthrough(model) as head, warnings.catch_warnings():
            # FSDP2 warns that the root returns a view (HF slices the hidden states): harmless here,
            # nothing modifies it in place
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
            hidden = model(**kwargs).logits
            weight = head.weight   # after the forward: FSDP2 keeps the root's parameters unsharded until backward
        lp = fused_token_logprobs(hidden[:, :-1], weight, targets, compiled=fused_head_compile)
    else:
        lp = token_logprobs(model(**kwargs).logits[:, :-1], targets)
    return lp * batch.attention_mask[:, 1:].to(lp.dtype)


def enable_checkpointing(model) -> None:
    """Activation checkpointing (transformers >= 5 renamed gradient_checkpointing_enable)."""
    fn = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    fn()


def compile_decoder_layers(model) -> int:
    """torch.compile each decoder layer (the model's `_no_split_modules` classes) in place: regional
    compilation, one graph for all layers. In place (`Module.compile`), so parameter names stay as
    they are: `torch.compile(model)` and accelerate's `compile_regions` insert `_orig_mod` into them,
    and save_pretrained then rejects the tied embedding. Returns how many layers were compiled."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    for layer in layers:
        layer.compile()
    return len(layers)
