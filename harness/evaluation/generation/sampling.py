"""Sampling settings beyond temperature and top-p (top_k, min_p, presence_penalty, repetition_penalty),
with vLLM's meaning on every backend.

vLLM (vllm/sampling_params.py, vllm/v1/sample/sampler.py, vllm/model_executor/layers/utils.py
`apply_penalties`) processes a request's next-token logits in this order:
  1. min_tokens: stop ids / EOS masked;
  2. penalties on the raw logits: repetition over every token of the prompt AND the output so far
     (logit / p where the logit is > 0, logit * p otherwise), then presence over the OUTPUT tokens
     only (minus the penalty once per distinct token, whatever its count);
  3. greedy (temperature 0) takes the argmax here: penalties count, top_k/min_p/top_p do not (vLLM
     resets them for greedy requests);
  4. / temperature; min_p (drop tokens whose probability is below min_p x the top one's); top_k; top_p
     on what is left; sample.
"The output" is one backend request's: under budget forcing each round is a new request whose prompt
holds the earlier rounds' thinking, so those tokens get the repetition penalty, not the presence one,
on both backends alike.

Neutral values (NEUTRAL) change nothing and are left out of a run's settings, so the run folders made
before these settings existed keep their keys.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from harness.core.errors import UserError

# The settings and their neutral values (vLLM's defaults; top_k -1 means the same as 0 there).
NEUTRAL = {"top_k": 0, "min_p": 0.0, "presence_penalty": 0.0, "repetition_penalty": 1.0}
GREEDY_IGNORED = ("top_k", "min_p")     # argmax-invariant: vLLM drops them at temperature 0


def check_sampling(top_k: Any, min_p: Any, presence_penalty: Any, repetition_penalty: Any) -> None:
    """vLLM's own bounds (SamplingParams._verify_args), in one UserError line each."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1:
        raise UserError(f"--top-k must be an integer >= 1, or 0 (or -1) for no top-k truncation, got {top_k!r}")
    if not _finite(min_p) or not 0.0 <= min_p <= 1.0:
        raise UserError(f"--min-p must be in [0, 1] (0 = off), got {min_p!r}")
    if not _finite(presence_penalty) or not -2.0 <= presence_penalty <= 2.0:
        raise UserError(f"--presence-penalty must be in [-2, 2] (0 = off; vLLM's range), got {presence_penalty!r}")
    if not _finite(repetition_penalty) or repetition_penalty <= 0:
        raise UserError(f"--repetition-penalty must be a number > 0 (1 = off), got {repetition_penalty!r}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def sampling_kwargs(cfg: Any) -> dict:
    """The GenParams keywords of a config's extra sampling settings."""
    return {k: getattr(cfg, k) for k in NEUTRAL}


def is_neutral(key: str, value: Any) -> bool:
    return value == NEUTRAL[key] or (key == "top_k" and value == -1)


def settings_entries(cfg: Any) -> dict:
    """The settings that key a run folder: only those set to something that changes the samples."""
    out = {}
    for key in NEUTRAL:
        value = getattr(cfg, key)
        if is_neutral(key, value) or (key in GREEDY_IGNORED and cfg.temperature <= 0):
            continue
        out[key] = value
    return out


class Penalties:
    """Repetition and presence penalties of one request, as vLLM applies them (module docstring);
    the repetition formula is transformers' RepetitionPenaltyLogitsProcessor, which is vLLM's."""

    def __init__(self, repetition_penalty: float, presence_penalty: float, prompt_ids: Sequence[int]):
        from transformers import RepetitionPenaltyLogitsProcessor

        self.repetition = None if repetition_penalty == 1.0 else RepetitionPenaltyLogitsProcessor(repetition_penalty)
        self.presence = float(presence_penalty)
        self._seen = dict.fromkeys(int(t) for t in prompt_ids) if self.repetition is not None else {}
        self._out: dict[int, None] = {}
        self._tensors: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.repetition is not None or self.presence != 0.0

    def push(self, token: int) -> None:
        """A token the request generated (it joins the output tokens)."""
        if self.repetition is not None and token not in self._seen:
            self._seen[token] = None
            self._tensors.pop("seen", None)
        if self.presence != 0.0 and token not in self._out:
            self._out[token] = None
            self._tensors.pop("out", None)

    def _ids(self, name: str, ids: dict, device):
        import torch

        t = self._tensors.get(name)
        if t is None:
            t = self._tensors[name] = torch.tensor(list(ids), dtype=torch.long, device=device)
        return t

    def apply(self, logits):
        """Penalised copy of one row's float logits [vocab]."""
        if self.repetition is not None and self._seen:
            logits = self.repetition(self._ids("seen", self._seen, logits.device).unsqueeze(0), logits.unsqueeze(0))[0]
        if self.presence != 0.0 and self._out:
            logits = logits.clone()
            logits[self._ids("out", self._out, logits.device)] -= self.presence
        return logits


def truncate(scaled_logits, top_k: int, min_p: float):
    """min_p then top_k on temperature-scaled logits [vocab] (vLLM's order), with transformers' warpers."""
    if min_p > 0.0:
        from transformers import MinPLogitsWarper

        scaled_logits = MinPLogitsWarper(min_p)(None, scaled_logits.unsqueeze(0))[0]
    if top_k > 0:
        from transformers import TopKLogitsWarper

        scaled_logits = TopKLogitsWarper(top_k)(None, scaled_logits.unsqueeze(0))[0]
    return scaled_logits


def vllm_top_k(top_k: int) -> int:
    """-1 for "off": vLLM 0.6 (s1's line) refuses 0, newer releases take both."""
    return -1 if top_k <= 0 else int(top_k)
