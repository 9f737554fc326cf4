"""`iwsft bench-report`: the performance targets checked against benchmark JSON files."""

from __future__ import annotations

HELP = "Check the performance targets against iwsft bench / bench-gen JSON files; print markdown for docs/performance.md"


def add_arguments(p):
    p.add_argument("files", nargs="*", help="benchmark JSON files (default: reports/bench/*.json)")


def run(args) -> int:
    from pathlib import Path

    from harness.perf.targets import load, render
    from harness.core.errors import UserError

    files = [Path(f) for f in args.files] or sorted(Path("reports/bench").glob("*.json"))
    if not files:
        raise UserError("no benchmark files given and none in reports/bench/; run iwsft bench / bench-gen first")
    print(render(*load(files, skip_others=not args.files)))   # the folder also holds other results
    return 0
