"""Plain-text tables for the terminal."""

from __future__ import annotations

from attnlab.train.results import RunResult

ORDER = ("model", "personal_repeat", "most_popular")


def metrics_table(result: RunResult, *, digits: int = 4) -> str:
    """Rows = contenders (model first, then baselines), columns = test metrics."""
    names = [n for n in ORDER if n in result.metrics] + sorted(set(result.metrics) - set(ORDER))
    cols = [k for k in result.metrics[names[0]] if k != "wall_s"]
    cols += ["wall_s"]
    label = {"model": f"{result.provenance.get('model', 'model')} (model)"}
    head = ["contender"] + cols
    rows = [[label.get(n, n)] + [_fmt(result.metrics[n].get(k), digits) for k in cols] for n in names]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def _fmt(v, digits):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def summary_line(result: RunResult) -> str:
    p = result.provenance
    return (
        f"done: {p['model']} on {p['data']}/{p['task']} seed {p['seed']} in {p['wall_s']:.0f}s "
        f"({p['train_events_per_s']:.0f} train events/s, best epoch {p['best_epoch']}) -> {result.path}"
    )
