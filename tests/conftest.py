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
