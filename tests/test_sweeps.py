"""Sweep configs: table grids, Optuna searches (run for real at tiny size, best trial
re-run), and the SLURM launcher (composed only: there is no cluster here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FAMILIES = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_every_family_has_a_search_space():
    assert sorted(p.stem for p in (CONFIGS / "hparams_search").glob("*.yaml")) == FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_search_space_composes_on_an_experiment(family):
    cfg = compose_cfg(["experiment=cj_next_item", f"hparams_search={family}", f"model={family}"])  # as a trial
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "maximize"
    assert sw.sampler.seed == 0  # seeded search
    params = dict(sw.params)
    assert params["model"] == family and str(params["seed"]) == "0"  # replaces the table grid
    assert "trainer.lr" in params and params["trainer.lr"].startswith("tag(log")
    # trials never land in the published table
    assert cfg.experiment_name.startswith(f"hps-{family}-")
    for key in params:
        if key not in ("model", "seed"):
            head, *rest = key.split(".")
            node = cfg[head]
            for part in rest:
                assert part in node, f"{family}: search key {key} does not exist in the config"
                node = node[part]


@pytest.mark.parametrize("experiment", ["cj_churn", "cdnow_churn", "cj_next_item", "cj_next_basket"])
def test_table_experiments_sweep_models_and_three_seeds(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    params = dict(cfg.hydra.sweeper.params)
    assert len(str(params["seed"]).split(",")) >= 3
    assert set(str(params["model"]).split(",")) <= set(FAMILIES)


def test_slurm_launcher_composes():
    cfg = compose_cfg(["experiment=cj_next_item", "hydra/launcher=slurm"])
    la = cfg.hydra.launcher
    assert la._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert la.timeout_min > 0 and la.nodes == 1
    assert "export WANDB_MODE=offline" in la.setup


def test_optuna_search_runs_and_best_trial_reruns(tmp_path):
    root = tmp_path / "outputs"
    env = {**os.environ, "ATTNLAB_OUTPUTS": str(root), "WANDB_MODE": "disabled"}
    common = ["debug=tiny", f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1"]
    search = [sys.executable, "experiments/train.py", "-m", "hparams_search=vanilla", *common,
              "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1"]
    out = subprocess.run(search, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (sweep_dir,) = (root / "multirun" / "hps-vanilla-next_item-synthetic").iterdir()
    opt = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(opt["best_params"]) >= {"trainer.lr", "model.d_model"}

    best = subprocess.run([sys.executable, "experiments/best_trial.py", str(sweep_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert best.returncode == 0, best.stderr[-3000:]
    command = best.stdout.strip().splitlines()[-1]
    assert command.startswith("python experiments/train.py ")
    saved = yaml.safe_load((sweep_dir / "best_config.yaml").read_text())
    assert saved["trainer"]["lr"] == pytest.approx(float(opt["best_params"]["trainer.lr"]))
    assert saved["experiment_name"] == "hps-vanilla-next_item-synthetic-best"

    # re-running the best trial's command reproduces its validation value exactly
    overrides = (sweep_dir / "best_overrides.txt").read_text().split()
    rerun = subprocess.run([sys.executable, "experiments/train.py", *overrides], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    import json

    (result,) = (root / "results" / "hps-vanilla-next_item-synthetic-best").glob("*.json")
    data = json.loads(result.read_text())
    assert data["valid"][data["provenance"]["monitor"]] == pytest.approx(opt["best_value"], rel=1e-6)
