"""`iwsft eval`: offline evaluation of a checkpoint on AIME24, MATH500 and GPQA Diamond."""

from __future__ import annotations

import argparse

from harness.core.errors import UserError
from harness.evaluation.generation import BACKEND_CHOICES

HELP = "evaluate a model on AIME24 / MATH500 / GPQA Diamond (s1 protocol, resumable)"


def _thinking_budget(text: str):
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("none", "off"):
        return None
    try:
        v = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count, 'auto' or 'none', not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1 (or 'none' for no cap)")
    return v


def _limit(text: str) -> int | float:
    """N problems, or (as lm-eval's --limit) a fraction below 1 of each benchmark (rounded up)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction below 1, not {text!r}") from None
    if 0 < v < 1:
        return v
    if v != int(v):
        raise argparse.ArgumentTypeError(f"a count of problems is whole and a fraction is below 1, not {text!r}")
    return int(v)


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p):
    p.add_argument("--model", required=True,
                   help="local HF checkpoint dir, hub id, or the alias smollm2-135m")
    p.add_argument("--benchmarks", type=_csv_list, default=None,
                   help="comma-separated (default: aime24,math500,gpqa_diamond; with --benchmark-file: only the files)")
    p.add_argument("--benchmark-file", action="append", default=[], metavar="[NAME=]PATH",
                   help="a benchmark of your own: a JSONL or YAML file of problems (id, question, gold, grader; "
                        "options for choice), named after the file's stem unless NAME= is given; repeatable "
                        "(docs/evaluation.md)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="generation backend; auto = vLLM when it is installed (GPU or its CPU build), else HF")
    p.add_argument("--limit", type=_limit, default=None,
                   help="first N problems of each benchmark, or a fraction below 1 of each (lm-eval's meaning, "
                        "rounded up: 0.1 of AIME24's 30 is 3)")
    p.add_argument("--ids", type=_csv_list, nargs="+", default=None, metavar="ID",
                   help="problem ids (comma or space separated); with several benchmarks write BENCHMARK:ID")
    p.add_argument("--total-budget", type=int, default=None, metavar="N",
                   help="tokens per request, the PROMPT INCLUDED (s1's max_gen_toks, default 32768); the 'auto' "
                        "cap and the answer's room count the prompt inside it; a problem whose prompt leaves no "
                        "room is reported as no_room, not scored")
    p.add_argument("--max-new-tokens", dest="deprecated_max_new_tokens", type=int, default=None,
                   help=argparse.SUPPRESS)   # deprecated alias of --total-budget
    p.add_argument("--thinking-budget", type=_thinking_budget, default="auto",
                   help="thinking cap in tokens, 'auto' (s1: total - longest prompt of the benchmark - "
                        "len(close) - 100) or 'none' (no cap of its own: thinking may fill the total less the "
                        "prompt, the close and the answer's room, --answer-budget or 100 tokens)")
    p.add_argument("--answer-budget", type=int, default=None,
                   help="max answer tokens after thinking (default: what is left of the total)")
    p.add_argument("--wait", type=int, default=0,
                   help="times to suppress the end of thinking and append 'Wait' (budget forcing)")
    p.add_argument("--budget-mode", choices=["independent", "s1-compat"], default="independent",
                   help="independent: exact cap per request; s1-compat: s1's round loop (cap can be exceeded)")
    p.add_argument("--delimiters", "--thinking-format", dest="delimiters", default="s1",
                   help="thinking format: s1 (<|im_start|>think/answer), think-tags (DeepSeek-R1: <think>...</think>, "
                        "turn ends at EOS), qwen3 (Qwen3's template, <think>...</think>, <|im_end|>), or plain "
                        "(no think prefix, no thinking phase, no cap: the response is the whole answer)")
    p.add_argument("--chat-template-kwargs", default=None, metavar="JSON",
                   help="variables for the chat template, a JSON object, e.g. '{\"enable_thinking\": false}' "
                        "(with qwen3/think-tags, false means no thinking phase)")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (K); K>1 needs --temperature > 0")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (s1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the K most likely tokens (0 or -1: off); vLLM's meaning")
    p.add_argument("--min-p", type=float, default=0.0,
                   help="drop tokens less likely than MIN_P x the most likely one (0: off); vLLM's meaning")
    p.add_argument("--presence-penalty", type=float, default=0.0,
                   help="subtracted once from the logit of every token the request has generated, in [-2, 2] (0: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="logit / P (or x P when negative) for every token of the prompt and output so far, > 0 (1: off)")
    p.add_argument("--aggregate", dest="aggregates", action="append", default=[], metavar="AGG@K",
                   help="also report avg@K (mean accuracy over K samples), maj@K (majority vote over equivalent "
                        "answers) or pass@K (unbiased, Chen et al. 2021); repeatable or comma-separated, K <= --samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpqa-csv", default=None, metavar="PATH",
                   help="local GPQA Diamond CSV (dataset columns); default $IWSFT_GPQA_CSV, else the hub")
    p.add_argument("--benchmark-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option of a chosen benchmark's loader, repeatable; unknown keys are refused "
                        "(arith: arith_level=add1|add2|sub1|mul1, arith_split=test|train; "
                        "gpqa_diamond: gpqa_prompt=s1|simple-evals, default s1)")
    p.add_argument("--system", default=None, help="system message (default: the chat template's own)")
    p.add_argument("--out", default="runs/eval", help="output root (default runs/eval)")
    p.add_argument("--dtype", default="auto",
                   help="auto (the same on every backend: float32 on a CPU; on CUDA the checkpoint's 16-bit dtype, "
                        "else bfloat16) | float32 | bfloat16 | float16; s1 used float32 on vLLM")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit of --model (hub ids only)")
    p.add_argument("--adapter", default=None, metavar="PATH_OR_HUB_ID",
                   help="a peft LoRA adapter on --model (needs peft: pip install 'iwsft-harness[lora]'); merged into "
                        "the weights on hf, a LoRARequest on vLLM; its files' fingerprint keys the run folder")
    p.add_argument("--tokenizer", default=None, metavar="NAME",
                   help="another tokenizer (folder or hub id) for the prompts and the engine")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="vLLM: context length of the engine (default: the model's)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="vLLM: fraction of GPU memory it reserves (default 0.9); on vLLM's CPU build the fraction "
                        "of RAM (default 0.15; or set VLLM_CPU_KVCACHE_SPACE=GiB)")
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                   help="vLLM: no CUDA graphs / compilation (default: on a CPU yes, a start takes ~30 s "
                        "instead of ~150 s; on CUDA no)")
    p.add_argument("--prefix-caching", dest="enable_prefix_caching", action=argparse.BooleanOptionalAction,
                   default=None, help="vLLM: reuse the KV cache of shared prefixes (default yes: budget forcing "
                                      "re-submits each request; s1 ran without it)")
    p.add_argument("--batch-size", type=int, default=None, help="requests per backend call")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="worker K of N sharing one run (Slurm array, shell loop): every N-th problem from the "
                        "K-th; each shard appends its own samples file and metrics read the union")
    p.add_argument("--data-parallel", type=int, default=None, metavar="N",
                   help="N engine replicas in N worker processes (each --shard k/N of this run, on its own "
                        "--tensor-parallel-size GPUs), then one summary; vLLM's offline data parallelism for a dense "
                        "model (harness/evaluation/parallel.py)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-with", type=_csv_list, default=[], metavar="TRACKER[,TRACKER]",
                   help="also log each benchmark's metrics to these experiment trackers (accelerate's: tensorboard, "
                        "mlflow, wandb, trackio; TensorBoard under OUT/tb/PROJECT/<model>)")
    p.add_argument("--tracker-project", default=None, metavar="NAME",
                   help="the trackers' project / MLflow experiment (default iwsft; training's tracker_project)")


def check_benchmark_options(benchmarks: list[str], options: dict) -> None:
    """Option keys must be read by one of the chosen benchmarks (a typo is not ignored), and their
    values must load: checked on the public benchmarks' data now, before any model is loaded."""
    from harness.evaluation.benchmarks import check_options, get_benchmark

    if not options:
        return
    if "gpqa_csv" in options:
        raise UserError("give the GPQA CSV with --gpqa-csv PATH, not --benchmark-option gpqa_csv=...")
    for b in benchmarks:
        get_benchmark(b)        # an unknown benchmark name is reported as such first
    check_options(benchmarks, options)
    for b in benchmarks:
        spec = get_benchmark(b)
        if spec.public and any(k in spec.options for k in options):
            spec.load({k: v for k, v in options.items() if k in spec.options})


# EvalConfig fields that no flag sets under their own name: derived from other flags (or the run's own).
DERIVED = {"benchmarks", "benchmark_files", "ids", "max_new_tokens", "shard", "progress", "benchmark_options",
           "longest_prompt", "summary", "grade_timeout_s", "grade_workers"}


def config_from_args(args):
    """The EvalConfig of these flags: every flag whose name is a field of EvalConfig passes through
    as is (tests/test_cli.py checks that each field is a flag or listed in DERIVED); validated by
    evaluation.config.validate."""
    from dataclasses import fields

    from harness.evaluation.config import EvalConfig, parse_shard

    ids = None
    if args.ids is not None:
        ids = [i for group in args.ids for i in group]
        if not ids:
            raise UserError("--ids given without any id")
    options = {}
    for item in args.benchmark_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--benchmark-option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    files, benchmarks = _benchmark_files(args)
    check_benchmark_options(benchmarks, options)
    _check_not_a_training_run(args.model)
    flags = vars(args)
    same = {f.name: flags[f.name] for f in fields(EvalConfig) if f.name in flags and f.name not in DERIVED}
    return EvalConfig(**same, benchmarks=benchmarks, benchmark_files=files, ids=ids, max_new_tokens=_total_budget(args),
                      shard=None if args.shard is None else parse_shard(args.shard), progress=not args.no_progress,
                      benchmark_options=options)


def _benchmark_files(args) -> tuple[dict[str, str], list[str]]:
    """Register each --benchmark-file (checked now, before any model loads); the benchmarks to run:
    --benchmarks, then the files' (only the files' when --benchmarks is not given)."""
    from harness.evaluation.benchmarks import parse_file_arg, register_files
    from harness.evaluation.config import DEFAULT_BENCHMARKS

    files: dict[str, str] = {}
    for item in args.benchmark_file:
        name, path = parse_file_arg(item)
        if name in files:
            raise UserError(f"--benchmark-file: two files are named {name!r} ({files[name]}, {path}); name one with "
                            f"--benchmark-file OTHER={path}")
        files[name] = path
    register_files(files)
    given = list(args.benchmarks) if args.benchmarks is not None else ([] if files else list(DEFAULT_BENCHMARKS))
    return files, given + [n for n in files if n not in given]


def _total_budget(args) -> int:
    if args.deprecated_max_new_tokens is not None:
        if args.total_budget is not None:
            raise UserError("give --total-budget only (--max-new-tokens is its deprecated old name)")
        import sys

        print("warning: --max-new-tokens is deprecated and means the TOTAL budget per request, prompt included; "
              "use --total-budget", file=sys.stderr)
        return args.deprecated_max_new_tokens
    return 32768 if args.total_budget is None else args.total_budget


def _check_not_a_training_run(model: str) -> None:
    """A training run's folder (final/ and checkpoints/ inside, no weights) is not a model."""
    from pathlib import Path

    p = Path(model).expanduser()
    if p.is_dir() and not (p / "config.json").is_file() and ((p / "final").is_dir() or (p / "checkpoints").is_dir()):
        hint = p / "final" if (p / "final").is_dir() else p / "checkpoints" / "step-N"
        raise UserError(f"--model {model} is a training run's folder, not a model; evaluate its weights: --model {hint}")


def run(args) -> int:
    from harness.evaluation.config import validate
    from harness.evaluation.runner import run_eval

    from harness.core import trackers
    from harness.evaluation.tracking import log_results

    cfg = config_from_args(args)
    validate(cfg)          # every setting, before the model loads (run_eval checks again for library callers)
    if args.data_parallel is not None:
        from harness.evaluation.parallel import run_data_parallel

        run_data_parallel(cfg, args.data_parallel)    # generates everything; run_eval below only reads it
    names = trackers.parse(args.log_with)
    trackers.check(names, "--log-with")
    results = run_eval(cfg)
    log_results(names, args.tracker_project, cfg, results)
    ran = [m for m in results.values() if "skipped" not in m]
    if ran:
        write_call_results(cfg, results)
    return 0 if ran else 2


def write_call_results(cfg, results: dict) -> "Path":  # noqa: F821
    """One JSON for this call, as lm-eval's results_<date>.json: every benchmark's metrics (each with its
    run folder, settings and versions), the flags' settings and the library versions; beside the run
    folders, under OUT/<model-slug>/. No question text: the metrics hold none."""
    import dataclasses
    import datetime as dt
    import json
    from pathlib import Path

    from harness.core.io import atomic_write_text
    from harness.core.versions import package_versions
    from harness.evaluation.store import model_slug

    now = dt.datetime.now(dt.timezone.utc)
    path = Path(cfg.out) / model_slug(cfg.model) / f"results_{now.strftime('%Y-%m-%dT%H-%M-%S.%f')}.json"
    doc = {"date": now.isoformat(timespec="seconds"), "model": cfg.model, "versions": package_versions(),
           "config": dataclasses.asdict(cfg), "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, default=repr) + "\n")
    print(f"results of this call: {path}")
    return path
