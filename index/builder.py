"""The index builder: one background thread that does every piece of index work that grows
with the data (HNSW builds, rebuilds after deletions, adding new rows to a graph).

Scopes hand it their maintenance (`ScopeIndex.maintain`) and go on serving from what they
have: a build works on a copy and swaps it in when done. One scope at a time.

Two threads. The job thread does the bookkeeping (copying rows, ids, positions) at the
proxy's own priority, in small steps, and the small FAISS calls of adding a graph's tail
(one core). A build's FAISS calls (inserting vectors into a new graph, the part that grows
with the data) run on a second thread with `IndexSettings.build_threads` OpenMP threads
(all cores but one by default) at `IndexSettings.build_nice`. FAISS releases the GIL inside
its calls; the thread holds it only between them, which is why it is not deprioritised by
default: a low-priority thread starved while holding the GIL stops the event loop with it.

Both threads are daemons, and a job checks `stopping` between chunks of work, so a shutdown
waits for one chunk at most (the half-built copy is dropped; the next start rebuilds
anyway). It must wait for that chunk: a daemon thread still inside FAISS when the
interpreter finalizes is torn down mid-call, which crashed the process at exit (SIGSEGV,
seen under SIGTERM with a build in flight); `busy` says when it is safe. A job that fails is
logged and counted; its scope keeps its current index and tries again later. If the thread
itself ever dies, the next submission starts a new one.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BuildAbortedError(Exception):
    """The builder is stopping; the job's unfinished copy is dropped."""


class Maintained(Protocol):
    def maintain(self, builder: BuildContext) -> None: ...


class BuildContext:
    """What a job needs from whoever runs it: when to give up, where to run FAISS calls.
    This base runs jobs inline in the caller's thread (a ScopeIndex without a builder)."""

    @property
    def stopping(self) -> bool:
        return False

    def check(self) -> None:
        """Raise BuildAbortedError if the job should stop now."""
        if self.stopping:
            raise BuildAbortedError

    def heavy(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a FAISS call that grows with the data (here: in the caller's thread)."""
        return fn(*args)


INLINE = BuildContext()


class _LowPriorityCalls:
    """One daemon thread at a given nice value that runs the calls handed to it."""

    def __init__(self, nice: int, threads: int) -> None:
        self.nice = nice
        self.threads = threads
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] \
            = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.running = False
        """A call is in progress (set and cleared by the caller's thread around it)."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="semcache-index-faiss",
                                                daemon=True)
                self._thread.start()
        done: Future[T] = Future()
        self.running = True
        try:
            self._calls.put((fn, args, done))
            return done.result()
        finally:
            self.running = False

    def _serve(self) -> None:
        if sys.platform.startswith("linux") and self.nice:
            # On Linux a nice value is per thread, and inherited by the threads this one
            # starts: FAISS's OpenMP team for this thread, created at its first call.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError as e:
                log.warning("index builds keep normal priority (%s)", e)
        if self.threads:
            import faiss

            faiss.omp_set_num_threads(self.threads)  # OpenMP keeps it per calling thread
        while True:
            fn, args, done = self._calls.get()
            try:
                done.set_result(fn(*args))
            except BaseException as e:  # handed back to the caller
                done.set_exception(e)


class IndexBuilder(BuildContext):
    def __init__(self, *, threads: int = 0, nice: int = 0) -> None:
        self.threads = threads
        self.nice = nice
        self._queue: deque[Maintained] = deque()
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._running: Maintained | None = None
        self._thread: threading.Thread | None = None
        self._heavy = _LowPriorityCalls(nice, threads)
        self.jobs_done = 0
        self.jobs_failed = 0
        self.busy_s = 0.0
        """Seconds spent in jobs since start."""

    @property
    def stopping(self) -> bool:
        return self._stopping

    def heavy(self, fn: Callable[..., T], *args: Any) -> T:
        return self._heavy.call(fn, *args)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """A job or a FAISS call is still running (after `stop()`: for one chunk at most)."""
        return self._running is not None or self._heavy.running

    def start(self) -> None:
        """Start the thread now rather than at the first job: it imports FAISS first, so
        that the import (which holds the GIL for a while) happens at start-up instead of
        when the first scope grows large mid-traffic."""
        with self._cond:
            self._start_locked()

    def submit(self, job: Maintained) -> None:
        """Queue a scope's maintenance (the scope makes sure it is queued once at a time)."""
        with self._cond:
            if self._stopping:
                return
            self._queue.append(job)
            self._start_locked()
            self._cond.notify()

    def _start_locked(self) -> None:
        if self.alive or self._stopping:
            return
        self._thread = threading.Thread(target=self._run, name="semcache-index-build",
                                        daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Hold queued jobs (while the start-up rebuild is still loading rows: one build of
        the whole scope at the end instead of one per threshold crossed on the way)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify()

    def pending(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._queue) + (self._running is not None)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def stop(self, timeout_s: float = 0.0) -> bool:
        """Stop taking jobs and abort the running one at its next check; waits up to
        `timeout_s` for the thread (never needed for exit: it is a daemon). True if it ended."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        import faiss  # a dependency of the package; the import is what preloading moves

        # This thread's own FAISS calls (a few vectors into a graph while searches wait for
        # it) run on one core: no OpenMP team spinning at normal priority.
        faiss.omp_set_num_threads(1)
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not self._queue):
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._running = self._queue.popleft()
            started = time.monotonic()
            try:
                job.maintain(self)
                self.jobs_done += 1
            except BuildAbortedError:
                pass
            except Exception:  # the scope keeps serving from its current index
                self.jobs_failed += 1
                log.exception("index maintenance failed; the scope keeps its current index")
            finally:
                self.busy_s += time.monotonic() - started
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
