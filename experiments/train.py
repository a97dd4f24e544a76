"""Train and evaluate one model (Hydra entry point).

    python experiments/train.py                       # default: vanilla on The Complete Journey, next_item
    python experiments/train.py model=vanilla task=next_item data=synthetic logger=none
    python experiments/train.py -m experiment=cj_churn    # a published table's sweep (models x seeds)
    python experiments/train.py -m seed=0,1,2         # multirun over seeds

Under ``-m`` (multirun) finished runs are skipped on relaunch (``trainer.skip_completed``,
keyed by config hash + seed), and W&B runs are grouped by experiment (one sweep each) with job_type ``sweep``.

A single run writes to its own folder (``hydra.run.dir``: time + config-hash prefix + pid +
launch microseconds); a run refuses a folder that another live run holds (lock file
``.attnlab.lock``, see :mod:`attnlab.train.run_dir`). Config mistakes (an unknown
``+model.*`` / ``+task.*`` key, an out-of-range value) fail before any data is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from attnlab.train.run_dir import register_resolvers

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
register_resolvers()  # ${attnlab_run_id:} in hydra.run.dir (configs/config.yaml): one folder per launch


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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from attnlab.report.console import metrics_table, summary_line
    from attnlab.train.loop import train_and_evaluate

    apply_sweep_defaults(cfg)
    result = train_and_evaluate(cfg)
    print(metrics_table(result))
    print(summary_line(result))
    logging.getLogger(__name__).info("result: %s", result.path)
    # the value an optimising sweeper (configs/hparams_search) maximises
    return float(result.valid.get(result.provenance.get("monitor", "ndcg@10"), float("nan")))


if __name__ == "__main__":
    main()
