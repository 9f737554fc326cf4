"""Micro-batches and the one code path that turns a model and a batch into per-token log-probs.

Policy, q and reference log-probs all come from `batch_logprobs`, so at theta = q = ref they are
bitwise equal and every importance weight is exactly 1 (method.md: numerics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.objective import token_logprobs
from harness.sft_data import Example


@dataclass
class Batch:
    input_ids: torch.Tensor        # [B, L] right-padded
    attention_mask: torch.Tensor   # [B, L]
    loss_mask: torch.Tensor        # [B, L-1] True where the target token (position t+1) carries loss
    example_ids: list[int]         # indices into PreparedData.examples
    lengths: list[int]

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device),
                     self.example_ids, self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(sum(self.lengths))


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


def batch_logprobs(model, batch: Batch) -> torch.Tensor:
    """[B, L-1] float32 log-probs of each next token under `model` (0 where padded)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    lp = token_logprobs(logits[:, :-1], batch.input_ids[:, 1:])
    return lp * batch.attention_mask[:, 1:].to(lp.dtype)


def enable_checkpointing(model) -> None:
    """Activation checkpointing (transformers >= 5 renamed gradient_checkpointing_enable)."""
    fn = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    fn()
