"""The trainer's experiment trackers: accelerate's (`log_with`), fed from the same rows as
metrics.jsonl. Only rank 0 logs (accelerate starts trackers on the main process only)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from harness.core import trackers
from harness.core.io import atomic_write_text
from harness.training.config import TrainConfig


def accelerator_kwargs(cfg: TrainConfig, out: Path) -> dict:
    """Arguments for Accelerator(...): the trackers and where file-based ones write (output_dir/tb)."""
    names = cfg.trackers()
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": names, "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tb"))}


IDS_FILE = "trackers.json"    # in output_dir: tracker -> run id, so a resumed run logs into the same run


def start(acc, cfg: TrainConfig, out: Path, resume_step: int) -> None:
    """Start the trackers with the run config (the TrainConfig dict); a no-op without log_with. A resumed run
    (resume_step > 0) continues the MLflow / wandb run its first start recorded in output_dir/trackers.json."""
    names = cfg.trackers()
    if not names:
        return
    f = out / IDS_FILE
    ids = json.loads(f.read_text()) if resume_step and f.is_file() else {}
    if "wandb" in names and not ids.get("wandb"):
        ids["wandb"] = uuid.uuid4().hex[:12]          # chosen here: wandb takes the id at its start
    acc.init_trackers(cfg.tracker_project or trackers.DEFAULT_PROJECT, config=trackers.config_values(cfg.to_dict()),
                      init_kwargs=trackers.init_kwargs(Path(cfg.output_dir).name or "run", resume_step, ids))
    if "mlflow" in names and acc.is_main_process:
        ids["mlflow"] = acc.get_tracker("mlflow", unwrap=True).info.run_id   # known once it started
    if acc.is_main_process:
        atomic_write_text(f, json.dumps(ids, indent=1))


def log_step(acc, row: dict, log_weights) -> None:
    """One metrics.jsonl row (every finite scalar, at its step) and the histogram of the step's log-weights."""
    if not acc.trackers:
        return
    acc.log(trackers.scalars(row), step=row["step"])
    trackers.log_histogram(acc.trackers, "log_w", log_weights, row["step"])


def finish(acc) -> None:
    trackers.finish(acc.trackers)
    acc.trackers.clear()
