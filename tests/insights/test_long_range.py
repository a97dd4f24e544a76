"""Long-range memory tool: the grid, the experiment config, collecting results, the plot."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.insights import long_range as lr
from attnlab.train.loop import train_and_evaluate
from attnlab.train.results import RunResult

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_cfg(overrides, *, hydra=True):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def fake_result(model, seed, distance, *, planted_hr1, planted_hr10, n=40, max_len=64):
    metrics = {
        "model": {"hr@10": 0.7, "planted/hr@1": planted_hr1, "planted/hr@10": planted_hr10,
                  "planted/mrr": planted_hr1, "planted/n": n, "planted/visible": 1.0},
        "most_popular": {"hr@10": 0.5, "planted/hr@1": 0.0, "planted/hr@10": 0.0, "planted/n": n},
    }
    config = {"seed": seed, "model": {"name": model, "max_len": max_len},
              "data": {"name": "synthetic", "options": {"trigger_distance": distance}}}
    return RunResult(metrics=metrics, valid={}, history=[], config=config,
                     provenance={"model": model, "seed": seed, "task": "next_item", "wall_s": 12.0})


def fake_grid():
    runs = []
    for d in (2, 8, 32):
        for model, acc in (("lstm", 1.0 if d <= 8 else 0.0), ("vanilla", 0.9)):
            for seed in (0, 1):
                runs.append(fake_result(model, seed, d, planted_hr1=acc - 0.1 * seed,
                                        planted_hr10=min(1.0, acc + 0.05)))
    return runs


def test_sweep_overrides_is_the_full_grid():
    jobs = lr.sweep_overrides((2, 32), ("lstm", "vanilla"), (0, 1, 2), extra=["logger=none"])
    assert len(jobs) == 2 * 2 * 3
    assert jobs[0] == ["experiment=long_range", "model=lstm", "seed=0",
                       "data.options.trigger_distance=2", "logger=none"]
    assert len({tuple(j) for j in jobs}) == len(jobs)
    assert lr.sweep_overrides((4,), ("vanilla",), (0,), experiment=None)[0][:2] == [
        "data=synthetic", "task=next_item"]
    with pytest.raises(ValueError):
        lr.sweep_overrides((0,))


def test_experiment_config_composes_and_its_grid_is_the_documented_one():
    cfg = compose_cfg(["experiment=long_range"])
    assert cfg.experiment_name == "long_range"
    assert cfg.data.name == "synthetic" and cfg.task.name == "next_item"
    assert cfg.logger.name == "wandb"  # the default logger (offline)
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    assert params["model"].split(",") == list(lr.MODELS)
    assert [int(s) for s in params["seed"].split(",")] == list(lr.SEEDS)
    distances = [int(d) for d in params[lr.DISTANCE_KEY].split(",")]
    assert distances == list(lr.DISTANCES)
    # every trigger fits in the model's window, so a miss is a memory failure
    assert cfg.model.max_len >= max(distances)
    opts = cfg.data.options
    assert opts.trigger_prob == 1.0 and opts.n_triggers <= 8 and opts.n_items <= 100
    assert opts.mean_basket_size == 1.0 and opts.max_basket_size == 1
    # the header carries the regenerating command
    text = (CONFIGS / "experiment" / "long_range.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "python experiments/train.py -m experiment=long_range" in text


@pytest.mark.parametrize("model", lr.MODELS)
def test_every_job_of_the_grid_composes(model):
    overrides = lr.sweep_overrides((lr.DISTANCES[-1],), (model,), (1,))[0]
    cfg = compose_cfg(overrides, hydra=False)
    assert cfg.model.name == model and cfg.seed == 1
    assert cfg.data.options.trigger_distance == lr.DISTANCES[-1]
    assert cfg.data.options.seed == 1  # the simulator follows the run seed
    OmegaConf.resolve(cfg.data)
    OmegaConf.resolve(cfg.model)


def test_collect_results_is_tidy():
    df = lr.collect_results(fake_grid())
    assert list(df.columns) == list(lr.COLUMNS)
    assert len(df) == 12
    assert df["distance"].tolist() == sorted(df["distance"].tolist())
    row = df[(df.model == "lstm") & (df.distance == 32) & (df.seed == 1)].iloc[0]
    assert row["planted_hr@1"] == pytest.approx(-0.1)  # values are copied, not re-derived
    assert row["baseline_planted_hr@10"] == 0.0 and row["baseline_hr@10"] == 0.5
    assert row["max_len"] == 64 and row["planted_n"] == 40
    summary = lr.summarize(df)
    s = summary[(summary.model == "vanilla") & (summary.distance == 8)].iloc[0]
    assert s["planted_hr@1_mean"] == pytest.approx(0.85) and s["n_seeds"] == 2
    assert s["planted_n"] == 80


def test_collect_results_with_explicit_configs_and_pairs():
    res = fake_result("vanilla", 0, 8, planted_hr1=0.5, planted_hr10=1.0)
    res.config = None
    cfg = {"seed": 0, "model": {"name": "vanilla", "max_len": 32},
           "data": {"options": {"trigger_distance": 16}}}
    a = lr.collect_results([res], configs=[cfg])
    b = lr.collect_results([(res, cfg)])
    assert a["distance"].tolist() == b["distance"].tolist() == [16.0]
    assert a["max_len"].tolist() == [32.0]
    # no config at all: the distance is unknown, not guessed
    assert np.isnan(lr.collect_results([res])["distance"].iloc[0])


def test_collect_reads_run_directories_and_recomputes_the_window(tmp_path):
    """From disk: result.json + per_example.npz; trigger 40 events back is outside a
    32-event window, so that example is not counted as visible."""
    res = fake_result("sparse", 0, 8, planted_hr1=0.5, planted_hr10=1.0, max_len=32)
    run = tmp_path / "multirun" / "job0"
    run.mkdir(parents=True)
    res.path = str(run / "result.json")
    (run / "result.json").write_text(json.dumps(res.to_json()))
    np.savez(run / "per_example.npz", **{
        "model/planted": np.array([1.0, 1.0, 0.0, 1.0]),
        "model/planted/trigger_back": np.array([8.0, 40.0, np.nan, np.nan])})
    df = lr.collect_results(tmp_path / "multirun")
    assert len(df) == 1 and df["model"].iloc[0] == "sparse"
    assert df["planted_visible"].iloc[0] == pytest.approx(1 / 3)
    # the results-index layout (<hash>.json + <hash>.npz) is read too
    index = tmp_path / "results" / "long_range"
    index.mkdir(parents=True)
    (index / "abc.json").write_text(json.dumps(res.to_json()))
    (index / "abc.npz").write_bytes((run / "per_example.npz").read_bytes())
    assert lr.collect_results(index)["planted_visible"].iloc[0] == pytest.approx(1 / 3)
    with pytest.raises(FileNotFoundError):
        lr.collect_results(tmp_path / "nowhere")


def test_plot_accuracy_vs_distance():
    df = lr.collect_results(fake_grid())
    fig = lr.plot_accuracy_vs_distance(df)
    axes = fig.get_axes()
    assert len(axes) == 2
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert labels == ["lstm", "vanilla", "most popular"]
    x, y = axes[0].get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [2, 8, 32])
    np.testing.assert_allclose(y, [0.95, 0.95, -0.05])  # mean over the two seeds
    one = lr.plot_accuracy_vs_distance(df, metrics=("planted_hr@10",), models=["vanilla"])
    assert len(one.get_axes()) == 1 and len(one.get_axes()[0].get_lines()) == 2
    with pytest.raises(ValueError):
        lr.plot_accuracy_vs_distance(df.iloc[:0])


@pytest.mark.slow
def test_tiny_long_range_run_reports_planted_metrics(tmp_path):
    """The real thing at toy size: the experiment config trains, the evaluator finds the
    planted test examples, and the collector reads them back from disk."""
    cfg = compose_cfg([
        "experiment=long_range", "model=vanilla", "seed=0", "logger=none",
        f"paths.output_dir={tmp_path / 'run'}", f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", "data.options.n_customers=200",
        "data.options.trigger_distance=2", "model.d_model=8", "model.max_len=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
    ], hydra=False)
    result = train_and_evaluate(cfg)
    m = result.metrics["model"]
    assert m["planted/n"] > 0 and m["planted/visible"] == 1.0
    assert result.metrics["most_popular"]["planted/n"] == m["planted/n"]
    df = lr.collect_results(tmp_path / "run")
    assert len(df) == 1
    row = df.iloc[0]
    assert (row["distance"], row["model"], row["max_len"]) == (2.0, "vanilla", 16.0)
    assert row["planted_n"] == m["planted/n"] and row["planted_visible"] == 1.0
    assert isinstance(df, pd.DataFrame)
