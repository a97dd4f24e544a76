"""The one attention op: ``attention(q, k, v, *, spec, impl=None)``."""

from attnlab.ops.attention import attention
from attnlab.ops.spec import AttentionSpec, DecayFn

__all__ = ["attention", "AttentionSpec", "DecayFn"]
