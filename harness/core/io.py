"""Small file helpers: atomic writes (nothing half-written, fsync'd), early checks of output paths,
a full disk said in one line, and readers of untrusted YAML/JSON that end in one line too."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import yaml

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
    The file gets the permissions a plain open() would give it (not mkstemp's 0600). A full disk
    is a UserError naming the folder (the old file, if any, is left as it was)."""
    path = Path(path)
    mode = _plain_open_mode(path)
    data = text.encode("utf-8")
    with disk_full_as_user_error(path.parent, len(data)):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (where the OS allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder` and the folders themselves, before a rename marks it complete:
    a power cut cannot leave a 'complete' folder of torn files."""
    folder = Path(folder)
    if folder.is_file():
        fsync_dir(folder)           # opens and fsyncs a file just as well
        return
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_dir(d)


# ------------------------------------------------------------------------------------- full disk

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or what it wraps, says the disk or the quota is full: torch.save re-raises the
    OSError as "unexpected pos", torch.distributed.checkpoint as a CheckpointException of failures."""
    seen: set[int] = set()
    stack: list = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text or "unexpected pos" in text:
            return True
        stack += [e.__cause__, e.__context__, *getattr(e, "args", ())]
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            for f in failures.values():
                stack += list(f) if isinstance(f, tuple) else [f]
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_full_error(folder: Path, needed: int | None) -> UserError:
    """The one line for a full disk under `folder`: how much the failed write needed, what is free."""
    folder = Path(folder)
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f", {_size(shutil.disk_usage(probe).free)} free now"
    except OSError:
        free = ""
    need = f"about {_size(needed)} was needed" if needed else "more space was needed"
    return UserError(f"no space left in {folder} ({need}{free}); what was written before is kept: free space "
                     "and re-run the same command to continue")


@contextlib.contextmanager
def disk_full_as_user_error(folder: Path, needed: int | None = None):
    """A full disk (ENOSPC/EDQUOT, however wrapped) while writing under `folder`: one line saying
    which folder and how much was needed, instead of a traceback."""
    try:
        yield
    except (UserError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:      # torch.distributed.checkpoint's CheckpointException is a BaseException
        if is_disk_full(e):
            raise disk_full_error(folder, needed) from None
        raise


# ------------------------------------------------------------------- untrusted YAML / JSON text

class NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors' aliases: a few hundred bytes of nested aliases ("billion laughs")
    expand to gigabytes in any code that walks or copies the result. The harness's YAML files are
    written by hand, where an alias is never needed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}) is not allowed; write the "
                                              "value out", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str, where: str, loader=NoAliasLoader):
    """YAML from untrusted text: a UserError naming `where` and the line for invalid YAML, an alias
    or nesting too deep for the parser (RecursionError)."""
    try:
        return yaml.load(text, Loader=loader)   # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        raise UserError(f"{at}: not valid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]}); "
                        "fix that line") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read (thousands of levels); flatten it") from None


def load_yaml_file(path: Path, what: str = "file"):
    """A YAML file a user gave: unreadable, not UTF-8, invalid, aliased or too deep -> one line naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{what} {path}:{line}: not UTF-8 text (is it a binary file?); save it as UTF-8 YAML") from None
    if "\x00" in text:
        raise UserError(f"{what} {path}: holds NUL bytes (a binary file?); give a YAML text file")
    return load_yaml_text(text, f"{what} {path}")


def json_loads(text: str | bytes, where: str):
    """json.loads whose too-deep nesting is a UserError naming `where` (not a RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply to read; flatten it") from None


def lone_surrogate(obj, _depth: int = 0) -> str | None:
    """A text in `obj` (keys and values, nested) holding a lone surrogate ("\\ud800" in JSON: not
    text, cannot be written as UTF-8), shown escaped; None when there is none."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode()[:60]
        return None
    if _depth > 100:
        return None
    parts = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    for x in parts:
        bad = lone_surrogate(x, _depth + 1)
        if bad is not None:
            return bad
    return None


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
                row = json_loads(line, f"{path}:{n}")
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: malformed JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object like {expect}, got {type(row).__name__}")
            bad = lone_surrogate(row)
            if bad is not None:
                raise UserError(f"{path}:{n}: {bad!r} holds a lone surrogate escape (\\udXXX: not text); fix "
                                "or remove that line")
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
