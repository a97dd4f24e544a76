"""Shared pytest setup (keep minimal): make ``tests.*`` helpers importable
(e.g. ``from tests.ops.attention_suite import AttentionSuite``) under plain ``pytest``."""

import pathlib
import sys

_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Runs started by tests (and the notebooks they execute) write their results index and
# Hydra outputs under a throwaway root, never into the repository's outputs/.
import os
import tempfile

# Under pytest-xdist every worker gets its own root (the controller's variable is
# inherited, so it is extended, not replaced): parallel runs of one config never meet
# in one results index.
_base = os.environ.setdefault("ATTNLAB_OUTPUTS", tempfile.mkdtemp(prefix="attnlab-test-outputs-"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["ATTNLAB_OUTPUTS"] = os.path.join(_base, os.environ["PYTEST_XDIST_WORKER"])

# JAX's persistent compilation cache (attnlab.compile_cache): one folder per test session,
# shared by the xdist workers and by the runs tests launch in subprocesses (they inherit the
# variable), never the user's ~/.cache. ATTNLAB_COMPILE_CACHE=off runs the suite without it;
# ATTNLAB_TEST_INPROCESS_COMPILE_CACHE=0 only the test processes (docs/experiments.md, issue 13).
if "ATTNLAB_COMPILE_CACHE" not in os.environ:
    os.environ["ATTNLAB_COMPILE_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="attnlab-test-jax-"), "jax")
if os.environ.get("ATTNLAB_TEST_INPROCESS_COMPILE_CACHE", "1") != "0":
    from attnlab import compile_cache

    compile_cache.enable()
