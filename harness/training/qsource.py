"""Where pi_q's log-probs come from (paper Algorithm 1; docs/method.md#choosing-q).

The objective only receives q's log-probs; a recipe picks one of these sources:

- `lag0`      q = the current policy with gradient stopped, from the SAME forward pass as the
              policy log-probs (the released code): no extra forward, no extra memory.
- `periodic`  theta_q <- theta every `every` optimizer steps (Algorithm 1 with lag Q); costs a
              resident copy and one no-grad forward per step.
- `ema`       theta_q <- a * theta_q + (1 - a) * theta after every step (paper's control runs,
              a = 0.9); same costs as `periodic`.

At step 0 all three give q = theta exactly, so the weights are exactly 1.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from harness.core.errors import UserError

LogprobFn = Callable[[nn.Module], torch.Tensor]


class QSource:
    kind = "base"

    def logprobs(self, policy_logprobs: torch.Tensor, compute: LogprobFn) -> torch.Tensor:
        """q's per-token log-probs for the current batch. `compute(model)` runs a forward of the
        given model on the batch through the same code path as the policy's."""
        raise NotImplementedError

    def update(self, policy: nn.Module, step: int) -> None:
        """Called after optimizer step `step` (1-based count of steps taken)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Lag0(QSource):
    kind = "lag0"

    def logprobs(self, policy_logprobs, compute):
        return policy_logprobs.detach()


class _CopySource(QSource):
    def __init__(self, policy: nn.Module):
        self.model = copy.deepcopy(policy).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def logprobs(self, policy_logprobs, compute):
        with torch.no_grad():
            return compute(self.model).detach()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


class Periodic(_CopySource):
    kind = "periodic"

    def __init__(self, policy: nn.Module, every: int):
        if every < 1:
            raise UserError(f"q_every must be >= 1 (got {every})")
        super().__init__(policy)
        self.every = every

    @torch.no_grad()
    def update(self, policy, step):
        if step % self.every == 0:
            for q, p in zip(self.model.parameters(), policy.parameters()):
                q.copy_(p.detach())


class EMA(_CopySource):
    kind = "ema"

    def __init__(self, policy: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"q_ema_decay must be in [0, 1) (got {decay})")
        super().__init__(policy)
        self.decay = decay

    @torch.no_grad()
    def update(self, policy, step):
        for q, p in zip(self.model.parameters(), policy.parameters()):
            q.mul_(self.decay).add_(p.detach().to(q.dtype), alpha=1.0 - self.decay)


Q_SOURCES = ("lag0", "periodic", "ema")


def make_q_source(kind: str, policy: nn.Module, every: int = 1, decay: float = 0.9) -> QSource:
    if kind == "lag0":
        return Lag0()
    if kind == "periodic":
        return Periodic(policy, every)
    if kind == "ema":
        return EMA(policy, decay)
    raise UserError(f"unknown q source {kind!r}; choose one of {', '.join(Q_SOURCES)}")
