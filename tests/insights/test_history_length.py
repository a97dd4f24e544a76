"""History-length tool: the grid, the experiment config, collecting results, the plot."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.insights import history_length as hl
from attnlab.results import RunResult

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_cfg(overrides, *, hydra=True):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def fake_result(max_len, seed, *, ndcg, monitor="ndcg@10"):
    metrics = {
        "model": {"ndcg@10": ndcg, "auc": 0.6, "train_s": max_len / 10, "peak_rss_mb": 1000 + max_len},
        "most_popular": {"ndcg@10": 0.05},
        "personal_repeat": {"ndcg@10": 0.09},
    }
    prov = {"model": "vanilla", "seed": seed, "task": "next_item", "monitor": monitor,
            "train_events_per_s": 20000.0 - 10 * max_len, "wall_s": 60.0 + max_len / 10,
            "epochs_trained": 2}
    return RunResult(metrics=metrics, valid={}, history=[], provenance=prov,
                     config={"seed": seed, "model": {"name": "vanilla", "max_len": max_len}})


def fake_grid():
    return [fake_result(n, s, ndcg=0.08 + 0.001 * np.log2(n) + 0.002 * s)
            for n in (50, 200, 800) for s in (0, 1, 2)]


def test_experiment_config_composes_and_sweeps_max_len():
    cfg = compose_cfg(["experiment=history_length"])
    assert cfg.experiment_name == "history_length"
    assert cfg.data.name == "complete_journey" and cfg.model.name == "vanilla"
    assert cfg.task.name == "next_item"
    assert cfg.trainer.max_steps <= 1000  # reduced CPU budget, stated in the header
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    lens = [int(x) for x in params["model.max_len"].split(",")]
    assert lens == [50, 200, 800, 4224] and list(hl.MAX_LENS) == lens
    assert [int(s) for s in params["seed"].split(",")] == [0, 1, 2]
    assert params["model"] == "vanilla"
    text = (CONFIGS / "experiment" / "history_length.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "python experiments/train.py -m experiment=history_length" in text
    assert "full" in text  # what the full history costs is stated


def test_every_job_composes_and_debug_tiny_uses_synthetic_data():
    for overrides in hl.sweep_overrides(seeds=(0,)):
        cfg = compose_cfg(overrides, hydra=False)
        OmegaConf.resolve(cfg.model)
        assert cfg.model.max_len == int(overrides[-1].split("=")[1])
    # with debug=tiny the same experiment runs on synthetic data (what the notebook does)
    cfg = compose_cfg(["experiment=history_length", "debug=tiny"], hydra=False)
    assert cfg.data.name == "synthetic"


def test_sweep_overrides():
    jobs = hl.sweep_overrides((50, 800), ("vanilla", "lstm"), (0, 1))
    assert len(jobs) == 8
    assert jobs[0] == ["experiment=history_length", "model=vanilla", "seed=0", "model.max_len=50"]
    with pytest.raises(ValueError):
        hl.sweep_overrides((0,))


def test_collect_results_is_tidy():
    df = hl.collect_results(fake_grid())
    assert list(df.columns) == list(hl.COLUMNS)
    assert len(df) == 9 and df["max_len"].tolist() == [50] * 3 + [200] * 3 + [800] * 3
    row = df[(df.max_len == 800) & (df.seed == 1)].iloc[0]
    assert row["metric"] == "ndcg@10"
    assert row["value"] == pytest.approx(0.08 + 0.001 * np.log2(800) + 0.002)
    assert row["baseline"] == "personal_repeat" and row["baseline_value"] == 0.09
    assert row["train_events_per_s"] == 12000.0 and row["peak_rss_mb"] == 1800.0
    assert row["train_s"] == 80.0 and row["wall_s"] == 140.0 and row["epochs"] == 2
    # another metric / a named baseline
    auc = hl.collect_results(fake_grid(), metric="auc", baseline="most_popular")
    assert (auc["value"] == 0.6).all() and auc["baseline_value"].isna().all()
    s = hl.summarize(df)
    assert s["n_seeds"].tolist() == [3, 3, 3]
    assert s["value_mean"].iloc[0] == pytest.approx(0.08 + 0.001 * np.log2(50) + 0.002)


def test_collect_reads_a_run_directory(tmp_path):
    res = fake_result(100, 0, ndcg=0.1)
    d = tmp_path / "multirun" / "model.max_len=100,seed=0"
    d.mkdir(parents=True)
    res.path = str(d / "result.json")
    (d / "result.json").write_text(json.dumps(res.to_json()))
    df = hl.collect_results(tmp_path / "multirun")
    assert df["max_len"].tolist() == [100.0] and df["value"].tolist() == [0.1]


def test_plot_history_length_has_accuracy_and_cost_panels():
    df = hl.collect_results(fake_grid())
    fig = hl.plot_history_length(df)
    acc, cost, mem = fig.get_axes()  # memory on a twin axis of the cost panel
    assert acc.get_title() == "accuracy" and cost.get_title() == "cost"
    x, y = acc.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [50, 200, 800])
    np.testing.assert_allclose(y, [0.08 + 0.001 * np.log2(n) + 0.002 for n in (50, 200, 800)])
    np.testing.assert_array_equal(cost.get_lines()[0].get_data()[1], [5.0, 20.0, 80.0])
    np.testing.assert_array_equal(mem.get_lines()[0].get_data()[1], [1050.0, 1200.0, 1800.0])
    two = hl.plot_history_length(df, cost="train_events_per_s", memory=None)
    assert len(two.get_axes()) == 2
    with pytest.raises(ValueError):
        hl.plot_history_length(df.iloc[:0])
