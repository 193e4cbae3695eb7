"""Executors for independent runs: serial, a local process pool, or Ray.

A reproduction made of independent (method, seed, setting) runs calls
:func:`gradkit_core.results.run_many`, which hands the runs to an executor.  The same code then runs
serially, in local worker processes, or on Ray (a local instance, or an existing cluster with
``address``), with the same results for the same seeds: every run is a module-level function of its
task, seeded by it.  ``gradkit reproduce NAME --jobs N --executor ray [--address ADDR]`` selects it
for a whole command (:func:`use`), so plugins need no executor code of their own.

An executor's :meth:`Executor.map` calls ``fn(**kwargs)`` for each entry of ``calls`` and reports
every outcome as it arrives: ``on_result(i, value)`` or ``on_error(i, traceback_text)``.  A run that
raises never stops the others.  A worker that dies (killed, out of memory) has its run retried once.
"""

from __future__ import annotations

import abc
import contextlib
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import GradkitError

OnResult = Callable[[int, Any], None]
OnError = Callable[[int, str], None]


class ExecutorError(GradkitError):
    """An executor cannot be set up (Ray missing, a cluster unreachable, bad arguments)."""


class Executor(abc.ABC):
    name = "executor"

    def __init__(self, jobs: int = 1):
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        self.jobs = jobs

    @abc.abstractmethod
    def map(self, fn: Callable[..., Any], calls: List[Dict[str, Any]], on_result: OnResult,
            on_error: OnError) -> None:
        """Call ``fn(**kw)`` for each ``kw`` in ``calls``; report ``on_result(i, value)`` or ``on_error(i, tb)``."""

    def describe(self) -> str:
        return f"{self.name} ({self.jobs} job{'s' * (self.jobs != 1)})"

    @contextlib.contextmanager
    def session(self) -> Iterator["Executor"]:
        """Keep this executor's workers (a process pool, a Ray instance) alive across the :meth:`map`
        calls made inside the block, e.g. one map per generation of a QD algorithm.  Outside a session
        each :meth:`map` starts and stops its own workers."""
        yield self


class SerialExecutor(Executor):
    """In this process, one run after the other."""

    name = "serial"

    def __init__(self, jobs: int = 1):
        super().__init__(1)

    def map(self, fn, calls, on_result, on_error):
        for i, kw in enumerate(calls):
            try:
                value = fn(**kw)
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - reported with its task; the other runs go on
                on_error(i, traceback.format_exc())
                continue
            on_result(i, value)


def _call(fn, kw):
    """Run one task in a worker; an exception comes back as its traceback text (always picklable)."""
    try:
        return True, fn(**kw)
    except Exception:  # noqa: BLE001
        return False, traceback.format_exc()


class ProcessExecutor(Executor):
    """A pool of ``jobs`` spawned local worker processes (``fn`` is imported by name in each)."""

    name = "local"

    def __init__(self, jobs: int = 1):
        super().__init__(jobs)
        self._pool = None  # the session's pool, if any

    @staticmethod
    def _new_pool(workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    @contextlib.contextmanager
    def session(self):
        if self._pool is not None or self.jobs == 1:
            yield self
            return
        self._pool = self._new_pool(self.jobs)
        try:
            yield self
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn, calls, on_result, on_error):
        if self.jobs == 1 or len(calls) <= 1:
            return SerialExecutor().map(fn, calls, on_result, on_error)
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        todo = list(range(len(calls)))
        tries = {i: 0 for i in todo}
        while todo:
            own = self._pool is None  # outside a session: a pool for this map only
            pool = self._new_pool(min(self.jobs, len(todo))) if own else self._pool
            broken: List[int] = []
            try:
                futures = {pool.submit(_call, fn, calls[i]): i for i in todo}
                for fut in as_completed(futures):
                    i = futures[fut]
                    try:
                        ok, value = fut.result()
                    except BrokenProcessPool:
                        broken.append(i)
                        continue
                    (on_result if ok else on_error)(i, value)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                if not own:
                    self._pool = None
                raise
            finally:
                if own:
                    pool.shutdown(wait=True, cancel_futures=True)
            if broken and not own:  # the session's pool is broken for good: replace it
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool(self.jobs)
            todo = []
            for i in broken:
                tries[i] += 1
                if tries[i] > 1:
                    on_error(i, "the worker process running this task died twice (killed or out of memory)")
                else:
                    todo.append(i)


class RayExecutor(Executor):
    """Ray tasks: a local instance with ``jobs`` CPUs, or the cluster at ``address`` (``jobs`` tasks at a time).

    Each run is a Ray task of one CPU retried once if its worker dies (``max_retries=1``); an
    exception raised by the run itself is not retried but reported.  A local instance is started
    without the dashboard and shut down when the sweep ends; a cluster is left as it was.
    """

    name = "ray"

    def __init__(self, jobs: int = 1, address: Optional[str] = None, init_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__(jobs)
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'}, {self.jobs} job{'s' * (self.jobs != 1)})"

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'gradkit-core[ray]' (or pip install ray)") \
                from None
        started = False
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if self.address:
                kw["address"] = self.address
            else:
                kw["num_cpus"] = self.jobs
            kw.update(self.init_kwargs)
            try:
                ray.init(**kw)
            except Exception as exc:  # noqa: BLE001 - a clear one-line reason
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise ExecutorError(f"cannot start or reach {where}: {type(exc).__name__}: {exc}") from None
            started = True
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()

    @contextlib.contextmanager
    def session(self):
        with self._session():  # the maps inside find Ray running and leave it so
            yield self

    def map(self, fn, calls, on_result, on_error):
        if not calls:
            return
        with self._session() as ray:
            remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_call)
            pending: Dict[Any, int] = {}
            queue = list(range(len(calls)))
            try:
                while queue or pending:
                    while queue and len(pending) < self.jobs:
                        i = queue.pop(0)
                        pending[remote.remote(fn, calls[i])] = i
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        i = pending.pop(ref)
                        try:
                            ok, value = ray.get(ref)
                        except Exception as exc:  # noqa: BLE001 - worker died twice, or Ray itself failed
                            on_error(i, f"Ray could not run this task: {type(exc).__name__}: {exc}")
                            continue
                        (on_result if ok else on_error)(i, value)
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise


# ---------------------------------------------------------------------- the command-wide choice
_default: Optional[Dict[str, Any]] = None


def make(executor: Any = None, jobs: int = 1, address: Optional[str] = None) -> Executor:
    """An executor from a name (``"serial"``, ``"local"``, ``"ray"``), an instance, or None (the default)."""
    if isinstance(executor, Executor):
        return executor
    if executor is None and _default is not None:
        executor = _default["name"]
        address = address or _default.get("address")
    if executor in (None, "local"):
        return ProcessExecutor(jobs)
    if executor == "serial":
        return SerialExecutor()
    if executor == "ray":
        return RayExecutor(jobs, address=address)
    raise ExecutorError(f"unknown executor {executor!r}; expected 'local', 'serial' or 'ray'")


@contextlib.contextmanager
def use(name: str, address: Optional[str] = None) -> Iterator[None]:
    """Within the block, :func:`gradkit_core.results.run_many` calls without an explicit executor use this one."""
    global _default
    if name not in ("local", "serial", "ray"):
        raise ExecutorError(f"unknown executor {name!r}; expected 'local', 'serial' or 'ray'")
    if address and name != "ray":
        raise ExecutorError("--address is for --executor ray")
    old, _default = _default, {"name": name, "address": address}
    try:
        yield
    finally:
        _default = old
