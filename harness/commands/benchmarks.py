"""`iwsft benchmarks`: the benchmarks `iwsft eval --benchmarks` accepts (lm-eval's `--tasks list`)."""

from __future__ import annotations

HELP = "List the benchmarks: built-in, from installed plugin packages, and from --benchmark-file files"


def add_arguments(p):
    p.add_argument("--benchmark-file", action="append", default=[], metavar="[NAME=]PATH",
                   help="also list (and check) a benchmark file, as `iwsft eval --benchmark-file`; repeatable")


def origins(files: dict[str, str]) -> dict[str, str]:
    """name -> where it comes from: "built-in", the plugin's package, or "file PATH"."""
    from harness.evaluation.benchmarks import names
    from harness.evaluation.benchmarks._plugins import plugin_benchmarks

    plugins = {spec.name: origin.split(" (")[0] for spec, origin in plugin_benchmarks()}
    return {n: f"file {files[n]}" if n in files else plugins.get(n, "built-in") for n in names()}


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.core.errors import UserError
    from harness.evaluation.benchmarks import get_benchmark, parse_file_arg, register_files

    files = dict(parse_file_arg(item) for item in args.benchmark_file)
    if len(files) != len(args.benchmark_file):
        raise UserError("--benchmark-file: two files share one name; name one with --benchmark-file OTHER=PATH")
    register_files(files)
    t = Table(title="Benchmarks of iwsft eval --benchmarks", title_justify="left")
    for col in ("name", "grader", "from", "options", "description"):
        t.add_column(col, overflow="fold")
    for name, origin in origins(files).items():
        spec = get_benchmark(name)
        t.add_row(name, spec.grader, origin, ", ".join(spec.options) or "-", spec.description)
    Console().print(t)     # folds at the terminal's width (80 columns when piped)
    return 0
