"""The optimizer the trainer and the benchmark share."""

from __future__ import annotations

import torch


def adamw(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
          fused: bool | None = None) -> torch.optim.AdamW:
    """torch's AdamW, fused by default: one kernel over all parameters per step. The for-each
    default makes about ten passes over the float32 states (a measurable share of a 1.5B step on
    a GPU, docs/performance.md). The update rule is the same; `fused=False` selects the for-each one."""
    params = list(params)
    if fused is None:
        fused = all(p.is_floating_point() for p in params)
    impl = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **impl)
