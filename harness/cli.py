"""`iwsft` entry point. Each sub-command lives in `harness/commands/<name>.py` and defines
`HELP`, `add_arguments(parser)` and `run(args) -> int`; this module only discovers and dispatches,
so heavy imports (torch, transformers) happen inside the command that needs them."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import harness.commands as commands_pkg
from harness.errors import UserError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"harness.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iwsft", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _command_modules():
        # argparse %-formats help strings ("95% CI" would crash `iwsft --help`); descriptions are not
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # A command whose trailing positionals are free-form (train's key=value overrides) takes them
    # after its flags too: `iwsft train R --check max_steps=1`.
    extra = getattr(args, "_trailing", None)
    if rest and extra and not any(r.startswith("-") for r in rest):
        setattr(args, extra, list(getattr(args, extra) or []) + rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130
