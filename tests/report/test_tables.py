"""Table aggregation over a hand-built results index: means, std, bold, baselines,
labels, significance wiring, and the three output formats."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnlab import results as res
from attnlab.atomic import atomic_write_npz
from attnlab.report import tables as T

ROOT = Path(__file__).resolve().parents[2]


def _cfg(model, seed, **extra):
    cfg = {"experiment_name": "exp", "seed": seed, "data": {"name": "toy"}, "task": {"name": "next_item"},
           "model": {"name": model, "d_model": 8}, "trainer": {"lr": 0.001}}
    for k, v in extra.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return cfg


def write_run(results_dir, model, seed, model_hits, base_hits, *, pop_hits=None, **extra):
    """One indexed run: per-example HR@10 for the model, personal_repeat and most_popular."""
    cfg = _cfg(model, seed, **extra)
    per = {"model": np.asarray(model_hits, float), "personal_repeat": np.asarray(base_hits, float),
           "most_popular": np.asarray(pop_hits if pop_hits is not None else np.zeros(len(base_hits)), float)}
    metrics = {k: {"hr@10": float(v.mean()), "ndcg@10": float(v.mean()) / 2, "mrr@10": 0.1, "hr@20": 0.5,
                   "wall_s": 1.0, "peak_rss_mb": 1024.0} for k, v in per.items()}
    metrics["model"]["train_s"] = 10.0 + seed
    for name in per:
        if name != "model":
            metrics[name]["fit_s"] = 2.0 + seed  # a baseline's "train" cost is its fit time
    prov = {"experiment": "exp", "model": model, "task": "next_item", "data": "toy", "seed": seed,
            "monitor": "ndcg@10", "config_hash": res.config_hash(cfg), "cell_hash": res.cell_hash(cfg),
            "data_fingerprint": "toy-abc", "git_sha": "deadbeef", "versions": {"jax": "0.10.2"},
            "hardware": {"cpu": "test cpu", "cores": 2, "platform": "cpu"}, "wall_s": 60.0,
            "report": cfg.get("report", {})}
    path = res.completed_path(results_dir, cfg)
    arrays = {f"{k}/{m}": (v if m == "hr@10" else v / 2) for k, v in per.items() for m in ("hr@10", "ndcg@10")}
    atomic_write_npz(path.with_suffix(".npz"), arrays)
    res.write_result(res.RunResult(metrics=metrics, valid={}, history=[], provenance=prov,
                                   config=res.result_config(cfg)), path)
    return path


@pytest.fixture
def index(tmp_path):
    tmp_path = tmp_path / "results"
    rng = np.random.default_rng(0)
    n = 400
    for seed in range(3):
        u = rng.random(n)
        base = (u < 0.2).astype(float)
        write_run(tmp_path, "good", seed, (u < 0.3).astype(float), base)  # planted +0.1 HR
        write_run(tmp_path, "same", seed, (rng.random(n) < 0.2).astype(float), base)  # planted no-difference
    return tmp_path


def test_means_std_and_baseline_dedup(index):
    table = T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=300)
    labels = [r.label for r in table.rows]
    assert labels == ["good", "same", "most_popular", "personal_repeat"]  # models first; baselines once each
    good = table.rows[0]
    runs = T.load_runs(index, "exp")
    vals = sorted((r.seed, r.result["metrics"]["model"]["hr@10"]) for r in runs if r.prov["model"] == "good")
    assert good.seeds == [0, 1, 2]
    assert good.mean("hr@10") == pytest.approx(np.mean([v for _, v in vals]))
    assert good.std("hr@10") == pytest.approx(np.std([v for _, v in vals], ddof=1))
    assert good.mean("train_s") == pytest.approx(11.0)
    # the baseline row is the same numbers whichever model run it is read from
    pr = table.rows[3]
    assert len(pr.values["hr@10"]) == 3
    assert pr.mean("train_s") == pytest.approx(3.0)  # the fit seconds fill the cost column


def test_significance_against_best_baseline(index):
    table = T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=500)
    good, same = table.rows[0], table.rows[1]
    assert good.versus == "personal_repeat" == same.versus  # best baseline by mean primary metric
    assert good.test.diff > 0 and good.test.ci_low > 0 and good.test.p_bootstrap < 0.01
    assert same.test.ci_low < 0 < same.test.ci_high and same.test.p_bootstrap > 0.05


def test_markdown_latex_csv(index):
    table = T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=200)
    md = T.to_markdown(table)
    best = table.best("hr@10", True)
    assert f"**{best:.4f} ± " in md  # the best mean is bold
    assert md.count("**0.") >= 1 and "Regenerate from scratch: python experiments/benchmark.py exp --run --fresh" in md
    assert "deadbeef" in md and "toy-abc" in md and "test cpu" in md  # footer provenance
    tex = T.to_latex(table)
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex and "$\\pm$" in tex
    assert tex.count("\\midrule") == 2  # under the header, and between models and baselines
    rows = T.to_csv(table).strip().splitlines()
    assert rows[0].startswith("experiment,task,contender,kind,seeds,ndcg@10_mean")
    assert len(rows) == 1 + len(table.rows)
    assert rows[1].split(",")[2] == "good"


def test_cells_that_differ_in_config_get_labels(tmp_path):
    for seed in range(2):
        for max_len in (50, 200):
            write_run(tmp_path, "vanilla", seed, np.ones(10), np.zeros(10), **{"model.max_len": max_len})
    table = T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp", n_boot=50)
    labels = [r.label for r in table.rows if r.kind == "model"]
    assert labels == ["vanilla (model.max_len=50)", "vanilla (model.max_len=200)"]  # numeric order


def test_refit_pass_counts_are_chosen_per_run_not_cells(tmp_path):
    """A churn refit's trainer.max_epochs comes from each run's validation (like its
    checkpoint), so refit runs that differ only there are seeds of one row; elsewhere
    the same difference still makes two cells."""
    import json

    for seed, epochs in ((0, 2), (1, 5)):
        path = write_run(tmp_path, "vanilla", seed, np.ones(10), np.zeros(10), **{"trainer.max_epochs": epochs})
        data = json.loads(path.read_text())
        data["provenance"]["split_report"] = {"refit": True}
        path.write_text(json.dumps(data))
    rows = [r for r in T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp", n_boot=50).rows
            if r.kind == "model"]
    assert [(r.label, r.seeds) for r in rows] == [("vanilla", [0, 1])]
    plain = tmp_path / "plain"
    for seed, epochs in ((0, 2), (1, 5)):
        write_run(plain, "vanilla", seed, np.ones(10), np.zeros(10), **{"trainer.max_epochs": epochs})
    rows = [r for r in T.build_table(T.load_runs(plain, "exp"), experiment="exp", n_boot=50).rows
            if r.kind == "model"]
    assert len(rows) == 2


def test_seed_derived_options_and_custom_columns(tmp_path):
    for seed in range(3):
        write_run(tmp_path, "vanilla", seed, np.ones(10) * (seed % 2), np.zeros(10),
                  **{"data.options.seed": seed, "report.columns": ["hr@10", "ndcg@10"]})
    table = T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp", n_boot=50)
    assert [r.label for r in table.rows] == ["vanilla", "most_popular", "personal_repeat"]  # one cell, not 3
    assert table.rows[0].seeds == [0, 1, 2]
    assert table.primary == "hr@10" and [c for c, _ in table.columns] == ["hr@10", "ndcg@10"]


def test_disagreeing_baselines_are_an_error(tmp_path):
    write_run(tmp_path, "a", 0, np.ones(10), np.zeros(10))
    write_run(tmp_path, "b", 0, np.ones(10), np.ones(10))  # same seed, same context, other numbers
    with pytest.raises(ValueError, match="must share the same split"):
        T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp")


def test_missing_results_name_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python experiments/train.py -m experiment=nope"):
        T.load_runs(tmp_path, "nope")


def test_benchmark_cli_writes_formats_and_readme(index, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:exp -->\nSTALE-TABLE\n<!-- /table:exp -->\nend\n")
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark.py"), "exp", "--results-dir",
                           str(index), "--out", str(out), "--readme", str(readme), "--n-boot", "100"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"exp.md", "exp.tex", "exp.csv"}
    text = readme.read_text()
    assert "STALE-TABLE" not in text and text.startswith("intro\n<!-- table:exp -->\n**exp**") and text.endswith("end\n")
    assert (out / "exp.md").read_text().strip() in text


def test_all_means_the_published_tables(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import benchmark

    index, configs = tmp_path / "results", tmp_path / "experiment"
    for name in ("cj_churn", "default", "zeta"):
        (index / name).mkdir(parents=True)
    configs.mkdir()
    (configs / "cj_churn.yaml").write_text("# table\n")
    (configs / "zeta.yaml").write_text("# table\n")
    (index / "stray.json").write_text("{}")
    assert benchmark.published_experiments(index, configs) == (["cj_churn", "zeta"], ["default"])
    # the real configs: every published table is found, a plain train.py run is not one
    real, skipped = benchmark.published_experiments(index)
    assert real == ["cj_churn"] and skipped == ["default", "zeta"]


def test_fresh_moves_results_and_checkpoints_aside(index, tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import benchmark

    multirun = index.parent / "multirun" / "exp" / "model=a,seed=0" / "checkpoints"
    multirun.mkdir(parents=True)
    n_before = len(list((index / "exp").glob("*.json")))
    benchmark.move_aside(index, "exp")
    assert not (index / "exp").exists() and not (index.parent / "multirun" / "exp").exists()
    (stamp,) = (index.parent / "previous").iterdir()
    assert len(list((stamp / index.name / "exp").glob("*.json"))) == n_before  # nothing deleted
    assert (stamp / "multirun" / "exp" / "model=a,seed=0" / "checkpoints").is_dir()


def test_benchmark_logs_tables_to_wandb(index, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "experiments"))
    import benchmark
    from tests.train.wandb_records import logged

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    table = T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=50)
    benchmark.log_to_wandb([table])
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    L = logged(run_file)
    assert L["run"].run_group == "exp" and L["run"].job_type == "report" and "table" in L["run"].tags
    (row,) = [h for h in L["history"] if "table/exp/_type" in h]
    assert row["table/exp/_type"] == "table-file" and row["table/exp/nrows"] == len(table.rows)
    (media,) = run_file.parent.glob("files/media/table/table/exp_*.table.json")
    data = json.loads(media.read_text())
    assert data["columns"][:3] == ["experiment", "task", "contender"]
    assert [r[2] for r in data["data"]] == [r.label for r in table.rows]


def test_contexts_are_ordered_by_their_numbers(tmp_path):
    """One table, several contexts (e.g. trigger distances): 2, 8, 16 -- not "16" < "2" < "8"."""
    rng = np.random.default_rng(1)
    for d in (16, 2, 8):
        hits = (rng.random(50) < 0.3).astype(float)
        write_run(tmp_path, "m", 0, hits, hits, **{"data.options.distance": d})
    table = T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp", n_boot=20)
    contexts = list(dict.fromkeys(r.context for r in table.rows))
    assert contexts == ["(data.options.distance=2)", "(data.options.distance=8)", "(data.options.distance=16)"]


def test_model_cells_are_ordered_by_their_numbers(tmp_path):
    rng = np.random.default_rng(2)
    hits = (rng.random(50) < 0.3).astype(float)
    for n in (200, 50, 800, 100):
        write_run(tmp_path, "vanilla", 0, hits, hits, **{"model.max_len": n})
    table = T.build_table(T.load_runs(tmp_path, "exp"), experiment="exp", n_boot=20)
    assert [r.label for r in table.rows if r.kind == "model"] == [
        f"vanilla (model.max_len={n})" for n in (50, 100, 200, 800)]


def test_keys_added_later_at_their_default_keep_old_hashes_and_table_cells(tmp_path):
    """``res.ADDED_DEFAULTS``: a run filed before ``task.loss`` existed and a new run that
    states its default are the same run (hash) and the same table cell; another value is not."""
    old = _cfg("good", 0)
    new = _cfg("good", 0, **{"task.loss": "softmax", "task.gbce_t": 0.75})
    assert res.config_hash(new) == res.config_hash(old) and res.cell_hash(new) == res.cell_hash(old)
    assert res.config_hash(_cfg("good", 0, **{"task.loss": "gbce", "task.gbce_t": 0.75})) != res.config_hash(old)
    assert res.config_hash(_cfg("good", 0, **{"task.gbce_t": 0.5})) != res.config_hash(old)

    rng = np.random.default_rng(3)
    root = tmp_path / "results"
    paths = [write_run(root, "good", s, (rng.random(50) < 0.3).astype(float), (rng.random(50) < 0.2).astype(float))
             for s in range(3)]
    # seed 2 as a new run files it: the added keys spelled out at their defaults
    raw = json.loads(paths[2].read_text())
    raw["config"]["task"].update(loss="softmax", gbce_t=0.75)
    paths[2].write_text(json.dumps(raw))
    write_run(root, "good", 0, (rng.random(50) < 0.3).astype(float), (rng.random(50) < 0.2).astype(float),
              **{"task.loss": "gbce"})
    table = T.build_table(T.load_runs(root, "exp"), experiment="exp", n_boot=50)
    models = {r.label: r.seeds for r in table.rows if r.kind == "model"}
    assert models == {"good (task.loss=softmax)": [0, 1, 2], "good (task.loss=gbce)": [0]}


def test_versus_adds_a_paired_test_against_a_named_baseline(index, tmp_path):
    """``versus`` compares every model row with a named baseline too (not only the best):
    one Δ/p column pair per name in Markdown, LaTeX and CSV; a name no run scored is an
    error naming the baselines it did score."""
    table = T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=300, versus=("most_popular",))
    good, same = table.rows[0], table.rows[1]
    assert good.versus == "personal_repeat"                      # the best-baseline test is unchanged
    for row in (good, same):                                     # most_popular scores 0 everywhere: both beat it
        t = row.also["most_popular"]
        assert t.diff == pytest.approx(row.mean("ndcg@10")) and t.ci_low > 0 and t.p_bootstrap < 0.01
    assert "most_popular" not in table.rows[2].also              # baseline rows carry no test
    md = T.to_markdown(table)
    assert "Δ ndcg@10 vs most_popular [95% CI] | p |" in md and "(report.versus)" in md
    head = md.splitlines()[2]
    assert head.count("|") == T.to_markdown(T.build_table(T.load_runs(index, "exp"), experiment="exp",
                                                          n_boot=50)).splitlines()[2].count("|") + 2
    assert "vs most\\_popular" in T.to_latex(table)
    csv_rows = T.to_csv(table).strip().splitlines()
    assert csv_rows[0].endswith("vs_most_popular_diff,vs_most_popular_ci_low,vs_most_popular_ci_high,"
                                "vs_most_popular_p_bootstrap")
    assert float(csv_rows[1].split(",")[-4]) == pytest.approx(good.also["most_popular"].diff)
    with pytest.raises(ValueError, match=r"report.versus names \['bgnbd'\].*most_popular"):
        T.build_table(T.load_runs(index, "exp"), experiment="exp", n_boot=20, versus=("bgnbd",))


def test_benchmark_reads_report_versus_from_the_runs(tmp_path):
    """Without a configs/experiment file, ``report.versus`` comes from the runs' provenance."""
    rng = np.random.default_rng(1)
    for seed in range(2):
        u = rng.random(200)
        write_run(tmp_path, "good", seed, (u < 0.3).astype(float), (u < 0.2).astype(float),
                  **{"report.versus": ["most_popular"]})
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark.py"), "exp", "--results-dir",
                           str(tmp_path), "--out", str(out), "--n-boot", "50"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Δ ndcg@10 vs most_popular [95% CI]" in (out / "exp.md").read_text()


def test_report_versus_comes_from_the_experiment_yaml_first(tmp_path):
    """The published setting (configs/experiment/<name>.yaml ``report.versus``) wins over
    the runs' provenance, so runs filed before the key get it; a YAML without the key
    leaves the runs' own; cj_churn names BG/NBD."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import benchmark

    class Run:
        prov = {"report": {"versus": ["rfm"]}}

    (tmp_path / "a.yaml").write_text("# @package _global_\nreport:\n  versus: bgnbd\n")
    (tmp_path / "b.yaml").write_text("# @package _global_\nseed: 0\n")
    assert benchmark.report_versus("a", [Run], tmp_path) == ["bgnbd"]
    assert benchmark.report_versus("b", [Run], tmp_path) == ["rfm"]          # the YAML names none: the runs'
    assert benchmark.report_versus("c", [Run], tmp_path) == ["rfm"]          # no YAML: the runs'
    assert benchmark.report_versus("cj_churn", [Run]) == ["bgnbd"]
