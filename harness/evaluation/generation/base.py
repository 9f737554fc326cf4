"""The small interface every generation backend implements.

A backend continues token-id prompts and reports, per request, the new token ids, the decoded text
and why it stopped. Everything above it (prompt building, budget forcing, stop handling, token
counting) is backend-independent and lives in sibling modules, so the HF backend exercises in tests
exactly the logic that the vLLM backend runs on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()        # stop strings; the matched string is NOT included in the output
    stop_token_ids: tuple[int, ...] = ()  # stop tokens; the matched token is NOT included in token_ids
    min_tokens: int = 0               # before this many new tokens: stop ids/EOS masked, stop strings ignored
    seed: int | None = None
    # vLLM's meaning on every backend (generation/sampling.py); these values are "off"
    top_k: int = 0                    # 0 or -1: no top-k truncation
    min_p: float = 0.0
    presence_penalty: float = 0.0     # subtracted once from the logit of each token this request generated
    repetition_penalty: float = 1.0   # on every token of the prompt and the output so far


@dataclass
class Completion:
    token_ids: list[int]              # new tokens only, stop string/token excluded
    text: str                         # decoded token_ids
    finish_reason: Literal["stop", "length"]
    stop_reason: str | int | None = None  # the stop string or token id that ended it, if any
    meta: dict = field(default_factory=dict)


class Backend(Protocol):
    """Contract shared by every backend (the HF backend is tested against it; vLLM is adapted to it):

    - `params` is one GenParams for all prompts, or a sequence with one GenParams per prompt (vLLM's
      LLM.generate takes the same), so requests in different phases can share one batch.
    - Generation also ends at the model's EOS token(s) (vLLM's default, ignore_eos=False): reported
      as finish_reason "stop" with stop_reason = that token id, the token excluded.
    - A stop token sampled as the last allowed token is a "stop", not a "length" (so a row is never
      billed for its stop token, and callers can tell a natural end from the cap).
    - Before `min_tokens` new tokens, stop token ids and EOS cannot be sampled (their logits are
      masked, as vLLM does) and stop strings are not looked for.
    - A stop string is cut from both token_ids and text: token_ids keeps the longest prefix whose
      decoded text ends before the stop string (meta["stop_inside_token"] is True when the string
      began inside a token, whose leading characters are then dropped too); text == decode(token_ids).
    - max_new_tokens == 0 returns an empty Completion with finish_reason "length".
    """

    name: str

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: GenParams | Sequence[GenParams]) -> list[Completion]:
        """Continue each token-id prompt independently; one Completion per prompt, same order."""
        ...

    def version(self) -> str:
        """Backend library and version, for reports (e.g. 'transformers 5.2.0')."""
        ...


# ------------------------------------------------------------------ helpers shared by the backends


def per_prompt_params(params: GenParams | Sequence[GenParams], n: int) -> list[GenParams]:
    """Expand `params` to one GenParams per prompt (validating a per-prompt list's length)."""
    if isinstance(params, GenParams):
        return [params] * n
    out = list(params)
    if len(out) != n:
        raise ValueError(f"got {len(out)} GenParams for {n} prompts")
    for p in out:
        if not isinstance(p, GenParams):
            raise TypeError(f"expected GenParams, got {type(p).__name__}")
    return out


def decode(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """The one decoding used for Completion.text: special tokens kept, no clean-up of spaces."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def cut_at_stop_string(tokenizer: Any, token_ids: Sequence[int], stop: str,
                       full_text: str | None = None) -> tuple[list[int], str, bool] | None:
    """Cut `token_ids` before the LAST occurrence of `stop` in their decoded text.

    Returns (kept_ids, decode(kept_ids), inside) or None when `stop` does not occur. kept_ids is the
    longest prefix whose decoded text is a prefix of the text before the stop string; `inside` is True
    when that loses characters (the stop string began inside a token).
    """
    ids = list(token_ids)
    full = decode(tokenizer, ids) if full_text is None else full_text
    pos = full.rfind(stop)
    if pos < 0:
        return None
    before = full[:pos]
    k = len(ids)
    while k > 0:
        text = decode(tokenizer, ids[:k])
        if len(text) <= len(before) and before.startswith(text):
            break
        k -= 1
    kept = ids[:k]
    text = decode(tokenizer, kept) if k else ""
    return kept, text, text != before
