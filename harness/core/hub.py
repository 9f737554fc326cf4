"""Is the Hugging Face hub usable for a repo right now? Answered in seconds.

Without a network, transformers and datasets retry for about 25 s per call and then fail with an
error that can read like gated access. A repo that is in the local cache still loads offline, so
only a repo that is neither reachable nor cached is refused early (one line, with the fix).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def unreachable() -> str | None:
    """Why the hub cannot be reached (offline mode, no connection), else None."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return "offline mode: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None     # behind a proxy a direct connection proves nothing: let the libraries try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except OSError as e:
        return f"no connection to {url.hostname}: {type(e).__name__}"
    return None


def cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether some copy of `repo_id` is in the local hub cache (or, for datasets, datasets' own)."""
    from huggingface_hub import constants

    if (Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}").exists():
        return True
    if repo_type == "dataset":
        root = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
        return (root / repo_id.replace("/", "___")).exists()
    return False


def unavailable(repo_id: str, repo_type: str = "model") -> str | None:
    """Why `repo_id` cannot come from the hub here (not cached, and the hub unreachable), else None."""
    return None if cached(repo_id, repo_type) else unreachable()
