"""The small interface every generation backend implements.

A backend continues token-id prompts and reports, per request, the new token ids, the decoded text
and why it stopped. Everything above it (prompt building, budget forcing, stop handling, token
counting) is backend-independent and lives in sibling modules, so the HF backend exercises in tests
exactly the logic that the vLLM backend runs on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()        # stop strings; the matched string is NOT included in the output
    stop_token_ids: tuple[int, ...] = ()  # stop tokens; the matched token is NOT included in token_ids
    min_tokens: int = 0               # stops are ignored before this many new tokens
    seed: int | None = None


@dataclass
class Completion:
    token_ids: list[int]              # new tokens only, stop string/token excluded
    text: str                         # decoded token_ids
    finish_reason: Literal["stop", "length"]
    stop_reason: str | int | None = None  # the stop string or token id that ended it, if any
    meta: dict = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[Sequence[int]], params: GenParams) -> list[Completion]:
        """Continue each token-id prompt independently; one Completion per prompt, same order."""
        ...

    def version(self) -> str:
        """Backend library and version, for reports (e.g. 'transformers 5.2.0')."""
        ...
