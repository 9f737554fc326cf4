""".

`preset_names` lives here, not in harness.paper.suite, so that `iwsft --help` lists the presets without
importing the evaluation config."""

from pathlib import Path

EVALS = Path(__file__).resolve().parents[2] / "evals"


def preset_names() -> list[str]:
    """The evaluation suites shipped in evals/ (each evals/<name>.yaml), by name."""
    return sorted(p.stem for p in EVALS.glob("*.yaml"))
