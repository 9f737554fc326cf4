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
