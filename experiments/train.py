"""Train and evaluate one model (Hydra entry point).

    python experiments/train.py                       # default: vanilla on The Complete Journey, next_item
    python experiments/train.py model=vanilla task=next_item data=synthetic logger=none
    python experiments/train.py -m experiment=cj_churn    # a published table's sweep (models x seeds)
    python experiments/train.py -m seed=0,1,2         # multirun over seeds

Under ``-m`` (multirun) finished runs are skipped on relaunch (``trainer.skip_completed``,
keyed by config hash + seed), and W&B runs are grouped by experiment (one sweep each) with job_type ``sweep``.

A single run writes to its own folder (``hydra.run.dir``: time + config-hash prefix + pid +
launch microseconds); a run refuses a folder that another live run holds (lock file
``.attnlab.lock``, see :mod:`attnlab.train.run_dir`). Relaunching the same single-run command
continues its newest unfinished folder (same config hash; ``trainer.resume=false`` starts
afresh); ``ckpt_path=<run folder or its checkpoints/>`` continues that run in its folder.
Many devices and hosts (docs/scaling.md): one process trains on every device it sees
(``trainer.mesh.data``); a SLURM step's tasks, or ``trainer.distributed.*`` set by hand,
join as one multi-process job before JAX starts its devices. Compiled programs are cached
across launches (``paths.compile_cache`` / ``ATTNLAB_COMPILE_CACHE``, default
``~/.cache/attnlab/jax``, ``off`` disables; see :mod:`attnlab.compile_cache`). Config mistakes
(an unknown ``+model.*`` / ``+task.*`` key, an out-of-range value) fail before any data is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from attnlab import compile_cache
from attnlab.train import distributed, run_dir
from attnlab.train.run_dir import register_resolvers

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
register_resolvers()  # ${attnlab_run_id:}, ${attnlab_run_dir:...}, ${attnlab_sweep_subdir:...} (configs/config.yaml)


def apply_sweep_defaults(cfg: DictConfig) -> None:
    """Multirun-only defaults: skip finished runs, group W&B runs by sweep."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    with open_dict(cfg):
        if cfg.trainer.get("skip_completed") is None:
            cfg.trainer.skip_completed = True
        if cfg.get("logger") and cfg.logger.get("name") == "wandb":
            cfg.logger.job_type = "sweep"   # runs are already grouped by experiment (= sweep)


def prepare_run(cfg: DictConfig) -> None:
    """Before any work: turn on JAX's compilation cache (``paths.compile_cache``, else
    ``$ATTNLAB_COMPILE_CACHE``, else ``~/.cache/attnlab/jax``; ``off`` disables), take
    ``ckpt_path`` out of the config (where to resume is not part of the run's config hash),
    record the run's config hash in its folder and say whether this launch resumes one."""
    log = logging.getLogger(__name__)
    compile_cache.enable((cfg.get("paths") or {}).get("compile_cache"))
    ckpt_path = cfg.get("ckpt_path")
    hc = HydraConfig.get()
    if ckpt_path and hc.mode == RunMode.MULTIRUN:
        raise ValueError("ckpt_path resumes one run; a sweep resumes its interrupted jobs when relaunched "
                         "with the same command (drop ckpt_path).")
    if ckpt_path and not cfg.trainer.get("resume", True):
        raise ValueError(f"ckpt_path={ckpt_path} asks to resume, trainer.resume=false to start afresh; pick one.")
    with open_dict(cfg):
        cfg.pop("ckpt_path", None)
    out_dir = Path(cfg.paths.output_dir)
    run_dir.write_run_file(out_dir, run_dir.full_config_hash(cfg))
    decision = run_dir.resume_decision() if hc.mode == RunMode.RUN else None
    if decision and decision[0] == "ckpt_path":
        log.info("resuming the run in %s (ckpt_path=%s)", out_dir, ckpt_path)
    elif decision and decision[0] == "unfinished":
        log.info("resuming the unfinished run %s: same command (config hash %s), no result yet; "
                 "trainer.resume=false starts afresh", out_dir, run_dir.full_config_hash(cfg))


VERBOSE_FLAGS = ("-v", "--verbose")
CKPT_PATH_ARG = "ckpt_path="  # given as +ckpt_path: not a default key (configs/config.yaml), never hashed
_verbose = False  # set by -v / --verbose on the command line (taken out before Hydra parses it)


@contextlib.contextmanager
def shown_as_one_message():
    """A data or config error (``DataError``, ``ValueError``, ``KeyError``: what the data
    loader and the config checks raise) of a single run is printed as one ``error: ...``
    message on stderr, exit status 2. The traceback (Hydra's display) with ``-v`` /
    ``--verbose``, ``hydra.verbose=true`` or ``HYDRA_FULL_ERROR=1``. Under ``-m`` any error
    is logged at once as one line naming the job's overrides, then left to the sweeper
    (Hydra's basic sweeper raises it after the last job; Optuna records a failed trial and
    goes on)."""
    try:
        yield
    except Exception as e:
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            # Hydra's launcher keeps a failed job's exception and starts the next job; it raises
            # only once the whole sweep is over. Say it now, with the job's overrides.
            first = (str(e).strip().splitlines() or [""])[0][:500].rstrip(".")
            logging.getLogger(__name__).error(
                "sweep job #%s (%s) failed: %s: %s. The sweep goes on with its next job; Hydra raises "
                "this error when the sweep ends.", hc.job.num, hc.job.override_dirname, type(e).__name__, first)
            raise
        if not isinstance(e, (ValueError, KeyError)) or (
                _verbose or hc.verbose or os.environ.get("HYDRA_FULL_ERROR") == "1"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}\n(for the traceback, rerun with -v or HYDRA_FULL_ERROR=1)", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from attnlab.report.console import metrics_table, summary_line
    from attnlab.train.loop import BASELINE_MEMO, train_and_evaluate

    BASELINE_MEMO.enable()   # a sweep's jobs run in this process: equal baselines are fitted once
    apply_sweep_defaults(cfg)
    table = (cfg.get("logger") or {}).get("table", "core")
    with shown_as_one_message():
        if table not in ("core", "all"):
            raise ValueError(f"logger.table={table!r}: use core (metrics and costs) or all (adds the "
                             "diagnostic columns as a second table).")
        # a multi-process job's processes meet before anything asks JAX for its devices (no-op for one)
        distributed.initialize(OmegaConf.to_container(cfg.trainer.get("distributed") or {}, resolve=True))
        prepare_run(cfg)
        result = train_and_evaluate(cfg)
    print(metrics_table(result, columns=table))
    print(summary_line(result))
    logging.getLogger(__name__).info("result: %s", result.path)
    # the value an optimising sweeper (configs/hparams_search) maximises
    return float(result.valid.get(result.provenance.get("monitor", "ndcg@10"), float("nan")))


if __name__ == "__main__":
    _verbose = any(a in VERBOSE_FLAGS for a in sys.argv[1:])
    sys.argv[1:] = [a for a in sys.argv[1:] if a not in VERBOSE_FLAGS]
    sys.argv[1:] = [f"+{a}" if a.startswith(CKPT_PATH_ARG) else a for a in sys.argv[1:]]
    main()
