"""Benchmark tables from the results index (Markdown, LaTeX booktabs, CSV), optionally
running the experiment's sweep first.

    python experiments/benchmark.py cj_churn --run        # sweep (skips finished runs) + table
    python experiments/benchmark.py cj_churn --run --fresh   # from scratch (old results moved aside)
    python experiments/benchmark.py cj_churn cdnow_churn  # tables from what is indexed
    python experiments/benchmark.py --all --readme README.md --out docs/results   # README + docs

One experiment (``configs/experiment/<name>.yaml``) is one table; its sweep grid lives
in the config's ``hydra.sweeper.params``. Tables go to ``--out`` as ``<name>.md``,
``<name>.tex`` and ``<name>.csv``; ``--readme`` replaces the block between
``<!-- table:<name> -->`` and ``<!-- /table:<name> -->`` in that file; ``--wandb`` logs
each table as a ``wandb.Table`` (offline unless WANDB_MODE says otherwise).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def published_experiments(results_dir: Path, configs_dir: Path = ROOT / "configs" / "experiment"):
    """(names, skipped) of the indexed experiments: a published table has a config.

    Runs of plain ``python experiments/train.py`` are indexed too (as ``default``), but
    they are not one of the tables; ``--all`` leaves them out and says so.
    """
    names, skipped = [], []
    for p in sorted(results_dir.glob("*")):
        if p.is_dir():
            (names if (configs_dir / f"{p.name}.yaml").is_file() else skipped).append(p.name)
    return names, skipped


def run_sweep(experiment: str, extra: list[str], log_dir: Path) -> float:
    """``python experiments/train.py -m experiment=<name>``; returns its wall seconds."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"sweep_{experiment}.log"
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "-m", f"experiment={experiment}",
           "progress=false", *extra]
    print(f"[{experiment}] running {' '.join(cmd[1:])}  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"[{experiment}] sweep failed (exit {rc}); see the end of {log}")
    print(f"[{experiment}] sweep done in {wall / 60:.1f} min", flush=True)
    return wall


def move_aside(results_dir: Path, experiment: str) -> list[tuple[Path, Path]]:
    """``--fresh``: move the experiment's index entries and multirun directory (with its
    checkpoints, which a relaunch would resume from) to ``<root>/previous/<time>/``;
    nothing is deleted. Returns the ``(source, destination)`` moves (for
    :func:`move_back`)."""
    root = results_dir.parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moves = []
    for src in (results_dir / experiment, root / "multirun" / experiment):
        if src.exists():
            dst = root / "previous" / stamp / src.parent.name / experiment
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
            moves.append((src, dst))
            print(f"[{experiment}] moved {src} -> {dst}")
    return moves


def move_back(moves: list[tuple[Path, Path]], experiment: str) -> None:
    """A ``--fresh`` sweep failed: put the earlier results back where they were (what
    the failed sweep wrote is kept next to them as ``<name>.failed-<time>``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for src, dst in moves:
        if src.exists():
            src.rename(src.with_name(f"{src.name}.failed-{stamp}"))
        dst.rename(src)
        print(f"[{experiment}] sweep failed: moved the earlier results back {dst} -> {src}",
              file=sys.stderr)


def load_index(results_dir: Path, experiment: str):
    """The experiment's indexed runs (:func:`attnlab.report.tables.load_runs`), each
    skipped unreadable file named in a warning on stderr."""
    from attnlab.report.tables import load_runs

    return load_runs(results_dir, experiment,
                     warn=lambda msg: print(f"[{experiment}] warning: {msg}", file=sys.stderr))


def report_versus(experiment: str, runs, configs_dir: Path = ROOT / "configs" / "experiment") -> list[str]:
    """The baselines every model row is also compared with: ``report.versus`` of
    ``configs/experiment/<name>.yaml`` (the published setting, so runs filed before the key
    was written get it too), else of the runs' provenance; none by default."""
    import yaml

    path = configs_dir / f"{experiment}.yaml"
    published = ((yaml.safe_load(path.read_text()) or {}).get("report") if path.exists() else None) or {}
    report = published if "versus" in published else (runs[0].prov.get("report") or {})
    versus = report.get("versus") or []
    return [versus] if isinstance(versus, str) else [str(v) for v in versus]


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no block {start} ... {end}; add those two lines where the table goes")
    return pattern.sub(lambda _: f"{start}\n{content}\n{end}", text)


def log_to_wandb(tables, *, project: str = "attnlab") -> None:
    import wandb

    from attnlab.report.tables import headers, to_csv

    for t in tables:
        run = wandb.init(project=project, group=t.experiment, job_type="report", name=f"table-{t.experiment}",
                         tags=[t.experiment, "table"], mode=os.environ.get("WANDB_MODE", "offline"),
                         reinit="finish_previous")
        rows = list(csv.reader(io.StringIO(to_csv(t))))  # labels may hold quoted commas
        run.log({f"table/{t.experiment}": wandb.Table(columns=rows[0], data=rows[1:])})
        run.summary["columns"] = headers(t)
        run.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="*", help="experiment names (configs/experiment/<name>.yaml)")
    ap.add_argument("--all", action="store_true",
                    help="every published table (configs/experiment/<name>.yaml) with indexed results")
    ap.add_argument("--run", action="store_true", help="run each experiment's sweep first (finished runs are skipped)")
    ap.add_argument("--fresh", action="store_true", help="with --run: move earlier results aside and re-run everything")
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override for --run (repeatable)")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help="results index (default: outputs/results); with --run the sweep writes there too")
    ap.add_argument("--out", type=Path, default=None, help="write <name>.md/.tex/.csv here")
    ap.add_argument("--readme", type=Path, default=None, help="replace the table blocks in this Markdown file")
    ap.add_argument("--wandb", action="store_true", help="log each table to W&B as a wandb.Table")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)

    from attnlab import results as res
    from attnlab.report.tables import build_table, to_csv, to_latex, to_markdown

    results_dir = args.results_dir or res.default_results_dir()
    names = list(args.experiments)
    skipped: list[str] = []
    if args.all:
        found, skipped = published_experiments(results_dir)
        names += [n for n in found if n not in names]
        for n in skipped:
            if n not in names:
                print(f"--all: skipping {results_dir / n}: no configs/experiment/{n}.yaml, so not a "
                      f"published table (name it to tabulate it: benchmark.py {n})", file=sys.stderr)
    if not names and args.all:
        found_any = ", ".join(skipped) if skipped else "nothing"
        raise SystemExit(
            f"--all: no published table has results in {results_dir} (found: {found_any}). "
            "A published table is a configs/experiment/<name>.yaml with runs indexed under "
            f"{results_dir}/<name>: run one with `python experiments/benchmark.py <name> --run`, "
            "point --results-dir at another index, or tabulate an unpublished folder by naming it.")
    if not names:
        ap.error("name at least one experiment, or --all")

    tables, walls = [], {}
    for name in names:
        moves = move_aside(results_dir, name) if args.run and args.fresh else []
        if args.run:
            # the sweep writes where the table reads: --results-dir (and its parent as the
            # outputs root, for the multirun checkpoints that --fresh moves aside)
            where = ([] if args.results_dir is None else
                     [f"paths.root={results_dir.parent}", f"paths.results_dir={results_dir}"])
            try:
                walls[name] = run_sweep(name, [*where, *args.override], results_dir.parent / "logs")
            except SystemExit:
                move_back(moves, name)   # a failed regeneration never leaves the table without its runs
                raise
        try:
            runs = load_index(results_dir, name)
        except FileNotFoundError as e:
            if len(names) == 1:
                raise SystemExit(str(e)) from None
            print(f"[{name}] skipped: {e}", file=sys.stderr)  # one empty experiment never stops the others
            continue
        table = build_table(runs, experiment=name, n_boot=args.n_boot, versus=report_versus(name, runs))
        if name in walls:
            how = "from scratch" if args.fresh else "finished runs skipped"
            table.footer.insert(-1, f"This regeneration: sweep wall time {walls[name] / 60:.1f} min ({how}).")
        tables.append(table)
        md = to_markdown(table)
        print(md)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            from attnlab.atomic import atomic_write_text

            atomic_write_text(args.out / f"{name}.md", md)
            atomic_write_text(args.out / f"{name}.tex", to_latex(table))
            atomic_write_text(args.out / f"{name}.csv", to_csv(table))
    if args.readme:
        from attnlab.atomic import atomic_write_text

        text = args.readme.read_text()
        for t in tables:
            text = replace_block(text, t.experiment, to_markdown(t).rstrip())
        atomic_write_text(args.readme, text)
        print(f"updated {len(tables)} table(s) in {args.readme}")
    if args.wandb:
        log_to_wandb(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
