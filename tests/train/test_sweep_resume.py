"""A Hydra multirun killed half way and relaunched skips what finished and loses nothing."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from attnlab import results as res
from attnlab.train.loop import train_and_evaluate
from tests.train.test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_skip_completed_returns_the_indexed_result(tmp_path):
    overrides = ("trainer.max_epochs=1", f"paths.root={tmp_path / 'out'}", "trainer.skip_completed=true")
    first = train_and_evaluate(tiny_cfg(tmp_path, *overrides, out="a"))
    index = Path(tmp_path / "out" / "results" / "default")
    (entry,) = index.glob("*.json")
    assert entry.stem == first.provenance["config_hash"] and entry.with_suffix(".npz").exists()
    again = train_and_evaluate(tiny_cfg(tmp_path, *overrides, out="b"))  # same config, other output dir
    assert again.provenance.get("skipped") is True
    assert again.metrics == first.metrics
    assert not (tmp_path / "b" / "checkpoints").exists()  # nothing was trained
    # the run folder holds the stored result, for the tools that read run folders
    copied = res.read_result(tmp_path / "b" / "result.json")
    assert copied.metrics == first.metrics and copied.provenance["config_hash"] == entry.stem
    assert (tmp_path / "b" / "per_example.npz").read_bytes() == entry.with_suffix(".npz").read_bytes()
    other_seed = train_and_evaluate(tiny_cfg(tmp_path, *overrides, "seed=1", out="c"))
    assert "skipped" not in other_seed.provenance
    assert len(list(index.glob("*.json"))) == 2
    # without the switch an identical run trains again (tests and ad-hoc runs stay honest)
    fresh = train_and_evaluate(tiny_cfg(tmp_path, "trainer.max_epochs=1", f"paths.root={tmp_path / 'out'}", out="d"))
    assert "skipped" not in fresh.provenance


def _sweep(root: Path, seeds: str):
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "-m", "debug=tiny", f"seed={seeds}",
           f"paths.root={root}", f"paths.cache_dir={root / 'cache'}", "experiment_name=resume_test",
           "trainer.max_epochs=2", "trainer.patience=5",
           "task.baselines=[most_popular]"]  # a list override: brackets in Hydra's job folder name
    env = {**os.environ, "ATTNLAB_OUTPUTS": str(root)}
    return cmd, env


def test_interrupted_sweep_relaunch_skips_finished_runs(tmp_path):
    root = tmp_path / "outputs"
    index = root / "results" / "resume_test"
    cmd, env = _sweep(root, "0,1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(index.glob("*.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # interrupted half way: after the first run finished
    proc.wait()
    done = sorted(index.glob("*.json"))
    assert len(done) == 1, "the sweep should have been interrupted after its first run"
    before = {p.name: p.read_bytes() for p in done}

    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (out.stdout + out.stderr).count("skipping: this exact run") == len(before)
    after = sorted(index.glob("*.json"))
    assert len(after) == 2  # nothing lost: every seed has its result
    for name, blob in before.items():
        assert (index / name).read_bytes() == blob  # finished runs were not re-run or rewritten
    seeds = sorted(json.loads(p.read_text())["provenance"]["seed"] for p in after)
    assert seeds == [0, 1]
    # the job folders spell the list's brackets as parentheses: Orbax restores nothing saved under
    # a path holding [ ] (its checkpoint merge globs the folder); each job restored its best checkpoint
    jobs = sorted(p.name for p in (root / "multirun" / "resume_test").iterdir() if p.is_dir())
    assert [re.search(r"seed=(\d),task\.baselines=\(most_popular\),", j).group(1) for j in jobs] == ["0", "1"], jobs
    assert not any(ch in j for j in jobs for ch in "[]"), jobs
    # the index keys are the runs' config hashes
    for p in after:
        data = json.loads(p.read_text())
        assert p.stem == data["provenance"]["config_hash"] == res.config_hash(
            {**data["config"], "paths": {}, "logger": {}})
