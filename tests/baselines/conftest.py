"""Makes the tiny-store helpers of tests/protocols importable from tests/baselines."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "protocols"))
