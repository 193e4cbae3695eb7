"""Results of reproductions and benchmarks: a table, claims, curves; JSON + PNG output.

A reproduction or benchmark callable returns a :class:`Result`::

    res = Result("lion", title="Lion vs AdamW on the tiny GPT")
    res.add_row(method="lion", val_loss=2.31, state_bytes=4.1e6)
    res.add_claim("Lion's final loss is within 0.05 of AdamW's", passed=True, detail="2.31 vs 2.29")
    res.add_curve("val_loss", "lion", steps, losses)
    return res

``gradkit reproduce`` / ``gradkit bench`` print the table and claims and write
``NAME.json`` (and ``NAME.png`` when there are curves) into ``--out``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import attrs

from ._table import format_table  # noqa: F401 - re-exported


@attrs.define
class Claim:
    text: str
    passed: bool
    detail: str = ""


@attrs.define
class Result:
    name: str
    title: str = ""
    rows: List[Dict[str, Any]] = attrs.field(factory=list)
    claims: List[Claim] = attrs.field(factory=list)
    curves: Dict[str, Dict[str, Dict[str, List[float]]]] = attrs.field(factory=dict)
    meta: Dict[str, Any] = attrs.field(factory=dict)
    notes: List[str] = attrs.field(factory=list)

    def add_row(self, **row: Any) -> None:
        self.rows.append(row)

    def add_claim(self, text: str, passed: bool, detail: str = "") -> bool:
        self.claims.append(Claim(text, bool(passed), detail))
        return bool(passed)

    def add_curve(self, panel: str, label: str, x: Sequence[float], y: Sequence[float]) -> None:
        self.curves.setdefault(panel, {})[label] = {"x": [float(v) for v in x], "y": [float(v) for v in y]}

    def add_note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def all_passed(self) -> bool:
        return all(c.passed for c in self.claims)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "rows": [{k: _clean(v) for k, v in r.items()} for r in self.rows],
            "claims": [attrs.asdict(c) for c in self.claims],
            "curves": self.curves,
            "meta": {k: _clean(v) for k, v in self.meta.items()},
            "notes": list(self.notes),
        }

    # ------------------------------------------------------------------ output
    def table(self) -> str:
        return format_table(self.rows)

    def report(self) -> str:
        out = []
        if self.title:
            out.append(self.title)
            out.append("=" * len(self.title))
        if self.rows:
            out.append(self.table())
        if self.claims:
            out.append("")
            out.append("claims:")
            for c in self.claims:
                mark = "PASS" if c.passed else "FAIL"
                out.append(f"  [{mark}] {c.text}" + (f"  ({c.detail})" if c.detail else ""))
        for n in self.notes:
            out.append(f"note: {n}")
        return "\n".join(out)

    def save(self, out_dir: Path | str) -> List[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        path = out_dir / f"{_safe(self.name)}.json"
        path.write_text(json.dumps(self.as_dict(), indent=2))
        written.append(path)
        if self.curves:
            png = self.plot(out_dir / f"{_safe(self.name)}.png")
            if png is not None:
                written.append(png)
        return written

    def plot(self, path: Path) -> Optional[Path]:
        """Draw the curves into ``path``; without matplotlib, say so on stderr and return None."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            import sys

            print(f"warning: no plot written to {path}: matplotlib cannot be imported ({exc}); "
                  "install it with `pip install matplotlib` (or gradkit-core[plot])", file=sys.stderr)
            return None
        panels = list(self.curves.items())
        n = len(panels)
        cols = min(n, 3)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
        for ax, (panel, series) in zip(axes.flat, panels):
            for label, xy in series.items():
                ax.plot(xy["x"], xy["y"], label=label)
            ax.set_title(panel)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(self.title or self.name, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def paired_beyond(a: Sequence[float], b: Sequence[float], k: float = 2.0) -> "tuple[bool, str]":
    """Is ``a`` above ``b``, seed by seed? ``(holds, detail)`` -- the claims rule of the reproductions.

    The paired differences ``a_i - b_i`` over seeds must have a mean above ``k`` standard errors
    (``stdev / sqrt(n)``) and above 0: strict, so an exact tie never holds.  One seed gives no standard
    error, so the claim is undecided and does not hold.  Unequal lengths, no seeds or a non-finite value
    are a ``ValueError``.
    """
    try:
        a, b = [float(x) for x in a], [float(x) for x in b]
    except (TypeError, ValueError):
        raise ValueError(f"paired_beyond needs two sequences of numbers, got {a!r} and {b!r}") from None
    if len(a) != len(b) or not a or not all(math.isfinite(x) for x in a + b):
        raise ValueError(f"paired_beyond needs two equal-length, non-empty sequences of finite values, got {a!r} and {b!r}")
    if not (math.isfinite(k) and k >= 0):
        raise ValueError(f"paired_beyond: k must be a finite number >= 0, got {k!r}")
    diffs = [x - y for x, y in zip(a, b)]
    m = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return False, f"undecided: diff {m:+.3f} on one seed (a margin of {k:g} SE needs >= 2 seeds)"
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return bool(m > k * se and m > 0.0), f"paired diff {m:+.3f} ± {se:.3f} SE over {len(diffs)} seeds, margin {k:g} SE"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    try:
        return float(v)  # numpy / torch scalars
    except Exception:  # noqa: BLE001
        return repr(v)


def progress(iterable=None, total=None, desc: str = "", enabled: bool = True, **kw):
    """A progress bar (tqdm) that can be switched off; use it for every long loop."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kw)


class RunsFailed(RuntimeError):
    """Some runs of :func:`run_many` raised; every other run finished (and is stored, with a cache)."""

    def __init__(self, failures: List[tuple], total: int):
        self.failures = failures  # [(task, traceback text)]
        lines = [f"{len(failures)} of {total} runs failed (the others finished and are stored):"]
        for task, tb in failures:
            last = [ln for ln in tb.strip().splitlines() if ln.strip()][-1:] or ["?"]
            lines.append(f"  {json.dumps(_clean(task), sort_keys=True)}: {last[0].strip()}")
        super().__init__("\n".join(lines))

    def tracebacks(self) -> str:
        return "\n".join(f"--- {json.dumps(_clean(t), sort_keys=True)}\n{tb}" for t, tb in self.failures)


def run_many(fn, tasks: Sequence[Dict[str, Any]], *, jobs: int = 1, cache_dir: Path | str | None = None,
             resume: bool = False, progress_bar: bool = False, desc: str = "runs",
             shared: Optional[Dict[str, Any]] = None, executor: Any = None, address: Optional[str] = None) -> List[Any]:
    """Run ``fn(**task, **shared)`` for every task, on an executor; results in task order.

    For long reproductions made of independent runs (algorithm x seed x setting). ``fn`` must be a
    module-level function (workers import it by name) returning JSON-able data, and seeded by its task,
    so that every executor gives the same results. ``executor`` is ``"local"`` (``jobs`` spawned worker
    processes; ``jobs=1`` runs in this process), ``"serial"``, ``"ray"`` (with ``address`` for an
    existing cluster) or a :class:`gradkit_core.executors.Executor`; by default the one chosen for the
    whole command (``gradkit ... --executor``), else ``"local"``.

    With ``cache_dir`` each finished run is written to ``cache_dir/<task>.json`` as soon as it ends (the
    same files whatever the executor, so a sweep started on one can be resumed on another); with
    ``resume=True`` a run whose file holds the same task is read back instead of being run again. A
    stored file for a different task is never reused. ``shared`` keyword arguments go to every call
    but are not part of a run's identity (a progress switch, say). A run that raises does not stop the
    others: when all are done, :class:`RunsFailed` lists each failed task with its traceback.
    """
    import hashlib

    from . import executors

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if resume and cache_dir is None:
        raise ValueError("resume=True needs a cache_dir to read finished runs from")
    ex = executors.make(executor, jobs=jobs, address=address)
    shared = dict(shared or {})
    tasks = [dict(t) for t in tasks]
    clean_tasks = [_clean(t) for t in tasks]
    cache = Path(cache_dir) if cache_dir is not None else None
    paths: List[Optional[Path]] = []
    for t in clean_tasks:
        if cache is None:
            paths.append(None)
            continue
        text = json.dumps(t, sort_keys=True)
        label = "-".join(_safe(str(v)) for k, v in sorted(t.items()) if isinstance(v, (str, int)) and len(str(v)) <= 24)
        paths.append(cache / f"{label[:80]}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.json")
    results: List[Any] = [None] * len(tasks)
    todo = []
    for i, (t, p) in enumerate(zip(clean_tasks, paths)):
        if resume and p is not None and p.exists():
            try:
                stored = json.loads(p.read_text())
            except (OSError, ValueError):
                stored = {}
            if stored.get("task") == t:
                results[i] = stored["result"]
                continue
        todo.append(i)

    bar = progress(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, enabled=progress_bar)
    failures: List[tuple] = []

    def on_result(j: int, value: Any) -> None:
        i = todo[j]
        results[i] = _clean(value)
        if paths[i] is not None:
            paths[i].parent.mkdir(parents=True, exist_ok=True)
            tmp = paths[i].with_suffix(".tmp")
            tmp.write_text(json.dumps({"task": clean_tasks[i], "result": results[i]}))
            tmp.replace(paths[i])
        bar.update(1)

    def on_error(j: int, tb: str) -> None:
        failures.append((tasks[todo[j]], tb))
        bar.update(1)

    try:
        if len(todo) == 1 and isinstance(ex, executors.ProcessExecutor):
            ex = executors.SerialExecutor()
        ex.map(fn, [{**tasks[i], **shared} for i in todo], on_result, on_error)
    finally:
        bar.close()
    if failures:
        order = {id(t): k for k, t in enumerate(tasks)}
        failures.sort(key=lambda f: order.get(id(f[0]), 0))
        raise RunsFailed(failures, len(tasks))
    return results
