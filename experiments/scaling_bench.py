"""Data-parallel scaling: training events/s of one run on 1, 2, 4 ... devices.

    python experiments/scaling_bench.py                          # CPU: 1, 2, 4 forced host devices
    python experiments/scaling_bench.py --size small --devices 1 2 4 8
    python experiments/scaling_bench.py --gpus --devices 1 2 4 8 --size small --per-device-batch 64
                                                                 # a GPU node: the first n GPUs

Each device count runs in its own process (JAX fixes its device count when it starts):
``train_and_evaluate`` on synthetic data with ``trainer.mesh.data=n``, the batch split
over the n devices. The throughput is the median of the training passes after the first
(the first compiles), events (non-padding positions of the training windows) per second
of the training loop; validation is not counted. The best pass is also shown: other jobs
on a shared machine only ever slow a pass down.

On CPU the devices are ``--xla_force_host_platform_device_count=n`` slices of the same
cores: the work per step is the same on 1 or n devices, so the ideal is a flat line and
the ratio shows what the mesh costs (splitting and placing the batch, the gradient
all-reduce, n smaller programs instead of one). On GPUs ``--per-device-batch`` keeps each
device's share fixed (weak scaling: the ideal ratio is n). The table is in
docs/scaling.md ("Many devices and hosts").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # debug=tiny's model and batch (16 windows of 16 events, d_model 16, one layer) on 600
    # customers instead of 120, so a timed pass is ~90 steps rather than 17
    "tiny": ["debug=tiny", "data.options.max_customers=600"],
    # a bit larger: 4x the batch, 4x the window, d_model 64, two layers, 600 customers
    "small": ["debug=tiny", "trainer.batch_size=64", "model.max_len=64", "model.d_model=64", "model.n_layers=2",
              "data.options.max_customers=600"],
}


def worker(devices: int, size: str, passes: int, out: Path, batch: int | None, extra: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from attnlab import compile_cache
    from attnlab.train.loop import train_and_evaluate

    compile_cache.enable()
    overrides = [*SIZES[size], f"trainer.mesh.data={devices}", f"trainer.max_epochs={passes}",
                 "trainer.max_steps=100000", f"trainer.patience={passes}", f"paths.output_dir={out / 'run'}",
                 f"paths.root={out}", "logger=none", "progress=false", *extra]
    if batch:
        overrides.append(f"trainer.batch_size={batch}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    result = train_and_evaluate(cfg)
    steady = result.history[1:] or result.history
    return {"devices": devices, "batch": int(cfg.trainer.batch_size), "layout": result.provenance["layout"],
            "steps_per_pass": result.history[0]["step"],
            "events_per_s": statistics.median(h["events_per_s"] for h in steady),
            "best_events_per_s": max(h["events_per_s"] for h in steady),
            "passes": [h["events_per_s"] for h in result.history]}


def run_one(devices: int, args, cache_dir: str) -> dict:
    env = dict(os.environ)
    if not args.gpus:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    batch = args.per_device_batch * devices if args.per_device_batch else None
    with tempfile.TemporaryDirectory(prefix="scaling-bench-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, __file__, "--worker", str(devices), "--size", args.size, "--passes", str(args.passes),
               "--out", tmp, "--report", str(report), *(["--batch", str(batch)] if batch else []),
               *[f"--override={o}" for o in [f"paths.cache_dir={cache_dir}", *args.override]]]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{devices} device(s) failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return json.loads(report.read_text())


def table(rows: list[dict], *, size: str, platform: str) -> str:
    base = rows[0]["events_per_s"]
    best = rows[0]["best_events_per_s"]
    lines = [f"| devices ({platform}) | global batch | steps/pass | train events/s (median) | vs 1 device "
             "| best pass | vs 1 device |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['batch']} | {r['steps_per_pass']} | {r['events_per_s']:,.0f} | "
                     f"{r['events_per_s'] / base:.2f} | {r['best_events_per_s']:,.0f} | "
                     f"{r['best_events_per_s'] / best:.2f} |")
    return f"size `{size}`: {' '.join(SIZES[size])}\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--passes", type=int, default=4, help="training passes per run (the first is not timed)")
    ap.add_argument("--gpus", action="store_true", help="use the machine's GPUs instead of forced host devices")
    ap.add_argument("--per-device-batch", type=int, default=None,
                    help="global batch = this x devices (weak scaling); default: the size's fixed global batch")
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        rep = worker(args.worker, args.size, args.passes, Path(args.out), args.batch, args.override)
        Path(args.report).write_text(json.dumps(rep))
        return
    with tempfile.TemporaryDirectory(prefix="scaling-bench-data-") as cache:
        rows = []
        for n in args.devices:
            rows.append(run_one(n, args, cache))
            print(f"{n} device(s): {rows[-1]['events_per_s']:,.0f} events/s "
                  f"(passes: {', '.join(f'{v:,.0f}' for v in rows[-1]['passes'])})", flush=True)
    print()
    print(table(rows, size=args.size, platform=rows[0]["layout"]["platform"]))


if __name__ == "__main__":
    main()
