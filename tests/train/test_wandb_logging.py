"""What a run logs to Weights & Biases, read back from the offline run directory (no
network, no key): resolved config with provenance, grouping and tags, per-epoch learning
curves, the test metrics as a wandb.Table, the learning-curve image and the summary."""

import json
from pathlib import Path

import pytest

from attnlab.train.loop import train_and_evaluate
from attnlab.train.optim import TrainerConfig, lr_schedule
from tests.train.test_train import tiny_cfg
from tests.train.wandb_records import logged


def test_offline_wandb_run_holds_config_curves_table_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg(tmp_path, "logger=wandb", "logger.mode=offline", "experiment_name=wandb_test",
                   "trainer.max_epochs=2", "trainer.patience=5", "logger.log_every_steps=4")
    result = train_and_evaluate(cfg)
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    L = logged(run_file)

    run = L["run"]
    assert run.run_group == "wandb_test" and run.job_type == "train"
    assert set(run.tags) == {"wandb_test", "next_item", "synthetic", "vanilla"}
    assert run.display_name == "vanilla-next_item-synthetic-seed0"
    prov = L["config"]["provenance"]
    assert prov["git_sha"] == result.provenance["git_sha"]
    assert prov["data_fingerprint"] == result.provenance["data_fingerprint"]
    assert prov["config_hash"] == result.provenance["config_hash"]
    assert L["config"]["model"]["name"] == "vanilla" and L["config"]["seed"] == 0

    curves = [h for h in L["history"] if "epoch" in h]  # per epoch, against an integer epoch axis
    assert [h["epoch"] for h in curves] == [1, 2] and all(type(h["epoch"]) is int for h in curves)
    assert [h["epoch/train_loss"] for h in curves] == [h["train_loss"] for h in result.history]
    assert [h["valid/ndcg@10"] for h in curves] == [h["valid/ndcg@10"] for h in result.history]
    # throughput and peak memory in their own section, per epoch
    assert [h["perf/train_events_per_s"] for h in curves] == [h["events_per_s"] for h in result.history]
    assert all(h["perf/peak_rss_mb"] > 0 for h in curves)
    (table,) = [h for h in L["history"] if "test/metrics/_type" in h]
    assert table["test/metrics/_type"] == "table-file" and table["test/metrics/nrows"] == len(result.metrics)
    (image,) = [h for h in L["history"] if "plots/learning_curves/_type" in h]
    assert image["plots/learning_curves/_type"] == "image-file"
    (heat,) = [h for h in L["history"] if "plots/attention/_type" in h]  # vanilla has softmax weights
    assert heat["plots/attention/_type"] == "image-file"
    # step-level loss and learning rate every logger.log_every_steps (4) steps of the 32
    steps = [h for h in L["history"] if "trainer/step" in h]
    assert [h["trainer/step"] for h in steps] == list(range(4, 33, 4))
    sched = lr_schedule(TrainerConfig.from_dict(cfg.trainer), 32)
    assert [h["train/lr"] for h in steps] == [float(sched(s - 1)) for s in range(4, 33, 4)]
    assert steps[0]["train/lr"] > steps[-1]["train/lr"]  # the decay shows on the curve
    # each point is the mean of the 4 steps since the last one, so all of them average to the
    # run's mean step loss: the epochs' mean losses weighted by their steps
    per_epoch = [(h["step"] - prev, h["train_loss"]) for h, prev in
                 zip(result.history, [0] + [h["step"] for h in result.history])]
    assert sum(h["train/loss"] for h in steps) / len(steps) == pytest.approx(
        sum(n * loss for n, loss in per_epoch) / 32, rel=1e-5)
    # x-axes: step-level curves against trainer/step, epoch-level ones against epoch
    M = L["metrics"]
    assert M["train/*"].step_metric == "trainer/step"
    assert M["valid/*"].step_metric == "epoch" and M["perf/*"].step_metric == "epoch"
    assert M["epoch/*"].step_metric == "epoch"
    assert M["valid/ndcg@10"].summary.max  # the monitor's summary is its best value
    # counts are summary values, never curves
    assert not any(k.endswith("/n") for h in L["history"] for k in h if k.startswith("valid/"))
    assert L["summary"]["valid/n"] == result.valid["n"] and L["summary"]["valid/planted/n"] == result.valid["planted/n"]
    assert L["summary"]["test/model/ndcg@10"] == result.metrics["model"]["ndcg@10"]
    assert L["summary"]["test/personal_repeat/hr@10"] == result.metrics["personal_repeat"]["hr@10"]

    # the media files themselves
    files = run_dir / "files" / "media"
    (table_file,) = (files / "table" / "test").glob("metrics_*.table.json")
    payload = json.loads(table_file.read_text())
    assert payload["columns"][0] == "contender" and {r[0] for r in payload["data"]} == set(result.metrics)
    (png,) = (files / "images" / "plots").glob("learning_curves_*.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_figures_log_in_a_process_that_never_imported_pyplot(tmp_path):
    """``wandb.Image(Figure)`` raised AttributeError (``matplotlib.pyplot``) in a fresh
    process: it crashed the last job of a real sweep. The tracker renders the figure
    itself; checked in a clean interpreter where pyplot is not loaded."""
    import subprocess
    import sys

    code = (
        "import sys, wandb\n"
        "from matplotlib.figure import Figure\n"
        "from attnlab.train.tracking import _png\n"
        "fig = Figure(); fig.add_subplot().plot([0, 1], [1, 0])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "img = wandb.Image(_png(fig))\n"
        "print(img.image.size)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(640, 480)"
