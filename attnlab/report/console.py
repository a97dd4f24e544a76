"""Plain-text tables for the terminal.

:func:`metrics_table` prints what a person reads at the end of a run: one row per
contender, the task's metrics with 4 decimals, counts as integers, seconds with one
decimal (two below 10 s) and memory in whole MB, at most ``max_width`` characters per
line (wider tables continue in a second block that repeats the contender column).
Diagnostic metrics (keys with a ``/``, e.g. the ``planted/*`` columns of the synthetic
long-range data) are left out, except the task's monitor, and named in one note
line; ``columns="all"`` (``logger.table=all`` in ``train.py``) prints them as a second
table.
"""

from __future__ import annotations

import math

from attnlab.results import RunResult

ORDER = ("model", "personal_repeat", "most_popular")
#: cost columns, printed after the metrics: (header, keys read in order, kind)
#: fit_s: the model's training seconds (``train_s``) or a baseline's fitting seconds (``fit_s``);
#: eval_s: test evaluation seconds (``wall_s``); peak_mb: process peak RSS so far (``peak_rss_mb``)
COSTS = (("fit_s", ("train_s", "fit_s"), "seconds"),
         ("eval_s", ("wall_s",), "seconds"),
         ("peak_mb", ("peak_rss_mb",), "mb"))
COST_KEYS = {k for _, keys, _ in COSTS for k in keys}
MAX_WIDTH = 120


def _is_count(key: str) -> bool:
    leaf = key.rsplit("/", 1)[-1]
    return leaf == "n" or leaf.startswith("n_")


def _fmt(v, kind: str, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if not isinstance(v, (int, float)):
        return str(v)
    if kind == "count":
        return f"{int(round(v)):d}"
    if kind == "seconds":
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if kind == "mb":
        return f"{v:.0f}"
    return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"


def _blocks(head0: str, labels: list[str], columns: list[tuple[str, list[str]]], max_width: int) -> list[str]:
    """Right-aligned columns under a left-aligned contender column, split into blocks
    of at most ``max_width`` characters (each block repeats the contender column)."""
    w0 = max(len(head0), *(len(x) for x in labels))
    blocks, current, width = [], [], w0
    for header, cells in columns:
        w = max(len(header), *(len(c) for c in cells))
        if current and width + 2 + w > max_width:
            blocks.append(current)
            current, width = [], w0
        current.append((header, cells, w))
        width += 2 + w
    if current:
        blocks.append(current)
    out = []
    for block in blocks:
        lines = ["  ".join([head0.ljust(w0)] + [h.rjust(w) for h, _, w in block]),
                 "  ".join(["-" * w0] + ["-" * w for _, _, w in block])]
        for i, label in enumerate(labels):
            lines.append("  ".join([label.ljust(w0)] + [cells[i].rjust(w) for _, cells, w in block]))
        out.append("\n".join(lines))
    return out


def metrics_table(result: RunResult, *, digits: int = 4, columns: str = "core",
                  max_width: int = MAX_WIDTH) -> str:
    """Rows = contenders (model first, then baselines), columns = test metrics then costs.

    Args:
      columns: ``"core"`` (default) leaves out diagnostic metrics (keys with a ``/``,
        except the task's monitor) and says how many there are; ``"all"`` adds them as a
        second table.
      max_width: longest line; wider tables continue in another block.
    """
    if columns not in ("core", "all"):
        raise ValueError(f"columns={columns!r}; use 'core' or 'all'.")
    names = [n for n in ORDER if n in result.metrics] + sorted(set(result.metrics) - set(ORDER))
    label = {"model": f"{result.provenance.get('model', 'model')} (model)"}
    labels = [label.get(n, n) for n in names]
    monitor = result.provenance.get("monitor")
    keys: list[str] = []
    for n in names:
        keys += [k for k in result.metrics[n] if k not in keys and k not in COST_KEYS]
    keys = [k for k in keys if not _is_count(k)] + [k for k in keys if _is_count(k)]  # counts after metrics
    core = [k for k in keys if "/" not in k or k == monitor]
    extra = [k for k in keys if k not in core]

    def metric_col(k):
        kind = "count" if _is_count(k) else "metric"
        return k, [_fmt(result.metrics[n].get(k), kind, digits) for n in names]

    cols = [metric_col(k) for k in core]
    for header, ks, kind in COSTS:
        vals = [next((result.metrics[n][k] for k in ks if k in result.metrics[n]), None) for n in names]
        if any(v is not None for v in vals):
            cols.append((header, [_fmt(v, kind) for v in vals]))
    parts = _blocks("contender", labels, cols, max_width)
    note = ""
    if extra:
        groups = sorted({k.split("/", 1)[0] + "/*" for k in extra})
        if columns == "all":
            parts += _blocks("contender", labels, [metric_col(k) for k in extra], max_width)
        else:
            note = (f"\n({len(extra)} diagnostic columns not shown: {', '.join(groups)}; "
                    "logger.table=all prints them, result.json has them)")
    return "\n\n".join(parts) + note


def summary_line(result: RunResult) -> str:
    p = result.provenance
    chose = (f"best epoch {p['best_epoch']}" if p.get("best_epoch", -1) >= 0
             else f"refit: last of {p.get('epochs_trained')} passes, no validation")
    return (
        f"done: {p['model']} on {p['data']}/{p['task']} seed {p['seed']} in {p['wall_s']:.0f}s "
        f"({p['train_events_per_s']:.0f} train events/s, {chose}) -> {result.path}"
    )
