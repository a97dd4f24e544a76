"""What a run logs to Weights & Biases, read back from the offline run directory (no
network, no key): resolved config with provenance, grouping and tags, per-epoch learning
curves, the test metrics as a wandb.Table, the learning-curve image and the summary."""

import json
from pathlib import Path

from attnlab.train.loop import train_and_evaluate
from tests.train.test_train import tiny_cfg
from tests.train.wandb_records import logged


def test_offline_wandb_run_holds_config_curves_table_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg(tmp_path, "logger=wandb", "logger.mode=offline", "experiment_name=wandb_test",
                   "trainer.max_epochs=2", "trainer.patience=5")
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

    curves = [h for h in L["history"] if "train/loss" in h]
    assert [h["train/loss"] for h in curves] == [h["train_loss"] for h in result.history]  # learning curves
    assert [h["valid/ndcg@10"] for h in curves] == [h["valid/ndcg@10"] for h in result.history]
    (table,) = [h for h in L["history"] if "test/metrics/_type" in h]
    assert table["test/metrics/_type"] == "table-file" and table["test/metrics/nrows"] == len(result.metrics)
    (image,) = [h for h in L["history"] if "plots/learning_curves/_type" in h]
    assert image["plots/learning_curves/_type"] == "image-file"
    (heat,) = [h for h in L["history"] if "plots/attention/_type" in h]  # vanilla has softmax weights
    assert heat["plots/attention/_type"] == "image-file"
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
