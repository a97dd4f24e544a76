"""The best trial of an Optuna hyper-parameter search, as a saved config and a command.

    python experiments/best_trial.py outputs/multirun/hps-vanilla-next_item-complete_journey/<time>

Reads the sweep's ``optimization_results.yaml`` (best value and parameters, written by
the Optuna sweeper), finds the trial directory that produced them (its ``result.json``
validation value and its ``.hydra/overrides.yaml``), then writes into the sweep directory:

- ``best_overrides.txt``: the overrides that reproduce the best trial, one per line;
- ``best_config.yaml``: the full resolved config of that trial;

and prints the command that re-runs it, as experiment ``<study>-best`` (so it never
lands in a published table by accident).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def best_trial(sweep_dir: Path) -> tuple[Path, list[str], float, str]:
    """(trial dir, its overrides, best value, study name) of the search in ``sweep_dir``."""
    from omegaconf import OmegaConf

    results = sweep_dir / "optimization_results.yaml"
    if not results.exists():
        raise SystemExit(f"{results} not found: is {sweep_dir} an Optuna sweep that finished? "
                         "(searches write to outputs/multirun/hps-<family>-<task>-<data>/<time>)")
    opt = OmegaConf.load(results)
    best_value, best_params = float(opt.best_value), dict(opt.best_params)
    for trial in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        tdir = trial.parent.parent
        if not (tdir / "result.json").exists():
            continue
        overrides = [str(o) for o in OmegaConf.load(trial)]
        given = dict(o.split("=", 1) for o in overrides if "=" in o)
        data = json.loads((tdir / "result.json").read_text())
        value = data["valid"].get(data["provenance"].get("monitor", ""))
        if value is not None and _same(value, best_value) and all(
                k in given and _same(given[k], v) for k, v in best_params.items()):
            study = data["provenance"]["experiment"]
            return tdir, overrides, best_value, study
    raise SystemExit(f"no trial directory under {sweep_dir} matches the best trial in {results}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    args = ap.parse_args(argv)

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    tdir, trial_overrides, value, study = best_trial(args.sweep_dir)
    overrides = [o for o in trial_overrides if not o.startswith("hparams_search=")]
    overrides.append(f"experiment_name={study}-best")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)  # checks that the command composes
    from attnlab.atomic import atomic_write_text

    atomic_write_text(args.sweep_dir / "best_overrides.txt", "\n".join(overrides) + "\n")
    cfg = OmegaConf.load(tdir / ".hydra" / "config.yaml")  # what the trial actually ran
    cfg.experiment_name = f"{study}-best"
    cfg_text = OmegaConf.to_yaml(cfg)
    atomic_write_text(args.sweep_dir / "best_config.yaml", f"# best trial of {study}: validation {value:.6g}\n" + cfg_text)
    command = "python experiments/train.py " + " ".join(shlex.quote(o) for o in overrides)
    print(f"best validation value {value:.6g} ({study}, {tdir.name})")
    print(f"config: {args.sweep_dir / 'best_config.yaml'}")
    print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
