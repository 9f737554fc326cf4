"""A short identity of a model's weights, cheap enough for 32B checkpoints.

A run folder keyed by the model's path alone would hand a retrained checkpoint (same folder, new
weights) the old model's samples. The identity hashes every top-level file of the folder: small
files (config, tokenizer, index, `iwsft_train.json`) in full; a large weights file by its size, its
safetensors header and 64 evenly spaced 64 KiB chunks of its data (a full fine-tune changes every
chunk; reading 4 MiB per file keeps a 64 GB checkpoint at well under a second). Memoised per
process on (path, size, mtime, inode).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

FULL_HASH_BYTES = 64 << 20
CHUNKS, CHUNK = 64, 64 << 10

_memo: dict[tuple, str] = {}


def _file_digest(path: Path, size: int) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.digest()
        h.update(b"sampled:%d" % size)
        start = 0
        if path.suffix == ".safetensors":
            head = f.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if 0 < n < size:
                h.update(f.read(n))          # names, dtypes, shapes, offsets
                start = 8 + n
        span = size - start
        for i in range(CHUNKS):
            f.seek(start + (span - CHUNK) * i // (CHUNKS - 1))
            h.update(f.read(CHUNK))
    return h.digest()


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 (hex) over the folder's top-level files (names, sizes, contents as above)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    stats = [(p.name, p.stat()) for p in files]
    key = (str(folder.resolve()), tuple((n, s.st_size, s.st_mtime_ns, s.st_ino) for n, s in stats))
    if key not in _memo:
        h = hashlib.sha256()
        for p, (name, st) in zip(files, stats):
            h.update(name.encode() + b"\0" + _file_digest(p, st.st_size))
        _memo[key] = h.hexdigest()
    return _memo[key]


def hub_revision(repo_id: str) -> str | None:
    """The commit of a hub model in the local cache (what loading it would use), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:      # an id the hub library refuses: no cached revision to name
        return None
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None
