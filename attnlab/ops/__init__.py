"""The one attention op: ``attention(q, k, v, *, spec, impl=None)``."""

from attnlab.ops.attention import (
    AttentionUnsupportedError,
    DispatchDecision,
    Impl,
    attention,
    explain_dispatch,
)
from attnlab.ops.spec import AttentionSpec, DecayFn

__all__ = [
    "attention",
    "AttentionSpec",
    "DecayFn",
    "Impl",
    "explain_dispatch",
    "DispatchDecision",
    "AttentionUnsupportedError",
]
