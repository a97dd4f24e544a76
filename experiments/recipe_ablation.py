"""Training-recipe ablation: the recipe, each piece switched back to v0.1's, and v0.1 itself.

Every row is one full run (``train_and_evaluate``) of the same model on the same split
and seed; only the listed overrides differ. Choices are read off the VALIDATION column
(the test column is reported once per run, never used to choose). Writes a Markdown
table with the command that made it::

    python experiments/recipe_ablation.py --write docs/recipe_ablation.md
    python experiments/recipe_ablation.py --base experiment=cj_next_item model.max_len=50 \\
        trainer.max_steps=600 --only recipe v0.1      # a subset

Runs are filed in the results index under ``experiment_name=recipe_ablation``, so a
relaunch skips finished rows (same config hash) and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

BASE = ["experiment=cj_next_item", "model=vanilla", "model.max_len=50", "model.history_memory=0",
        "trainer.max_steps=600",
        "task.baselines=[most_popular,personal_repeat]", "logger=none", "progress=false"]

#: v0.1's value of every recipe piece (docs/models.md, "Training recipe").
V01 = {
    "window_ends": ["task.window_ends=latest", "task.windows_per_customer=1"],
    "positions": ["task.loss_positions=8"],
    "full_softmax": ["task.sampled_softmax.negatives=0"],
    "encoder": ["model.encoder=cutoff_relative"],
    "schedule": ["trainer.schedule=constant"],
    "decay_all": ["trainer.decay=all"],
    "bias_zeros": ["trainer.init_bias=zeros"],
    "continuous": ["model.continuous_std=null"],
}

VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "window_ends=latest (1 per customer)": V01["window_ends"],
    "loss_positions=8": V01["positions"],
    "full softmax, loss_positions=8": V01["positions"] + V01["full_softmax"],
    "encoder=cutoff_relative": V01["encoder"],
    "schedule=constant": V01["schedule"],
    "decay=all": V01["decay_all"],
    "init_bias=zeros": V01["bias_zeros"],
    "continuous_std=null": V01["continuous"],
    "dropout=0.0": ["model.dropout=0.0"],
    "dropout=0.1": ["model.dropout=0.1"],
    "item_head=softmax (SASRec)": ["model.item_head=softmax", "model.history_memory=0"],
    "history_memory=64": ["model.history_memory=64"],
    "history_memory=64, max_len 200": ["model.history_memory=64", "model.max_len=200"],
    "v0.1 recipe (all of the above)": [o for v in V01.values() for o in v],
    # whole-basket targets (next_basket's default): each basket's last slot trained on every item of the next
    "targets=basket": ["task.targets=basket"],
    "targets=basket, item_head=softmax (SASRec)": ["task.targets=basket", "model.item_head=softmax",
                                                   "model.history_memory=0"],
    # width, for the recipe's head and for the plain softmax head (SASRec as published)
    "width: d_model=32": ["model.d_model=32"],
    "width: d_model=128": ["model.d_model=128"],
    "width: item_head=softmax, d_model=128": ["model.item_head=softmax", "model.d_model=128"],
    "width: item_head=softmax, d_model=256": ["model.item_head=softmax", "model.d_model=256"],
    "width: item_head=softmax, d_model=256, 4,096 negatives": [
        "model.item_head=softmax", "model.d_model=256", "task.sampled_softmax.negatives=4096"],
}


def run(name: str, overrides: list[str], base: list[str], root: str):
    from attnlab.train.loop import train_and_evaluate

    slug = "".join(ch if ch.isalnum() else "_" for ch in name)[:40]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *base, *overrides, "experiment_name=recipe_ablation", "trainer.skip_completed=true",
            f"paths.root={root}", f"paths.output_dir={root}/runs/recipe_ablation/{slug}"])
    t0 = time.perf_counter()
    res = train_and_evaluate(cfg)
    return res, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", nargs="*", default=BASE, help="overrides shared by every row")
    ap.add_argument("--only", nargs="*", default=None, help="row names (prefix match)")
    ap.add_argument("--root", default=os.environ.get("ATTNLAB_OUTPUTS", "outputs"))
    ap.add_argument("--write", default=None, help="Markdown file to write the table to")
    args = ap.parse_args(argv)
    rows = [(n, o) for n, o in VARIANTS.items()
            if args.only is None or any(n.startswith(p) for p in args.only)]
    monitor = None
    lines = []
    for name, ov in rows:
        res, wall = run(name, ov, args.base, args.root)
        monitor = res.provenance["monitor"]
        m, v = res.metrics["model"], res.valid
        base_name = next((b for b in ("personal_repeat", "most_popular") if b in res.metrics), None)
        lines.append((name, ov, v.get(monitor, float("nan")), m.get(monitor, float("nan")),
                      res.metrics.get(base_name, {}).get(monitor, float("nan")),
                      res.provenance.get("steps_trained"), res.provenance.get("best_epoch"),
                      m.get("train_s", float("nan")), wall))
        print(f"{name:42s} valid {lines[-1][2]:.4f} test {lines[-1][3]:.4f} ({wall:.0f} s)", flush=True)
    cmd = "python experiments/recipe_ablation.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = ["# Training-recipe ablation\n",
           f"Regenerate: `{cmd.strip()}`\n",
           f"Shared overrides: `{' '.join(args.base)}`; one seed (0). Choose on the valid column; "
           f"test is read once per run.\n",
           f"| variant | overrides | valid {monitor} | test {monitor} | test {monitor} of the baseline | steps | best pass | train s | wall s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ov, va, te, bl, steps, best, tr, wall in lines:
        out.append(f"| {name} | `{' '.join(ov) or '—'}` | {va:.4f} | {te:.4f} | {bl:.4f} | {steps} | {best} | {tr:.0f} | {wall:.0f} |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.write:
        from attnlab.atomic import atomic_write_text

        atomic_write_text(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
