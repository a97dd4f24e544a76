"""TEMPORARY shim (ops owner replaces this with the real dispatcher)."""

from attnlab.ops.reference import reference_attention
from attnlab.ops.spec import AttentionSpec


def attention(q, k, v, *, spec: AttentionSpec, impl=None):
    return reference_attention(q, k, v, spec=spec)
