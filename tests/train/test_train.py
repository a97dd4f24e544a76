"""End-to-end training on tiny synthetic data: loss goes down, resume is exact."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.train.loop import train_and_evaluate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_cfg(tmp_path, *overrides, out="run"):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["debug=tiny", f"paths.output_dir={tmp_path / out}",
                       f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
        )
    return cfg


def test_default_config_trains_and_reports(tmp_path):
    result = train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_steps=48", "trainer.max_epochs=3", "trainer.patience=5"))
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0], losses
    # model and both simple baselines evaluated on the same test split
    assert {"model", "most_popular", "personal_repeat"} <= set(result.metrics)
    for m in result.metrics.values():
        assert 0.0 <= m["hr@10"] <= m["hr@20"] <= 1.0
    saved = json.loads(Path(result.path).read_text())
    prov = saved["provenance"]
    for key in ("config_hash", "data_fingerprint", "git_sha", "versions", "hardware", "wall_s", "seed"):
        assert key in prov, key
    assert prov["data_fingerprint"] not in ("", "unknown")
    # the commit of this checkout (it was "unknown" in every result for a while: the lookup ran
    # one folder above the repository)
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    if (root / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_sha"]) and prov["git_sha"].startswith(head), prov
    else:  # an unpacked source tree: nothing to name
        assert prov["git_sha"] == "unknown", prov


def test_resume_reproduces_uninterrupted_run(tmp_path):
    common = ("trainer.patience=10", "model.dropout=0.2")
    straight = train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=2", *common, out="a"))
    # interrupted after one epoch, then relaunched with the same output dir
    train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=1", *common, out="b"))
    resumed = train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=2", *common, out="b"))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.metrics["model"]["ndcg@10"] == straight.metrics["model"]["ndcg@10"]
    assert resumed.metrics["model"]["mrr@20"] == straight.metrics["model"]["mrr@20"]


def test_stop_at_the_best_monitor_value_keeps_the_full_runs_checkpoint_and_numbers(tmp_path):
    """``trainer.stop_at``: a run stops after the first pass whose validation monitor reaches
    it. Set to the best value the full run attains (what a metric's maximum is for any run
    that reaches it), the stopped run chooses the same checkpoint and reports the same test
    numbers, in fewer passes; the result says why it stopped."""
    common = ("trainer.max_steps=60", "trainer.max_epochs=4", "trainer.patience=10")
    full = train_and_evaluate(tiny_cfg(tmp_path, *common, out="full"))
    curve = [h["valid/ndcg@10"] for h in full.history]
    best = int(np.argmax(curve)) + 1                       # the first pass at the best value
    assert full.provenance["best_epoch"] == best and full.provenance["stopped_by"] != "stop_at"
    if best == len(curve):                                 # the fixture must leave passes to skip
        pytest.fail(f"the tiny run peaked on its last pass ({curve}): no stop to test")
    stopped = train_and_evaluate(tiny_cfg(tmp_path, *common, f"trainer.stop_at={max(curve)!r}", out="stop"))
    assert stopped.provenance["stopped_by"] == "stop_at"
    assert stopped.provenance["epochs_trained"] == stopped.provenance["best_epoch"] == best < len(curve)
    times = {"wall_s", "train_s", "peak_rss_mb"}
    for got, want in ((stopped.metrics["model"], full.metrics["model"]), (stopped.valid, full.valid)):
        assert got.keys() == want.keys()
        np.testing.assert_array_equal([got[k] for k in sorted(got) if k not in times],
                                      [want[k] for k in sorted(want) if k not in times])   # NaN == NaN here
    # a value above anything the run reaches changes nothing
    above = train_and_evaluate(tiny_cfg(tmp_path, *common, f"trainer.stop_at={max(curve) + 0.5!r}", out="above"))
    assert [h["valid/ndcg@10"] for h in above.history] == curve and above.provenance["stopped_by"] != "stop_at"


def test_replay_stopping_is_the_loops_rule():
    """Strictly higher replaces the chosen pass (a tie keeps the earlier one); ``patience``
    passes without improvement stop; ``stop_at`` stops once the best reaches it."""
    from attnlab.train.loop import replay_stopping

    assert replay_stopping([0.1, 0.2, 0.15, 0.3], patience=1) == (2, 3)
    assert replay_stopping([0.1, 0.2, 0.15, 0.3], patience=2) == (4, 4)
    assert replay_stopping([0.5, 0.5, 0.5, 0.6], patience=2) == (1, 3)       # ties are not improvements
    assert replay_stopping([0.9, 1.0, 0.99], patience=3, stop_at=1.0) == (2, 2)
    assert replay_stopping([0.9, 0.95], patience=3, stop_at=1.0) == (2, 2)      # the curve ends first
    with pytest.raises(ValueError, match="patience=0"):
        replay_stopping([0.1], patience=0)


def test_a_smaller_patience_is_the_run_cut_short_as_its_replay_says(tmp_path):
    """``experiments/stop_replay.py`` reads what a smaller ``trainer.patience`` would have
    chosen off a finished run's validation curve. That is exact only if the shorter run is
    the longer one cut short: train both and compare the chosen pass, the passes run and
    every reported number."""
    import importlib.util

    from attnlab.train.loop import replay_stopping, results_dir

    common = ("trainer.max_steps=60", "trainer.max_epochs=4")
    # its own results index: the session's (ATTNLAB_OUTPUTS) holds other tests' runs too
    full_cfg = tiny_cfg(tmp_path, *common, "trainer.patience=10", f"paths.results_dir={tmp_path / 'index'}",
                        out="full")
    full = train_and_evaluate(full_cfg)
    curve = [h["valid/ndcg@10"] for h in full.history]
    if replay_stopping(curve, patience=1)[1] == len(curve):   # the fixture must give patience 1 a stop
        pytest.fail(f"patience 1 would run every pass of the tiny run ({curve}): nothing to cut")
    spec = importlib.util.spec_from_file_location("stop_replay", CONFIGS.parent / "experiments" / "stop_replay.py")
    stop_replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stop_replay)
    index = results_dir(OmegaConf.to_container(full_cfg, resolve=True)) / full.provenance["experiment"]
    rows, skipped = stop_replay.replay_folder(index, [1])   # the results index, as the script is used
    assert not skipped and len(rows) == 1, (rows, skipped)
    want = rows[0]
    assert (want["recorded_chosen"], want["recorded_passes"]) == (full.provenance["best_epoch"], len(curve))
    assert want["passes"] < len(curve)

    short = train_and_evaluate(tiny_cfg(tmp_path, *common, "trainer.patience=1", out="short"))
    assert (short.provenance["best_epoch"], short.provenance["epochs_trained"]) == (want["chosen"], want["passes"])
    assert short.provenance["steps_trained"] == want["steps"] and short.provenance["stopped_by"] == "patience"
    assert [h["valid/ndcg@10"] for h in short.history] == curve[:want["passes"]]
    if want["chosen"] != want["recorded_chosen"]:           # the fixture must keep the pick to compare numbers
        pytest.fail(f"patience 1 changes the tiny run's pick ({curve}): no same-checkpoint numbers to compare")
    times = {"wall_s", "train_s", "peak_rss_mb"}                  # the same checkpoint: the same numbers
    got, ref = short.metrics["model"], full.metrics["model"]
    np.testing.assert_array_equal([got[k] for k in sorted(got) if k not in times],
                                  [ref[k] for k in sorted(ref) if k not in times])


TINY_MODEL = ("logger=none", "progress=false", "model.d_model=16", "model.n_layers=1",
              "model.max_len=16", "trainer.max_epochs=1", "trainer.limit_train_batches=2")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def real_cfg(tmp_path, cache, *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={cache}", *TINY_MODEL, *overrides])


def test_resume_refuses_a_checkpoint_past_max_epochs(tmp_path):
    """Lowering max_epochs must not file a longer-trained model under the shorter config."""
    train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=2", "trainer.patience=10", out="e"))
    with pytest.raises(RuntimeError, match="more than trainer.max_epochs=1"):
        train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=1", "trainer.patience=10", out="e"))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_config_runs_tiny(tmp_path, shared_cache, experiment):
    """Each experiment on its own (real or synthetic) data, with a tiny model and 2 batches."""
    cfg = real_cfg(tmp_path, shared_cache, f"experiment={experiment}")
    # every named baseline exists; fitting all of them is covered by the baseline tests
    from attnlab.baselines.registry import CHURN, RANKING

    names = list(cfg.task.baselines)
    assert set(names) <= set(RANKING) | set(CHURN), names
    cfg.task.baselines = names[:1]
    result = train_and_evaluate(cfg)
    assert np.isfinite(result.history[0]["train_loss"])
    assert result.provenance["experiment"] == experiment  # the experiment names its runs
    assert len(result.metrics) >= 2  # the model and at least one baseline on the same split


@pytest.mark.parametrize("task", ["next_basket", "churn"])
def test_other_tasks_train_on_synthetic(tmp_path, task):
    extra = ["task.horizon=2W"] if task == "churn" else []  # the tiny simulation spans ~3 months
    result = train_and_evaluate(tiny_cfg(tmp_path, f"task={task}", "trainer.max_epochs=2", *extra))
    assert "model" in result.metrics and len(result.metrics) >= 2
    assert all(np.isfinite(h["train_loss"]) for h in result.history)


def test_next_item_on_data_without_items_fails_clearly(tmp_path, shared_cache):
    cfg = real_cfg(tmp_path, shared_cache, "data=cdnow", "task=next_item")
    with pytest.raises(ValueError, match="no item ids"):
        train_and_evaluate(cfg)


def test_unknown_baseline_name_fails_clearly(tmp_path):
    cfg = tiny_cfg(tmp_path, "task.baselines=[most_popular,nope]")
    with pytest.raises(KeyError, match="unknown ranking baseline 'nope'"):
        train_and_evaluate(cfg)


def test_every_ranking_baseline_runs_through_the_trainer(tmp_path):
    names = "[most_popular,personal_repeat,rfm_segment_popularity,item_knn,ease,als,bpr]"
    result = train_and_evaluate(tiny_cfg(tmp_path, f"task.baselines={names}", "trainer.max_epochs=1"))
    assert set(result.metrics) == {"model", "most_popular", "personal_repeat", "rfm_segment_popularity",
                                   "item_knn", "ease", "als", "bpr"}
