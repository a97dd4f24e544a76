"""Benchmark tables from the results index: mean ± std over seeds, best in bold, a paired
significance test of every model against the best baseline, and provenance footers.

Input: the results index that :func:`attnlab.train.train_and_evaluate` writes,
``<results_dir>/<experiment>/<config_hash>.json`` (+ ``.npz`` per-example metrics).
One experiment = one table. Rows:

- one per model *cell* (runs that share every config value but the seed, i.e. the
  same ``cell_hash``), labelled by the model name plus any config value that varies
  between cells of the table (e.g. ``vanilla (model.max_len=50)``);
- one per baseline and data/task context, taken from the model runs of each seed
  (every run re-scores the baselines on its own split; identical splits give identical
  baseline numbers, which are de-duplicated, and a disagreement is an error).

Every model row is compared with the best baseline of its context (highest mean primary
metric) by :func:`attnlab.report.significance.paired_bootstrap` on the per-example
values of the same runs, pooled over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.report import significance as sig
from attnlab.results import added_defaults

#: Columns per task: (metric, higher_is_better). The first is the primary metric.
TASK_COLUMNS: dict[str, list[tuple[str, bool]]] = {
    "next_item": [("ndcg@10", True), ("hr@10", True), ("mrr@10", True), ("hr@20", True)],
    "next_basket": [("ndcg@10", True), ("recall@10", True), ("recall@10_repeat", True),
                    ("recall@10_explore", True), ("phr@10", True)],
    "churn": [("auc", True), ("pr_auc", True), ("log_loss", False), ("brier", False)],
}
#: Cost columns: model training seconds, or a baseline's fit seconds ("fit s"), then
#: test-evaluation seconds and the process's peak resident memory.
COST_COLUMNS: list[tuple[str, bool]] = [("train_s", False), ("wall_s", False), ("peak_rss_mb", False)]


@dataclasses.dataclass
class Run:
    """One finished run from the index."""

    path: Path
    result: dict[str, Any]

    @property
    def prov(self) -> dict[str, Any]:
        return self.result["provenance"]

    @property
    def seed(self) -> int:
        return int(self.prov["seed"])

    def per_example(self) -> dict[str, np.ndarray]:
        npz = self.path.with_suffix(".npz")
        if not npz.exists():
            raise FileNotFoundError(f"{npz} is missing: the per-example metrics of {self.path} "
                                    "are needed for the significance test; re-run that job")
        with np.load(npz) as z:
            return {k: z[k] for k in z.files}


@dataclasses.dataclass
class Row:
    label: str
    kind: str  # "model" | "baseline"
    context: str
    seeds: list[int]
    values: dict[str, list[float]]  # metric -> one value per seed (seed order)
    runs: list[Run]  # per seed, the run holding this row's per-example values
    key: str  # contender key inside the runs ("model" or the baseline name)
    test: sig.PairedTest | None = None
    versus: str | None = None
    #: baseline name -> the paired test against it (``report.versus``), model rows only
    also: dict[str, sig.PairedTest | None] = dataclasses.field(default_factory=dict)

    def mean(self, metric: str) -> float:
        v = [x for x in self.values.get(metric, []) if x is not None and math.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    def std(self, metric: str) -> float:
        v = [x for x in self.values.get(metric, []) if x is not None and math.isfinite(x)]
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


@dataclasses.dataclass
class Table:
    experiment: str
    task: str
    columns: list[tuple[str, bool]]
    rows: list[Row]
    footer: list[str]
    primary: str
    versus: tuple[str, ...] = ()   # baselines every model row is also compared with (report.versus)

    def best(self, metric: str, higher: bool, context: str | None = None) -> float | None:
        """Best mean of ``metric`` over the rows (of one ``context`` if given: rows of
        different contexts, e.g. distances in one table, are not competitors)."""
        means = [r.mean(metric) for r in self.rows if context is None or r.context == context]
        means = [m for m in means if math.isfinite(m)]
        if not means:
            return None
        return max(means) if higher else min(means)


def load_runs(results_dir: str | Path, experiment: str, *, warn=None) -> list[Run]:
    """Every indexed run of ``experiment`` (one file per config hash: a re-run replaces it).

    Unreadable files (truncated JSON, no ``config``) are skipped and ``warn(message)``
    names each one (:func:`attnlab.results.read_index`): a bad file costs its own
    row, never the table.
    """
    from attnlab.results import read_index

    folder = Path(results_dir) / experiment
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no results for experiment {experiment!r} under {folder}; run its sweep first: "
            f"python experiments/train.py -m experiment={experiment}")
    good, _ = read_index(folder, warn=warn)
    if not good:
        raise FileNotFoundError(f"{folder} holds no readable results yet")
    return [Run(path, data) for path, data in good]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, list) else v
    return out


def _varying(flat_cfgs: list[dict[str, Any]], *, skip_prefixes: tuple[str, ...]) -> list[str]:
    keys = sorted(set().union(*flat_cfgs))
    out = []
    for k in keys:
        if k == "seed" or k.startswith(skip_prefixes):
            continue
        if all(c.get(k) == c.get("seed") for c in flat_cfgs):
            continue  # derived from the seed (e.g. data.options.seed: ${seed}): not a cell
        if len({repr(c.get(k)) for c in flat_cfgs}) > 1:
            out.append(k)
    return out


def _label(name: str, flat: dict[str, Any], keys: list[str]) -> str:
    if not keys:
        return name
    return f"{name} (" + ", ".join(f"{k}={flat.get(k)}" for k in keys) + ")"


def build_table(runs: Sequence[Run], *, experiment: str, n_boot: int = 2000, versus: Sequence[str] = ()) -> Table:
    """Aggregate the runs of one experiment into a :class:`Table` (see module docstring).

    ``versus``: baseline names every model row is also compared with (paired bootstrap
    on the primary metric, one "Δ vs <name>" column each), e.g. the baseline an issue's
    goal names when it is not the table's best; a name no run scored is an error."""
    tasks = {r.prov["task"] for r in runs}
    if len(tasks) != 1:
        raise ValueError(f"experiment {experiment!r} mixes tasks {sorted(tasks)}; one table holds one task")
    task = tasks.pop()
    columns = table_columns(runs, task)
    primary = columns[0][0]

    flats = {id(r): _flatten({k: v for k, v in added_defaults(r.result["config"], fill=True).items()
                                if k != "report"})
             for r in runs}
    # context: everything but the model, trainer and seed (what the baselines depend on)
    ctx_keys = _varying(list(flats.values()), skip_prefixes=("model.", "trainer."))
    ctx_of = {id(r): _label("", flats[id(r)], ctx_keys).strip() for r in runs}

    # -- model cells -----------------------------------------------------------------
    # a cell = every config value but the seed and values derived from it (data.options.seed: ${seed})
    seed_keys = {k for k in set().union(*flats.values()) if all(f.get(k) == f.get("seed") for f in flats.values())}
    if all(is_refit(r.prov) for r in runs):
        # a churn refit's pass count was chosen on validation per run, like a checkpoint: not a cell
        seed_keys.add("trainer.max_epochs")
    cells: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        cells[json.dumps({k: v for k, v in flats[id(r)].items() if k not in seed_keys}, sort_keys=True,
                         default=str)].append(r)
    by_model: dict[str, list[str]] = defaultdict(list)
    for h, rs in cells.items():
        by_model[rs[0].prov["model"]].append(h)
    rows: list[Row] = []
    for model, hashes in sorted(by_model.items()):
        within = _varying([flats[id(cells[h][0])] for h in hashes], skip_prefixes=())
        for h in hashes:
            rs = sorted(cells[h], key=lambda r: r.seed)
            flat = flats[id(rs[0])]
            keys = sorted(set(within) | set(ctx_keys))
            rows.append(Row(
                label=_label(model, flat, keys), kind="model", context=ctx_of[id(rs[0])],
                seeds=[r.seed for r in rs], runs=rs, key="model",
                values={m: [r.result["metrics"]["model"].get(m) for r in rs] for m, _ in columns + COST_COLUMNS},
            ))

    # -- baselines, de-duplicated per (context, seed) --------------------------------------
    base: dict[tuple[str, str], dict[int, Run]] = defaultdict(dict)
    for r in sorted(runs, key=lambda r: str(r.path)):
        for name in r.result["metrics"]:
            if name == "model":
                continue
            slot = base[(ctx_of[id(r)], name)]
            if r.seed in slot:
                _check_same(slot[r.seed], r, name, columns)
            else:
                slot[r.seed] = r
    for (ctx, name), by_seed in sorted(base.items()):
        rs = [by_seed[s] for s in sorted(by_seed)]
        rows.append(Row(
            label=name if not ctx else f"{name} {ctx}", kind="baseline", context=ctx,
            seeds=sorted(by_seed), runs=rs, key=name,
            values={m: [_baseline_metric(r.result["metrics"][name], m) for r in rs]
                    for m, _ in columns + COST_COLUMNS},
        ))

    # -- significance: every model row vs the best baseline of its context -------------------
    higher = dict(columns)[primary]
    for row in rows:
        if row.kind != "model":
            continue
        cands = [b for b in rows if b.kind == "baseline" and b.context == row.context]
        if not cands:
            continue
        best = (max if higher else min)(cands, key=lambda b: _finite(b.mean(primary), higher))
        row.versus = best.label
        row.test = compare(row, best, task=task, metric=primary, n_boot=n_boot)
        for name in versus:
            named = [b for b in cands if b.key == name]
            row.also[name] = compare(row, named[0], task=task, metric=primary, n_boot=n_boot) if named else None
    scored = {r.key for r in rows if r.kind == "baseline"}
    missing = [n for n in versus if n not in scored]
    if missing:
        raise ValueError(f"{experiment}: report.versus names {missing}, but its runs scored the baselines "
                         f"{sorted(scored)}; add them to task.baselines or drop them from report.versus.")

    rows.sort(key=lambda r: (_natural(r.context), r.kind != "model", _natural(r.label)))
    footer = footer_lines(runs, experiment, n_boot=n_boot)
    if versus:
        footer[0] += f" Also Δ vs {', '.join(versus)} (report.versus), the same test."
    return Table(experiment=experiment, task=task, columns=columns, rows=rows, footer=footer, primary=primary,
                 versus=tuple(versus))


def _natural(text: str) -> list:
    """Sort key that orders the numbers inside a label by value ("distance=8" before
    "distance=16")."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _baseline_metric(m: dict[str, float], key: str):
    # a baseline's "training" cost is its fit time (older results have none)
    return m.get("fit_s") if key == "train_s" else m.get(key)


def table_columns(runs: Sequence[Run], task: str) -> list[tuple[str, bool]]:
    """The experiment's ``report.columns`` (``[metric, ...]``, higher is better unless
    the name is a loss; the first is primary), else the task's :data:`TASK_COLUMNS`."""
    custom = (runs[0].prov.get("report") or runs[0].result["config"].get("report") or {}).get("columns")
    if custom:
        return [(str(m), not any(w in str(m) for w in ("loss", "brier"))) for m in custom]
    return TASK_COLUMNS.get(task) or [(task_monitor(runs), True)]


def task_monitor(runs: Sequence[Run]) -> str:
    return runs[0].prov.get("monitor", "ndcg@10")


def _finite(x: float, higher: bool) -> float:
    if math.isfinite(x):
        return x
    return -math.inf if higher else math.inf


def _check_same(a: Run, b: Run, name: str, columns) -> None:
    for m, _ in columns:
        va, vb = a.result["metrics"][name].get(m), b.result["metrics"][name].get(m)
        if va is not None and vb is not None and not math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError(
                f"baseline {name!r} seed {a.seed} scored {m}={va} in {a.path} but {vb} in {b.path}: "
                "the two runs must share the same split; check data/task options")


def compare(row: Row, best: Row, *, task: str, metric: str, n_boot: int) -> sig.PairedTest | None:
    """Paired bootstrap of ``row`` vs ``best`` on ``metric`` over the seeds both have."""
    seeds = [s for s in row.seeds if s in best.seeds]
    if not seeds:
        return None
    a, b, labels = [], [], []
    for s in seeds:
        ra = row.runs[row.seeds.index(s)]
        pe = ra.per_example()
        if metric == "auc":
            a.append(pe[f"{row.key}/prob"])
            b.append(pe[f"{best.key}/prob"])
            labels.append(pe[f"{row.key}/label"])
        else:
            a.append(pe[f"{row.key}/{metric}"])
            b.append(pe[f"{best.key}/{metric}"])
    if metric == "auc":
        return sig.paired_bootstrap(a, b, labels=labels, statistic=sig.auc_stat, n_boot=n_boot)
    return sig.paired_bootstrap(a, b, n_boot=n_boot)


def footer_lines(runs: Sequence[Run], experiment: str, *, n_boot: int = 2000) -> list[str]:
    def uniq(values):
        return ", ".join(sorted({str(v) for v in values}))

    hw = runs[0].prov.get("hardware", {})
    versions = runs[0].prov.get("versions", {})
    seeds = sorted({r.seed for r in runs})
    total = sum(float(r.prov.get("wall_s", 0.0)) for r in runs)
    return [
        f"{len(runs)} runs, seeds {seeds}; mean ± std over seeds; bold = best per column (per context); "
        "Δ = model minus the best baseline on the primary metric, paired bootstrap over test customers "
        f"({n_boot:,} resamples within each seed), 95% CI and two-sided p.",
        f"Hardware: {uniq(r.prov.get('hardware', {}).get('cpu', '?') for r in runs)}, "
        f"{hw.get('cores', '?')} cores, backend {hw.get('platform', '?')}; compute {total / 60:.1f} min in all.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v != "not installed"),
        f"git: {uniq(r.prov.get('git_sha', '?') for r in runs)}; data fingerprint: "
        f"{uniq(r.prov.get('data_fingerprint', '?') for r in runs)}",
        regenerate_line(runs, experiment),
    ]


REFIT_SUFFIX = "_refit"
"""``experiments/churn_refit.py`` files the refits of experiment ``E`` as ``E_refit``."""


def is_refit(prov: dict[str, Any]) -> bool:
    """Whether a run's provenance says it is a churn refit (``task.refit``: its split report)."""
    return bool((prov.get("split_report") or {}).get("refit"))


def regenerate_line(runs: Sequence[Run], experiment: str) -> str:
    """The command that rebuilds the table: the experiment's sweep, or for refitted churn
    runs the validated sweep, then its refits (``experiments/churn_refit.py``)."""
    if any(is_refit(r.prov) for r in runs) and experiment.endswith(REFIT_SUFFIX):
        base = experiment[: -len(REFIT_SUFFIX)]
        return (f"Regenerate: python experiments/benchmark.py {base} --run && python experiments/churn_refit.py "
                f"{base} && python experiments/benchmark.py {experiment}")
    return f"Regenerate from scratch: python experiments/benchmark.py {experiment} --run --fresh"


# -- rendering -----------------------------------------------------------------------------

def _cell(row: Row, metric: str, digits: int) -> tuple[str, bool]:
    m, s = row.mean(metric), row.std(metric)
    if not math.isfinite(m):
        return "–", False
    if metric in ("wall_s", "train_s"):
        txt = f"{m:.0f}" if m >= 10 else f"{m:.1f}"
    elif metric == "peak_rss_mb":
        txt = f"{m / 1024:.2f}"
    else:
        txt = f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if math.isfinite(s) else "")
    return txt, True


def _test_cells(t: sig.PairedTest | None, digits: int) -> tuple[str, str]:
    if t is None:
        return "", ""
    delta = f"{t.diff:+.{digits}f} [{t.ci_low:+.{digits}f}, {t.ci_high:+.{digits}f}]"
    p = f"{t.p_bootstrap:.3f}" if t.p_bootstrap >= 0.001 else "<0.001"
    return delta, p


def headers(table: Table) -> list[str]:
    names = {"train_s": "train/fit s", "wall_s": "eval s", "peak_rss_mb": "peak GB"}
    return (["contender"] + [c for c, _ in table.columns] + [names[c] for c, _ in COST_COLUMNS]
            + [f"Δ {table.primary} vs best baseline [95% CI]", "p"]
            + [h for name in table.versus for h in (f"Δ {table.primary} vs {name} [95% CI]", "p")])


def _body(table: Table, digits: int, bold) -> list[list[str]]:
    out = []
    for row in table.rows:
        cells = [row.label + (f" ({len(row.seeds)} seed{'s' if len(row.seeds) > 1 else ''})"
                                if row.kind == "model" and len(row.seeds) < 3 else "")]
        for metric, higher in table.columns + COST_COLUMNS:
            txt, ok = _cell(row, metric, digits)
            best = table.best(metric, higher, row.context)
            is_best = ok and best is not None and metric in dict(table.columns) and math.isclose(
                row.mean(metric), best, rel_tol=1e-12, abs_tol=1e-12)
            cells.append(bold(txt) if is_best else txt)
        cells.extend(_test_cells(row.test, digits))
        for name in table.versus:
            cells.extend(_test_cells(row.also.get(name), digits))
        out.append(cells)
    return out


def to_markdown(table: Table, *, digits: int = 4) -> str:
    head = headers(table)
    lines = [f"**{table.experiment}** ({table.task}; primary metric {table.primary})", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for cells in _body(table, digits, lambda s: f"**{s}**"):
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"<sub>{f}</sub><br>" if i < len(table.footer) - 1 else f"<sub>{f}</sub>"
                 for i, f in enumerate(table.footer))
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("–", "--"), ("<", r"$<$")):
        s = s.replace(a, b)
    return s


def to_latex(table: Table, *, digits: int = 4) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    head = headers(table)
    spec = "l" + "r" * (len(head) - 1)
    body = _body(table, digits, lambda s: f"\x00{s}\x01")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    prev_kind = None
    for row, cells in zip(table.rows, body):
        if prev_kind == "model" and row.kind == "baseline":
            lines.append(r"\midrule")
        prev_kind = row.kind
        lines.append(" & ".join(_tex_escape(c).replace("\x00", r"\textbf{").replace("\x01", "}") for c in cells)
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              f"\\caption{{{_tex_escape(table.experiment)}: {_tex_escape(table.footer[0])}}}",
              f"\\label{{tab:{table.experiment}}}", r"\end{table}"]
    lines += ["% " + f for f in table.footer[1:]]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: one line per row, mean/std/n per metric, the test, provenance-free."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    metrics = [m for m, _ in table.columns + COST_COLUMNS]
    w.writerow(["experiment", "task", "contender", "kind", "seeds"]
               + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
               + ["versus", "diff", "ci_low", "ci_high", "p_bootstrap", "p_wilcoxon"]
               + [f"vs_{n}_{k}" for n in table.versus for k in ("diff", "ci_low", "ci_high", "p_bootstrap")])
    for r in table.rows:
        t = r.test
        also = [r.also.get(n) for n in table.versus]
        w.writerow([table.experiment, table.task, r.label, r.kind, " ".join(map(str, r.seeds))]
                   + [f"{x:.6g}" for m in metrics for x in (r.mean(m), r.std(m))]
                   + ([r.versus, t.diff, t.ci_low, t.ci_high, t.p_bootstrap,
                       "" if t.p_wilcoxon is None else t.p_wilcoxon] if t else ["", "", "", "", "", ""])
                   + [v for a in also for v in ((a.diff, a.ci_low, a.ci_high, a.p_bootstrap) if a else ("",) * 4)])
    return buf.getvalue()
