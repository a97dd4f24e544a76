"""The attention op: ``attention(q, k, v, *, spec, impl=None)``.

Layout of this package:

* ``spec``        -- :class:`AttentionSpec`, :class:`DecayFn` and the static
  description of a spec (:class:`StaticSpec`).
* ``visibility``  -- the visibility rule and the decay penalty, written once, for
  whole arrays, blocks and Pallas tiles.
* ``dispatch``    -- :func:`attention`, :func:`explain_dispatch`: the one router.
* ``reference``, ``xla_chunked`` (+ ``xla_chunked_loops``), ``banded`` (+
  ``banded_loops``) -- one implementation each; ``layout`` is the operand layout the
  two XLA paths share. The Pallas kernel lives in ``attnlab.kernels.flash_triton``.
* ``tuning``      -- every tuning number, numbers only.
"""

from attnlab.ops.attention.dispatch import (
    IMPLEMENTATIONS,
    AttentionUnsupportedError,
    DispatchDecision,
    Impl,
    attention,
    explain_dispatch,
)
from attnlab.ops.attention.reference import reference_attention
from attnlab.ops.attention.spec import AttentionSpec, DecayFn, StaticSpec

__all__ = [
    "attention",
    "explain_dispatch",
    "AttentionSpec",
    "DecayFn",
    "StaticSpec",
    "Impl",
    "DispatchDecision",
    "AttentionUnsupportedError",
    "IMPLEMENTATIONS",
    "reference_attention",
]
