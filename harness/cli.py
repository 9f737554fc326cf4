"""`iwsft` entry point. Each sub-command lives in `harness/commands/<name>.py` and defines
`HELP`, `add_arguments(parser)` and `run(args) -> int`; this module only discovers and dispatches,
so heavy imports (torch, transformers) happen inside the command that needs them."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import harness.commands as commands_pkg
from harness.core.errors import UserError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"harness.commands.{info.name}")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other bad input is: the problem, and where the usage is
    (`--help` still prints the full usage). Sub-parsers are made of this class too."""

    def __init__(self, *args, **kwargs):
        # no prefix matching: `--seed 3` must not quietly become `--seeds 3` (a 3-seed training job)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it is None/False or its help already names it."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in h:
            return h
        return super()._get_help_string(action)


# lm-evaluation-harness flags a user of it types by habit -> what iwsft says instead.
LMEVAL_FLAGS = {
    "--tasks": "iwsft eval --benchmarks NAME[,NAME] (list them: iwsft benchmarks)",
    "--output_path": "iwsft eval --out DIR (results.json and one folder per benchmark run under it)",
    "--log_samples": "nothing: iwsft eval always writes samples.jsonl (prompt, response, grade) in each run folder",
    "--verbosity": "iwsft eval --no-progress (one line per event instead of bars); errors are one line anyway",
    "--model_args": "iwsft eval --model NAME_OR_PATH (and --dtype, --revision, --tokenizer, --adapter)",
    "--gen_kwargs": "iwsft eval --temperature, --top-p, --top-k, --total-budget",
    "--num_fewshot": "nothing: the s1 protocol is zero-shot",
    "--apply_chat_template": "nothing: iwsft eval always applies the model's chat template",
    "--batch_size": "iwsft eval --batch-size N",
    "--device": "nothing: the device is chosen automatically (CUDA when present)",
    "--output-path": "iwsft eval --out DIR",
    "--log-samples": "nothing: iwsft eval always writes samples.jsonl",
}


def lmeval_hint(argv: list[str], parser: argparse.ArgumentParser) -> str | None:
    """One line for the first lm-eval flag in argv that the chosen command does not know."""
    known = {opt for a in parser._actions for opt in a.option_strings}
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        cmd = next((x for x in argv if x in sub.choices), None)
        if cmd:
            known |= {opt for a in sub.choices[cmd]._actions for opt in a.option_strings}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in LMEVAL_FLAGS and flag not in known:
            return f"{flag} is lm-eval's flag; here: {LMEVAL_FLAGS[flag]}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iwsft", description="iw-SFT reproduction harness: train, evaluate and "
                                     "report (`iwsft COMMAND --help` for each command; README.md for the jobs).")
    from harness import __version__

    parser.add_argument("--version", action="version", version=f"iwsft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, module in _command_modules():
        # argparse %-formats help strings ("95% CI" would crash `iwsft --help`); descriptions are not
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP.replace("%", "%%"), description=module.HELP,
                           formatter_class=_Help)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _interrupt_hint=getattr(module, "interrupt_hint", None), _parser=p)
    return parser


def _quiet_library_warnings() -> None:
    """Library deprecations a user cannot act on, kept out of the logs: peft probes transformers'
    deprecated `is_gradient_checkpointing`; torch says pinned memory is unused on a CPU-only machine."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*'pin_memory' argument is set as true but no accelerator is found")


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
    parser = build_parser()
    hint = lmeval_hint(sys.argv[1:] if argv is None else list(argv), parser)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    # A command whose trailing positionals are free-form (train's key=value overrides) takes them
    # after its flags too: `iwsft train R --check max_steps=1`.
    extra = getattr(args, "_trailing", None)
    if rest and extra and not any(r.startswith("-") for r in rest):
        setattr(args, extra, list(getattr(args, extra) or []) + rest)
    elif rest:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(rest)}")
    signals, restore = _interrupts()
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # the reader went away (`iwsft power | head`): stop quietly, as `yes | head` does (128 + SIGPIPE);
        # stdout to devnull so the interpreter's last flush does not raise again (Python's signal docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except BaseException as e:
        # Ctrl-C or SIGTERM (kill, Slurm, docker stop): raised as KeyboardInterrupt, which
        # subprocess.run answers by killing its child (a training run), and which libraries may
        # wrap (torch.distributed.checkpoint does): the flag, not the exception type, says so.
        if not (signals or isinstance(e, KeyboardInterrupt)):
            raise
        hint = getattr(args, "_interrupt_hint", None)    # a command that does not resume says what it keeps
        if not os.environ.get("IWSFT_CHILD_OF_JOB"):     # a job's training child: the job says it, once
            print(hint(args) if hint else "interrupted; finished work is kept, re-run the same command to resume",
                  file=sys.stderr)
        return 130
    finally:
        restore()


def _interrupts():
    """Handlers for SIGINT and SIGTERM that record the signal and raise KeyboardInterrupt. Returns
    (the list the signals are recorded in, a function that puts the previous handlers back)."""
    import signal
    import threading

    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return seen, lambda: None

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return seen, lambda: [signal.signal(sig, h) for sig, h in old.items()]
