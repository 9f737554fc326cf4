"""The tiny preset's arith evaluation with each generation backend, side by side, in one run.

For each backend: a fresh engine and a fresh output folder, then `run_eval` with the tiny suite's
settings (evals/tiny.yaml: base model, budgets, batch size; 300 held-out arith problems, greedy).
Wall time counts everything a user waits for: engine start (model load; vLLM's engine process),
prompts, generation, grading. New tokens are the samples' thinking + answer tokens. Prints a table and
writes reports/bench/backends_<device>.json. Needs both backends: run it in the vLLM environment
(`just vllm-env`), e.g. `.venv-vllm/bin/python scripts/bench_backends.py [--limit N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(backend: str, limit: int | None, out: Path) -> dict:
    from harness.evaluation.config import EvalConfig
    from harness.evaluation.engine import Engine
    from harness.evaluation.runner import run_eval
    from harness.paper.suite import load_suite

    suite = load_suite("tiny")
    cfg = EvalConfig(model=suite.base_model, benchmarks=["arith"], backend=backend, limit=limit,
                     max_new_tokens=suite.max_new_tokens, thinking_budget=suite.thinking_budget,
                     answer_budget=suite.answer_budget, wait=suite.wait, temperature=suite.temperature,
                     dtype=suite.dtype, batch_size=suite.batch_size, out=str(out), progress=False, summary=False)
    t0 = time.perf_counter()
    engine = Engine.for_config(cfg)
    try:
        m = run_eval(cfg, engine=engine)["arith"]
        t_done = time.perf_counter()
    finally:
        engine.close()
    rows = [json.loads(l) for l in (Path(m["run_dir"]) / "samples.jsonl").read_text().splitlines() if l]
    wall = t_done - t0
    return {"backend": backend, "version": m["backend"]["version"], "dtype": m["settings"]["dtype"],
            "engine_options": m["settings"].get("engine_options"), "problems": m["n"],
            "new_tokens": m["generated_tokens"], "wall_time_s": round(wall, 1),
            "new_tokens_per_s": round(m["generated_tokens"] / wall, 1), "accuracy": m["accuracy"],
            "responses": {r["problem_id"]: r["response"] for r in rows}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="first N arith problems (default: all 300)")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    args = ap.parse_args()
    from harness.evaluation.generation.precision import compute_device

    device = compute_device()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            results.append(measure(backend, args.limit, Path(tmp) / backend))
            r = results[-1]
            print(f"{backend}: {r['new_tokens']} new tokens in {r['wall_time_s']} s (engine start included) = "
                  f"{r['new_tokens_per_s']} new tokens/s; accuracy {r['accuracy']:.3f}", flush=True)
    same = None
    if len(results) == 2:
        a, b = (r["responses"] for r in results)
        same = sum(a[k] == b.get(k) for k in a)
    print(f"\n{'backend':<8} {'version':<40} {'wall s':>8} {'new tokens':>11} {'tokens/s':>9} {'accuracy':>9}")
    for r in results:
        print(f"{r['backend']:<8} {r['version']:<40} {r['wall_time_s']:>8} {r['new_tokens']:>11} "
              f"{r['new_tokens_per_s']:>9} {r['accuracy']:>9.3f}")
    if same is not None:
        print(f"identical responses: {same} of {len(results[0]['responses'])}")
    report = {"what": "tiny preset arith evaluation (evals/tiny.yaml settings), each backend from a fresh engine",
              "started": started, "device": device, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                                  "load_average_before": [round(x, 2) for x in load_before]},
              "results": [{k: v for k, v in r.items() if k != "responses"} for r in results],
              "identical_responses": same}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"backends_{device}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":      # vLLM starts its engine in a spawned process
    main()
