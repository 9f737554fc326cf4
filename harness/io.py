"""Small file helpers: atomic writes (nothing half-written) and early checks of output paths."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.errors import UserError


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and check it is writable; a UserError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror}; choose another --out") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {path} is not writable; choose another --out or fix its permissions")
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_jsonl(path: Path, expect: str = "{\"column\": value, ...}") -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a UserError naming the file and line for a
    line that is not JSON or not an object (`expect` says what a row should look like)."""
    rows: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: malformed JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object like {expect}, got {type(row).__name__}")
            rows.append((n, row))
    return rows


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, written atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
