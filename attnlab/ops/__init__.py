"""Attention ops.

* :mod:`attnlab.ops.attention` -- the one softmax attention op,
  ``attention(q, k, v, *, spec, impl=None)``, its spec, dispatcher and implementations.
* :mod:`attnlab.ops.linear` -- causal linear attention (chunked and recurrent forms).
"""

from attnlab.ops import linear  # noqa: F401 - the linear-attention subpackage
from attnlab.ops.attention import (
    AttentionSpec,
    AttentionUnsupportedError,
    DecayFn,
    DispatchDecision,
    Impl,
    attention,
    explain_dispatch,
)

__all__ = [
    "attention",
    "AttentionSpec",
    "DecayFn",
    "Impl",
    "explain_dispatch",
    "DispatchDecision",
    "AttentionUnsupportedError",
]
