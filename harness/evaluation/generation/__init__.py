"""Generation: backends (HF transformers, vLLM) behind one interface, prompts, budget forcing.

Adding a backend is one file in this folder (a class meeting the `Backend` contract of base.py, with
the class attributes and class methods listed in `BackendClass`) plus one line in `BACKENDS`; the
eval flags, config validation, suites and reports read the names from here.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Protocol

from harness.core.errors import UserError
from harness.evaluation.generation.base import Backend, Completion, GenParams

__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "Completion", "GenParams", "backend_class", "make_backend",
           "resolve_backend_kind", "vllm_available"]

# name -> "module:Class", imported only when used (vLLM's import is slow and touches CUDA).
BACKENDS = {
    "hf": "harness.evaluation.generation.hf:HFBackend",
    "vllm": "harness.evaluation.generation.vllm_backend:VLLMBackend",
}
BACKEND_CHOICES = ("auto", *BACKENDS)


class BackendClass(Protocol):
    tensor_parallel: bool        # takes tensor_parallel_size > 1 (it then keys a run's settings)
    continuous_batching: bool    # give it every request at once rather than in --batch-size chunks
    libraries: tuple[str, ...]   # distributions whose versions key a run's settings
    options: tuple[str, ...]     # engine options it takes (harness.evaluation.engine.ENGINE_OPTIONS)

    @classmethod
    def default_options(cls, device: str) -> dict:
        """Its values for its `options` on "cpu" or "cuda" when a config leaves them None."""

    @classmethod
    def check_available(cls) -> None:
        """UserError naming the fix when its library is missing (before any run folder is made)."""

    @classmethod
    def load(cls, resolved: Any, *, tokenizer: Any, dtype: str | None, tensor_parallel_size: int,
             batch_size: int | None, **opts: Any) -> Backend:
        """The backend for a resolved model (harness.core.models.ResolvedModel)."""


def backend_class(name: str) -> BackendClass:
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}") from None
    return getattr(importlib.import_module(module), cls)


def vllm_available() -> bool:
    """vllm is installed (checked without importing it: importing is slow and touches CUDA)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError, AttributeError):
        return False


def resolve_backend_kind(kind: str = "auto") -> str:
    """"auto" -> "vllm" wherever vllm is installed (a CUDA build, or its CPU build), else "hf".

    On GPUs vLLM is the production engine. On a CPU it was measured too (docs/performance.md,
    reports/bench/backends_cpu.json): the tiny preset's arith evaluation took 235 s with vLLM's CPU
    build against 1339 s with the HF backend, engine start included, with identical samples."""
    if kind not in BACKEND_CHOICES:
        raise UserError(f"unknown backend '{kind}'; choose one of {', '.join(BACKEND_CHOICES)}")
    if kind != "auto":
        return kind
    return "vllm" if vllm_available() else "hf"


def make_backend(kind: str, model_name: str, *, dtype: str | None = None, tensor_parallel_size: int = 1,
                 tokenizer: Any = None, batch_size: int | None = None, **opts: Any) -> Backend:
    """Build a backend for `model_name` (alias, local folder or hub id; see harness.core.models).
    `dtype` None means the backend's default; extra `opts` go to the backend's `load`."""
    from harness.core.models import resolve_model

    kind = resolve_backend_kind(kind)
    return backend_class(kind).load(resolve_model(model_name), tokenizer=tokenizer, dtype=dtype,
                                    tensor_parallel_size=int(tensor_parallel_size), batch_size=batch_size, **opts)
