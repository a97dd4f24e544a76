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
from attnlab.results import RunResult

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_cfg(overrides, *, hydra=True):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def fake_result(model, seed, distance, *, planted_hr1, planted_hr10, n=40, max_len=64, max_steps=2400):
    metrics = {
        "model": {"hr@10": 0.7, "planted/hr@1": planted_hr1, "planted/hr@10": planted_hr10,
                  "planted/mrr": planted_hr1, "planted/n": n, "planted/visible": 1.0,
                  "planted/cued": 1.0},
        "most_popular": {"hr@10": 0.5, "planted/hr@1": 0.0, "planted/hr@10": 0.0, "planted/n": n},
        "planted_oracle": {"hr@10": 0.8, "planted/hr@1": 1.0, "planted/hr@10": 1.0, "planted/n": n},
    }
    config = {"seed": seed, "model": {"name": model, "max_len": max_len}, "trainer": {"max_steps": max_steps},
              "data": {"name": "synthetic", "options": {"trigger_distance": distance, "n_triggers": 8}}}
    return RunResult(metrics=metrics, valid={"planted/hr@1": planted_hr1 + 0.01}, history=[], config=config,
                     provenance={"model": model, "seed": seed, "task": "next_item", "wall_s": 12.0})


def fake_grid():
    runs = []
    for d in (8, 32, 128):
        for model, acc in (("lstm", 1.0 if d <= 32 else 0.0), ("vanilla", 0.9)):
            for seed in (0, 1):
                runs.append(fake_result(model, seed, d, planted_hr1=acc - 0.1 * seed,
                                        planted_hr10=min(1.0, acc + 0.05)))
    return runs


def test_sweep_overrides_is_the_full_grid():
    jobs = lr.sweep_overrides((8, 512), ("lstm", "vanilla"), (0, 1, 2), extra=["logger=none"])
    assert len(jobs) == 2 * 2 * 3
    assert jobs[0] == ["experiment=long_range", "model=lstm", "seed=0",
                       "data.options.trigger_distance=8", "data.options.max_events=32", "logger=none"]
    assert jobs[-1][3:5] == ["data.options.trigger_distance=512", "data.options.max_events=1024"]
    assert len({tuple(j) for j in jobs}) == len(jobs)
    assert lr.sweep_overrides((4,), ("vanilla",), (0,), experiment=None)[0][:2] == [
        "data=synthetic", "task=next_item"]
    assert lr.window_for(64) == 128 and lr.window_for(4) == 32
    with pytest.raises(ValueError):
        lr.sweep_overrides((1,))


def test_experiment_config_composes_and_its_grid_is_the_documented_one():
    cfg = compose_cfg(["experiment=long_range"])
    assert cfg.experiment_name == "long_range"
    assert cfg.data.name == "synthetic" and cfg.task.name == "next_item"
    assert cfg.logger.name == "wandb"  # the default logger (offline)
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    assert params["model"].split(",") == list(lr.MODELS)
    assert set(lr.MODELS) == {"lstm", "vanilla", "time_decay", "sparse", "linear"}
    assert [int(s) for s in params["seed"].split(",")] == list(lr.SEEDS)
    grid = lr.config_grid(cfg)
    assert list(grid) == list(lr.DISTANCES) == [8, 32, 128, 512]
    assert grid == lr.MAX_LEN and grid[512] >= 1024  # 512 runs the blockwise attention path
    opts = cfg.data.options
    assert opts.trigger_mode == "cue" and opts.trigger_prob == 1.0
    assert opts.mean_basket_size == 1.0 and opts.max_basket_size == 1
    # the window is the history cap, and every episode (+ a training tail) fits in it
    assert cfg.model.max_len == opts.max_events
    for d, max_events in grid.items():
        last_target = opts.trigger_offset + opts.trigger_window - 1 + d + opts.trigger_jitter
        assert last_target + 3 <= max_events, d
    # sparse: a distinct model only where its window is shorter than the distance
    sparse = compose_cfg(["experiment=long_range", "model=sparse"])
    window = sparse.model.attention.window
    assert window < max(grid) and opts.trigger_offset >= sparse.model.attention.num_global
    # checkpoints are chosen on the planted validation rows
    assert cfg.task.monitor == "planted/hr@1"
    assert "planted_oracle" in cfg.task.baselines and "most_popular" in cfg.task.baselines
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
    assert cfg.model.max_len == cfg.data.options.max_events == 1024
    assert cfg.data.options.seed == 1  # the simulator follows the run seed
    OmegaConf.resolve(cfg.data)
    OmegaConf.resolve(cfg.model)


def test_validation_carries_the_monitor_key():
    """task.monitor must be a key of the validation metrics the trainer computes:
    ``task.evaluate`` on the planted validation rows of the experiment's own data."""
    from attnlab.baselines.popularity import MostPopular
    from attnlab.data.pipeline import load_sequences
    from attnlab.train.tasks import make_task

    cfg = compose_cfg(["experiment=long_range", "seed=0"], hydra=False)
    task = make_task(OmegaConf.to_container(cfg.task, resolve=True))
    store = load_sequences("synthetic", OmegaConf.to_container(cfg.data.options, resolve=True),
                           cache_dir=None, progress=False)
    split = task.split(store, seed=0)
    valid = task.evaluate(MostPopular().fit(store, split.train_end).score, store, split.valid,
                          progress=False).metrics
    assert task.monitor == "planted/hr@1" and task.monitor in valid
    assert valid["planted/n"] >= 300 and valid[task.monitor] == 0.0  # popularity: chance ~0


def test_collect_results_is_tidy():
    df = lr.collect_results(fake_grid())
    assert list(df.columns) == list(lr.COLUMNS)
    assert len(df) == 12
    assert df["distance"].tolist() == sorted(df["distance"].tolist())
    row = df[(df.model == "lstm") & (df.distance == 128) & (df.seed == 1)].iloc[0]
    assert row["planted_hr@1"] == pytest.approx(-0.1)  # values are copied, not re-derived
    assert row["valid_planted_hr@1"] == pytest.approx(-0.09)
    assert row["baseline_planted_hr@10"] == 0.0 and row["baseline_hr@10"] == 0.5
    assert row["oracle_planted_hr@1"] == 1.0 and row["chance_hr@1"] == pytest.approx(1 / 8)
    assert row["planted_cued"] == 1.0
    assert row["max_len"] == 64 and row["planted_n"] == 40
    summary = lr.summarize(df)
    s = summary[(summary.model == "vanilla") & (summary.distance == 8)].iloc[0]
    assert s["planted_hr@1_mean"] == pytest.approx(0.85) and s["n_seeds"] == 2
    assert s["planted_n"] == 80
    assert "planted_mrr_mean" in summary


def test_memory_limits_reports_where_each_family_stops_remembering():
    rows = []
    curves = {"lstm": [0.98, 0.95, 0.40, 0.10], "vanilla": [1.0, 0.99, 0.92, 0.7],
              "sparse": [1.0, 1.0, 0.12, 0.13], "linear": [0.6, 0.95, 0.95, 0.2],
              "time_decay": [1.0, 1.0, 1.0, 1.0]}
    for model, curve in curves.items():
        for d, v in zip((8, 32, 128, 512), curve):
            for seed, noise in ((0, -0.02), (1, 0.02)):  # the mean is `v`
                rows.append({"model": model, "distance": float(d), "seed": seed, "planted_hr@1": v + noise})
    lim = lr.memory_limits(pd.DataFrame(rows)).set_index("model")
    assert list(lim.index) == ["lstm", "vanilla", "time_decay", "sparse", "linear"]  # MODELS order
    assert lim.loc["lstm", "remembers_up_to"] == 32 and lim.loc["lstm", "forgets_at"] == 128
    assert lim.loc["vanilla", "remembers_up_to"] == 128 and np.isnan(lim.loc["vanilla", "forgets_at"])
    assert lim.loc["sparse", "remembers_up_to"] == 32 and lim.loc["sparse", "forgets_at"] == 128
    # not even the shortest distance remembered: NaN, although a longer one is >= 0.9
    assert np.isnan(lim.loc["linear", "remembers_up_to"]) and lim.loc["linear", "forgets_at"] == 512
    assert lim.loc["time_decay", "remembers_up_to"] == 512 and np.isnan(lim.loc["time_decay", "forgets_at"])
    assert lim.loc["lstm", "planted_hr@1_at"] == {8: 0.98, 32: 0.95, 128: 0.4, 512: 0.1}
    assert (lim["n_seeds"] == 2).all() and (lim["distances"] == 4).all()
    # a missing value (NaN) is not "remembered"
    df = pd.DataFrame(rows)
    df.loc[(df.model == "vanilla") & (df.distance == 32), "planted_hr@1"] = np.nan
    assert lr.memory_limits(df).set_index("model").loc["vanilla", "remembers_up_to"] == 8
    with pytest.raises(ValueError):
        lr.memory_limits(df.iloc[:0])
    # straight from collect_results
    assert set(lr.memory_limits(lr.collect_results(fake_grid()))["model"]) == {"lstm", "vanilla"}


def test_one_budget_per_point_or_a_clear_error():
    """Runs of one family and distance at two step budgets (the LSTM at 2,400 and 9,600
    steps: 0.21 vs 0.97 at distance 128) are not seeds of one point: summaries, limits
    and the plot refuse to average them, naming the family, distance and budgets."""
    longer = [fake_result("lstm", seed, 128, planted_hr1=0.97, planted_hr10=1.0, max_steps=9600) for seed in (0, 1)]
    df = lr.collect_results(fake_grid() + longer)
    assert sorted(df.loc[(df.model == "lstm") & (df.distance == 128), "max_steps"]) == [2400, 2400, 9600, 9600]
    for call in (lr.summarize, lr.memory_limits, lr.plot_accuracy_vs_distance):
        with pytest.raises(ValueError, match=r"lstm at distance 128 has runs at 2 step budgets \(trainer.max_steps \[2400, 9600\]\)"):
            call(df)
    one = df[df.max_steps == 9600]
    assert lr.summarize(one)["planted_hr@1_mean"].tolist() == [pytest.approx(0.97)]
    assert lr.memory_limits(df[df.max_steps == 2400]).set_index("model").loc["lstm", "forgets_at"] == 128


def test_collect_results_with_explicit_configs_and_pairs():
    res = fake_result("vanilla", 0, 8, planted_hr1=0.5, planted_hr10=1.0)
    res.config = None
    cfg = {"seed": 0, "model": {"name": "vanilla", "max_len": 32},
           "data": {"options": {"trigger_distance": 16}}}
    a = lr.collect_results([res], configs=[cfg])
    b = lr.collect_results([(res, cfg)])
    assert a["distance"].tolist() == b["distance"].tolist() == [16.0]
    assert a["max_len"].tolist() == [32.0]
    assert np.isnan(a["chance_hr@1"].iloc[0])  # n_triggers unknown: not guessed
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
    labels = [line.get_label() for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["lstm", "vanilla", "most popular", "oracle", "cue only (1/pairs)"]
    x, y = axes[0].get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [8, 32, 128])
    np.testing.assert_allclose(y, [0.95, 0.95, -0.05])  # mean over the two seeds
    mrr = [line.get_label() for line in axes[1].get_lines() if not line.get_label().startswith("_")]
    assert "cue only (1/pairs)" not in mrr  # chance is an HR@1 level
    one = lr.plot_accuracy_vs_distance(df, metrics=("planted_hr@10",), models=["vanilla"])
    assert len(one.get_axes()) == 1 and len(one.get_axes()[0].get_lines()) == 2
    with pytest.raises(ValueError):
        lr.plot_accuracy_vs_distance(df.iloc[:0])


@pytest.mark.slow
def test_tiny_long_range_run_reports_planted_metrics(tmp_path):
    """The real thing at toy size: the experiment config trains, selects on the planted
    validation rows, the evaluator finds the planted test rows, the oracle is the ceiling,
    and the collector reads it all back from disk."""
    cfg = compose_cfg([
        "experiment=long_range", "model=vanilla", "seed=0", "logger=none",
        f"paths.output_dir={tmp_path / 'run'}", f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", "data.options.n_customers=200",
        "data.options.trigger_distance=4", "data.options.max_events=32", "model.d_model=8",
        "trainer.max_steps=6", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
    ], hydra=False)
    result = train_and_evaluate(cfg)
    m = result.metrics["model"]
    assert m["planted/n"] == 20  # 10 % of the 200 customers end on cue -> target
    assert m["planted/visible"] == 1.0 and m["planted/cued"] == 1.0
    assert result.metrics["most_popular"]["planted/n"] == m["planted/n"]
    assert result.metrics["planted_oracle"]["planted/hr@1"] == 1.0
    assert result.provenance["monitor"] == "planted/hr@1" and "planted/hr@1" in result.valid
    df = lr.collect_results(tmp_path / "run")
    assert len(df) == 1
    row = df.iloc[0]
    assert (row["distance"], row["model"], row["max_len"]) == (4.0, "vanilla", 32.0)
    assert row["planted_n"] == m["planted/n"] and row["planted_visible"] == 1.0
    assert row["oracle_planted_hr@1"] == 1.0 and row["valid_planted_hr@1"] == result.valid["planted/hr@1"]
    assert isinstance(df, pd.DataFrame)
