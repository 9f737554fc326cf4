"""Run a grading function over many items with a per-item wall-clock timeout.

math-verify's own timeouts use SIGALRM, which only works in the main thread and cannot interrupt
C-level work (a SymPy power tower such as 9^{9^{9^9}} spends minutes inside one big-integer
multiplication). So graders call math-verify with its timeouts disabled and we enforce ours here:

- Pool path: a `ProcessPoolExecutor` (fork from a single-threaded parent, spawn when the parent
  runs other threads, e.g. vLLM's). At most `workers` items are in flight, so a submitted item starts at once and its
  deadline is submit time + timeout. When an item passes its deadline it is reported as timed out,
  the pool is killed (its worker may be stuck forever), the other in-flight items are re-queued and
  a fresh pool is started. A worker that dies (crash, OOM kill) sends its in-flight items back for
  one retry each, run alone; an item whose lone retry dies again is graded as an error. The result order and values do not depend on timing, except for genuine timeouts.
- In-process path (`workers=1` or few items): each call runs under a SIGALRM interval timer when
  we are in the main thread of a POSIX process; the timer fires between Python bytecodes, so a hang
  inside one C call is NOT interrupted there. Use the pool for untrusted output.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

# Below this many items, grade in-process: starting workers costs about a second.
POOL_MIN_ITEMS = 8
_WARMUP_TIMEOUT_S = 120.0
_REAP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    value: Any = None
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.error is None


class _Timeout(BaseException):
    """Raised by our SIGALRM handler; BaseException so that `except Exception` in graders
    cannot swallow it."""


def default_workers(n_items: int) -> int:
    return max(1, min(os.cpu_count() or 1, 8, n_items))


# ---- in-process -----------------------------------------------------------------------------------

def call_with_timeout(fn: Callable, args: tuple, timeout_s: float | None) -> Outcome:
    """Call fn(*args) in this process, under a SIGALRM timer where one can be installed."""
    use_alarm = (timeout_s is not None and timeout_s > 0 and hasattr(signal, "setitimer")
                 and threading.current_thread() is threading.main_thread()
                 and signal.getitimer(signal.ITIMER_REAL)[0] == 0)  # never clobber a caller's timer
    if not use_alarm:
        try:
            return Outcome(value=fn(*args))
        except Exception as e:  # noqa: BLE001 - a grader bug grades one item wrong, not the run
            return Outcome(error=f"{type(e).__name__}: {e}")

    def _on_alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return Outcome(value=fn(*args))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return Outcome(timed_out=True)
    except Exception as e:  # noqa: BLE001
        return Outcome(error=f"{type(e).__name__}: {e}")
    finally:
        signal.signal(signal.SIGALRM, old)


# ---- process pool ---------------------------------------------------------------------------------

_warmup_barrier = None  # set in each worker by _init_worker


def _init_worker(barrier=None) -> None:
    # Import the heavy grading stack once per worker, before any deadline starts.
    global _warmup_barrier
    _warmup_barrier = barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    try:
        import harness.evaluation.grading.equivalence  # noqa: F401
        import math_verify  # noqa: F401
        import sympy  # noqa: F401
    except Exception:  # noqa: BLE001 - the task itself will report the import error
        pass


def _ping() -> int:
    # Returns only once every worker runs a ping: otherwise one fast worker could answer all of the
    # warm-up while another still imports SymPy, and an item queued for that one would pay for it.
    if _warmup_barrier is not None:
        _warmup_barrier.wait(_WARMUP_TIMEOUT_S)
    return os.getpid()


@contextlib.contextmanager
def _signals_held():
    """Hold back Python-level signal handlers (Ctrl-C's KeyboardInterrupt among them) for the body, then
    re-raise what arrived. Around the code that starts or kills workers: an exception between a worker's
    start and the executor recording it (`_spawn_process`) would leak a worker that nothing kills."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers only ever run in the main thread
        return
    held: list[int] = []
    saved = {}
    try:
        for sig in signal.valid_signals():
            handler = signal.getsignal(sig)
            if callable(handler):
                saved[sig] = handler
                signal.signal(sig, lambda signum, frame: held.append(signum))
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)  # its own handler runs now, here


def _mp_context():
    """fork when this process runs a single Python thread (fast, and works from scripts without an
    `if __name__ == "__main__"` guard); spawn otherwise (forking a multi-threaded parent, e.g. one
    holding vLLM or tokenizer threads, can deadlock the child)."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _new_pool(workers: int) -> cf.ProcessPoolExecutor:
    ctx = _mp_context()
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                  initargs=(ctx.Barrier(workers),))
    # Warm-up: one task per worker starts (spawns) every worker and waits for all of them to have run
    # the initializer, so that no item's deadline pays for interpreter start-up. The submits start the
    # processes (all at the first one with fork, one each with spawn).
    try:
        with _signals_held():
            futs = [pool.submit(_ping) for _ in range(workers)]
        done, not_done = cf.wait(futs, timeout=_WARMUP_TIMEOUT_S)
    except BaseException:     # Ctrl-C during the warm-up: no worker outlives the call
        _kill_pool(pool)
        raise
    if not_done or any(f.exception() is not None for f in done):
        _kill_pool(pool)
        raise RuntimeError("grading worker processes failed to start (with the spawn start method the "
                           "calling script needs an `if __name__ == '__main__':` guard)")
    return pool


def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    with _signals_held():  # a second Ctrl-C must not stop us half-way through the kills
        procs = list((getattr(pool, "_processes", None) or {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        for p in procs:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        pool.shutdown(wait=False, cancel_futures=True)
    # The executor's manager thread reaps the same children: of two threads in waitpid() one gets
    # ECHILD and its join() returns with the exit code still unset, so the child would still count as
    # alive. Wait for the manager, then until every exit code is set (by whichever thread reaped it).
    deadline = time.monotonic() + _REAP_TIMEOUT_S
    if manager is not None:
        manager.join(timeout=_REAP_TIMEOUT_S)
    for p in procs:
        try:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            while p.exitcode is None and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:  # noqa: BLE001
            pass


def map_with_timeout(fn: Callable, arg_tuples: Sequence[tuple], *, timeout_s: float = 10.0,
                     workers: int | None = None, in_process: bool | None = None) -> list[Outcome]:
    """[fn(*args) for args in arg_tuples] as Outcomes, each call limited to timeout_s seconds.

    fn must be a picklable top-level function for the pool path. `in_process=None` picks the
    in-process path for workers == 1 or fewer than POOL_MIN_ITEMS items.
    """
    n = len(arg_tuples)
    if n == 0:
        return []
    workers = default_workers(n) if workers is None else max(1, min(int(workers), n))
    if in_process is None:
        in_process = workers == 1 or n < POOL_MIN_ITEMS
    if in_process:
        return [call_with_timeout(fn, tuple(a), timeout_s) for a in arg_tuples]

    limit = float("inf") if timeout_s is None or timeout_s <= 0 else float(timeout_s)
    results: list[Outcome | None] = [None] * n
    pending: deque[int] = deque(range(n))
    retries: dict[int, int] = {}
    inflight: dict[cf.Future, tuple[int, float]] = {}
    pool: cf.ProcessPoolExecutor | None = None
    try:
        while pending or inflight:
            if pool is None:
                pool = _new_pool(workers)
            try:
                while pending and len(inflight) < workers:
                    i = pending[0]
                    # An item retried after a worker death runs alone, so that only the item that
                    # really kills its worker is charged with it, never a bystander.
                    if inflight and (retries.get(i) or any(retries.get(j) for j, _ in inflight.values())):
                        break
                    inflight[pool.submit(fn, *arg_tuples[i])] = (i, time.monotonic() + limit)
                    pending.popleft()
            except BrokenProcessPool:  # a worker died while idle: start over with a fresh pool
                for i in sorted((i for i, _ in inflight.values()), reverse=True):
                    pending.appendleft(i)
                inflight.clear()
                _kill_pool(pool)
                pool = None
                continue
            next_deadline = min(d for _, d in inflight.values())
            wait_s = None if next_deadline == float("inf") else max(0.0, next_deadline - time.monotonic())
            done, _ = cf.wait(list(inflight), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                i, _ = inflight.pop(fut)
                try:
                    results[i] = Outcome(value=fut.result())
                except BrokenProcessPool:
                    broken = True
                    retries[i] = retries.get(i, 0) + 1
                    if retries[i] > 1:
                        results[i] = Outcome(error="grading worker died")
                    else:
                        pending.appendleft(i)
                except Exception as e:  # noqa: BLE001 - a grader bug grades one item wrong
                    results[i] = Outcome(error=f"{type(e).__name__}: {e}")
            now = time.monotonic()
            expired = [f for f, (_, d) in inflight.items() if d <= now and not f.done()]
            for fut in expired:
                i, _ = inflight.pop(fut)
                results[i] = Outcome(timed_out=True)
            if expired or broken:
                # A stuck worker cannot be interrupted: kill the pool, re-run what was in flight.
                for i in sorted((i for i, _ in inflight.values()), reverse=True):
                    pending.appendleft(i)
                inflight.clear()
                _kill_pool(pool)
                pool = None
    finally:
        if pool is not None:
            if inflight:
                _kill_pool(pool)
            else:
                pool.shutdown(wait=True)
    return [r if r is not None else Outcome(error="not graded") for r in results]
