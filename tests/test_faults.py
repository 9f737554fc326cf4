"""Faults and hostile input (issue 29): every case ends in one line naming the file and the fix (exit
code 2, nothing half-written), or heals by itself and says so. One place for all of them:

Corrupt training state (one tiny trained run, copied per case)
    test_damaged_checkpoints_fall_back_and_heal   newest checkpoint's weights cut short, garbage
                                                  trainer_state.pt, torn metrics.jsonl line, garbage
                                                  config.yaml, stale .step-N.tmp: skipped/healed, said,
                                                  and the final weights equal the undamaged run's
    test_damaged_final_is_rebuilt                 final/model.safetensors cut short: rebuilt from the
                                                  last checkpoint (not "already trained")
    test_damaged_reference_cache_is_recomputed    cache file cut short, cache short of an example
    test_pipeline_reuses_only_a_whole_final       reproduce-table1 does not reuse a damaged final/
    test_no_usable_checkpoint_trains_from_start   every checkpoint damaged (optimizer state cut short,
                                                  garbage weights, garbage marker): trained from step 0
Full disk (a size-limited tmpfs where the machine allows mounting one, else ENOSPC simulated at the write)
    test_full_disk_eval_out                       `iwsft eval --out`: one line, rows written whole, re-run
                                                  after freeing space = an uninterrupted run
    test_full_disk_grade_output                   `iwsft grade --output`: one line, no file left
    test_full_disk_training_checkpoint            a checkpoint save: one line, no half folder, re-run =
                                                  uninterrupted weights
Hostile input
    test_hostile_benchmark_files                  lone surrogates, deep JSON/YAML, billion laughs,
                                                  gold 1e309, random bytes
    test_hostile_grader_input                     lone surrogate, deep JSON in `iwsft grade --input`
    test_hostile_recipes                          random bytes, deep YAML, aliases, seed 1e100 / -1,
                                                  max_steps 1e30 (also by --check)
    test_huge_seed_data_order                     seeds above 1.8e14 (seed * 100003 overflowed)
    test_compare_garbage_metrics                  garbage metrics.json given to `iwsft compare`
Stored verdicts and metrics after a resume
    test_stale_grader_version_regrades            verdicts of another grader version re-graded, counted
    test_metrics_rewritten_over_complete_samples  backend name/version after a kill at metrics.json or
                                                  a garbage metrics.json: as an uninterrupted run
    test_stale_settings_temp_file_is_removed      .settings.json.*.tmp left by a kill: removed
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.evaluation import runner as ev
from harness.evaluation.engine import Engine


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _said(text: str, *fragments: str) -> None:
    """Each fragment is in `text`, whatever line breaks rich put in (it wraps long paths anywhere)."""
    flat = "".join(text.split())
    for f in fragments:
        assert "".join(f.split()) in flat, text


def _one_line(rc, err, *fragments):
    """Exit 2 and one error line, the last one: progress lines (a log's, with --no-progress) may come before it."""
    assert rc == 2, err
    lines = err.splitlines()
    assert err.endswith("\n") and lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    for f in fragments:
        assert f in lines[-1], err
    return lines[-1] + "\n"


# ------------------------------------------------------------------------------ corrupt training state

def _train_args(tiny_dir, out, ref, **kw):
    base = dict(model=tiny_dir / "model", dataset=tiny_dir / "data.jsonl", block_size=96, global_batch_size=4,
                micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, max_steps=4, save_every=1, keep_checkpoints=3, resumable_checkpoints=3,
                weighting="iw-sft", seed=1, ref_cache_dir=ref, output_dir=out)
    base.update(kw)
    return ["train", "-", *(f"{k}={v}" for k, v in base.items())]


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """One uninterrupted tiny iw-SFT run (4 steps, checkpoints at 1, 2, 3) and its reference cache."""
    root = tmp_path_factory.mktemp("trained")
    rc, out, err = _run(_train_args(tiny_dir, root / "run", root / "ref"))
    assert rc == 0, err[-2000:]
    return root


def _copy(trained, tmp_path):
    shutil.copytree(trained / "run", tmp_path / "run")
    shutil.copytree(trained / "ref", tmp_path / "ref")
    return tmp_path / "run"


def _cut(path: Path, keep: int | None = None):
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep is not None else len(data) // 2])


def test_damaged_checkpoints_fall_back_and_heal(tiny_dir, trained, tmp_path):
    run = _copy(trained, tmp_path)
    shutil.rmtree(run / "final")                                         # killed before the end
    ck = run / "checkpoints"
    _cut(ck / "step-000003" / "model.safetensors")                       # newest: weights cut short
    (ck / "step-000002" / "trainer_state.pt").write_bytes(os.urandom(300))   # next: garbage state
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.')                                # a torn line
    (run / "config.yaml").write_bytes(b"\x00\xff garbage: [")
    (ck / ".step-000004.tmp").mkdir()                                    # a save cut by a kill
    (ck / ".step-000004.tmp" / "model.safetensors").write_bytes(b"half")
    rc, out, err = _run(_train_args(tiny_dir, run, tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "skipping checkpoint", "step-000003: model.safetensors is", "step-000002: trainer_state.pt does not load",
          "resuming from", "step-000001 (step 1/4)", "dropped 1 malformed line", "removed 1 unfinished temp",
          "config.yaml is damaged: checked against step-000003's settings")
    assert not (ck / ".step-000004.tmp").exists()
    _same_weights(trained / "run" / "final", run / "final")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_damaged_final_is_rebuilt(tiny_dir, trained, tmp_path):
    run = _copy(trained, tmp_path)
    _cut(run / "final" / "model.safetensors")
    rc, out, err = _run(_train_args(tiny_dir, run, tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "is damaged (model.safetensors is", "rebuilding it", "step-000003 (step 3/4)")
    assert "already trained" not in out
    _same_weights(trained / "run" / "final", run / "final")
    rc, out, _ = _run(_train_args(tiny_dir, run, tmp_path / "ref"))      # now whole: nothing to do
    assert rc == 0 and "already trained" in out
    # same size, other bytes: the checksum recorded at save catches it
    w = run / "final" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    rc, out, err = _run(_train_args(tiny_dir, run, tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "differs from what was saved (checksum)")
    _same_weights(trained / "run" / "final", run / "final")


@pytest.mark.parametrize("damage", ["cut", "short"])
def test_damaged_reference_cache_is_recomputed(tiny_dir, trained, tmp_path, damage):
    from safetensors.torch import save_file

    run = _copy(trained, tmp_path)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints")
    (cache,) = (tmp_path / "ref").glob("*.safetensors")
    if damage == "cut":
        _cut(cache)
    else:                                                   # whole file, one example left out
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            meta = f.metadata()
        t = load_file(str(cache))
        n0 = int(t["lengths"][0])
        save_file({"flat": t["flat"][n0:], "lengths": t["lengths"][1:], "ids": t["ids"][1:]}, str(cache), metadata=meta)
    rc, out, err = _run(_train_args(tiny_dir, run, tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "is damaged", "computing it again")
    _same_weights(trained / "run" / "final", run / "final")


def test_no_usable_checkpoint_trains_from_start(tiny_dir, trained, tmp_path):
    run = _copy(trained, tmp_path)
    shutil.rmtree(run / "final")
    ck = run / "checkpoints"
    (shard,) = (ck / "step-000003" / "optimizer").glob("*.distcp")
    _cut(shard)                                                          # the optimizer state cut short
    (ck / "step-000002" / "model.safetensors").write_bytes(b"garbage")
    (ck / "step-000001" / "iwsft_train.json").write_text("{")
    rc, out, err = _run(_train_args(tiny_dir, run, tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "step-000003: optimizer/", "step-000002: model.safetensors is 7 bytes",
          "step-000001: iwsft_train.json is damaged", "no checkpoint is usable: training from the start")
    _same_weights(trained / "run" / "final", run / "final")


def test_older_checkpoints_keep_weights_only(tiny_dir, trained, tmp_path):
    """resumable_checkpoints=1: older checkpoints drop the optimizer state (disk), stay whole for evaluation and
    keep their weights' identity; a resume passes over them, and with the one resumable checkpoint damaged
    trains from the start rather than from a checkpoint it cannot resume."""
    from harness.core.fingerprint import folder_fingerprint
    from harness.training import checkpoint

    run = _copy(trained, tmp_path)
    shutil.rmtree(run / "final")
    ck = run / "checkpoints"
    ids = {p.name: folder_fingerprint(p) for p in ck.iterdir()}
    shutil.rmtree(ck / "step-000003")                                      # killed after step 2's save
    args = _train_args(tiny_dir, run, tmp_path / "ref", resumable_checkpoints=1)
    rc, out, err = _run(args)
    assert rc == 0, err[-2000:]
    _said(out, "resuming from", "step-000002 (step 2/4)")
    assert [p.name for p in ck.iterdir() if checkpoint.resumable(p)] == ["step-000003"]
    for name in ("step-000001", "step-000002"):
        assert not (ck / name / "optimizer").exists() and checkpoint.damage(ck / name) is None
        assert folder_fingerprint(ck / name) == ids[name]               # evaluated samples stay reusable
    _same_weights(trained / "run" / "final", run / "final")
    shutil.rmtree(run / "final")
    (shard,) = (ck / "step-000003" / "optimizer").glob("*.distcp")
    _cut(shard)
    (ck / "step-000002" / ".optimizer.dropping").mkdir()                  # a drop cut short by a kill
    rc, out, err = _run(args)
    assert rc == 0, err[-2000:]
    _said(out, "step-000003: optimizer/", "no checkpoint is usable: training from the start")
    assert "step-000002:" not in out and not (ck / "step-000002" / ".optimizer.dropping").exists()
    _same_weights(trained / "run" / "final", run / "final")


# ------------------------------------------------------------------------------ full disk

@contextlib.contextmanager
def _small_disk(folder: Path, free: int):
    """`folder` on a tmpfs with about `free` bytes left, when this machine lets us mount one (root);
    None otherwise."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        yield None
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        filler = folder / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * (shutil.disk_usage(folder).free - free))
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _enospc_after(monkeypatch, module, name, matches, after: int = 0):
    """Simulated full disk: `module.name` (os.write, os.fsync) raises ENOSPC for a file whose path
    holds `matches`, from its (after+1)-th call on (a write first writes half its bytes, as a disk
    that fills mid-write does)."""
    real = getattr(module, name)
    calls = {"n": 0}

    def fake(fd, *a):
        if matches in os.readlink(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] > after:
                if name == "write" and len(a[0]) > 1:
                    real(fd, bytes(a[0][: len(a[0]) // 2]))
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, *a)

    monkeypatch.setattr(module, name, fake)
    return calls


class _HFLike(Engine):
    """No model; answers right on even request seeds. backend_info as the real engine's: null name and
    version until the backend has generated (it loads then)."""

    loaded = False

    def backend_kind(self):
        return "hf"

    def prompt_ids(self, problem, cfg):
        return [1] * (1 + len(problem.question) % 7)

    def prompt_text(self, ids):          # samples.jsonl's prompt (public benchmarks): no tokenizer here
        return f"<{len(ids)} prompt tokens>"

    def close_tokens(self, cfg):
        return 3

    def budget(self, cfg, longest_prompt):
        return longest_prompt

    def weights_id(self):
        return None

    def model_identity(self):
        return "fake:model"

    def generate(self, cfg, prompts, budget, seeds, on_result):
        type(self).loaded = True
        for j, seed in enumerate(seeds):
            ans = "204" if seed % 2 == 0 else "7"
            on_result(j, SimpleNamespace(text=f"t<|im_start|>answer\nAnswer: \\boxed{{{ans}}} " + "x" * 1500,
                                         thinking_tokens=5, answer_tokens=3, finish_reason="stop", hit_cap=False,
                                         num_waits_used=0, thinking_cap=budget))

    def backend_info(self):
        if not type(self).loaded:
            return {"kind": "hf", "name": None, "version": None}
        import transformers

        from harness.core.versions import version_of
        return {"kind": "hf", "name": "hf", "version": f"transformers {transformers.__version__}, torch {version_of('torch')}"}


VOLATILE = ("last_command", "cumulative_generated_tokens", "cumulative_generation_time_s", "cumulative_tokens_per_s",
            "run_dir", "versions")


def _folder_metrics(out: Path, bench="aime24") -> dict:
    (m,) = out.glob(f"*/{bench}/*/metrics.json")
    return {k: v for k, v in json.loads(m.read_text()).items() if k not in VOLATILE}


@pytest.fixture
def hf_like(monkeypatch):
    _HFLike.loaded = False
    monkeypatch.setattr(ev, "Engine", _HFLike)
    return _HFLike


EVAL = ["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "6", "--samples", "2", "--temperature", "0.5",
        "--no-progress"]


@pytest.mark.parametrize("how", ["tmpfs", "simulated"])
def test_full_disk_eval_out(tmp_path, monkeypatch, hf_like, how):
    assert _run([*EVAL, "--out", str(tmp_path / "whole")])[0] == 0
    out = tmp_path / "disk" / "ev"
    disk = _small_disk(tmp_path / "disk", free=3 * 4096) if how == "tmpfs" else contextlib.nullcontext()
    with disk as filler:
        if how == "tmpfs" and filler is None:
            pytest.skip("cannot mount a size-limited tmpfs here (not root)")
        if how == "simulated":
            _enospc_after(monkeypatch, os, "write", "samples.jsonl", after=3)
        _HFLike.loaded = False
        rc, _, err = _run([*EVAL, "--out", str(out)])
        _one_line(rc, err, "no space left in", "re-run the same command")
        (samples,) = out.glob("*/aime24/*/samples.jsonl")
        lines = samples.read_bytes().split(b"\n")
        assert lines[-1] == b"" and 0 < len(lines) - 1 < 12                      # whole rows only
        assert all(json.loads(line)["correct"] in (True, False) for line in lines[:-1])
        monkeypatch.undo()
        monkeypatch.setattr(ev, "Engine", _HFLike)
        if filler is not None:
            filler.unlink()                                                      # space freed
        _HFLike.loaded = False
        rc, _, err = _run([*EVAL, "--out", str(out)])
        assert rc == 0, err
        assert "re-graded" not in err
        assert _folder_metrics(out) == _folder_metrics(tmp_path / "whole")


def test_full_disk_grade_output(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"response": f"Answer: \\boxed{{{i}}}", "gold": "3"}) + "\n" for i in range(5)))
    _enospc_after(monkeypatch, os, "fsync", "graded.jsonl")
    rc, _, err = _run(["grade", "--benchmark", "integer", "--input", str(src), "--output", str(tmp_path / "graded.jsonl"),
                       "--workers", "1"])
    _one_line(rc, err, f"no space left in {tmp_path}", "bytes was needed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]                # no temp file, no output


def test_full_disk_training_checkpoint(tiny_dir, trained, tmp_path, monkeypatch):
    real = torch.save

    def full_at_second_checkpoint(obj, f, *a, **k):     # torch's own words for an ENOSPC in its zip writer
        if "step-000002" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_second_checkpoint)
    run = tmp_path / "run"
    rc, _, err = _run(_train_args(tiny_dir, run, trained / "ref"))
    _one_line(rc, err, f"no space left in {run / 'checkpoints'}", "MB was needed", "re-run the same command")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]   # no half folder
    monkeypatch.undo()
    rc, out, err = _run(_train_args(tiny_dir, run, trained / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "step-000001 (step 1/4)")
    _same_weights(trained / "run" / "final", run / "final")


# ------------------------------------------------------------------------------ hostile input

LAUGHS = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))


@pytest.mark.parametrize("name,content,fragments", [
    ("sur.jsonl", '{"id": "a\\ud800", "question": "q", "gold": "1", "grader": "integer"}\n', ["sur.jsonl:1", "lone surrogate"]),
    ("surq.jsonl", '{"id": "a", "question": "x\\udfff", "gold": "1", "grader": "integer"}\n', ["surq.jsonl:1", "surrogate"]),
    ("deep.jsonl", '{"id": "a", "question": "q", "gold": "1", "grader": "integer", "meta": ' + "[" * 100000 + "]" * 100000
     + "}\n", ["deep.jsonl:1", "nested too deeply"]),
    ("deep.yaml", "- id: a\n  meta: " + "[" * 100000 + "]" * 100000 + "\n", ["deep.yaml", "nested too deeply"]),
    ("laughs.yaml", "- id: a\n  question: q\n  gold: '1'\n  grader: integer\n  meta:\n    l0: &l0 [x, x]\n"
     + "".join("    " + line + "\n" for line in LAUGHS.splitlines()), ["laughs.yaml:", "alias (*l0) is not allowed"]),
    ("inf.jsonl", '{"id": "a", "question": "q", "gold": 1e309, "grader": "math"}\n', ["inf.jsonl:1", "too large", "quote it"]),
    ("rnd.yaml", bytes(range(256)) * 3, ["rnd.yaml", "not UTF-8"]),
], ids=lambda v: v if isinstance(v, str) and v.endswith(("l", "yaml")) and len(v) < 20 else "")
def test_hostile_benchmark_files(tmp_path, name, content, fragments):
    import resource

    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, _, err = _run(["eval", "--model", "smollm2-135m", "--benchmark-file", str(f), "--out", str(tmp_path / "ev"),
                       "--no-progress"])
    _one_line(rc, err, *fragments)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000    # KiB: memory stays bounded
    assert not (tmp_path / "ev").exists() or not any((tmp_path / "ev").iterdir())


@pytest.mark.parametrize("line,fragments", [
    ('{"response": "Answer: 1\\ud800", "gold": "1"}', ["in.jsonl:1", "lone surrogate"]),
    ('{"response": "x", "gold": "1", "extra": ' + "[" * 100000 + "]" * 100000 + "}", ["in.jsonl:1", "nested too deeply"]),
])
def test_hostile_grader_input(tmp_path, line, fragments):
    (tmp_path / "in.jsonl").write_text(line + "\n")
    rc, _, err = _run(["grade", "--benchmark", "integer", "--input", str(tmp_path / "in.jsonl"),
                       "--output", str(tmp_path / "out.jsonl")])
    _one_line(rc, err, *fragments)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("content,override,fragments", [
    (bytes(range(256)) * 4, None, ["recipe", "r.yaml:2", "not UTF-8"]),      # the first bad byte is on line 2
    ("lr: " + "[" * 100000 + "]" * 100000 + "\n", None, ["r.yaml", "nested too deeply"]),
    ("a: &a [1, 2]\nb: *a\n", None, ["r.yaml:2", "alias (*a) is not allowed"]),
    ("seed: 1.0e+100\n", None, ["seed must be an integer in [0, 2**63)"]),
    ("max_steps: 1.0e+30\n", None, ["max_steps must be an integer in [1, 1e+09]"]),
    ("", "seed=-1", ["seed must be an integer in [0, 2**63) (got -1)"]),
    ("", "max_steps=1000000000000", ["max_steps must be an integer in [1"]),
], ids=["random-bytes", "deep", "alias", "seed-1e100", "max-steps-1e30", "seed-negative", "max-steps-1e12"])
def test_hostile_recipes(tmp_path, content, override, fragments):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content if isinstance(content, bytes) else content.encode())
    for check in (["--check"], []):                # refused by --check and by a real run alike
        rc, _, err = _run(["train", str(recipe), *([override] if override else []), f"output_dir={tmp_path / 'o'}", *check])
        _one_line(rc, err, *fragments)
        assert not (tmp_path / "o").exists()


def test_huge_seed_data_order():
    from harness.training.trainer import DataOrder

    assert DataOrder(10, 5).step_indices(3, 4) == DataOrder(10, 5).step_indices(3, 4)
    big = DataOrder(10, 2**63 - 1)                  # seed * 100003 is far past 2**64
    assert sorted(big.step_indices(0, 10)) == list(range(10))
    g = torch.Generator().manual_seed(7 * 100_003 + 1)                 # small seeds: the order as ever
    assert DataOrder(10, 7)._perm(1) == torch.randperm(10, generator=g).tolist()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"problem_ids": 5}', "\udcff"])
def test_compare_garbage_metrics(tmp_path, monkeypatch, hf_like, content):
    assert _run([*EVAL, "--out", str(tmp_path / "a")])[0] == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (m,) = (tmp_path / "b").glob("*/aime24/*/metrics.json")
    m.write_bytes(content.encode("utf-8", "surrogateescape"))
    rc, _, err = _run(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    _one_line(rc, err, str(m), "damaged", "re-run")


# ------------------------------------------------------------------------------ stored verdicts, metrics

def test_stale_grader_version_regrades(tmp_path, monkeypatch, hf_like):
    from harness.evaluation.grading import GRADER_VERSION

    assert _run([*EVAL, "--out", str(tmp_path / "ev")])[0] == 0
    whole = _folder_metrics(tmp_path / "ev")
    (samples,) = (tmp_path / "ev").glob("*/aime24/*/samples.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert {r["grader_version"] for r in rows} == {GRADER_VERSION}
    for r in rows[:3]:                       # verdicts from an older grader: flipped, no version stored
        r["correct"] = not r["correct"]
        del r["grader_version"]
    rows[3]["correct"] = not rows[3]["correct"]       # a verdict of this version is trusted as stored
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = _run([*EVAL, "--out", str(tmp_path / "ev")])
    assert rc == 0 and "re-graded 3 stored verdict(s) of samples.jsonl with grader version" in err and "3 changed" in err, err
    again = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["correct"] for r in again[:3]] == [not r["correct"] for r in rows[:3]]
    assert again[3]["correct"] == rows[3]["correct"]
    assert _folder_metrics(tmp_path / "ev")["correct"] == whole["correct"] + (1 if rows[3]["correct"] else -1)
    assert "re-graded" not in _run([*EVAL, "--out", str(tmp_path / "ev")])[2]


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_metrics_rewritten_over_complete_samples(tmp_path, monkeypatch, hf_like, damage):
    assert _run([*EVAL, "--out", str(tmp_path / "ev")])[0] == 0
    whole = _folder_metrics(tmp_path / "ev")
    assert whole["backend"]["name"] == "hf" and whole["backend"]["version"].startswith("transformers")
    (m,) = (tmp_path / "ev").glob("*/aime24/*/metrics.json")
    m.unlink() if damage == "deleted" else m.write_text('{"backend": {"kind": "hf", "na')   # killed mid-write
    _HFLike.loaded = False                  # a new process: nothing generates, no backend loads
    assert _run([*EVAL, "--out", str(tmp_path / "ev")])[0] == 0
    assert _folder_metrics(tmp_path / "ev") == whole


def test_stale_settings_temp_file_is_removed(tmp_path, monkeypatch, hf_like):
    assert _run([*EVAL, "--out", str(tmp_path / "ev")])[0] == 0
    (run_dir,) = (tmp_path / "ev").glob("*/aime24/*")
    (run_dir / ".settings.json.abc123.tmp").write_text('{"half')      # a kill during the settings write
    assert _run([*EVAL, "--out", str(tmp_path / "ev")])[0] == 0
    assert not list(run_dir.glob(".*.tmp"))


def test_pipeline_reuses_only_a_whole_final(trained, tmp_path, monkeypatch):
    """reproduce-table1 reuses a finished training run only when its final/ is as saved; a damaged one
    goes back to `iwsft train` (which rebuilds it, test_damaged_final_is_rebuilt)."""
    from rich.console import Console

    from harness.paper import pipeline
    from harness.paper.suite import load_suite

    suite = load_suite("tiny")
    name = next(iter(suite.recipes))
    shutil.copytree(trained / "run" / "final", tmp_path / "run" / "final")
    calls = []
    monkeypatch.setattr(pipeline.subprocess, "Popen",            # the training subprocess, recorded, not run
                        lambda cmd, **k: calls.append(cmd) or SimpleNamespace(wait=lambda: 0, returncode=0))
    quiet = Console(file=io.StringIO())
    pipeline.train_recipe(suite, name, 0, quiet, [f"output_dir={tmp_path / 'run'}"])
    assert calls == []                                                   # whole: reused
    _cut(tmp_path / "run" / "final" / "model.safetensors")
    pipeline.train_recipe(suite, name, 0, quiet, [f"output_dir={tmp_path / 'run'}"])
    assert len(calls) == 1 and "train" in calls[0]                       # damaged: trained again


def test_ctrl_c_in_the_reference_pass_keeps_its_micro_batches(tiny_dir, trained, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT/SIGTERM raise KeyboardInterrupt) in the reference log-prob pass: the micro-batches done
    are kept in a partial file; the re-run skips them and its cache is byte-for-byte the uninterrupted one."""
    from harness.training import refcache
    from harness.training.trainer import Trainer

    real, calls = Trainer._logprobs, []

    def interrupted(self, model, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(Trainer, "_logprobs", interrupted)
    rc, out, err = _run(_train_args(tiny_dir, tmp_path / "run", tmp_path / "ref"))
    assert rc == 130, err[-2000:]
    (partial,) = (tmp_path / "ref").glob("*.partial.safetensors")
    assert not [p for p in (tmp_path / "ref").glob("*.safetensors") if p != partial]   # no cache yet
    _said(out, "2 micro-batches kept in", "re-run to resume the pass")
    monkeypatch.setattr(Trainer, "_logprobs", real)
    rc, out, err = _run(_train_args(tiny_dir, tmp_path / "run", tmp_path / "ref"))
    assert rc == 0, err[-2000:]
    _said(out, "resuming after 2 micro-batches done before")
    assert not partial.exists()
    (cache,) = (tmp_path / "ref").glob("*.safetensors")
    (want,) = (trained / "ref").glob("*.safetensors")
    assert cache.name == want.name and cache.read_bytes() == want.read_bytes()
    _same_weights(trained / "run" / "final", tmp_path / "run" / "final")
    # a partial file made for other settings is not used: the pass starts again
    bad = refcache.partial_path(cache)
    refcache.save_cache(bad, {}, {"model": "other", refcache.PARTIAL_KEY: 5})
    with pytest.raises(refcache.DamagedCache):
        refcache.load_partial(bad, {"model": "m"})


def test_reference_pass_saves_as_it_goes(tmp_path):
    """A pass killed outright (no Python handler runs: kill -9, power loss) keeps what the last periodic save held."""
    from types import SimpleNamespace

    from harness.training import refcache

    acc = SimpleNamespace(num_processes=1, is_main_process=True, wait_for_everyone=lambda: None)
    batches = [SimpleNamespace(example_ids=[k], spans=lambda: [(0, 0, 4)], k=k) for k in range(5)]
    meta, path = {"model": "m", "data": "d", "block_size": 8}, tmp_path / "c.safetensors"
    partial = refcache.partial_path(path)
    seen = []

    def lp(b):
        seen.append(b.k)
        if b.k == 3:
            assert refcache.load_partial(partial, meta)[1] == 3     # saved after each of 0, 1, 2 (every_s=0)
            raise RuntimeError("killed")                            # not KeyboardInterrupt: no save on the way out
        return torch.full((1, 4), float(b.k))

    with pytest.raises(RuntimeError):
        refcache.collect(batches, lp, acc, path, meta, partial, every_s=0)
    seen.clear()
    ref = refcache.collect(batches, lambda b: (seen.append(b.k), torch.full((1, 4), float(b.k)))[1], acc, path, meta,
                           partial, every_s=0)
    assert seen == [3, 4] and not partial.exists() and path.is_file()
    assert {k: v.tolist() for k, v in ref.items()} == {k: [float(k)] * 3 for k in range(5)}
