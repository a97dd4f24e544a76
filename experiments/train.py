"""Train and evaluate one model (Hydra entry point).

    python experiments/train.py                       # default: vanilla on The Complete Journey, next_item
    python experiments/train.py model=vanilla task=next_item data=synthetic logger=none
    python experiments/train.py -m seed=0,1,2         # multirun over seeds
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from attnlab.report.console import metrics_table, summary_line
    from attnlab.train.loop import train_and_evaluate

    result = train_and_evaluate(cfg)
    print(metrics_table(result))
    print(summary_line(result))
    logging.getLogger(__name__).info("result: %s", result.path)
    return float(result.valid.get("ndcg@10", 0.0))


if __name__ == "__main__":
    main()
