"""The ONE public attention entry point and its dispatcher.

``attention(q, k, v, *, spec, impl=None)`` computes customer-history attention for
``q, k, v`` of shape ``[batch, length, heads, head_dim]`` under an
:class:`~attnlab.ops.spec.AttentionSpec`, with one of several implementations:

* ``reference``    -- naive einsum, materialises ``length x length``; always works.
* ``xla_chunked``  -- blockwise online softmax in pure JAX (any backend, the CPU
  production path); see :mod:`attnlab.ops.xla_chunked`.
* ``pallas_triton`` -- the Pallas/Triton flash kernel (GPU), imported lazily from
  :mod:`attnlab.kernels.flash_triton`.

With ``impl=None`` the dispatcher walks an ordered per-platform preference list and
takes the first implementation whose ``is_supported`` returns ``None``; every decline
reason is logged (DEBUG per decline, INFO for the choice). A pinned ``impl`` that
cannot run raises :class:`AttentionUnsupportedError` naming the reason -- there is
no silent fallback. :func:`explain_dispatch` returns the decision without running.

CPU policy: sequences of at most :data:`CPU_REFERENCE_MAX_LENGTH` (128) events go
to the reference (it ties with the chunked path there and compiles faster), longer
ones to ``xla_chunked``. The threshold comes from ``experiments/kernel_bench.py``
(see ``docs/kernel_bench.md``).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
from typing import Protocol

import jax

from attnlab.ops import xla_chunked as _xla_chunked
from attnlab.ops.reference import reference_attention
from attnlab.ops.spec import AttentionSpec

log = logging.getLogger(__name__)

#: On CPU, sequences up to this length use the reference; longer use xla_chunked.
#: Measured fwd+bwd (2-core Xeon, batch 8, 2 heads, head_dim 32, causal and
#: causal+decay, median of 30): at 32-128 events both run within +-10% of each other
#: (0.2-2.6 ms), the reference with the simpler program and faster compile; at 256
#: xla_chunked is 1.35-1.5x faster, at 512 3.5x, and its memory stays O(length*block).
CPU_REFERENCE_MAX_LENGTH = 128


class Impl(str, enum.Enum):
    """Names of the attention implementations."""

    REFERENCE = "reference"
    XLA_CHUNKED = "xla_chunked"
    PALLAS_TRITON = "pallas_triton"


class AttentionUnsupportedError(ValueError):
    """A pinned implementation cannot run these inputs (the message says why)."""


class Implementation(Protocol):
    """What the dispatcher needs from an implementation."""

    name: Impl

    def is_supported(self, q, k, v, spec: AttentionSpec, platform: str) -> str | None:
        """``None`` if it can run, else a human-readable reason it declines."""

    def __call__(self, q, k, v, *, spec: AttentionSpec) -> jax.Array:
        """Attention output ``[batch, q_len, heads, head_dim]`` in ``q.dtype``."""


def _shape_problem(q, k, v) -> str | None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return (f"q, k, v must be [batch, length, heads, head_dim]; got shapes "
                f"{q.shape}, {k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        return f"incompatible shapes q={q.shape}, k={k.shape}, v={v.shape}"
    return None


class _Reference:
    name = Impl.REFERENCE

    def is_supported(self, q, k, v, spec, platform):
        return _shape_problem(q, k, v)

    def __call__(self, q, k, v, *, spec):
        return reference_attention(q, k, v, spec=spec)


class _XlaChunked:
    name = Impl.XLA_CHUNKED

    def is_supported(self, q, k, v, spec, platform):
        return _shape_problem(q, k, v) or _xla_chunked.unsupported_reason(q, k, v, spec)

    def __call__(self, q, k, v, *, spec):
        return _xla_chunked.chunked_attention(q, k, v, spec=spec)


class _PallasTriton:
    """Lazy wrapper: a missing or broken kernel module is a decline reason."""

    name = Impl.PALLAS_TRITON
    module_name = "attnlab.kernels.flash_triton"

    def _module(self):
        try:
            return importlib.import_module(self.module_name), None
        except Exception as e:  # noqa: BLE001 - any import failure is a decline reason
            return None, f"cannot import {self.module_name}: {type(e).__name__}: {e}"

    def is_supported(self, q, k, v, spec, platform):
        problem = _shape_problem(q, k, v)
        if problem:
            return problem
        module, err = self._module()
        if err:
            return err
        return module.unsupported_reason(q, k, v, spec, platform=platform)

    def __call__(self, q, k, v, *, spec):
        module, err = self._module()
        if err:
            raise AttentionUnsupportedError(err)
        return module.flash_attention(q, k, v, spec=spec)


IMPLEMENTATIONS: dict[Impl, Implementation] = {
    Impl.REFERENCE: _Reference(),
    Impl.XLA_CHUNKED: _XlaChunked(),
    Impl.PALLAS_TRITON: _PallasTriton(),
}


def preference_order(platform: str, length: int) -> tuple[Impl, ...]:
    """Ordered implementations the dispatcher tries on ``platform`` for ``length``."""
    if platform in ("gpu", "cuda", "rocm"):
        return (Impl.PALLAS_TRITON, Impl.XLA_CHUNKED, Impl.REFERENCE)
    if platform == "cpu" and length <= CPU_REFERENCE_MAX_LENGTH:
        return (Impl.REFERENCE, Impl.XLA_CHUNKED)
    return (Impl.XLA_CHUNKED, Impl.REFERENCE)


@dataclasses.dataclass(frozen=True)
class DispatchDecision:
    """Outcome of dispatch.

    Attributes:
      chosen: the implementation that runs.
      platform: the platform the decision was made for.
      declined: ``(impl, reason)`` for every implementation tried before ``chosen``.
    """

    chosen: Impl
    platform: str
    declined: tuple[tuple[Impl, str], ...] = ()


def _platform(platform: str | None) -> str:
    return platform if platform is not None else jax.default_backend()


def explain_dispatch(q, k, v, *, spec: AttentionSpec, impl: Impl | str | None = None,
                     platform: str | None = None) -> DispatchDecision:
    """Which implementation :func:`attention` would run, and why the others declined.

    Args:
      q, k, v: ``[batch, length, heads, head_dim]`` arrays (or ShapeDtypeStructs).
      spec: the attention spec.
      impl: a pinned implementation, or None for the platform preference list.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``; default ``jax.default_backend()``.

    Raises:
      AttentionUnsupportedError: the pinned ``impl`` (or every candidate) declines.
    """
    platform = _platform(platform)
    if impl is not None:
        name = Impl(impl)
        reason = IMPLEMENTATIONS[name].is_supported(q, k, v, spec, platform)
        if reason is not None:
            raise AttentionUnsupportedError(
                f"attention(impl={name.value!r}) cannot run on {platform}: {reason}. "
                f"Pass impl=None to let the dispatcher choose, or change the inputs/spec.")
        return DispatchDecision(chosen=name, platform=platform)
    declined = []
    for name in preference_order(platform, q.shape[1]):
        reason = IMPLEMENTATIONS[name].is_supported(q, k, v, spec, platform)
        if reason is None:
            return DispatchDecision(chosen=name, platform=platform, declined=tuple(declined))
        log.debug("attention: %s declined on %s: %s", name.value, platform, reason)
        declined.append((name, reason))
    raise AttentionUnsupportedError(
        "attention: no implementation can run these inputs: "
        + "; ".join(f"{n.value}: {r}" for n, r in declined))


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, spec: AttentionSpec,
              impl: Impl | str | None = None) -> jax.Array:
    """Customer-history attention.

    Args:
      q: ``[batch, q_len, heads, head_dim]``.
      k: ``[batch, k_len, heads, head_dim]``.
      v: ``[batch, k_len, heads, head_dim]``.
      spec: what is attended to (causal, lengths, time decay, window).
      impl: ``"reference"``, ``"xla_chunked"``, ``"pallas_triton"`` (or :class:`Impl`)
        to pin an implementation; None to dispatch by platform and length.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype``.

    Raises:
      AttentionUnsupportedError: a pinned implementation cannot run these inputs.
    """
    decision = explain_dispatch(q, k, v, spec=spec, impl=impl)
    if impl is None:
        _log_decision(decision, q, k)
    return IMPLEMENTATIONS[decision.chosen](q, k, v, spec=spec)


#: call signatures whose dispatch decision was logged already (one line per signature)
_LOGGED: set[tuple] = set()


def _log_decision(decision: DispatchDecision, q, k) -> None:
    """Log the dispatcher's choice once per distinct call signature (shapes, dtype,
    platform, choice): at DEBUG when it is the platform's first preference, at INFO
    when a preferred implementation declined (the reasons say why)."""
    key = (decision.platform, decision.chosen, tuple(q.shape), tuple(k.shape), str(q.dtype),
           decision.declined)
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    level = logging.INFO if decision.declined else logging.DEBUG
    log.log(level, "attention: using %s on %s for q%s k%s %s (declined: %s)", decision.chosen.value,
            decision.platform, tuple(q.shape), tuple(k.shape), q.dtype,
            ", ".join(f"{n.value}: {r}" for n, r in decision.declined) or "none")
