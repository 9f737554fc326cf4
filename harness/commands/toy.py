"""`iwsft toy --out DIR`: the paper's Figure 1 (two-armed bandit)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError

HELP = "Figure 1: SFT vs iw-SFT on the paper's two-armed bandit (CPU, seconds)"


def add_arguments(p):
    p.add_argument("--out", default="reports/latest", help="directory for figure1.png and figure1.json")
    p.add_argument("--steps", type=int, default=400, help="training steps per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-draws", type=int, default=10_000, help="reference draws before reward filtering")


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.core.io import atomic_write_text, ensure_writable_dir
    from harness.paper.figure1 import ToyConfig, plot, run_toy

    if args.steps < 1 or args.n_draws < 2:
        raise UserError("--steps must be >= 1 and --n-draws >= 2")
    out = ensure_writable_dir(Path(args.out))
    cfg = ToyConfig(n_draws=args.n_draws, steps=args.steps, seed=args.seed)
    result = run_toy(cfg)

    console = Console()
    d = result["dataset"]
    table = Table(title=f"p(pull-right) during training  (D+: {d['n_right']} right / {d['n_left']} left)")
    table.add_column("step", justify="right")
    methods = list(result["methods"])
    for m in methods:
        table.add_column(m, justify="right")
    marks = sorted({0, 1, 5, 10, 25, 50, 100, 200, cfg.steps} & set(range(cfg.steps + 1)))
    for s in marks:
        table.add_row(str(s), *(f"{result['methods'][m]['curve'][s]:.3f}" for m in methods))
    console.print(table)
    console.print(
        "expected (paper §3.3): SFT -> 2/3 (reward 5/6), iw-SFT with q = pi_theta -> 1.  "
        + "  ".join(f"{m}: {result['methods'][m]['p_right_final']:.3f}" for m in methods)
    )
    atomic_write_text(out / "figure1.json", json.dumps(result, indent=1))
    plot(result, out / "figure1.png")
    console.print(f"wrote {out / 'figure1.png'} and {out / 'figure1.json'}")
    return 0
