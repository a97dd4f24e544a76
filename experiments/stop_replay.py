"""What a smaller ``trainer.patience`` would have chosen, read off finished runs.

    python experiments/stop_replay.py outputs/results/cj_churn outputs/results/cdnow_churn
    python experiments/stop_replay.py outputs/results/cj_churn --patience 1 2 --runs

A run with a smaller patience is the finished run cut short (the learning-rate schedule is
sized by ``trainer.max_steps``, patience only decides when to stop), so each result's
recorded validation curve (``history``) tells exactly which pass it would have chosen and
how many steps it would have skipped (:func:`attnlab.train.loop.replay_stopping`, the
training loop's own rule). A run whose chosen pass does not change reports the same test
numbers. Patience above a run's own cannot be read off a run that its own patience
stopped (the passes it would add were never trained): such a run is skipped with a message.

Prints, per results folder (one experiment's index, ``<results>/<experiment>``) and
patience: the runs, how many would choose another pass, and the steps saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attnlab.results import read_index  # noqa: E402
from attnlab.train.loop import early_stop, replay_stopping  # noqa: E402


def run_curve(data: dict) -> tuple[list[float], list[int], int, int, float | None]:
    """``(monitor after each pass, step after each pass, recorded chosen pass, patience,
    stop_at)`` of one result JSON."""
    monitor = data["provenance"].get("monitor")
    if not monitor:
        raise ValueError("its provenance names no validation monitor (written by an older attnlab)")
    key = f"valid/{monitor}"
    history = data.get("history") or []
    if not history or any(key not in h for h in history):
        raise ValueError(f"no validation curve of {key!r} in every pass of its history (a refit, or written "
                         "by an older attnlab)")
    trainer = data["config"]["trainer"]
    return ([float(h[key]) for h in history], [int(h["step"]) for h in history],
            int(data["provenance"]["best_epoch"]), int(trainer["patience"]), trainer.get("stop_at"))


def replay_folder(folder: Path, patiences: list[int]) -> tuple[list[dict], list[str]]:
    """One row per (run, patience) of the results in ``folder``, and one message per
    result (or patience) that cannot be replayed."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass a results index folder, e.g. outputs/results/cj_churn "
                         "(its <hash>.json files)")
    found, skipped = read_index(folder, warn=lambda m: None)
    if not found and not skipped:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.json")))
        raise ValueError(f"{folder} holds no result JSON. " + (
            f"It has experiment folders: pass one of them, e.g. {folder / subs[0]} (all: {', '.join(subs)})."
            if subs else "Pass a results index folder, e.g. outputs/results/cj_churn."))
    rows = []
    for path, data in found:
        try:
            curve, steps, chosen, own, stop_at = run_curve(data)
        except (KeyError, TypeError, ValueError) as e:
            skipped.append(f"{path}: {e}")
            continue
        if replay_stopping(curve, patience=own, stop_at=stop_at) != (chosen, len(curve)):
            skipped.append(f"{path}: its own patience {own} does not reproduce its chosen pass {chosen} and "
                           f"{len(curve)} passes (a resumed run whose patience changed?); not replayed")
            continue
        # results from before provenance.stopped_by: the loop's own rule on the passes after the pick
        stopped = data["provenance"].get("stopped_by")
        by_patience = (stopped == "patience" if stopped
                       else early_stop(len(curve) - chosen, None, patience=own, stop_at=None))
        for p in patiences:
            if p > own and by_patience:
                skipped.append(f"{path}: patience {p} is above its own trainer.patience={own}, which stopped it; "
                               "the passes it would add were never trained")
                continue
            pick, passes = replay_stopping(curve, patience=p, stop_at=stop_at)
            run_dir = data["provenance"].get("run_dir")
            rows.append({"run": Path(run_dir).name if run_dir else path.stem, "patience": p, "chosen": pick,
                         "recorded_chosen": chosen, "passes": passes, "recorded_passes": len(curve),
                         "steps": steps[passes - 1], "recorded_steps": steps[-1]})
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="results index folders (<results>/<experiment>)")
    ap.add_argument("--patience", nargs="+", type=int, default=[1, 2], help="values to replay (default: 1 2)")
    ap.add_argument("--runs", action="store_true", help="also print one line per run")
    args = ap.parse_args(argv)
    if min(args.patience) < 1:
        raise SystemExit("--patience values must be >= 1")
    replayed = []
    for folder in args.folders:
        try:
            replayed.append((folder, *replay_folder(folder, args.patience)))
        except ValueError as e:
            raise SystemExit(str(e)) from None
    print("| results | patience | runs | chosen pass changes | steps saved |")
    print("|---|---:|---:|---:|---:|")
    for folder, rows, _ in replayed:
        for p in args.patience:
            mine = [r for r in rows if r["patience"] == p]
            if not mine:
                continue
            changed = sum(r["chosen"] != r["recorded_chosen"] for r in mine)
            saved = sum(r["recorded_steps"] - r["steps"] for r in mine)
            total = sum(r["recorded_steps"] for r in mine)
            print(f"| {folder} | {p} | {len(mine)} | {changed} | {saved:,} of {total:,} ({saved / total:.0%}) |")
    if args.runs:
        for folder, rows, _ in replayed:
            for r in rows:
                print(f"{folder.name} {r['run']} patience {r['patience']}: pass {r['chosen']} "
                      f"of {r['passes']} (recorded: {r['recorded_chosen']} of {r['recorded_passes']})")
    for _, _, skipped in replayed:
        for n in skipped:
            print(n if n.startswith("skipping ") else f"skipping {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
