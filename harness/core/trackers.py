"""Experiment trackers (TensorBoard, Weights & Biases, trackio, MLflow, ...) through accelerate's
tracking API. Training uses them through its Accelerator (`log_with`, `init_trackers`); an
evaluation, which has no Accelerator, starts the same tracker classes itself (`start`).

The run folder's metrics.jsonl stays the source of truth (resume reads it); trackers get a copy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from harness.core.errors import UserError

# accelerate's tracker names -> the pip extra (or package) that provides each.
INSTALL = {"tensorboard": "iwsft-harness[tensorboard]", "mlflow": "iwsft-harness[mlflow]", "wandb": "wandb",
           "trackio": "trackio", "aim": "aim", "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive",
           "swanlab": "swanlab"}
HISTOGRAMS = ("tensorboard", "wandb", "trackio")   # the others have no histogram type: histograms are skipped there
DEFAULT_PROJECT = "iwsft"


def parse(value: str | Iterable[str] | None) -> list[str]:
    """'tensorboard,mlflow' or ['tensorboard', 'mlflow'] -> the names, in order, once each."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise UserError(f"log_with takes tracker names, got {item!r}; e.g. log_with=[tensorboard]")
        name = item.strip().lower()
        if name and name not in out:
            out.append(name)
    return out


def check(names: list[str], flag: str = "log_with") -> None:
    """Every name is a tracker accelerate knows and is installed here (accelerate itself would drop
    an uninstalled one silently)."""
    if not names:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise UserError(f"{flag} names {name!r}, not a tracker; choose from {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in available:
            raise UserError(f"{flag} names {name}, which is not installed: pip install '{INSTALL.get(name, name)}' "
                            f"(or leave {name} out of {flag})")


def config_values(config: dict) -> dict[str, Any]:
    """A run config as trackers take it: scalars as they are, lists and dicts as JSON text
    (TensorBoard's hparams refuse them; MLflow stores every parameter as text anyway)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)
            for k, v in config.items()}


def scalars(row: dict, skip: tuple[str, ...] = ("step",)) -> dict[str, float]:
    """The finite numbers of a metrics row (None, text and the step itself left out)."""
    return {k: v for k, v in row.items() if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def init_kwargs(run_name: str, resume_step: int = 0, ids: dict | None = None) -> dict[str, dict]:
    """Per-tracker constructor arguments: the run's name, and its ids (`ids`: tracker -> run id, kept in
    the output folder) so a resumed run continues the same MLflow / wandb run. TensorBoard drops events
    logged after the step a resumed run restarts from (a killed run's steps that are logged again)."""
    ids = ids or {}
    kw: dict[str, dict] = {"wandb": {"name": run_name}, "trackio": {"name": run_name}, "mlflow": {"run_name": run_name}}
    if ids.get("wandb"):
        kw["wandb"].update(id=ids["wandb"], resume="allow")
    if ids.get("mlflow"):
        kw["mlflow"]["run_id"] = ids["mlflow"]
    if resume_step:
        kw["tensorboard"] = {"purge_step": resume_step + 1}
    return kw


def log_histogram(trackers, name: str, values, step: int) -> None:
    """A histogram of `values` (1-D numbers) on the trackers that have one; others skip it."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    for t in trackers:
        if t.name == "tensorboard":
            t.tracker.add_histogram(name, values, step)
            t.tracker.flush()
        elif t.name == "wandb":
            import wandb

            t.tracker.log({name: wandb.Histogram(values)}, step=step)
        elif t.name == "trackio":
            import trackio

            t.tracker.log({name: trackio.Histogram(values)}, step=step)


def finish(trackers) -> None:
    """Close every tracker. Not Accelerator.end_training: that also destroys the process group,
    which a caller in the same process (a pipeline, a test) may still use."""
    for t in list(trackers):
        t.finish()


def start(names: list[str], project: str, run_name: str, logging_dir: Path, config: dict | None = None) -> list:
    """The trackers of `names`, started as Accelerator.init_trackers starts them (for code with no
    Accelerator: evaluation). TensorBoard writes to logging_dir/project/run_name."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    check(names, "--log-with")
    kw = init_kwargs(run_name)
    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        if cls.requires_logging_directory:
            trackers.append(cls(f"{project}/{run_name}", str(logging_dir), **kw.get(name, {})))
        else:
            trackers.append(cls(project, **kw.get(name, {})))
    for t in trackers:
        t.start()
    if config is not None:
        for t in trackers:
            t.store_init_configuration(config_values(config))
    return trackers
