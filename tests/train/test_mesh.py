"""Many devices and hosts (issue 15): data-parallel training on a mesh, checkpoints that
move between device counts, a two-process job on 127.0.0.1, and the errors a wrong layout
or an unreachable coordinator gives.

JAX fixes its device count when it starts, so runs on 4 devices happen in subprocesses
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``, this file run as a script); the
pytest process has the 1 CPU device and runs the reference.

Tolerance (fp32): a step over 4 devices adds the batch's per-device gradients in another
order than one device, so losses agree to ~3e-7 relative (measured), not bitwise; Adam's
normalised update can turn a rounding difference in a near-zero gradient into a visible
step, so parameters after 6 steps agree to ~1e-5 absolute (measured 1.2e-5 vanilla,
4.8e-7 lstm). We check losses to ``LOSS_RTOL`` and parameters to ``PARAM_ATOL``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
LOSS_RTOL = 2e-5
PARAM_ATOL = 2e-4
# a few steps of debug=tiny: 3 batches a pass, 2 passes (validation and a checkpoint after each)
SHORT = ("trainer.max_steps=6", "trainer.limit_train_batches=3", "trainer.max_epochs=2", "trainer.patience=5")
FIRST_PASS = (*SHORT[:2], "trainer.max_epochs=1", "trainer.patience=5")  # a run stopped after its first pass
ITEM_SPLIT = ("trainer.mesh.data=2", "trainer.mesh.item=2")  # the item table split over 2 of the 4 devices


# -- what both sides run -------------------------------------------------------------------


def compose(out: Path, *overrides: str):
    """debug=tiny writing under ``out``; the data cache is ``out``'s sibling ``cache``."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[
            "debug=tiny", f"paths.output_dir={out / 'run'}", f"paths.cache_dir={out.parent / 'cache'}",
            f"paths.root={out}", *overrides])


def build_data(tmp_path: Path) -> None:
    """The data cache ``tmp_path/cache``, built before processes that share it start."""
    from omegaconf import OmegaConf

    from attnlab.train.loop import load_data

    load_data(OmegaConf.to_container(compose(tmp_path / "data"), resolve=True), progress=False)


def train(out: Path, *overrides: str) -> dict:
    """``train_and_evaluate`` on debug=tiny; returns per-step losses, the history, the test
    metric, where the result went and the layout of the trained parameters (saved to
    ``out/params<process>.npz``, this process's copy)."""
    import jax
    from flax import nnx

    from attnlab.train import loop

    steps: list[float] = []
    seen = {"trackers": []}
    add, fit, make_tracker = loop._StepLog.add, loop.fit, loop.make_tracker

    def step_add(self, step, loss):
        steps.append(float(np.asarray(loss)))
        add(self, step, loss)

    def fit_and_keep(model, *a, **k):
        state = fit(model, *a, **k)
        seen["params"] = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return state

    def tracker(logger_cfg, **kw):  # which logger each process was asked to start (none is started)
        seen["trackers"].append((logger_cfg or {}).get("name"))
        return make_tracker(None, **kw)

    loop._StepLog.add, loop.fit, loop.make_tracker = step_add, fit_and_keep, tracker
    try:
        result = loop.train_and_evaluate(compose(out, *overrides))
    finally:
        loop._StepLog.add, loop.fit, loop.make_tracker = add, fit, make_tracker
    leaves = jax.tree_util.tree_leaves_with_path(seen["params"])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"params{jax.process_index()}.npz",  # whole arrays (an item-split table gathered)
             **{jax.tree_util.keystr(p): np.asarray(x if x.is_fully_addressable else x.addressable_data(0))
                for p, x in leaves})
    sharding = leaves[0][1].sharding
    return {"steps": steps, "history": [h["train_loss"] for h in result.history],
            "ndcg": result.metrics["model"]["ndcg@10"], "path": result.path, "layout": result.provenance["layout"],
            "param_devices": len(sharding.device_set),
            "replicated": all(x.sharding.is_fully_replicated for _, x in leaves),
            "split": [jax.tree_util.keystr(p) for p, x in leaves if not x.sharding.is_fully_replicated],
            "trackers": seen["trackers"], "length_buckets": result.provenance["length_buckets"]}


def params(out: Path, process: int = 0) -> dict[str, np.ndarray]:
    with np.load(out / f"params{process}.npz") as f:
        return dict(f)


def error_of(fn) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        return f"{type(e).__name__}: {e}"
    return ""


def worker(spec: dict) -> dict:
    """Runs in a subprocess with forced host devices (see ``run_worker``): ``runs`` in
    order (one may first wait for a folder the pytest process writes), then ``errors``."""
    from attnlab import compile_cache

    compile_cache.enable()
    if spec.get("distributed"):
        from attnlab.train import distributed

        distributed.initialize(spec["distributed"])
    report = {"runs": {}}
    for name, out, over, *wait in spec.get("runs", []):
        deadline = time.monotonic() + 300
        while wait and not Path(wait[0]).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        report["runs"][name] = train(Path(out), *over)
    if spec.get("errors"):
        from attnlab.train.loop import train_and_evaluate

        out = Path(spec["errors"])
        report["errors"] = {
            "batch": error_of(lambda: train_and_evaluate(compose(out / "b", "trainer.batch_size=18"))),
            "too_many": error_of(lambda: train_and_evaluate(compose(out / "m", "trainer.mesh.data=8"))),
            "item_columns": error_of(lambda: train_and_evaluate(
                compose(out / "i", "trainer.mesh.item=4", "model.d_model=18"))),
            "built_nothing": not (out / "cache").exists(),
        }
    return report


def run_worker(tmp_path: Path, spec: dict, *, devices: int, name: str = "worker", env=None) -> subprocess.Popen:
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen([sys.executable, __file__, str(tmp_path / f"{name}.json")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str = "worker", timeout: int = 300) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return json.loads((tmp_path / f"{name}.report.json").read_text())


def same_params(a: dict, b: dict, atol: float) -> float:
    assert set(a) == set(b)
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= atol, worst
    return worst


# -- one device vs four, and checkpoints between them ----------------------------------------


def test_vanilla_on_four_devices_trains_like_one_and_checkpoints_move_between_them(tmp_path):
    """The same global batches on 1 and 4 devices: the same loss at every step (fp32
    tolerance), the same trained parameters, replicated on all 4 devices. A pass on 1
    device resumed on 4, and a pass on 4 resumed on 1, end like the uninterrupted run
    (restore into the new layout: the parameters are replicated). The layout errors
    ride along in the 4-device process (they fail before any work)."""
    one_then, four_then = tmp_path / "one_then_four", tmp_path / "four_then_one"
    build_data(tmp_path)
    proc = run_worker(tmp_path, {"runs": [["four", str(tmp_path / "four"), SHORT],
                                          ["items", str(tmp_path / "items"), [*SHORT, *ITEM_SPLIT]],
                                          ["first", str(four_then), FIRST_PASS],
                                          ["resumed", str(one_then), SHORT, str(one_then / "run" / "result.json")]],
                                 "errors": str(tmp_path / "errors")}, devices=4)
    train(one_then, *FIRST_PASS)  # the 4-device process resumes this folder once its result is written
    one = train(tmp_path / "one", *SHORT)
    report = finish(proc, tmp_path)
    four = report["runs"]["four"]
    assert one["layout"] == {"mesh": {"data": 1}, "devices": 1, "processes": 1, "platform": "cpu"}
    assert four["layout"]["mesh"] == {"data": 4} and four["param_devices"] == 4 and four["replicated"]
    check_alike(four, one, params(tmp_path / "four"), params(tmp_path / "one"))
    # the item table split by columns over an item axis (2 x 2 devices): the same training
    items = report["runs"]["items"]
    assert items["layout"]["mesh"] == {"data": 2, "item": 2}
    assert items["split"] and all("embed" in name or "item" in name for name in items["split"]), items["split"]
    check_alike(items, one, params(tmp_path / "items"), params(tmp_path / "one"))

    resumed_on_four = report["runs"]["resumed"]
    assert resumed_on_four["param_devices"] == 4 and resumed_on_four["replicated"]
    resumed_on_one = train(four_then, *SHORT)
    assert resumed_on_one["param_devices"] == 1
    for resumed, folder in ((resumed_on_four, one_then), (resumed_on_one, four_then)):
        assert len(resumed["steps"]) == 3  # only the second pass was trained after the restore
        np.testing.assert_allclose(resumed["steps"], one["steps"][3:], rtol=LOSS_RTOL)
        np.testing.assert_allclose(resumed["history"], one["history"], rtol=LOSS_RTOL)
        same_params(params(folder), params(tmp_path / "one"), PARAM_ATOL)

    errors = report["errors"]
    assert "trainer.batch_size=18" in errors["batch"] and "4 cpu device(s)" in errors["batch"], errors
    assert "trainer.mesh.data=8" in errors["too_many"] and "4 cpu device(s)" in errors["too_many"], errors
    assert errors["built_nothing"]
    assert "trainer.mesh.item=4" in errors["item_columns"] and "model.d_model" in errors["item_columns"], errors


def check_alike(many: dict, one: dict, many_params: dict, one_params: dict) -> None:
    assert len(many["steps"]) == len(one["steps"]) == 6
    np.testing.assert_allclose(many["steps"], one["steps"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(many["history"], one["history"], rtol=LOSS_RTOL)
    same_params(many_params, one_params, PARAM_ATOL)


def test_lstm_with_length_buckets_sampled_softmax_and_a_split_item_table_trains_like_one_device(tmp_path):
    """The LSTM on a 2 x 2 mesh (batch over 2 devices, item table split over 2), with
    length-bucketed batches (3 static lengths up to 48, rows by a token budget, so some
    batches' rows are odd: padded with empty rows for the data axis) and the sampled
    softmax (32 shared negatives): trains like one device."""
    build_data(tmp_path)
    bucketed = ("model=lstm", "model.max_len=48", "trainer.length_buckets=3",
                "task.sampled_softmax.negatives=32", *SHORT)
    proc = run_worker(tmp_path, {"runs": [["items", str(tmp_path / "items"), [*bucketed, *ITEM_SPLIT]]]},
                      devices=4)
    one = train(tmp_path / "one", *bucketed)
    items = finish(proc, tmp_path)["runs"]["items"]
    assert items["layout"]["mesh"] == {"data": 2, "item": 2}
    assert items["split"] and not items["replicated"]
    check_alike(items, one, params(tmp_path / "items"), params(tmp_path / "one"))
    shapes = one["length_buckets"]["shapes"]
    assert len(shapes) > 1 and any(rows % 2 for rows, _ in shapes), shapes


def test_more_devices_than_there_are_fails_before_any_work(tmp_path):
    from attnlab.train.loop import train_and_evaluate
    from attnlab.typed_config import ConfigError

    with pytest.raises(ConfigError, match=r"trainer.mesh.data=2 asks for more devices than there are: "
                                          r"1 cpu device\(s\) visible"):
        train_and_evaluate(compose(tmp_path / "x", "trainer.mesh.data=2"))
    with pytest.raises(ConfigError, match=r"trainer.mesh.item=2 must divide the devices \(1 cpu device\(s\)"):
        train_and_evaluate(compose(tmp_path / "y", "trainer.mesh.item=2"))
    assert not (tmp_path / "cache").exists()


def test_mesh_and_distributed_keys_are_typed_and_left_out_of_the_hash():
    from attnlab import results as res
    from attnlab.train.optim import TrainerConfig
    from attnlab.typed_config import ConfigError

    with pytest.raises(ConfigError, match=r"trainer.mesh.data=0 is out of range"):
        TrainerConfig.from_dict({"mesh": {"data": 0}})
    with pytest.raises(ConfigError, match=r"needs all three of coordinator_address"):
        TrainerConfig.from_dict({"distributed": {"num_processes": 2}})
    with pytest.raises(ConfigError, match=r"trainer.distributed.coordinator_address='nohost' is out of range"):
        TrainerConfig.from_dict({"distributed": {"coordinator_address": "nohost", "num_processes": 2,
                                                 "process_id": 0}})
    a = {"seed": 0, "trainer": {"lr": 1e-3, "mesh": {"data": -1}, "distributed": {"process_id": 0}}}
    b = {"seed": 0, "trainer": {"lr": 1e-3, "mesh": {"data": 4}, "distributed": {"process_id": 1}}}
    assert res.config_hash(a) == res.config_hash(b) \
        == res.config_hash({"seed": 0, "trainer": {"lr": 1e-3}})


# -- two processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one_job(tmp_path):
    """Two processes on 127.0.0.1, 2 CPU devices each (gloo collectives): one mesh of 4
    devices, each process feeding its half of every batch; both end with the same
    parameters (those of one device, to fp32 tolerance), one results JSON, one index
    entry, and only process 0 starts the W&B run (asked of the tracker factory; no W&B
    run is started here: tests/train/test_wandb_logging.py covers what a run logs)."""
    port = free_port()
    out = tmp_path / "job"
    build_data(tmp_path)
    over = [*SHORT, "logger=wandb", "experiment_name=two_procs"]
    procs = []
    for pid in (0, 1):
        dist = {"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": pid, "timeout_s": 120}
        procs.append(run_worker(tmp_path, {"distributed": dist, "runs": [["job", str(out), over]]}, devices=2,
                                name=f"p{pid}"))
    one = train(tmp_path / "one", *SHORT)
    reports = [finish(p, tmp_path, name=f"p{i}")["runs"]["job"] for i, p in enumerate(procs)]
    for r in reports:
        assert r["layout"] == {"mesh": {"data": 4}, "devices": 4, "processes": 2, "platform": "cpu"}
        assert r["param_devices"] == 4 and r["replicated"]
        np.testing.assert_allclose(r["steps"], one["steps"], rtol=LOSS_RTOL)
    assert reports[0]["steps"] == reports[1]["steps"]  # one computation, seen by both
    p0, p1 = params(out, 0), params(out, 1)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)  # identical copies
    same_params(p0, params(tmp_path / "one"), PARAM_ATOL)
    assert reports[0]["path"] == str(out / "run" / "result.json") and reports[1]["path"] is None
    assert sorted(p.name for p in (out / "run").glob("*.json")) == ["result.json"]
    assert len(list((out / "results" / "two_procs").glob("*.json"))) == 1
    assert [r["trackers"] for r in reports] == [["wandb"], [None]]  # one W&B run: process 0's


def test_unreachable_coordinator_fails_clearly_within_the_timeout(tmp_path):
    """JAX itself aborts the process (a C++ fatal error) when the coordinator is not there;
    initialize() probes first and raises an error naming the address and the keys."""
    script = ("import sys\nfrom attnlab.train.distributed import initialize\n"
              "initialize(dict(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]), "
              "timeout_s=2))\n")
    port = free_port()
    t0 = time.perf_counter()
    late = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{port}", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert late.returncode != 0 and time.perf_counter() - t0 < 30
    assert (f"cannot reach the coordinator trainer.distributed.coordinator_address=127.0.0.1:{port} within "
            "trainer.distributed.timeout_s=2 s") in late.stderr, late.stderr[-2000:]
    elsewhere = subprocess.run([sys.executable, "-c", script, "192.0.2.1:1234", "0"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode != 0
    assert ("trainer.distributed.coordinator_address=192.0.2.1:1234: process 0 runs the coordinator, but "
            "192.0.2.1 is not an address of this machine") in elsewhere.stderr, elsewhere.stderr[-2000:]


def test_joining_after_jax_started_is_refused_and_one_process_is_a_no_op(monkeypatch):
    import jax

    from attnlab.train import distributed

    jax.devices()  # this test process has started JAX
    assert distributed.initialize({}) is False and distributed.is_main()
    with pytest.raises(distributed.DistributedError, match="must come first"):
        distributed.initialize({"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 1})
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[001-002]", "SLURM_NTASKS": "16",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    cfg = distributed.DistributedConfig()
    assert distributed.wanted(cfg)  # a 16-task SLURM step joins by itself
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not distributed.wanted(cfg)  # a one-task job (the existing slurm launcher) does not


# -- the SLURM launcher --------------------------------------------------------------------


def test_slurm_multinode_launcher_composes():
    """Composed only (no cluster here): one task per GPU on every node, the same config."""
    from hydra import compose as hydra_compose, initialize_config_dir

    def launcher(*over):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = hydra_compose(config_name="config", return_hydra_config=True,
                                overrides=["experiment=cj_next_item", "hydra/launcher=slurm_multinode", *over])
        return cfg.hydra.launcher, cfg

    la, cfg = launcher()
    assert la._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (la.nodes, la.gpus_per_node, la.tasks_per_node) == (2, 8, 8)
    assert la.gpus_per_task is None  # every task sees the node's GPUs; JAX takes the one of its SLURM_LOCALID
    assert la.timeout_min > 0 and "export WANDB_MODE=offline" in la.setup
    assert cfg.trainer.mesh.data == -1 and cfg.trainer.distributed.coordinator_address is None
    la, _ = launcher("hydra.launcher.nodes=4", "hydra.launcher.gpus_per_node=4")
    assert (la.nodes, la.gpus_per_node, la.tasks_per_node) == (4, 4, 4)


if __name__ == "__main__":  # a worker: python tests/train/test_mesh.py <spec.json>
    sys.path.insert(0, str(ROOT))
    spec_path = Path(sys.argv[1])
    report = worker(json.loads(spec_path.read_text()))
    spec_path.with_name(spec_path.stem + ".report.json").write_text(json.dumps(report))
