"""Killed at every stage, relaunched: the result equals an uninterrupted run (issue 12).

Each case runs the real entry point, ``experiments/train.py debug=tiny ...``, through a small
wrapper (``KILLER`` below, written to the test's folder) that hooks one function so that the
process dies hard at a chosen point with ``os._exit(137)``: what SIGKILL does (no ``finally``,
no ``atexit``, no lock released), but at an exact point, with no timer to race. Then the same
command is relaunched unmodified, and its result must equal that of one uninterrupted run of the
config (the ``baseline`` fixture, run once for the module). The stages run side by side, one per
core, each in its own ``paths.root`` (the ``killed`` fixture), sharing the session's compile cache
(``tests/conftest.py``), which the baseline fills first.

Stages (where the process dies):

* ``data_build``: building the data cache, after every ``.npy`` array is written, half way
  through ``meta.json`` (the file that marks an entry complete);
* ``mid_epoch``: 5 training steps into epoch 2, after epoch 1's checkpoints exist;
* ``checkpoint``: inside Orbax's save of ``latest`` step 2 (all files written, not yet
  renamed into place), after ``best`` step 2 was saved (this config improves at epoch 2). The
  relaunch resumes from ``latest`` step 1 and saves ``best`` step 2 again (it used to fail there:
  Orbax's StepAlreadyExistsError; ``Checkpoints.save`` now replaces the killed run's copy);
* ``result``: writing the run folder's ``result.json`` (temp file written, not yet renamed;
  ``per_example.npz`` has landed);
* ``index``: writing the results-index entry ``<config_hash>.json`` (temp file written, not
  yet renamed; the entry's ``.npz`` has landed).

Leftovers of the killed process that stay by design (every reader ignores them; asserted below):
the abandoned run folder of a launch that could not be continued (``data_build``: no checkpoint
yet; ``index``: its ``result.json`` was written, so it is finished) keeps its dead owner's
``.attnlab.lock``; the killed cache build's ``<cache>/.tmp-<fingerprint>-*/`` (a dot folder, never
read as an entry); the temp file of an interrupted atomic write, ``.result.json.<random>`` in the run
folder or ``.<config_hash>.json.<random>`` in the index (dot names that end in neither ``.json``
nor ``.npz``: no reader globs them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from attnlab.data.pipeline import load_store
from attnlab import results as res
from attnlab.train.run_dir import LOCK_NAME, RUN_FILE

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "experiments" / "train.py"
EXPERIMENT = "kill_stages"
# two epochs (32 steps), checkpoints every epoch; init_bias=zeros: epoch 2 improves on epoch 1, so
# epoch 2 saves ``best`` and then ``latest``, and the ``checkpoint`` stage dies between the two
CONFIG = ("debug=tiny", f"experiment_name={EXPERIMENT}", "trainer.max_epochs=2", "trainer.patience=5",
          "trainer.init_bias=zeros")
MID_EPOCH_STEPS = 5

KILLER = r'''
"""python killer.py <stage> <train.py> <args...>: train.py <args...>, killed at <stage>."""
import json
import os
import runpy
import sys
from pathlib import Path

stage, train_py, *args = sys.argv[1:]


def die(where):
    sys.stderr.write(f"KILLED at {stage}: {where}\n")
    sys.stderr.flush()
    os._exit(137)  # like SIGKILL: no finally, no atexit, the lock stays


if stage == "data_build":
    from attnlab.data import pipeline

    real_dump = json.dump

    def dump(obj, fh, **kw):
        name = Path(getattr(fh, "name", ""))
        if name.name == pipeline.META_FILE and name.parent.parent.name.startswith(".tmp-"):
            arrays = sorted(p.name for p in name.parent.glob("*.npy"))
            text = json.dumps(obj, **kw)
            fh.write(text[: len(text) // 2])
            fh.flush()
            die(f"{len(arrays)} arrays written, half way through {name}")
        return real_dump(obj, fh, **kw)

    json.dump = dump
elif stage == "mid_epoch":
    from attnlab.train import tasks

    real_batches = tasks.NextItemTask.train_batches

    def train_batches(self, *a, **k):
        for i, batch in enumerate(real_batches(self, *a, **k)):
            if k.get("epoch") == 1 and i == int(os.environ["KILL_STEPS"]):
                die(f"{i} steps into epoch 2")
            yield batch

    tasks.NextItemTask.train_batches = train_batches
elif stage == "checkpoint":
    from orbax.checkpoint._src.path import atomicity

    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        final = Path(str(self.get_final()))
        if final.parent.name == "latest" and final.name == "2":
            die(f"Orbax wrote {self.get()}, not yet renamed to {final}")
        return await real_finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize
elif stage in ("result", "index"):
    real_replace = os.replace

    def replace(src, dst, **kw):
        d = Path(dst)
        if stage == "result":
            hit = d.name == "result.json"  # the run folder's
        else:
            hit = d.suffix == ".json" and d.parent.parent.name == "results"  # <results>/<experiment>/<hash>.json
        if hit:
            die(f"{src} written, not yet renamed to {d}")
        return real_replace(src, dst, **kw)

    os.replace = replace
else:
    raise SystemExit(f"unknown stage {stage}")

sys.argv = [train_py, *args]
runpy.run_path(train_py, run_name="__main__")
'''


def _command(root: Path, kill_at: str | None) -> list[str]:
    args = [*CONFIG, f"paths.root={root}", f"paths.cache_dir={root / 'cache'}"]
    if kill_at is None:
        return [sys.executable, str(TRAIN_PY), *args]
    killer = root.parent / "killer.py"
    killer.write_text(KILLER)
    return [sys.executable, str(killer), kill_at, str(TRAIN_PY), *args]


def _launch(root: Path, *, kill_at: str | None = None) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    # ATTNLAB_COMPILE_CACHE: the test session's compile cache (tests/conftest.py), inherited
    env = {**os.environ, "ATTNLAB_OUTPUTS": str(root), "KILL_STEPS": str(MID_EPOCH_STEPS)}
    return subprocess.run(_command(root, kill_at), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _log(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs" / EXPERIMENT).glob("*/seed0-*") if p.is_dir())


def _result_path(proc: subprocess.CompletedProcess) -> Path:
    (path,) = re.findall(r"result: (\S+result\.json)", _log(proc))
    return Path(path)


TIMES = {"wall_s", "fit_s", "train_s", "peak_rss_mb", "events_per_s"}
SAME = ("experiment", "model", "task", "data", "seed", "monitor", "config_hash", "cell_hash", "data_fingerprint",
        "split_report", "epochs_trained", "steps_trained", "total_steps", "best_epoch", "n_test", "training_signal")


def _comparable(result: dict) -> dict:
    """A result without what differs between two identical runs (times, memory, folder, host)."""
    return {"metrics": {m: {k: v for k, v in d.items() if k not in TIMES} for m, d in result["metrics"].items()},
            "valid": result["valid"],
            "history": [{k: v for k, v in h.items() if k not in TIMES} for h in result["history"]],
            "provenance": {k: result["provenance"][k] for k in SAME},
            "config": result["config"]}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_same_arrays(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted run of CONFIG (alone: it fills the compile cache for the others): its
    result JSON and per-example arrays."""
    root = tmp_path_factory.mktemp("uninterrupted") / "out"
    proc = _launch(root)
    assert proc.returncode == 0, _log(proc)[-4000:]
    path = _result_path(proc)
    result = json.loads(path.read_text())
    prov = result["provenance"]
    # what the checkpoint stage relies on: epoch 2 improves, so it saves best/2 before latest/2
    assert prov["epochs_trained"] == prov["best_epoch"] == 2, prov
    return {"result": result, "per_example": _arrays(path.with_name("per_example.npz"))}


# stage -> the epoch the relaunch resumes from, or None: it starts a fresh run folder
STAGES = {"data_build": None, "mid_epoch": 1, "checkpoint": 1, "result": 2, "index": None}


def _killed_state(stage: str, root: Path) -> Path:
    """Check the kill hit the point it was meant to; returns the killed run's folder."""
    (folder,) = _run_folders(root)
    assert (folder / LOCK_NAME).exists()  # died holding its lock
    index = root / "results" / EXPERIMENT
    latest, best = folder / "checkpoints" / "latest", folder / "checkpoints" / "best"
    if stage == "data_build":
        (tmp,) = (root / "cache").glob(".tmp-*/store")
        assert len(list(tmp.glob("*.npy"))) > 3 and (tmp / "meta.json").exists()
        with pytest.raises(ValueError):  # half a meta.json
            json.loads((tmp / "meta.json").read_text())
        assert [p.name for p in (root / "cache").iterdir()] == [tmp.parent.name]  # no entry yet
        assert not (folder / "checkpoints").exists()
    elif stage == "mid_epoch":
        assert sorted(p.name for p in latest.iterdir()) == ["1"] and sorted(p.name for p in best.iterdir()) == ["1"]
    elif stage == "checkpoint":
        step1, unfinished = sorted(p.name for p in latest.iterdir())  # Orbax's temp folder of step 2
        assert step1 == "1" and unfinished.startswith("2.") and "tmp" in unfinished, unfinished
        assert sorted(p.name for p in best.iterdir()) == ["2"]  # saved before latest, finished
    elif stage == "result":
        assert (folder / "per_example.npz").exists() and not (folder / "result.json").exists()
        assert len(list(folder.glob(".result.json.*"))) == 1
    elif stage == "index":
        assert (folder / "result.json").exists()
        assert [p.suffix for p in index.iterdir() if not p.name.startswith(".")] == [".npz"]
        assert len(list(index.glob(".*.json.*"))) == 1
    if stage != "index":
        assert not index.exists() or not list(index.glob("*.json"))
    return folder


@dataclasses.dataclass
class Killed:
    root: Path
    killed: subprocess.CompletedProcess
    killed_state: tuple[Path | None, AssertionError | None]  # the killed run's folder, or what was wrong
    relaunch: subprocess.CompletedProcess


def _kill_and_relaunch(stage: str, root: Path) -> Killed:
    killed = _launch(root, kill_at=stage)
    try:  # what the kill left, before the relaunch touches it
        state = (_killed_state(stage, root), None)
    except AssertionError as e:
        state = (None, e)
    return Killed(root, killed, state, _launch(root))  # the same command, unmodified


@pytest.fixture(scope="module")
def killed(baseline, tmp_path_factory) -> dict[str, Killed]:
    """Every stage: a launch killed there, checked, then relaunched. The stages run side by side,
    one per core (each in its own root; the kill points are hooks, not timers, so this changes
    nothing but the wall time)."""
    roots = {stage: tmp_path_factory.mktemp(stage) / "out" for stage in STAGES}
    with ThreadPoolExecutor(max_workers=min(len(STAGES), max(2, os.cpu_count() or 1))) as pool:
        jobs = {stage: pool.submit(_kill_and_relaunch, stage, root) for stage, root in roots.items()}
        return {stage: job.result() for stage, job in jobs.items()}


def _assert_no_stray_files(folder: Path, *, temps: str | None) -> None:
    """A finished run folder: no lock, no unfinished checkpoint, and no temp file but one of
    the pattern ``temps`` (a killed write's, when the relaunch continued its folder)."""
    dots = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert {RUN_FILE, ".hydra"} <= dots, dots
    left = sorted(dots - {RUN_FILE, ".hydra"})  # no LOCK_NAME: the relaunch released it
    assert len(left) == (temps is not None) and all(re.fullmatch(temps, n) for n in left), left
    ckpts = sorted(str(p.relative_to(folder)) for p in (folder / "checkpoints").glob("*/*"))
    assert ckpts == ["checkpoints/best/2", "checkpoints/latest/2"], ckpts


@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_at_a_stage_the_relaunch_equals_an_uninterrupted_run(stage, baseline, killed):
    k = killed[stage]
    root = k.root
    assert k.killed.returncode == 137 and f"KILLED at {stage}" in k.killed.stderr, _log(k.killed)[-4000:]
    killed_folder, problem = k.killed_state
    if problem is not None:
        raise problem

    log = _log(k.relaunch)
    assert k.relaunch.returncode == 0, log[-4000:]
    path = _result_path(k.relaunch)
    folder = path.parent
    resumed_epoch = STAGES[stage]
    if resumed_epoch is None:  # nothing to continue: a fresh folder, trained from scratch
        assert folder != killed_folder and "resumed from" not in log
        assert _run_folders(root) == sorted([killed_folder, folder])
        assert (killed_folder / LOCK_NAME).exists()  # abandoned, with its dead owner's lock
    else:  # the unfinished folder is continued from its latest checkpoint
        assert folder == killed_folder and _run_folders(root) == [folder]
        assert "resuming the unfinished run" in log and f"at epoch {resumed_epoch} " in log, log[-4000:]

    # the result, in the run folder and in the index, is the uninterrupted run's
    want = _comparable(baseline["result"])
    assert _comparable(json.loads(path.read_text())) == want
    _assert_same_arrays(_arrays(folder / "per_example.npz"), baseline["per_example"])
    index = root / "results" / EXPERIMENT
    entries, skipped = res.read_index(index)
    assert skipped == [] and len(entries) == 1, (entries, skipped)
    (entry, data), = entries
    assert entry.stem == want["provenance"]["config_hash"] and _comparable(data) == want
    _assert_same_arrays(_arrays(entry.with_suffix(".npz")), baseline["per_example"])

    # no stray files where the relaunch wrote, but the killed write's named temp files
    _assert_no_stray_files(folder, temps=r"\.result\.json\.\w+" if stage == "result" else None)
    assert sorted(p.name for p in index.iterdir() if not p.name.startswith(".")) == [entry.name,
                                                                                      entry.with_suffix(".npz").name]
    index_temps = [p.name for p in index.iterdir() if p.name.startswith(".")]
    assert all(re.fullmatch(rf"\.{re.escape(entry.name)}\.\w+", n) for n in index_temps), index_temps
    assert len(index_temps) == (stage == "index"), index_temps
    # the data cache: one complete, verified entry; a killed build's folder is never read as one
    cache = root / "cache"
    (entry_dir,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert entry_dir.name == want["provenance"]["data_fingerprint"]
    load_store(entry_dir, verify=True)
    leftovers = sorted(p.name for p in cache.iterdir() if p.name.startswith("."))
    if stage == "data_build":
        assert "(cache miss)" in log and "cache hit" not in log  # rebuilt, not the half-written one
        assert len(leftovers) == 1 and leftovers[0].startswith(f".tmp-{entry_dir.name}-")
    else:
        assert leftovers == []
