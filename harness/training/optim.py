"""The optimizer the trainer and the benchmark share."""

from __future__ import annotations

import math

import torch


def decay_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """The trainable parameters as AdamW groups. By default transformers' Trainer rule, which s1 and the
    released iw-SFT code train with (its own function, so the rule stays theirs): no weight decay on
    biases and normalisation weights. `decay_all`: one group, every parameter decayed."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay_all:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))    # uses no Trainer state
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
          fused: bool | None = None) -> torch.optim.AdamW:
    """torch's AdamW, fused by default: one kernel over all parameters per step. The for-each
    default makes about ten passes over the float32 states (a measurable share of a 1.5B step on
    a GPU, docs/performance.md). The update rule is the same; `fused=False` selects the for-each one.
    `params`: tensors, or groups from `decay_groups`."""
    params = list(params)
    if fused is None:
        flat = [q for g in params for q in g["params"]] if params and isinstance(params[0], dict) else params
        fused = all(p.is_floating_point() for p in flat)
    impl = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **impl)


@torch.no_grad()
def adamw_update_sq_norm(opt: torch.optim.Optimizer) -> float:
    """Sum of squares of the update torch's AdamW just applied (p_after - p_before), rebuilt from its
    state, so no copy of the parameters is kept. After `step()`, for each parameter with a gradient:
        u = lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps),   p_after = p_before (1 - lr wd) - u
        =>  p_after - p_before = -(lr wd p_after + u) / (1 - lr wd)
    Local tensors only (a DTensor's shard): the caller sums over ranks when parameters are sharded.
    Call it before the scheduler changes the learning rate. One host sync in all: the sum stays on the
    device (float64, the same arithmetic as summing Python floats)."""
    total = None
    for group in opt.param_groups:
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError("adamw_update_sq_norm covers AdamW without amsgrad or maximize")
        lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        b1, b2 = group["betas"]
        for p in group["params"]:
            st = opt.state.get(p)
            if p.grad is None or not st or "exp_avg" not in st:
                continue
            local = lambda t: t.to_local() if hasattr(t, "to_local") else t  # noqa: E731
            t = float(st["step"])
            m, v, w = local(st["exp_avg"]).float(), local(st["exp_avg_sq"]).float(), local(p).float()
            u = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(eps).reciprocal_().mul_(m).mul_(lr / (1 - b1 ** t))
            delta = u.add_(w, alpha=lr * wd).div_(1 - lr * wd)
            sq = torch.linalg.vector_norm(delta).double() ** 2
            total = sq if total is None else total + sq
    return 0.0 if total is None else float(total)


def _warmup_cosine(step: int, *, warmup: int, total: int, shift: int) -> float:
    if step < warmup:
        return float(step + shift) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_schedule(opt: torch.optim.Optimizer, warmup: int, total: int, start: str = "zero"):
    """Linear warm-up then cosine to 0. start="zero" is transformers' get_cosine_schedule_with_warmup
    (the first step at lr 0); "first-step" shifts the warm-up by one step, so every warm-up step moves
    the weights (its own lambda: transformers has no such option)."""
    from functools import partial

    if start == "zero":
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(opt, warmup, total)
    return torch.optim.lr_scheduler.LambdaLR(opt, partial(_warmup_cosine, warmup=warmup, total=total, shift=1))
