"""Export the split attnlab evaluates to Parquet and RecBole atomic files (docs/export.md).

    python experiments/export_split.py task=next_item data=synthetic export.out_dir=exports/syn-next_item
    python experiments/export_split.py debug=tiny task=next_basket export.formats=[parquet]
    python experiments/export_split.py data=complete_journey task=churn export.formats=[parquet]

Same config tree as ``experiments/train.py``, and the same calls build the data and the
split (``store_from_config``, ``make_task(cfg.task).split(store, seed=cfg.seed)``,
``check_split``), so ``train.py`` with the same data, task and seed evaluates exactly the
exported queries. Export options: ``configs/export/default.yaml`` (added here as
``+export=default``; override ``export.<key>``). Errors print as one ``error:`` line, exit
status 2 (``-v`` or ``HYDRA_FULL_ERROR=1`` for the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
_verbose = False  # -v / --verbose (taken out of the command line before Hydra parses it)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from attnlab.data.export import check_formats, describe, export_split
    from attnlab.data.pipeline import store_from_config
    from attnlab.results import git_sha
    from attnlab.train.tasks import check_split, make_task

    c = OmegaConf.to_container(cfg, resolve=True)
    opts = c["export"]
    try:
        task = make_task(c["task"])   # option mistakes fail before any data is read
        check_formats(opts["formats"], task.name)
        store = store_from_config(c["data"], cache_dir=c["paths"]["cache_dir"], progress=bool(c["progress"]))
        split = task.split(store, seed=int(c["seed"]))
        check_split(task, store, split)
        provenance = {"command": " ".join(["python experiments/export_split.py",
                                           *HydraConfig.get().overrides.task]),
                      "seed": int(c["seed"]), "data": c["data"], "task": c["task"], "git_sha": git_sha()}
        manifest = export_split(store, split, opts["out_dir"], formats=opts["formats"],
                                dataset_name=opts["dataset_name"], max_history=opts["max_history"],
                                ks=opts["ks"], provenance=provenance)
    except (ValueError, KeyError) as e:
        if _verbose or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        sys.exit(2)
    print(describe(manifest, opts["out_dir"]))


if __name__ == "__main__":
    _verbose = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    sys.argv[1:] = [a for a in sys.argv[1:] if a not in ("-v", "--verbose")]
    if not any(a.lstrip("+~").split("=")[0] == "export" for a in sys.argv[1:]):
        sys.argv.insert(1, "+export=default")
    main()
