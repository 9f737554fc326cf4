"""What a person sees of an evaluation: the rich progress bar while it runs, the summary table after."""

from __future__ import annotations


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """What a running evaluation shows on stderr. A terminal: a rich bar per benchmark (samples done,
    tokens generated so far and tokens/s, both live between results; running accuracy; an ETA from this
    session's samples only, so a resumed run does not count stored samples as instant work). A log (not
    a terminal) or --no-progress: one line per event (start, then at most every 30 s, and the end), and
    between results (a vLLM round ends all at once) a line every 30 s with the tokens generated so far.
    `tokens`: a function giving the backend's generated-token counter, or None."""

    LINE_EVERY_S = 30.0

    def __init__(self, enabled: bool, tokens=None):
        import sys

        self.enabled = enabled
        self.tokens = tokens or (lambda: None)
        self.bars = enabled and sys.stderr.isatty()
        self._p = None
        self._tasks: dict = {}

    def __enter__(self):
        if self.bars:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            outer = self

            class LiveTokens(ProgressColumn):    # re-rendered by rich's refresh thread: moves between results
                def render(self, task):
                    st = outer._tasks.get(task.id)
                    now = outer.tokens()
                    if st is None or now is None or task.finished:
                        return Text(f"{task.fields['tps']} tok/s")
                    import time

                    n, dt = now - st["tok0"], time.time() - st["t0"]
                    return Text(f"{n:,} tok {n / dt if dt > 0 else 0:.1f} tok/s")

            self._p = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                LiveTokens(), TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(),
                TextColumn("eta {task.fields[eta]}"), console=Console(stderr=True), transient=False)
            self._p.__enter__()
        elif self.enabled:
            import threading

            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        elif getattr(self, "_ticker", None) is not None:
            self._stop.set()
            self._ticker.join()

    def _tick(self) -> None:
        """A log's heartbeat: the open task's tokens so far when no line came for LINE_EVERY_S."""
        import time

        while not self._stop.wait(self.LINE_EVERY_S / 6):
            now = self.tokens()
            for st in list(self._tasks.values()):
                if st.get("closed") or now is None or time.time() - st["last_line"] < self.LINE_EVERY_S:
                    continue
                st["last_line"] = time.time()
                n, dt = now - st["tok0"], time.time() - st["t0"]
                self._line(f"{st['name']}: {st['done']}/{st['total']} samples, generating: {n:,} tokens so far "
                           f"({n / dt if dt > 0 else 0:.1f} tok/s), elapsed {_eta(dt)}")

    def add(self, name: str, total: int, done: int):
        import time

        st = {"name": name, "total": total, "done0": done, "done": done, "t0": time.time(), "tok0": self.tokens() or 0,
              "last_line": time.time(), "closed": done >= total}
        if self._p is not None:
            task = self._p.add_task(name, total=total, completed=done, tps="-", acc="-", eta="-")
        else:
            task = len(self._tasks)
            self._line(f"{name}: {done}/{total} samples stored, generating {total - done}")
        self._tasks[task] = st
        return task

    def update(self, task, done: int, tps: float | None, acc: float | None, horizon: int | None = None):
        """`horizon`: the samples done once the backend call in flight returns. Results come in bursts at the
        end of a call (a batch; a budget-forcing round), so the first result of a call means the call is
        ending: the ETA counts the call's samples as done, not one sample per elapsed time."""
        import time

        st = self._tasks.get(task)
        if st is None:
            return
        st["done"], st["closed"] = done, done >= st["total"]
        upto = max(done, min(horizon, st["total"])) if horizon is not None else done
        now_done = upto - st["done0"]
        elapsed = time.time() - st["t0"]
        eta = _eta(elapsed / now_done * (st["total"] - upto)) if now_done > 0 else "-"
        acc_s = "-" if acc is None else f"{100 * acc:.1f}%"
        tps_s = "-" if tps is None else f"{tps:.1f}"
        if self._p is not None:
            self._p.update(task, completed=done, tps=tps_s, acc=acc_s, eta=eta)
        elif done >= st["total"] or time.time() - st["last_line"] >= self.LINE_EVERY_S:
            st["last_line"] = time.time()
            self._line(f"{st['name']}: {done}/{st['total']} samples, {tps_s} tok/s, acc {acc_s}, "
                       f"elapsed {_eta(elapsed)}, eta {eta}")

    @staticmethod
    def _line(text: str) -> None:
        import sys

        print(text, file=sys.stderr, flush=True)


def summary_rows(results: dict[str, dict]) -> list[list[str]]:
    out = []
    for name, m in results.items():
        if "skipped" in m:
            out.append([name, "-", "skipped", "-", "-", "-"])
            continue
        acc = m.get("accuracy")
        ci = m.get("ci95")
        acc_s = "-" if acc is None else f"{100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        think = m.get("thinking_tokens_mean")
        out.append([name, str(m["n"]) + (f" x{m['samples_per_problem']}" if m["samples_per_problem"] > 1 else ""),
                    acc_s, "-" if think is None else f"{think:.0f}",
                    str(m["unextracted"]), str(m["truncated"])])
    return out


def print_summary(results: dict[str, dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 110))
    from rich import box

    # 80 columns: headers on two lines, no vertical rules; cells never wrap (numbers stay whole)
    table = Table(title="iwsft eval", caption="accuracy: mean over problems of the fraction of samples right; "
                  "n: problems x samples", caption_justify="left", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col, just in (("benchmark", "left"), ("n", "right"), ("accuracy %\n[95% CI]", "right"),
                      ("thinking\ntokens\n(mean)", "right"), ("no answer\nextracted", "right"),
                      ("truncated", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in summary_rows(results):
        table.add_row(*r)
    console.print(table)
    for name, m in results.items():
        if "skipped" in m:
            console.print(f"{name} skipped: {m['skipped']}", markup=False, highlight=False, soft_wrap=True)
            continue
        console.print(f"{name}: {m['run_dir']}" + (f" (weights {m['weights_id']})" if m.get("weights_id") else ""),
                      markup=False, highlight=False, soft_wrap=True)
        if m.get("aggregates"):
            from harness.evaluation.aggregates import aggregate_line

            console.print(aggregate_line(name, m["aggregates"]), markup=False, highlight=False, soft_wrap=True)
        for line in notes(name, m):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def notes(name: str, m: dict) -> list[str]:
    """What the numbers leave out: problems with no room, problems not stored yet."""
    out = []
    if m.get("no_room"):
        out.append(f"{name}: {m['no_room']} problem(s) not scored (left out of n and accuracy): the prompt left no "
                   f"room under the total budget of {(m.get('settings') or {}).get('max_new_tokens')} tokens")
    if m.get("missing"):
        shard = f" (this was shard {m['shard']})" if m.get("shard") else ""
        out.append(f"{name}: {m['missing']} problem(s) of this selection not evaluated yet{shard}: other shards still "
                   "to run or an interrupted run; the numbers cover the rest")
    return out
