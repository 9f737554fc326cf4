"""What a person sees of an evaluation: the rich progress bar while it runs, the summary table after."""

from __future__ import annotations


class Progress:
    """rich progress bar on stderr: problems done, tokens/s, running accuracy."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("problems"), TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def add(self, name: str, total: int, done: int):
        if self._p is None:
            return None
        return self._p.add_task(name, total=total, completed=done, tps="-", acc="-")

    def update(self, task, done: int, tps: float | None, acc: float | None):
        if self._p is None or task is None:
            return
        self._p.update(task, completed=done, tps="-" if tps is None else f"{tps:.1f}",
                       acc="-" if acc is None else f"{100 * acc:.1f}%")



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
