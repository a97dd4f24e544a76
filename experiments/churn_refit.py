"""Refit every validated churn run on the labels up to the test cut-off.

    python experiments/churn_refit.py cj_churn                # after: python experiments/train.py -m experiment=cj_churn
    python experiments/churn_refit.py cj_churn --dry-run      # print the commands only
    python experiments/benchmark.py cj_churn_refit            # the refit table

A temporal churn run chooses its checkpoint on the validation labels (the window just
before the test cut-off), so its training labels stop one horizon earlier than they
could. The refit (``task.refit=true``, docs/models.md "Refit") trains the same config
again on every label window that ends by the test cut-off, for the number of passes the
validated run chose (its ``best_epoch``: same schedule, same step count), with no
validation, and scores the test rows once. Its baselines refit the same way.

For each finished run of ``EXPERIMENT`` in the results index (``--results-dir``, else
``$ATTNLAB_OUTPUTS/results``, else ``outputs/results``) this reads the overrides the run
was launched with (its folder's ``.hydra/overrides.yaml``) and launches
``experiments/train.py <overrides> task.refit=true trainer.max_epochs=<best_epoch>
experiment_name=<EXPERIMENT>_refit``, one run at a time; finished refits are skipped on a
relaunch. A run with no best epoch (none validated) or no overrides file is an error
naming it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def refit_commands(experiment: str, results_dir: Path, *, extra: list[str] | None = None) -> list[list[str]]:
    """One ``train.py`` command per validated run of ``experiment``, in the index's order."""
    from omegaconf import OmegaConf

    from attnlab import results as res
    from attnlab.report.tables import REFIT_SUFFIX, is_refit

    folder = results_dir / experiment
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not paths:
        raise SystemExit(f"no results of experiment {experiment!r} under {folder}: run "
                         f"`python experiments/train.py -m experiment={experiment}` first, or pass --results-dir.")
    runs = sorted((res.read_result(p) for p in paths),
                  key=lambda r: (str(r.provenance.get("model")), int(r.provenance.get("seed", 0))))
    cmds = []
    for r in runs:
        path, prov = r.path, r.provenance
        if prov.get("task") != "churn" or is_refit(prov):
            raise SystemExit(f"{path}: not a validated churn run (task {prov.get('task')!r}, refit "
                             f"{is_refit(prov)}); refit reads validated churn runs only.")
        best = prov.get("best_epoch")
        if best is None or int(best) < 1:
            raise SystemExit(f"{path}: the run has no best epoch (it never validated), so there is no pass "
                             "count to refit with; re-run it.")
        overrides_file = Path(prov["run_dir"]) / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            raise SystemExit(f"{path}: its run folder {prov['run_dir']} has no .hydra/overrides.yaml, so the "
                             "run's overrides are unknown; launch the refit by hand with task.refit=true "
                             f"trainer.max_epochs={best}.")
        keep = [o for o in OmegaConf.to_container(OmegaConf.load(overrides_file))
                if not o.split("=", 1)[0].lstrip("+~") in ("experiment_name", "trainer.max_epochs", "task.refit",
                                                           "trainer.skip_completed")]
        cmds.append([sys.executable, str(ROOT / "experiments" / "train.py"), *keep, "task.refit=true",
                     f"trainer.max_epochs={best}", f"experiment_name={experiment}{REFIT_SUFFIX}",
                     "trainer.skip_completed=true", *(extra or [])])
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", help="the validated churn experiment, e.g. cj_churn")
    ap.add_argument("--results-dir", type=Path, default=None, help="results index root (default: "
                    "$ATTNLAB_OUTPUTS/results, else outputs/results)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("overrides", nargs="*", help="extra overrides for every refit, e.g. logger=none")
    args = ap.parse_intermixed_args(argv)
    from attnlab import results as res

    cmds = refit_commands(args.experiment, args.results_dir or res.default_results_dir(), extra=args.overrides)
    for i, cmd in enumerate(cmds, 1):
        print(f"[{i}/{len(cmds)}] {' '.join(cmd[1:])}", flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
