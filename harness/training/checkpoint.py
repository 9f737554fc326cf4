"""Resumable training state under one process, DDP or FSDP.

A checkpoint folder `step-NNNNNN/` holds:
    model.safetensors, config.json, tokenizer   Hugging Face format (full weights, written by rank 0):
                                                `iwsft eval`, vLLM and transformers load it as is
    optimizer/                                  torch.distributed.checkpoint: each rank writes its own
                                                shard of the AdamW state, so a sharded (FSDP) optimizer
                                                is neither gathered on rank 0 nor lost on other ranks
    trainer_state.pt                            step, scheduler and q-source state; written last

Model and optimizer go through torch.distributed.checkpoint.state_dict, the one API that converts
between full and sharded state for plain modules, DDP, FSDP1 and FSDP2 alike; the trainer's tests run
it in one process and in two (DDP over gloo on CPU).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import torch

from harness.core.errors import UserError


@contextlib.contextmanager
def _quiet_single_process():
    # DCP warns that it "assumes a single process" when no process group exists: that is our intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        yield


def save_optimizer(model, optimizer, folder: Path) -> None:
    """Collective: every rank writes its shard of the optimizer state under `folder`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    with _quiet_single_process():
        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(folder))


def load_optimizer(model, optimizer, folder: Path) -> None:
    """Collective: the inverse of `save_optimizer` (the same or a different number of ranks under FSDP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    if not folder.is_dir():
        raise UserError(f"checkpoint {folder.parent} has no optimizer state ({folder.name}/ is missing); "
                        "delete the checkpoint folder to resume from an earlier one or start over")
    with _quiet_single_process():
        osd = get_optimizer_state_dict(model, optimizer)   # a template with allocated state
        dcp.load({"optimizer": osd}, checkpoint_id=str(folder))
        set_optimizer_state_dict(model, optimizer, osd)


def load_model_weights(model, folder: Path, is_main: bool, world_size: int) -> None:
    """Collective: load a checkpoint's full safetensors weights into a (possibly sharded) model.

    Rank 0 reads the files and broadcasts; tied weights absent from the file (lm_head tied to the
    embeddings, as save_pretrained writes them) are the only keys allowed to be missing.
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full: dict[str, torch.Tensor] = {}
    if is_main or world_size == 1:
        for f in sorted(folder.glob("*.safetensors")):
            full.update(load_file(str(f)))
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=world_size > 1, strict=False)
    result = set_model_state_dict(model, full, options=opts)
    tied = set(tied_keys(model))
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise UserError(f"checkpoint {folder} does not match the model ({len(missing)} missing, "
                        f"{len(result.unexpected_keys)} unexpected keys); delete it to restart, or check the recipe's model")


def tied_keys(model) -> list[str]:
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)   # DDP / FSDP wrappers -> the model
    config = getattr(inner, "config", None)
    if config is None or not getattr(config, "tie_word_embeddings", False):
        return []
    return list(getattr(inner, "_tied_weights_keys", None) or [])   # a dict in transformers >= 5, a list before


# -- integrity: what a folder held when it was saved, checked before it is trusted ---------------------

MARKER, STATE = "iwsft_train.json", "trainer_state.pt"


def _sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_manifest(folder: Path) -> dict[str, dict]:
    """Size of every file under `folder` (but the marker and the trainer state, written after), and the
    sha256 of each but the optimizer shards: those are large (twice the model in float32) and
    torch.distributed.checkpoint refuses damaged ones itself; a garbage or truncated weights file is
    caught here, where loading it could otherwise succeed with wrong values."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel in (MARKER, STATE):
            continue
        out[rel] = {"size": p.stat().st_size, **({} if rel.startswith("optimizer/") else {"sha256": _sha256(p)})}
    return out


def _safetensors_damage(path: Path) -> str | None:
    """A cheap check for folders saved without a manifest: the header parses and the file is as long
    as the header says."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > size:
                return f"{path.name} is cut short"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            return f"{path.name} is {size} bytes, its header says {8 + n + end}"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return f"{path.name} is not a safetensors file (damaged)"
    return None


def resumable(folder: Path) -> bool:
    """Whether a checkpoint holds the optimizer state a resume needs (older ones may hold weights only)."""
    return (Path(folder) / "optimizer").is_dir()


def drop_optimizer(folder: Path) -> None:
    """Keep a checkpoint's weights only: its optimizer state is renamed away first (one atomic step, so a
    kill mid-delete leaves a weights-only checkpoint, never a half optimizer), then deleted. The marker is
    left as saved: it is part of the weights' identity (harness.core.fingerprint), and `damage` reads an
    absent optimizer/ as weights-only."""
    folder = Path(folder)
    gone = folder / ".optimizer.dropping"
    if (folder / "optimizer").is_dir():
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(folder / "optimizer", gone)
    shutil.rmtree(gone, ignore_errors=True)


def damage(folder: Path, need_state: bool = True) -> str | None:
    """Why the saved folder (a checkpoint, or final/ with need_state=False) cannot be trusted, or None.
    Checks the sizes and checksums recorded at save (folders saved before they were recorded: the
    weights' headers and sizes), and that the trainer state loads."""
    import json

    folder = Path(folder)
    try:
        meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError
    except FileNotFoundError:
        meta = {}     # a checkpoint from before the marker: the weights' own check below
    except (OSError, ValueError):
        return f"{MARKER} is damaged"
    files = meta.get("files")
    if isinstance(files, dict):
        weights_only = not resumable(folder)     # optimizer/ dropped on purpose (drop_optimizer)
        for rel, want in files.items():
            if weights_only and rel.startswith("optimizer/"):
                continue
            p = folder / rel
            if not p.is_file():
                return f"{rel} is missing"
            if p.stat().st_size != want.get("size"):
                return f"{rel} is {p.stat().st_size} bytes, {want.get('size')} when saved"
            if "sha256" in want and _sha256(p) != want["sha256"]:
                return f"{rel} differs from what was saved (checksum)"
    else:
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            return "it holds no weights (*.safetensors)"
        for p in weights:
            why = _safetensors_damage(p)
            if why:
                return why
    if need_state:
        why = _state_damage(folder / STATE)
        if why:
            return why
    return None


def load_state(path: Path) -> dict:
    """trainer_state.pt: step, scheduler, q source."""
    return torch.load(path, weights_only=False)


def _state_damage(path: Path) -> str | None:
    try:
        state = load_state(path)
        if not isinstance(state, dict) or not {"step", "scheduler", "q_source"} <= set(state):
            return f"{path.name} lacks the step, scheduler or q source"
    except FileNotFoundError:
        return f"{path.name} is missing"
    except Exception as e:      # torch.load's errors on a cut or garbage file vary (pickle, zip, EOF)
        return f"{path.name} does not load ({type(e).__name__})"
    return None
