"""Issue 13, a researcher's first hour: start-up cost and the persistent compilation cache.

Timings are measured and reported in docs/experiments.md, not asserted here: these tests
check the mechanisms (what an import pulls in, where compiled programs are cached, that a
second process reuses them, that cache entries are written atomically)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab import compile_cache

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sklearn", "scipy.stats", "wandb", "matplotlib", "optuna", "implicit")


def _python(code: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_importing_the_trainer_leaves_heavy_optional_packages_unloaded():
    code = ("import sys, json, attnlab.train.loop, attnlab.baselines, attnlab.data\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert json.loads(_python(code).strip().splitlines()[-1]) == []


def test_baselines_package_still_exports_every_name_on_demand():
    import attnlab.baselines as b

    for name in b.__all__:
        assert getattr(b, name).__name__ == name
    with pytest.raises(AttributeError):
        b.NoSuchBaseline  # noqa: B018


def test_spearman_matches_scipy_including_ties():
    import numpy as np
    from scipy.stats import spearmanr

    from attnlab.models.inspection import spearman

    rng = np.random.default_rng(0)
    for n in (3, 7, 50, 400):
        a = np.round(rng.normal(size=n), 1)  # ties
        b = rng.integers(1, 6, size=n)  # many ties
        b[0], b[-1] = 1, 5  # not constant
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12, nan_ok=True)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_cache_location_setting_env_default_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve() == tmp_path / "xdg" / "attnlab" / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve() == tmp_path / "env"
    assert compile_cache.resolve(str(tmp_path / "cfg")) == tmp_path / "cfg"  # the config key wins
    for off in ("off", "OFF", "none", "false", "0", False):
        assert compile_cache.resolve(off) is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve() is None


def test_second_process_loads_compiled_programs_from_the_cache(tmp_path):
    cache = tmp_path / "jax"
    code = (
        "import logging, sys\n"
        "from attnlab import compile_cache\n"
        f"compile_cache.enable({str(cache)!r})\n"
        "import jax, jax.numpy as jnp\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)\n"
        "for name in ('jax._src.compiler', 'jax._src.compilation_cache'):\n"
        "    logging.getLogger(name).setLevel(logging.DEBUG)\n"
        "print(float(jax.jit(lambda x: (jnp.sin(x) * 3.0).sum())(jnp.ones((7, 5)))))\n")
    first = _python(code)
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert entries, "small CPU programs must be cached (min compile time 0, no size floor)"
    second = _python(code)
    assert "Persistent compilation cache hit" in second
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == entries
    assert first.strip().splitlines()[-1] == second.strip().splitlines()[-1]
    # "off" leaves the folder alone
    _python(code.replace(f"compile_cache.enable({str(cache)!r})", "compile_cache.enable('off')"))
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == entries


def test_cache_entries_are_written_atomically(tmp_path, monkeypatch):
    from jax._src import lru_cache

    assert compile_cache._atomic_writes()
    cache = lru_cache.LRUCache(str(tmp_path), max_size=-1)
    cache.put("k1", b"x" * 1000)
    assert cache.get("k1") == b"x" * 1000

    def crash(*a, **k):
        raise KeyboardInterrupt  # killed between writing and publishing the entry

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("k2", b"y" * 1000)
    assert cache.get("k2") is None  # never a partial entry under the key
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith("k1"))  # and no temporary left behind
