"""Issue 13: a single run resumes, not only under -m.

* relaunching the identical command continues the newest unfinished run folder of the same
  config hash (unless ``trainer.resume=false``);
* ``ckpt_path=<run folder or its checkpoints/>`` continues that run in its folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.train import run_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def _train(root: Path, *overrides: str) -> str:
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "debug=tiny", f"paths.root={root}",
           f"paths.cache_dir={root / 'cache'}", "experiment_name=first_hour", *overrides]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "ATTNLAB_OUTPUTS": str(root)}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out.stdout + out.stderr


def _run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs" / "first_hour").glob("*/seed*") if p.is_dir())


def test_relaunch_resumes_the_unfinished_run_and_ckpt_path_continues_it(tmp_path):
    root = tmp_path / "out"
    _train(root, "trainer.max_epochs=1")
    (first,) = _run_folders(root)
    # what a run killed after its first epoch leaves: checkpoints, no result, a dead owner's lock
    (first / "result.json").unlink()
    (first / run_dir.LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7,
                                                       "started": "1"}))
    log = _train(root, "trainer.max_epochs=1")  # the identical command
    assert _run_folders(root) == [first], "the relaunch must continue the unfinished folder, not open a new one"
    assert "resuming the unfinished run" in log and "resumed from" in log and "at epoch 1" in log
    assert json.loads((first / "result.json").read_text())["provenance"]["epochs_trained"] == 1

    # ckpt_path (the checkpoints folder here): train on to 2 epochs in the same folder
    log = _train(root, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints'}")
    assert _run_folders(root) == [first]
    assert "resumed from" in log and "at epoch 1" in log
    result = json.loads((first / "result.json").read_text())
    assert result["provenance"]["epochs_trained"] == 2
    assert "ckpt_path" not in result["config"]  # where to resume is not part of the run's config


def _root(*overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="config", overrides=["debug=tiny", *overrides])


def _fake_run(parent: Path, cfg, *, stamp: str, checkpoint: bool = True) -> Path:
    h = run_dir.full_config_hash(cfg)
    d = parent / f"seed0-{stamp}-{h[:8]}-p1-000000000001"
    run_dir.write_run_file(d, h)
    if checkpoint:
        (d / "checkpoints" / "latest" / "1").mkdir(parents=True)
    return d


def test_which_folder_a_relaunch_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "_DECISIONS", {})
    cfg = _root()
    fresh = str(tmp_path / "seed0-20990101-000000-new")
    old = _fake_run(tmp_path, cfg, stamp="20200101-000000")
    newer = _fake_run(tmp_path, cfg, stamp="20200102-000000")
    os.utime(old, (1, 1))
    assert run_dir.run_dir(fresh, cfg) == str(newer)  # the newest unfinished one
    assert run_dir.resume_decision() == ("unfinished", str(newer))
    assert run_dir.run_dir(fresh, cfg) == str(newer)  # stable within the process

    def decide(cfg, tag):
        return run_dir.run_dir(str(tmp_path / f"seed0-20990101-000000-{tag}"), cfg)

    (newer / "result.json").write_text("{}")  # finished: not resumed
    assert decide(cfg, "a") == str(old)
    assert decide(_root("trainer.resume=false"), "b").endswith("-b")  # asked to start afresh
    assert decide(_root("trainer.lr=0.002"), "c").endswith("-c")  # another config
    (old / run_dir.LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                                     "started": run_dir._start_time(os.getpid())}))
    assert decide(cfg, "d").endswith("-d")  # held by a live run
    (old / run_dir.LOCK_NAME).unlink()
    no_ckpt = _fake_run(tmp_path, cfg, stamp="20200103-000000", checkpoint=False)
    assert decide(cfg, "e") == str(old) != str(no_ckpt)  # nothing to resume from there


def test_ckpt_path_names_the_run_folder_and_is_not_hashed(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "_DECISIONS", {})
    cfg = _root()
    run = _fake_run(tmp_path, cfg, stamp="20200101-000000")
    for given in (run, run / "checkpoints", run / "checkpoints" / "latest"):
        assert run_dir.run_folder_of(given) == run
    with_ckpt = _root(f"+ckpt_path={run}")  # train.py turns ckpt_path=... into +ckpt_path=...
    assert run_dir.full_config_hash(with_ckpt) == run_dir.full_config_hash(cfg)
    assert run_dir.run_dir(str(tmp_path / "seed0-x"), with_ckpt) == str(run)
    assert run_dir.resume_decision() == ("ckpt_path", str(run))
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        run_dir.run_folder_of(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        run_dir.run_folder_of(tmp_path / "empty")
    assert OmegaConf.select(cfg, "ckpt_path") is None
