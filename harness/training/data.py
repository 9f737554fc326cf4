"""Curated training data: loading, the s1 text format, label masks, block size, SFT(Q) oversampling.
Chat data (`messages`, `prompt`/`completion`) is rendered and masked by harness/training/chat_data.py.

One example's text (docs/method.md#training-data-format), through the tokenizer's own chat template (its default system
prompt, no system message passed):

    {chat template for the user turn, with the generation prompt}
    <|im_start|>think\n{thinking}\n<|im_start|>answer\nAnswer: {attempt}<|im_end|>\n

The loss covers everything from the think prefix to the final end-of-turn (and its newline), as s1
does; "Answer: " is added only when the attempt does not already contain "Answer:" (s1's rule). The
prompt, the think prefix and the rest are tokenised separately and concatenated, exactly as
evaluation builds its prompt (template ids + think prefix ids), so both see the same token ids.

Sampled completions (`completion_column`, what `iwsft curate` writes) are trained as what the policy
generated: the think prefix was part of the sampling prompt and goes on the prompt side (no loss, no
weight); spans the sampler forced (`forced_column`: the close between thinking and answer) carry no
loss; the end-of-turn the policy emitted carries loss, the template's newline after it does not.
Each generated or forced piece is tokenised on its own, as the sampler appended them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import UserError


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[bool]     # True on tokens that carry loss (the completion)
    source_index: int         # row of the source dataset
    truncated: bool = False


@dataclass
class PreparedData:
    examples: list[Example]
    n_rows: int
    n_truncated: int
    n_dropped: int
    fingerprint: str          # hash of the token ids and masks: keys the reference cache

    def summary(self) -> dict:
        lengths = [len(e.input_ids) for e in self.examples]
        return {
            "rows": self.n_rows,
            "examples": len(self.examples),
            "truncated": self.n_truncated,
            "dropped": self.n_dropped,
            "tokens": int(sum(lengths)),
            "max_len": max(lengths) if lengths else 0,
            "fingerprint": self.fingerprint,
        }


def is_local(dataset: str) -> bool:
    """A local file (by suffix or existence), not a hub dataset id."""
    path = Path(dataset)
    return path.suffix in (".jsonl", ".json", ".parquet") or path.exists()


def load_rows(dataset: str, split: str = "train", recipe_dir: Path | None = None) -> list[dict]:
    """Rows of a local .jsonl/.json/.parquet file, or of a hub dataset (users have the hub). recipe_dir:
    the folder of the recipe that named the dataset, where a relative path was looked up first."""
    path = Path(dataset)
    if is_local(dataset):
        if not path.is_file():
            if recipe_dir is not None and not path.is_absolute():
                raise UserError(f"dataset file {path} does not exist: a recipe's relative path is resolved against "
                                f"the recipe's folder {recipe_dir}/ (then the current folder {Path.cwd()}/); put the "
                                f"file at {recipe_dir / path}, or give dataset=PATH")
            raise UserError(f"dataset file {path} does not exist; give a .jsonl/.parquet path or a hub id")
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path} is not a readable parquet file ({' '.join(str(e).split())[:120]}); "
                                "re-export it, or use .jsonl") from None
        return read_jsonl(path) if path.suffix == ".jsonl" else _read_json(path)
    from harness.core import hub

    why = hub.unavailable(dataset, "dataset")
    if why:
        raise UserError(f"dataset {dataset!r} is not a local file, and the hub is unreachable ({why}) with no cached "
                        "copy; point `dataset` at a local .jsonl/.parquet file")
    try:
        import datasets

        return list(datasets.load_dataset(dataset, split=split))
    except Exception as e:  # offline, gated, missing: one line with the fix
        raise UserError(
            f"could not load dataset {dataset!r} from the hub ({type(e).__name__}); "
            "check the id and your network/token, or point `dataset` at a local .jsonl/.parquet file"
        ) from None


class Rows(list):
    """Rows of a .jsonl file, with the line each came from, so errors can name `path:line`."""

    def __init__(self, rows, path: Path, lines: list[int]):
        super().__init__(rows)
        self.path, self.lines = path, lines


def row_label(rows: list[dict], i: int, dataset: str | None = None) -> str:
    """Where row `i` is, for an error message: `file.jsonl:LINE` or `dataset X row i` (0-based)."""
    if isinstance(rows, Rows) and len(rows.lines) == len(rows):
        return f"{rows.path}:{rows.lines[i]}"
    return f"dataset {dataset} row {i}" if dataset else f"row {i}"


def read_jsonl(path: Path) -> Rows:
    from harness.core.io import read_jsonl as numbered

    numbered_rows = numbered(path)
    return Rows([row for _, row in numbered_rows], path, [n for n, _ in numbered_rows])


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (is it a binary file?); JSON must be UTF-8, re-save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; give a readable .json/.jsonl/.parquet file") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to read; flatten it") from None
    if not isinstance(data, list):
        raise UserError(f"{path} must hold a JSON list of rows (or use .jsonl)")
    from harness.core.io import lone_surrogate

    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise UserError(f"{path}: item {i} of the list is not a JSON object (got {type(row).__name__} {row!r:.30}); "
                            'every row must be an object like {"question": ..., ...}')
        bad = lone_surrogate(row)
        if bad is not None:
            raise UserError(f"{path}: item {i}: {bad!r} holds a lone surrogate escape (\\udXXX: not text); fix that text")
    return data


def quality_oversample(rows: list[dict], score_column: str, percentiles: list[float]) -> list[int]:
    """SFT(Q): indices of rows at or above each percentile cutoff of the score, concatenated, so
    with the default (90, 95, 98) the top 2% appear three times, 95-98 twice and 90-95 once."""
    scores = []
    for i, r in enumerate(rows):
        try:
            scores.append(float(r[score_column]))
        except (TypeError, ValueError):
            raise UserError(f"{row_label(rows, i)}: score_column {score_column!r} is {r[score_column]!r:.40}, not a number; "
                            "fix that row or unset score_column") from None
    scores = np.array(scores)
    out: list[int] = []
    for p in percentiles:
        cut = np.percentile(scores, p)
        out.extend(int(i) for i in np.nonzero(scores >= cut)[0])
    return out


def format_texts(tokenizer, question: str, thinking: str, attempt: str, think_prefix: str, answer_prefix: str,
                 verbatim: str | None = None):
    """(prompt_text, completion_text) of one example in the s1 format; with `verbatim`, the
    completion is the think prefix followed by that sampled text unchanged."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    if verbatim is not None:
        body = think_prefix + verbatim
    else:
        answer = attempt if "Answer:" in attempt else "Answer: " + attempt   # s1: only when absent
        body = f"{think_prefix}\n{thinking.strip()}\n{answer_prefix}\n{answer.strip()}"
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": body}], tokenize=False
    )
    if not full.startswith(prompt):
        raise UserError("the tokenizer's chat template renders the user turn differently with and without the "
                        "assistant turn; this harness needs a ChatML-style template (e.g. Qwen, SmolLM)")
    return prompt, full[len(prompt):]


def sampled_segments(completion: str, think_prefix: str, verbatim: str, forced: list, eos: str | None
                     ) -> list[tuple[str, bool]]:
    """(text, carries loss) pieces of a sampled completion (think prefix + verbatim + template tail):
    the think prefix and forced spans without loss, the generated text and the emitted end-of-turn
    with loss, the rest of the template tail without."""
    head = think_prefix if completion.startswith(think_prefix + verbatim) else ""
    if not completion.startswith(head + verbatim):
        raise UserError("the chat template changed the sampled response (it must appear verbatim after the think "
                        "prefix); this harness needs a ChatML-style template (e.g. Qwen, SmolLM)")
    pieces: list[tuple[str, bool]] = [(head, False)]
    at = 0
    for start, end in sorted(forced):
        pieces += [(verbatim[at:start], True), (verbatim[start:end], False)]
        at = end
    pieces.append((verbatim[at:], True))
    tail = completion[len(head) + len(verbatim):]
    if eos and tail.startswith(eos):
        pieces += [(eos, True), (tail[len(eos):], False)]
    else:
        pieces.append((tail, False))
    return [(t, loss) for t, loss in pieces if t]


def _forced_spans(value, verbatim: str, where: str) -> list[list[int]]:
    ok = isinstance(value, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) for x in p)
        and 0 <= p[0] <= p[1] <= len(verbatim) for p in value)
    spans = sorted(value) if ok else []
    if not ok or any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise UserError(f"{where}: forced spans {value!r:.60} are not non-overlapping [start, end] character "
                        f"offsets within the response ({len(verbatim)} characters); fix that row")
    return spans


def check_rows(rows: list[dict], cfg) -> None:
    """The rows are there and each has the recipe's columns (a UserError naming the row otherwise)."""
    if not rows:
        raise UserError(f"dataset {cfg.dataset} is empty; point `dataset` at a file or hub id with rows")
    if cfg.forced_column and not cfg.completion_column:
        raise UserError("forced_column marks spans of a sampled response: set completion_column too, or unset forced_column")
    text_cols = [cfg.completion_column] if cfg.completion_column else [cfg.thinking_column, cfg.answer_column]
    if cfg.forced_column:
        text_cols.append(cfg.forced_column)
    needed = [cfg.question_column, *text_cols] + ([cfg.score_column] if cfg.score_column else [])
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise UserError(
            f"dataset {cfg.dataset} has no column(s) {missing}; it has {sorted(rows[0])[:12]}; "
            "set question_column / thinking_column / answer_column (or completion_column) in the recipe"
        )
    for i, r in enumerate(rows):
        missing = [c for c in needed if c not in r]
        if missing:
            raise UserError(f"{row_label(rows, i, cfg.dataset)}: row has no column(s) {missing} (every row needs "
                            f"{needed}); fix or remove that row")
        empty = [c for c in needed if r[c] is None]
        if empty:                   # would otherwise be trained on as the text "None"
            raise UserError(f"{row_label(rows, i, cfg.dataset)}: column(s) {empty} are null; fix or remove that row")


def _s1_segments(r: dict, idx: int, rows: list[dict], tokenizer, cfg) -> tuple[str, list[tuple[str, bool]]]:
    """(prompt text, (text, carries loss) pieces after it) of one s1-format row."""
    if cfg.completion_column:
        verbatim = str(r[cfg.completion_column])
        prompt, completion = format_texts(tokenizer, str(r[cfg.question_column]), "", "", cfg.think_prefix,
                                          cfg.answer_prefix, verbatim=verbatim)
        forced = _forced_spans(r[cfg.forced_column], verbatim, row_label(rows, idx, cfg.dataset)) \
            if cfg.forced_column else []
        return prompt, sampled_segments(completion, cfg.think_prefix, verbatim, forced, tokenizer.eos_token)
    prompt, completion = format_texts(
        tokenizer, str(r[cfg.question_column]), str(r[cfg.thinking_column] or ""),
        str(r[cfg.answer_column] or ""), cfg.think_prefix, cfg.answer_prefix,
    )
    # The think prefix is tokenised on its own, as evaluation appends it to the prompt.
    head = cfg.think_prefix if completion.startswith(cfg.think_prefix) else ""
    return prompt, [(head, True), (completion[len(head):], True)]


def prepare(rows: list[dict], tokenizer, cfg) -> PreparedData:
    """Tokenise rows into examples per the recipe `cfg` (a TrainConfig): s1 columns, or chat data
    (`messages`, `prompt`/`completion`: harness/training/chat_data.py), by `data_format`."""
    from harness.training import chat_data

    if getattr(cfg, "chat_template", None) is not None:     # the recipe's template: for the masks, and saved with the checkpoints
        tokenizer.chat_template = Path(cfg.chat_template).expanduser().read_text()
    fmt = chat_data.resolve_format(rows, cfg)
    if fmt == "s1":
        check_rows(rows, cfg)
    else:
        chat_data.check_rows(rows, cfg, fmt)
    order = quality_oversample(rows, cfg.score_column, cfg.quality_percentiles) if cfg.score_column else range(len(rows))
    examples, n_trunc, n_drop = [], 0, 0
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    cache: dict[int, Example | None] = {}
    for idx in order:
        if idx not in cache:
            r = rows[idx]
            if fmt == "s1":
                prompt, pieces = _s1_segments(r, idx, rows, tokenizer, cfg)
            else:   # the prompt is everything before the first piece with loss
                pieces = chat_data.segments(r, tokenizer, fmt, row_label(rows, idx, cfg.dataset))
                prompt = "".join(t for t, _ in pieces[: next(i for i, (_, loss) in enumerate(pieces) if loss)])
                pieces = pieces[next(i for i, (_, loss) in enumerate(pieces) if loss):]
            p_ids = encode(prompt)
            if len(p_ids) + 1 >= cfg.block_size:
                raise UserError(
                    f"block_size {cfg.block_size} is shorter than the prompt of row {idx} ({len(p_ids)} tokens) "
                    "plus one response token; raise block_size"
                )
            ids, mask, truncated = list(p_ids), [False] * len(p_ids), False
            for text, loss in pieces:
                piece = encode(text)
                ids += piece
                mask += [loss] * len(piece)
            if len(ids) > cfg.block_size:
                truncated = True
                ids, mask = ids[: cfg.block_size], mask[: cfg.block_size]
            cache[idx] = None if (truncated and cfg.truncation == "drop") else Example(ids, mask, idx, truncated)
            n_trunc += truncated
            n_drop += truncated and cfg.truncation == "drop"
        if cache[idx] is not None:
            examples.append(cache[idx])
    if not examples:
        raise UserError(f"every example of {cfg.dataset} is longer than block_size {cfg.block_size} and truncation=drop; "
                        "raise block_size or use truncation=truncate")
    return PreparedData(examples, len(rows), n_trunc, n_drop, fingerprint(examples))


def fingerprint(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
        h.update(np.packbits(np.asarray(e.loss_mask, dtype=bool)).tobytes())
        h.update(b"|")
    return h.hexdigest()
