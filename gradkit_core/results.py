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
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception:  # noqa: BLE001 - plotting is optional
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
