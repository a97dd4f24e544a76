"""What a person reads in the terminal (issue 13): the end-of-run metrics table, each data
line once, no JAX TPU probe line, the attention dispatcher's choice once per call
signature, Optuna's plumbing quiet, and a data or config error as one message."""

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp

from attnlab.report.console import metrics_table
from attnlab.results import RunResult

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "experiments" / "train.py"


def _result() -> RunResult:
    ranking = {"hr@10": 0.16134, "ndcg@10": 0.10403, "mrr@10": 0.08641, "hr@20": 0.20407,
               "ndcg@20": 0.11482, "mrr@20": 0.08934, "mrr": 0.09301, "n": 2406.0,
               "planted/n": 0.0, "planted/hr@1": float("nan"),
               "planted/visible": float("nan"), "planted/visible_hr@10": float("nan")}
    return RunResult(
        metrics={"model": {**ranking, "wall_s": 14.8049, "train_s": 540.58454, "peak_rss_mb": 2456.1641},
                 "personal_repeat": {**ranking, "fit_s": 0.00412, "wall_s": 3.19172, "peak_rss_mb": 1021.4023},
                 "rfm_segment_popularity": {**ranking, "fit_s": 0.61, "wall_s": 2.7194, "peak_rss_mb": 996.7031}},
        valid={}, history=[], provenance={"model": "vanilla", "monitor": "ndcg@10"})


def test_metrics_table_counts_as_integers_sensible_precision_and_at_most_120_wide():
    text = metrics_table(_result())
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, text
    head = lines[0].split()
    assert head[:8] == ["contender", "hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20", "mrr"]
    assert head[8:] == ["n", "fit_s", "eval_s", "peak_mb"]
    model = lines[2].split()
    assert model[:3] == ["vanilla", "(model)", "0.1613"]
    assert model[-4:] == ["2406", "540.6", "14.8", "2456"]   # count, s, s, MB
    assert lines[3].split()[-4:] == ["2406", "0.00", "3.19", "1021"]
    assert "2406.0000" not in text and "planted/hr@1" not in text
    # diagnostic columns: named in one line by default, a second table on request
    assert lines[-1].startswith("(4 diagnostic columns not shown: planted/*; logger.table=all")
    full = metrics_table(_result(), columns="all")
    assert full.startswith(text.rsplit("\n", 1)[0])
    second = full.split("\n\n")[1].splitlines()
    assert second[0].split() == ["contender", "planted/hr@1", "planted/visible", "planted/visible_hr@10", "planted/n"]
    assert second[2].split()[2:] == ["-", "-", "-", "0"]
    assert max(len(line) for line in full.splitlines()) <= 120


def test_metrics_table_wraps_columns_it_cannot_fit():
    r = _result()
    for m in r.metrics.values():
        m.update({f"recall@{k}_explore": 0.5 for k in (1, 5, 10, 20, 50)})
    blocks = metrics_table(r).split("\n\n")
    assert len(blocks) >= 2 and all(len(line) <= 120 for b in blocks for line in b.splitlines())
    assert all(b.splitlines()[2].startswith("vanilla (model)") for b in blocks)


def test_a_data_line_is_printed_once_when_logging_shows_it(tmp_path, capsys):
    """``_say`` logged each line and wrote it with ``tqdm.write``: with Hydra's console
    handler (progress=true) every data and repair line appeared twice."""
    from attnlab.data.pipeline import load_sequences

    handler = logging.StreamHandler(sys.stderr)  # what Hydra's console handler is
    data_log = logging.getLogger("attnlab.data")
    old_level = data_log.level
    data_log.addHandler(handler)
    data_log.setLevel(logging.INFO)
    try:
        load_sequences("synthetic", {"n_customers": 20, "n_items": 60}, cache_dir=tmp_path, progress=True)
    finally:
        data_log.removeHandler(handler)
        data_log.setLevel(old_level)
    err = capsys.readouterr().err
    assert err.count("(cache miss)") == 1, err
    assert err.count("repairs:") == 1, err
    # without a console handler the lines are still printed (once), above any progress bar
    load_sequences("synthetic", {"n_customers": 20, "n_items": 60}, cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert err.count("cache hit") == 1, err


def test_no_tpu_probe_line_but_other_backend_failures_still_show(caplog):
    import attnlab.train.loop  # noqa: F401 - installs the filter

    bridge = logging.getLogger("jax._src.xla_bridge")
    with caplog.at_level(logging.INFO, logger="jax._src.xla_bridge"):
        bridge.info("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
        bridge.info("Unable to initialize backend 'cuda': no GPU")
    assert [r.getMessage() for r in caplog.records] == ["Unable to initialize backend 'cuda': no GPU"]


def test_attention_choice_logged_once_per_signature_at_debug(caplog):
    ops = importlib.import_module("attnlab.ops.attention")
    from attnlab.ops.attention import AttentionSpec

    q = jnp.ones((2, 8, 2, 4), jnp.float32)
    q2 = jnp.ones((2, 12, 2, 4), jnp.float32)
    spec = AttentionSpec(causal=True)
    with caplog.at_level(logging.DEBUG, logger="attnlab.ops.attention"):
        for x in (q, q, q2, q):
            ops.attention(x, x, x, spec=spec)
    mine = [r for r in caplog.records if "attention: using" in r.getMessage()
            and ("(2, 8, 2, 4)" in r.getMessage() or "(2, 12, 2, 4)" in r.getMessage())]
    assert len(mine) == 2, [r.getMessage() for r in caplog.records]   # one per distinct signature
    assert all(r.levelno == logging.DEBUG for r in mine)  # the platform's first choice: not news


def test_attention_choice_that_is_not_the_first_preference_is_info(caplog, monkeypatch):
    ops = importlib.import_module("attnlab.ops.attention")
    from attnlab.ops.attention import AttentionSpec

    monkeypatch.setattr(ops.IMPLEMENTATIONS[ops.Impl.REFERENCE], "why_unsupported", lambda *a, **kw: "pretend")
    q = jnp.ones((1, 4, 1, 8), jnp.float32)
    with caplog.at_level(logging.DEBUG, logger="attnlab.ops.attention"):
        ops.attention(q, q, q, spec=AttentionSpec(causal=True))
        ops.attention(q, q, q, spec=AttentionSpec(causal=True))
    (rec,) = [r for r in caplog.records if "attention: using" in r.getMessage()]
    assert rec.levelno == logging.INFO and "reference: pretend" in rec.getMessage()


def test_hparams_search_keeps_alembic_and_optuna_plumbing_quiet():
    """The search's Hydra logging config (applied before the Optuna sweeper imports
    Optuna) silences Alembic's "setup plugin" lines and Optuna's "A new study created"."""
    code = (
        "import logging.config\n"
        "from hydra import compose, initialize_config_dir\n"
        "from omegaconf import OmegaConf\n"
        f"with initialize_config_dir(config_dir={str(ROOT / 'configs')!r}, version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['hparams_search=vanilla'], return_hydra_config=True)\n"
        "logging.config.dictConfig(OmegaConf.to_container(cfg.hydra.hydra_logging, resolve=True))\n"
        "import optuna\n"
        "from optuna.storages import RDBStorage\n"
        "import alembic.autogenerate\n"
        "optuna.create_study(study_name='s', direction='maximize')\n"
        "logging.getLogger('hydra_plugins.hydra_optuna_sweeper._impl').info('Best value: 1')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "setup plugin" not in text and "A new study created" not in text, text
    assert "Best value: 1" in text  # the search's result still shows


def _train(tmp_path, *args, env=None):
    cmd = [sys.executable, str(TRAIN), "debug=tiny", f"paths.root={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}",
           *args]
    e = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**e, **(env or {})})


def test_a_config_error_is_one_message_and_the_traceback_on_request(tmp_path):
    out = _train(tmp_path, "+model.dropuot=0.1")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR=1 for a complete" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: unknown key(s) ['model.dropuot'] in config group model"), out.stderr
    assert "rerun with -v or HYDRA_FULL_ERROR=1" in out.stderr
    verbose = _train(tmp_path, "+model.dropuot=0.1", "-v")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr, verbose.stderr
    assert "ConfigError: unknown key(s) ['model.dropuot']" in verbose.stderr  # attnlab.typed_config.ConfigError(ValueError)


def test_a_data_error_is_one_message(tmp_path):
    out = _train(tmp_path, "+data.options.n_custmers=5")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: ") and "n_custmers" in out.stderr.splitlines()[0], out.stderr


def test_a_failed_sweep_job_is_said_at_once_not_only_after_the_last_job(tmp_path):
    """Hydra's launcher keeps a failed job's exception and starts the next job; the error is
    raised only when the whole sweep ends. Each failure is logged as it happens, naming the job."""
    cmd = [sys.executable, str(TRAIN), "-m", "debug=tiny", f"paths.root={tmp_path}", "trainer.lr=-1,-2"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 1, out.stderr
    text = out.stdout + out.stderr
    first = text.index("sweep job #0 (debug=tiny,trainer.lr=-1) failed: ConfigError: trainer.lr=-1 is out of range: must be > 0. The sweep")
    assert first < text.index("#1 : ") < text.index("sweep job #1 (debug=tiny,trainer.lr=-2) failed: ConfigError: "), text
    assert "The sweep goes on with its next job" in text
