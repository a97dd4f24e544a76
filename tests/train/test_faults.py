"""Faults get a clear error or a named warning, never a silent wrong run or a raw
traceback (issue 12): degenerate splits, corrupt checkpoints, bad results files, two
runs in one folder."""

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import attnlab.train.loop as loop
from attnlab import results as res
from attnlab.train import tasks
from attnlab.train.checkpoint import CheckpointError, Checkpoints
from attnlab.train.loop import train_and_evaluate
from attnlab.train.run_dir import LOCK_NAME, RunFolderInUseError, RunLock
from tests.train.test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


# -- degenerate splits ---------------------------------------------------------------

@pytest.fixture
def no_baselines(monkeypatch):
    """A degenerate split must be refused before anything is fitted."""
    def refuse(self, *a, **k):
        raise AssertionError("baselines were fitted on a degenerate split")

    for cls in (tasks.NextItemTask, tasks.ChurnTask):  # next_basket inherits next_item's
        monkeypatch.setattr(cls, "baselines", refuse)


def test_a_test_cutoff_after_the_data_is_an_error_not_an_empty_result(tmp_path, no_baselines):
    root = tmp_path / "out"
    with pytest.raises(ValueError, match=r"no test examples \(valid_cutoff .*, test_cutoff 2099-01-01 00:00:00; "
                                         r"the data spans 2020-.* \.\. 2020-.*\(120 customer\(s\)") as e:
        train_and_evaluate(tiny_cfg(tmp_path, "task=next_basket", "task.test_cutoff=2099-01-01",
                                    f"paths.root={root}"))
    assert "task.test_cutoff" in str(e.value)  # the fix names the key
    assert not list(root.rglob("*.json"))  # nothing filed in the results index


def test_a_valid_cutoff_before_the_data_leaves_no_training_and_says_so(tmp_path, no_baselines):
    with pytest.raises(ValueError, match=r"no training / no validation examples \(valid_cutoff 2019-06-01 00:00:00"):
        train_and_evaluate(tiny_cfg(tmp_path, "task=next_basket", "task.valid_cutoff=2019-06-01",
                                    "task.test_cutoff=2020-04-01"))


def test_a_two_event_dataset_fails_on_the_split_not_in_batching(tmp_path, no_baselines):
    """The smallest data set the loader accepts (a 1-event file is refused by the loader)."""
    csv = tmp_path / "two.csv"
    csv.write_text("customer_id,item_id,timestamp\nc1,i1,2020-01-01 10:00:00\nc1,i2,2020-01-05 10:00:00\n")
    with pytest.raises(ValueError, match=r"task=next_item: the split has no training / no validation / no test "
                                         r"examples .*min_baskets 3; the data spans 2020-01-01 10:00:00 \.\. "
                                         r"2020-01-05 10:00:00 \(1 customer\(s\), 2 event\(s\)\)"):
        train_and_evaluate(tiny_cfg(tmp_path, "data=tabular", f"data.options.path={csv}"))
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # the lock is cleared on an error too


# -- corrupt checkpoints -------------------------------------------------------------

def test_resume_false_sets_old_checkpoints_aside_and_a_corrupt_one_names_its_folder(tmp_path):
    fast = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", f"paths.root={tmp_path / 'out'}")
    ckpt = tmp_path / "run" / "checkpoints"
    old = Checkpoints(ckpt)  # an earlier run's checkpoints in the folder (another model, later steps)
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    old.save("latest", 1, layer, {"epoch": 1})
    old.save("best", 7, layer, {"epoch": 7})
    old.close()
    # resume=false starts afresh: it neither collides with step 1 nor tests the old best step 7
    result = train_and_evaluate(tiny_cfg(tmp_path, *fast, "trainer.resume=false"))
    assert result.provenance["epochs_trained"] == result.provenance["best_epoch"] == 1
    (aside,) = (tmp_path / "run").glob("checkpoints.discarded-*")  # moved, not deleted
    assert (aside / "best" / "7").is_dir() and not (ckpt / "best" / "7").exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # the run's lock is cleared on exit

    data = [p for p in (ckpt / "latest").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    rng = np.random.default_rng(0)
    for p in data:  # random bytes in the array data (TensorStore's chunks)
        p.write_bytes(rng.integers(0, 256, p.stat().st_size, dtype=np.uint8).tobytes())
    folder = re.escape(str(ckpt))
    with pytest.raises(CheckpointError, match=rf"cannot restore the 'latest' checkpoint {folder}/latest/1 .* "
                                              rf"Delete {folder} to train from scratch, or rerun with "
                                              r"trainer.resume=false") as e:
        train_and_evaluate(tiny_cfg(tmp_path, *fast))
    assert len(str(e.value).splitlines()) == 1 and e.value.__cause__ is None  # no TensorStore dump
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_checkpoint_folder_orbax_cannot_restore_is_refused_before_any_work(tmp_path, monkeypatch):
    """A path holding [ ] * ? (e.g. a sweep job's folder named after ``task.baselines=[a,b]``):
    Orbax saves there but cannot restore (its checkpoint merge globs the folder), so a run
    would train to the end and fail at its first restore. It is refused at once instead."""
    from attnlab.train import checkpoint
    from attnlab.typed_config import ConfigError

    bad = tmp_path / "seed=0,task.baselines=[most_popular]"
    # the premise, with the check switched off: the save lands, the restore cannot read it
    monkeypatch.setattr(checkpoint, "check_directory", lambda d: Path(d).absolute())
    ckpts = Checkpoints(bad / "checkpoints")
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    ckpts.save("best", 1, layer, {"epoch": 1})
    with pytest.raises(CheckpointError, match="cannot restore the 'best' checkpoint"):
        ckpts.restore("best", layer)
    ckpts.close()
    monkeypatch.undo()

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before the folder was checked")

    monkeypatch.setattr(loop, "load_data", no_data)
    cfg = tiny_cfg(tmp_path)
    cfg.paths.output_dir = str(tmp_path / "job[a]*")
    with pytest.raises(ConfigError, match=r"job\[a\]\*/checkpoints, whose path holds '\*' '\[' '\]': Orbax reads "
                                          r"these as a glob pattern .* without \[ \] \* \?"):
        train_and_evaluate(cfg)
    with pytest.raises(ConfigError, match=r"holds '\?'"):
        Checkpoints(tmp_path / "what?")


# -- bad results files ---------------------------------------------------------------

def test_a_truncated_index_entry_is_not_fatal_and_is_named(tmp_path, caplog, monkeypatch):
    cfg = tiny_cfg(tmp_path, f"paths.root={tmp_path / 'out'}", "trainer.skip_completed=true")
    c = loop._as_dict(cfg)
    entry = res.completed_path(loop.results_dir(c), c)
    entry.parent.mkdir(parents=True)
    entry.write_text('{"metrics": {"model": {"ndcg@10": 0.1')  # a crash half way through a copy

    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached  # past the skip check: the run goes on to re-train (and rewrite the entry)

    monkeypatch.setattr(loop, "check_split", reached)
    with caplog.at_level(logging.WARNING), pytest.raises(Reached):
        train_and_evaluate(cfg)
    assert f"ignoring a bad results file: {entry} is not valid JSON" in caplog.text


def test_one_bad_file_never_stops_a_table(tmp_path):
    from tests.report.test_tables import write_run

    index = tmp_path / "results"
    for seed in range(2):
        write_run(index, "m", seed, np.ones(20), np.zeros(20))
    paths = sorted((index / "exp").glob("*.json"))
    paths[0].write_text(paths[0].read_text()[:50])  # truncated
    (index / "exp" / "0000notaresult.json").write_text("[1, 2]")
    runs, skipped = res.read_index(index / "exp", warn=lambda m: None)
    assert [p for p, _ in runs] == paths[1:]
    assert len(skipped) == 2 and str(paths[0]) in " ".join(skipped)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark.py"), "exp", "--results-dir",
                           str(index), "--n-boot", "20"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipping {paths[0]}: it is not valid JSON" in proc.stderr
    assert "0000notaresult.json: it holds a list, not a run result" in proc.stderr
    assert "**exp**" in proc.stdout  # the table of the readable run


# -- run folders: unique per launch, one live run each ---------------------------------

def test_runs_launched_in_the_same_second_get_their_own_folders(tmp_path):
    code = ("import sys; sys.path.insert(0, 'experiments'); import train; "  # train.py registers the resolver
            "from hydra import compose, initialize_config_dir; from omegaconf import OmegaConf\n"
            "with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base='1.3'):\n"
            "    cfg = compose('config', overrides=['debug=tiny', 'seed=3', 'paths.root=R'], "
            "return_hydra_config=True)\n"
            "print(OmegaConf.select(cfg, 'hydra.run.dir'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    a, b = (Path(d) for d in dirs)
    assert a.parent == b.parent == Path("R/runs/default/vanilla-next_item-synthetic")
    assert a != b, dirs
    from attnlab.train.loop import _as_dict
    from attnlab.results import config_hash

    c = _as_dict(tiny_cfg(tmp_path, "seed=3", "paths.root=R"))  # the run's own (index) hash
    for d in (a, b):
        assert d.name.split("-")[3] == config_hash(c)[:8], d.name  # seed3-<date>-<time>-<hash>-p<pid>-<us>
        assert d.name.split("-")[4].startswith("p")


def _holder(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from attnlab.train.run_dir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_held_by_a_live_run_is_refused_and_a_dead_owners_lock_taken_over(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        monkeypatch.setattr(loop, "load_sequences", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work")))
        with pytest.raises(RunFolderInUseError, match=rf"run folder {re.escape(str(folder))} is in use by a live "
                                                      rf"run \(pid {holder.pid}, lock {re.escape(str(folder / LOCK_NAME))}\)"):
            train_and_evaluate(tiny_cfg(tmp_path))
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid  # left alone
    finally:
        holder.kill()
        holder.wait()
    assert (folder / LOCK_NAME).exists()  # a killed run leaves its lock behind
    with caplog.at_level(logging.WARNING), RunLock(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock {folder / LOCK_NAME}: its owner (pid {holder.pid})" in caplog.text
    assert not (folder / LOCK_NAME).exists()  # cleared on exit


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    """The lock records the owner's start time: a different process with the same pid
    (here: this one, with another start time) does not keep the folder locked."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(),
                                                "started": "1"}))
    with RunLock(folder) as lock:  # taken over, not refused
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_benchmark_run_writes_where_results_dir_reads(tmp_path, monkeypatch):
    """`benchmark.py X --run --results-dir D`: the sweep is told to index into D (it used
    to write to outputs/results and then the table read an empty D)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cli", ROOT / "experiments" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    results = tmp_path / "elsewhere" / "results"
    with pytest.raises(SystemExit, match="no results"):   # the fake sweep indexed nothing
        bench.main(["cj_churn", "--run", "--results-dir", str(results), "--override", "seed=0"])
    (cmd,) = seen
    assert f"paths.results_dir={results}" in cmd and f"paths.root={results.parent}" in cmd
    assert cmd.index(f"paths.results_dir={results}") < cmd.index("seed=0")  # user overrides win


def test_benchmark_all_with_only_unpublished_results_says_what_it_found(tmp_path):
    (tmp_path / "results" / "default").mkdir(parents=True)   # plain train.py runs only
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--all",
                           "--results-dir", str(tmp_path / "results")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no published table has results" in proc.stderr and "found: default" in proc.stderr
    assert "--run" in proc.stderr


def test_benchmark_fresh_run_that_fails_puts_the_earlier_results_back(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cli2", ROOT / "experiments" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "results"
    (results / "cj_churn").mkdir(parents=True)
    (results / "cj_churn" / "abc.json").write_text("{}")
    (tmp_path / "multirun" / "cj_churn").mkdir(parents=True)

    def failing_sweep(cmd, **kw):
        (results / "cj_churn").mkdir(parents=True, exist_ok=True)   # a partial new index
        (results / "cj_churn" / "partial.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(bench.subprocess, "run", failing_sweep)
    with pytest.raises(SystemExit, match="sweep failed"):
        bench.main(["cj_churn", "--run", "--fresh", "--results-dir", str(results)])
    assert (results / "cj_churn" / "abc.json").is_file()              # the earlier runs are back
    assert not (results / "cj_churn" / "partial.json").exists()
    assert list(results.glob("cj_churn.failed-*/partial.json"))         # the failed sweep's output kept
    assert (tmp_path / "multirun" / "cj_churn").is_dir()
