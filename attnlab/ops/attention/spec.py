"""The attention specification shared by every attention implementation.

Every implementation (``reference``, ``xla_chunked``, ``banded``, ``pallas_triton``)
takes ``q, k, v`` of shape ``[batch, length, heads, head_dim]`` and one frozen
:class:`AttentionSpec`. The spec describes *what* is attended to; masks and biases
are computed inside each implementation from these few numbers (with the one rule
of :mod:`attnlab.ops.attention.visibility`) and are never materialised as a
``length x length`` array by the blockwise paths.

Semantics (identical for all implementations). For batch ``b``, head ``h``, query
position ``i`` and key position ``j``, key ``j`` is *visible* from ``i`` iff

* ``i < lengths[b]`` and ``j < lengths[b]``            (right-padded ragged histories),
* ``j <= i``                              if ``causal``,
* ``i - j < window or j < num_global``    if ``window`` is set (local window of the
  last ``window`` events, plus ``num_global`` leading positions every query sees).

The score is ``scale * <q_i, k_j> - decay_slopes[h] * g(|t_i - t_j| / time_unit)``
when time decay is on, with ``g`` chosen by :class:`DecayFn`. Softmax runs over the
visible keys only, accumulated in fp32. A query row with no visible key (padding, or a
fully padded sequence) returns exactly zeros, in forward and backward.

``decay_slopes`` is differentiable (models learn it); ``timestamps`` and ``lengths``
are not (their cotangents are zero).
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax
import jax.numpy as jnp


class DecayFn(enum.Enum):
    """Shape ``g`` of the time-decay penalty on the time gap ``x = |dt| / time_unit``."""

    LOG1P = "log1p"  # g(x) = log(1 + x): strong near-term discrimination, slow tail
    LINEAR = "linear"  # g(x) = x: ALiBi-like linear penalty on real time

    def apply(self, x: jax.Array) -> jax.Array:
        if self is DecayFn.LOG1P:
            return jnp.log1p(x)
        return x


@dataclasses.dataclass(frozen=True)
class StaticSpec:
    """An :class:`AttentionSpec` minus its arrays: hashable, so it can be a static
    argument (a ``custom_vjp`` non-differentiable argument, a Pallas kernel
    parameter) and decide at trace time which rules apply.

    Attributes:
      causal: keys after the query are invisible.
      window: local window size, or None.
      num_global: leading positions every query sees besides its window.
      decay_fn: decay shape, or None without time decay.
      time_unit: divides time gaps before ``decay_fn``.
      scale: the resolved softmax scale.
    """

    causal: bool
    window: int | None
    num_global: int
    decay_fn: DecayFn | None
    time_unit: float
    scale: float

    @property
    def has_decay(self) -> bool:
        return self.decay_fn is not None

    def without_global(self) -> "StaticSpec":
        """The same spec with no global positions (the local part of a window)."""
        return dataclasses.replace(self, num_global=0)


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """What a customer-history attention call attends to.

    Attributes:
      causal: mask keys after the query (``j > i``).
      lengths: ``int32[batch]`` valid length of each right-padded sequence, or None
        (all positions valid).
      timestamps: ``float32[batch, length]`` event times (any unit; see
        ``time_unit``), or None for no time decay. Required iff ``decay_slopes`` set.
      decay_slopes: ``float32[heads]`` non-negative per-head decay rates, or None.
      decay_fn: shape of the decay penalty.
      time_unit: divides the time gap before ``decay_fn`` (e.g. 86400.0 for days when
        timestamps are seconds).
      window: if set, a query sees only the last ``window`` keys (``i - j < window``).
      num_global: leading positions every query may see in addition to its window.
      scale: softmax scale; None means ``1 / sqrt(head_dim)``.
    """

    causal: bool = True
    lengths: jax.Array | None = None
    timestamps: jax.Array | None = None
    decay_slopes: jax.Array | None = None
    decay_fn: DecayFn = DecayFn.LOG1P
    time_unit: float = 1.0
    window: int | None = None
    num_global: int = 0
    scale: float | None = None

    def __post_init__(self):
        if (self.timestamps is None) != (self.decay_slopes is None):
            raise ValueError(
                "AttentionSpec: time decay needs both `timestamps` [batch, length] and "
                "`decay_slopes` [heads]; got only one of them."
            )
        if self.window is not None and self.window < 1:
            raise ValueError(f"AttentionSpec: window must be >= 1, got {self.window}.")
        if self.num_global < 0:
            raise ValueError(f"AttentionSpec: num_global must be >= 0, got {self.num_global}.")
        if self.num_global and self.window is None:
            raise ValueError("AttentionSpec: num_global only makes sense with a window.")
        if self.time_unit <= 0:
            raise ValueError(f"AttentionSpec: time_unit must be > 0, got {self.time_unit}.")

    @property
    def has_decay(self) -> bool:
        return self.decay_slopes is not None

    def softmax_scale(self, head_dim: int) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(head_dim)

    def static(self, head_dim: int) -> StaticSpec:
        """The static description of this spec for inputs of ``head_dim`` features."""
        return StaticSpec(
            causal=bool(self.causal),
            window=self.window,
            num_global=int(self.num_global),
            decay_fn=self.decay_fn if self.has_decay else None,
            time_unit=float(self.time_unit),
            scale=float(self.softmax_scale(head_dim)),
        )

    def replace(self, **changes) -> "AttentionSpec":
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    AttentionSpec,
    data_fields=["lengths", "timestamps", "decay_slopes"],
    meta_fields=["causal", "decay_fn", "time_unit", "window", "num_global", "scale"],
)
