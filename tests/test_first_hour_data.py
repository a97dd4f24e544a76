"""Issue 13: ``debug=tiny`` works with every data source (a seeded customer subsample of
whatever data is chosen, part of the data fingerprint and of the run's config hash)."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from attnlab.data import DataError
from attnlab.data.pipeline import fingerprint, load_events, store_from_config
from attnlab.data.sources.table_files import MAPPING_KEYS
from attnlab import results as res

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


def test_every_tabular_option_is_settable_without_plus(tmp_path):
    """configs/data/tabular.yaml lists every option of the loader and every mapping key,
    so the documented command line (`data.options.columns.basket_id=Invoice`, `sep=';'`)
    works as written, without Hydra's `+`."""
    import inspect

    from attnlab.data.sources import tabular

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        yaml_opts = compose(config_name="config", overrides=["data=tabular"]).data.options
    params = set(inspect.signature(tabular.load).parameters)
    assert set(yaml_opts) == params
    assert set(yaml_opts.columns) == set(MAPPING_KEYS)
    csv = tmp_path / "shop.csv"
    csv.write_text("Customer;Product;When;Invoice;Qty\n"
                   + "".join(f"c{c};p{(c + k) % 7};2021-0{1 + k // 3}-1{k % 3} 10:00:00;{c}-{k // 2};{1 + k % 2}\n"
                             for c in range(30) for k in range(9)))
    cfg = _cfg("data=tabular", f"data.options.path={csv}", "data.options.sep=';'",
               "data.options.columns.customer_id=Customer", "data.options.columns.item_id=Product",
               "data.options.columns.timestamp=When", "data.options.columns.basket_id=Invoice",
               "data.options.columns.quantity=Qty", "data.options.timestamp_format='%Y-%m-%d %H:%M:%S'")
    store = _store(cfg, tmp_path)
    assert store.n_events == 30 * 9 and store.n_customers == 30
    assert len(np.unique(np.asarray(store.basket))) == 30 * 5          # the Invoice column, not (customer, time)
    assert sorted(np.unique(np.asarray(store.quantity))) == [1.0, 2.0]  # the Qty column, not the default 1
