"""Issue 13: ``debug=tiny`` works with every data source (a seeded customer subsample of
whatever data is chosen, part of the data fingerprint and of the run's config hash)."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.data import DataError
from attnlab.data.pipeline import fingerprint, load_events, store_from_config
from attnlab.train import results as res

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def _cfg(*overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="config", overrides=["debug=tiny", *overrides])


def _store(cfg, tmp_path):
    return store_from_config(OmegaConf.to_container(cfg.data, resolve=True), cache_dir=tmp_path / "cache",
                             progress=False)


def _resolved(cfg) -> dict:
    c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("paths")  # reads hydra:runtime; never hashed
    return OmegaConf.to_container(OmegaConf.create(c), resolve=True)


def _retail_csv(path: Path, n_customers: int = 300) -> Path:
    ev = load_events("synthetic", {"n_customers": n_customers, "n_items": 40, "seed": 3}).events
    ev = ev[["customer_id", "item_id", "timestamp"]]  # purchases only
    ev.to_csv(path, index=False)
    return path


def test_tiny_with_tabular_data_subsamples_customers(tmp_path):
    csv = _retail_csv(tmp_path / "retail.csv")
    cfg = _cfg("data=tabular", f"data.options.path={csv}")
    store = _store(cfg, tmp_path)
    assert store.n_customers == 120
    again = _store(_cfg("data=tabular", f"data.options.path={csv}"), tmp_path)  # seeded: same customers
    assert np.array_equal(np.asarray(again.customer_ids), np.asarray(store.customer_ids))
    default = _cfg()  # debug=tiny alone: still small synthetic data
    assert default.data.name == "synthetic" and _store(default, tmp_path).n_customers == 120


def test_tiny_with_cdnow_subsamples_customers(tmp_path):
    store = _store(_cfg("data=cdnow", "task=churn"), tmp_path)
    assert store.n_customers == 120
    assert store.meta["source_meta"]["subsample"]["customers_before"] > 20000


def test_subsample_is_in_the_fingerprint_and_the_config_hash(tmp_path):
    base = {"n_customers": 300, "n_items": 40}
    plain = fingerprint("synthetic", base)
    assert fingerprint("synthetic", {**base, "max_customers": None}) == plain  # full data: unchanged key
    sub = fingerprint("synthetic", {**base, "max_customers": 100})
    assert sub != plain
    assert fingerprint("synthetic", {**base, "max_customers": 100, "subsample_seed": 1}) != sub
    hashes = {res.config_hash(_resolved(_cfg(o))) for o in (
        "data.options.max_customers=100", "data.options.max_customers=101", "data.options.subsample_seed=1")}
    assert len(hashes) == 3
    other = load_events("synthetic", {**base, "max_customers": 100, "subsample_seed": 1})
    same = load_events("synthetic", {**base, "max_customers": 100})
    assert set(other.events["customer_id"]) != set(same.events["customer_id"])
    assert same.events["customer_id"].nunique() == 100


@pytest.mark.parametrize("bad", [0, -3, 2.5, "many", True])
def test_bad_max_customers_is_a_data_error(bad):
    with pytest.raises(DataError, match="max_customers must be a positive integer"):
        fingerprint("synthetic", {"max_customers": bad})
