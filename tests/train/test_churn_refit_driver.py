"""experiments/churn_refit.py: one refit command per validated churn run, with that run's
own overrides and best epoch; clear errors when a run cannot be refitted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from attnlab import results as res

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("churn_refit", ROOT / "experiments" / "churn_refit.py")
churn_refit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(churn_refit)


def _run(root: Path, name: str, *, model: str, seed: int, best: int, overrides: list[str] | None,
         refit: bool = False, task: str = "churn") -> None:
    run_dir = root / "runs" / name
    if overrides is not None:
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    prov = {"task": task, "model": model, "seed": seed, "best_epoch": best, "run_dir": str(run_dir),
            "split_report": {"refit": refit}}
    folder = root / "results" / "cj_churn"
    folder.mkdir(parents=True, exist_ok=True)
    res.write_result(res.RunResult(metrics={"model": {"auc": 0.8}}, valid={"auc": 0.9}, history=[],
                                   provenance=prov), folder / f"{name}.json")


def test_one_command_per_run_with_its_overrides_and_best_epoch(tmp_path):
    _run(tmp_path, "b", model="vanilla", seed=1, best=4,
         overrides=["experiment=cj_churn", "model=vanilla", "seed=1", "trainer.max_epochs=9", "experiment_name=x"])
    _run(tmp_path, "a", model="lstm", seed=0, best=3, overrides=["experiment=cj_churn", "model=lstm", "seed=0"])
    cmds = churn_refit.refit_commands("cj_churn", tmp_path / "results", extra=["logger=none"])
    tails = [c[2:] for c in cmds]
    assert tails == [
        ["experiment=cj_churn", "model=lstm", "seed=0", "task.refit=true", "trainer.max_epochs=3",
         "experiment_name=cj_churn_refit", "trainer.skip_completed=true", "logger=none"],
        ["experiment=cj_churn", "model=vanilla", "seed=1", "task.refit=true", "trainer.max_epochs=4",
         "experiment_name=cj_churn_refit", "trainer.skip_completed=true", "logger=none"],
    ]


@pytest.mark.parametrize("case, message", [
    ("missing", "no results of experiment"),
    ("no_best", "no best epoch"),
    ("no_overrides", "no .hydra/overrides.yaml"),
    ("refit", "not a validated churn run"),
    ("ranking", "not a validated churn run"),
])
def test_runs_that_cannot_be_refitted_are_named(tmp_path, case, message):
    if case != "missing":
        _run(tmp_path, "r", model="lstm", seed=0, best=-1 if case == "no_best" else 2,
             overrides=None if case == "no_overrides" else ["model=lstm"], refit=case == "refit",
             task="next_item" if case == "ranking" else "churn")
    with pytest.raises(SystemExit, match=message):
        churn_refit.refit_commands("cj_churn", tmp_path / "results")


def test_a_refit_table_says_how_to_regenerate_it():
    from attnlab.report.tables import Run, regenerate_line

    refit = [Run(Path("x.json"), {"provenance": {"split_report": {"refit": True}}})]
    plain = [Run(Path("x.json"), {"provenance": {"split_report": {"refit": False}}})]
    assert regenerate_line(refit, "cj_churn_refit") == (
        "Regenerate: python experiments/benchmark.py cj_churn --run && python experiments/churn_refit.py "
        "cj_churn && python experiments/benchmark.py cj_churn_refit")
    assert regenerate_line(plain, "cj_churn") == ("Regenerate from scratch: python experiments/benchmark.py "
                                                  "cj_churn --run --fresh")
