"""Fit baselines on one experiment's data and split; report validation and test metrics.

One command per published number in ``docs/baselines.md``::

    python experiments/baseline_measure.py cj_next_basket personal_repeat p_topfreq up_cf tifu_knn
    python experiments/baseline_measure.py cj_next_basket tifu_knn --tune   # + choice on valid
    python experiments/baseline_measure.py cj_churn bgnbd hgb

The experiment config (``configs/experiment/<name>.yaml``) is composed with Hydra
exactly as ``experiments/train.py`` would, so data options, the task config and
the split are the published ones. Baselines are fitted through the registry
(training prefix / ``split.train`` only; ``hgb`` also reads ``split.valid``), and each
is evaluated on ``split.valid`` and ``split.test`` with the task's evaluator. With
``--tune`` the ranking baselines that have a tuner (``tifu_knn``, ``up_cf``) are also
re-fitted with hyperparameters chosen on ``split.valid``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COLUMNS = {"next_basket": ("recall@10", "ndcg@10"), "next_item": ("hr@10", "ndcg@10"),
           "churn": ("auc",)}


def experiment_config(experiment: str, *overrides: str) -> dict[str, Any]:
    """The composed Hydra config of ``experiment`` as a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}", *overrides])
    return OmegaConf.to_container(cfg.task, resolve=True) | {
        "_data": OmegaConf.to_container(cfg.data, resolve=True),
        "_cache_dir": str(cfg.paths.cache_dir),  # resolves ATTNLAB_CACHE, default .cache/attnlab
    }


def measure(experiment: str, names: list[str], *, seed: int = 0, tune: bool = False,
            cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{"baseline", "fit_s", "valid/<metric>", "test/<metric>"}``."""
    from attnlab.data.pipeline import load_sequences
    from attnlab.train.tasks import make_task

    cfg = experiment_config(experiment)
    data, default_cache = cfg.pop("_data"), cfg.pop("_cache_dir")
    store = load_sequences(data["name"], dict(data.get("options") or {}),
                           cache_dir=cache_dir or default_cache, progress=False)
    split = make_task(cfg).split(store, seed=seed)
    task = make_task({**cfg, "baselines": list(names)})
    rows = [_row(task, name, fitted.predict, store, split, fitted.fit_s)  # each fit timed on its own
            for name, fitted in task.baselines(store, split).items()]
    if tune and task.name != "churn":
        from attnlab.baselines.nbr import TIFUKNN, UPCF
        from attnlab.baselines.tuning import tune_tifu_knn, tune_upcf

        for name, tuner, cls in (("tifu_knn", tune_tifu_knn, TIFUKNN), ("up_cf", tune_upcf, UPCF)):
            if name not in names:
                continue
            t0 = time.perf_counter()
            res = tuner(store, split)
            model = cls(**res.params).fit(store, split.train_end)
            row = _row(task, f"{name} (tuned)", model.score, store, split, time.perf_counter() - t0)
            row["params"] = res.params
            row["n_trials"] = len(res.trials)
            rows.append(row)
    return rows


def _row(task, name, fn, store, split, seconds) -> dict[str, Any]:
    row: dict[str, Any] = {"baseline": name, "fit_s": seconds}
    from attnlab.baselines.registry import SELECT_ON_VALID

    if name in SELECT_ON_VALID:  # hgb: report its pick among the grid points
        row["params"] = fn.__self__.params_
    for part in ("valid", "test"):
        t0 = time.perf_counter()
        metrics = task.evaluate(fn, store, getattr(split, part), progress=False).metrics
        row[f"{part}_eval_s"] = time.perf_counter() - t0
        for col in COLUMNS[task.name]:
            row[f"{part}/{col}"] = metrics[col]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="configs/experiment/<name>.yaml, e.g. cj_next_basket")
    parser.add_argument("baselines", nargs="+", help="registry names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="also tune tifu_knn / up_cf on split.valid")
    args = parser.parse_args(argv)
    rows = measure(args.experiment, args.baselines, seed=args.seed, tune=args.tune)
    cols = [k for k in rows[0] if "/" in k]
    print("| baseline | " + " | ".join(cols) + " | fit s | valid eval s | test eval s |")
    print("|---|" + "---:|" * (len(cols) + 3))
    for r in rows:
        vals = " | ".join(f"{r[c]:.4f}" for c in cols)
        times = f"{r['fit_s']:.2f} | {r['valid_eval_s']:.1f} | {r['test_eval_s']:.1f}"
        print(f"| {r['baseline']} | {vals} | {times} |")
    for r in rows:
        if "params" in r:
            trials = f" ({r['n_trials']} validation trials)" if "n_trials" in r else ""
            print(f"{r['baseline']}: chosen on split.valid: {r['params']}{trials}")


if __name__ == "__main__":
    main()
