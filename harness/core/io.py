"""Small file helpers: atomic writes (nothing half-written) and early checks of output paths."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from pathlib import Path

from harness.core.errors import UserError


def ensure_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Create `path` if needed and check it is writable; a UserError naming `flag` otherwise."""
    path = check_writable_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror}; choose another {flag}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {path} is not writable; choose another {flag} or fix its permissions")
    return path


def check_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Check, creating nothing, that the folder `path` exists writable or could be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    _check_nearest_folder(path, flag, path)
    return path


def check_output_file(path: Path, flag: str = "--out") -> Path:
    """Check, before any work, that the file `path` can be written (atomically: a temp file beside
    it, then a rename): a UserError naming the problem and `flag` otherwise. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give the path of a file to write (it may be inside it)")
    _check_nearest_folder(path.absolute().parent, flag, path)
    return path


def _check_nearest_folder(folder: Path, flag: str, shown: Path) -> None:
    """The nearest existing folder at or above `folder` is a folder where a file can really be
    created (os.access says yes to root on read-only places such as /proc)."""
    ancestor = folder.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {flag} {shown}: {ancestor} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".iwsft-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {flag} {shown}: no file can be created in {ancestor} ({e.strerror}); "
                        f"choose another {flag}") from None


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_open_mode(path: Path) -> int:
    """The permissions a plain open(path, "w") would leave: an existing file keeps its own, a new
    one gets 0666 & ~umask (mkstemp alone would leave 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def give_plain_mode(path: Path) -> None:
    """Give a file written by a library that creates 0600 files (safetensors, mkstemp), or every
    file under a folder, the permissions a plain open() would: 0666 & ~umask, so a group on a
    shared cluster can read weights and caches like the run's other outputs."""
    path = Path(path)
    mode = 0o666 & ~_umask()
    for p in ([path] if path.is_file() else [q for q in path.rglob("*") if q.is_file() and not q.is_symlink()]):
        os.chmod(p, mode)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename: readers never see a partial file.
    The file gets the permissions a plain open() would give it (not mkstemp's 0600)."""
    path = Path(path)
    mode = _plain_open_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_jsonl(path: Path, expect: str = "{\"column\": value, ...}") -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a UserError naming the file and line for a
    line that is not UTF-8 text, not JSON or not an object (`expect` says what a row should look like)."""
    rows: list[tuple[int, dict]] = []
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; pass a readable JSONL file") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{n}: not UTF-8 text (is it a binary file?); JSONL must be UTF-8, "
                                "re-save it as UTF-8") from None
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


@contextlib.contextmanager
def dir_lock(folder: Path, busy: str, *, name: str = ".lock", shared: bool = False):
    """Hold an exclusive (or `shared`) lock on `folder`/`name` (a UserError `busy` when another
    process holds it in a conflicting mode); released when the block ends or the process dies (a
    stale lock file blocks nothing)."""
    f = open(Path(folder) / name, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            raise UserError(busy) from None
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
