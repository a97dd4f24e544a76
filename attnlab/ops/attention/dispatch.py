"""The ONE public attention entry point and its dispatcher.

``attention(q, k, v, *, spec, impl=None)`` computes customer-history attention for
``q, k, v`` of shape ``[batch, length, heads, head_dim]`` under an
:class:`~attnlab.ops.attention.spec.AttentionSpec`, with one of several
implementations:

* ``reference``     -- naive einsum, materialises ``length x length``; always works.
* ``xla_chunked``   -- blockwise online softmax in pure JAX (any backend, the CPU
  production path); see :mod:`attnlab.ops.attention.xla_chunked`.
* ``banded``        -- causal local windows, one query block against its key slab
  per step; see :mod:`attnlab.ops.attention.banded`.
* ``pallas_triton`` -- the Pallas/Triton flash kernel (GPU), imported on first use
  from :mod:`attnlab.kernels.flash_triton`.

With ``impl=None`` the dispatcher walks an ordered per-platform preference list
(:func:`preference_order`) and takes the first implementation that neither declines
(``why_unsupported``) nor expects a later one to be faster (``why_slower``); every
decline reason is recorded in the :class:`DispatchDecision` and logged (DEBUG per
decline, INFO when a preferred implementation declined). A pinned ``impl`` that
cannot run raises :class:`AttentionUnsupportedError` naming the reason -- there is
no silent fallback. :func:`explain_dispatch` returns the decision without running.

This is the only place that chooses an implementation; the implementations do not
route again.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Callable

import jax

from attnlab.ops.attention import banded, reference, xla_chunked
from attnlab.ops.attention.layout import shape_problem
from attnlab.ops.attention.spec import AttentionSpec
from attnlab.ops.attention.tuning import CPU_REFERENCE_MAX_LENGTH

log = logging.getLogger(__name__)

#: Platform names on which the Pallas kernel comes first.
GPU_PLATFORMS = ("gpu", "cuda", "rocm")


class Impl(str, enum.Enum):
    """Names of the attention implementations."""

    REFERENCE = "reference"
    XLA_CHUNKED = "xla_chunked"
    BANDED = "banded"
    PALLAS_TRITON = "pallas_triton"


class AttentionUnsupportedError(ValueError):
    """A pinned implementation cannot run these inputs (the message says why)."""


def _never_slower(q, k, v, spec, *, platform) -> None:
    return None


@dataclasses.dataclass
class Implementation:
    """One implementation as the dispatcher sees it.

    Attributes:
      name: its :class:`Impl`.
      why_unsupported: ``(q, k, v, spec, *, platform) -> str | None``: why it cannot
        run these inputs, or None.
      run: ``(q, k, v, *, spec) -> [batch, q_len, heads, head_dim]`` in ``q.dtype``.
      why_slower: ``(q, k, v, spec, *, platform) -> str | None``: why an automatic
        choice should pass it by although it can run (a later implementation is
        expected to be faster), or None. Not asked for a pinned ``impl``.
    """

    name: Impl
    why_unsupported: Callable[..., str | None]
    run: Callable[..., jax.Array]
    why_slower: Callable[..., str | None] = _never_slower


def load_kernel():
    """The Pallas kernel module, imported on first use (it pulls in the Triton
    lowering, which CPU-only programs never need)."""
    from attnlab.kernels import flash_triton  # noqa: PLC0415 - lazy on purpose

    return flash_triton


def _kernel_why_unsupported(q, k, v, spec, *, platform):
    problem = shape_problem(q, k, v)
    if problem:
        return problem
    try:
        kernel = load_kernel()
    except Exception as e:  # noqa: BLE001 - any import failure is a decline reason
        return f"cannot import attnlab.kernels.flash_triton: {type(e).__name__}: {e}"
    return kernel.why_unsupported(q, k, v, spec, platform=platform)


def _kernel_run(q, k, v, *, spec):
    return load_kernel().flash_attention(q, k, v, spec=spec)


IMPLEMENTATIONS: dict[Impl, Implementation] = {
    Impl.REFERENCE: Implementation(Impl.REFERENCE, reference.why_unsupported,
                                   reference.reference_attention),
    Impl.XLA_CHUNKED: Implementation(Impl.XLA_CHUNKED, xla_chunked.why_unsupported,
                                     xla_chunked.chunked_attention),
    Impl.BANDED: Implementation(Impl.BANDED, banded.why_unsupported, banded.banded_attention,
                                why_slower=banded.why_slower),
    Impl.PALLAS_TRITON: Implementation(Impl.PALLAS_TRITON, _kernel_why_unsupported, _kernel_run),
}


def preference_order(platform: str, length: int, spec: AttentionSpec) -> tuple[Impl, ...]:
    """Ordered implementations the dispatcher tries on ``platform`` for ``length``.

    GPU: the kernel first. CPU: the reference first up to ``CPU_REFERENCE_MAX_LENGTH``
    (``attnlab.ops.attention.tuning``), last above. The band is a candidate, before
    the chunked loop, only when the spec has a window.
    """
    if platform in GPU_PLATFORMS:
        order = (Impl.PALLAS_TRITON, Impl.BANDED, Impl.XLA_CHUNKED, Impl.REFERENCE)
    elif platform == "cpu" and length <= CPU_REFERENCE_MAX_LENGTH:
        order = (Impl.REFERENCE, Impl.BANDED, Impl.XLA_CHUNKED)
    else:
        order = (Impl.BANDED, Impl.XLA_CHUNKED, Impl.REFERENCE)
    if spec.window is None:
        order = tuple(name for name in order if name is not Impl.BANDED)
    return order


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
    platform = platform if platform is not None else jax.default_backend()
    if impl is not None:
        name = Impl(impl)
        reason = IMPLEMENTATIONS[name].why_unsupported(q, k, v, spec, platform=platform)
        if reason is not None:
            raise AttentionUnsupportedError(
                f"attention(impl={name.value!r}) cannot run on {platform}: {reason}. "
                f"Pass impl=None to let the dispatcher choose, or change the inputs/spec.")
        return DispatchDecision(chosen=name, platform=platform)
    declined = []
    for name in preference_order(platform, q.shape[1], spec):
        candidate = IMPLEMENTATIONS[name]
        reason = (candidate.why_unsupported(q, k, v, spec, platform=platform)
                  or candidate.why_slower(q, k, v, spec, platform=platform))
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
      impl: ``"reference"``, ``"xla_chunked"``, ``"banded"``, ``"pallas_triton"`` (or
        :class:`Impl`) to pin an implementation; None to dispatch by platform,
        length and spec.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q.dtype``.

    Raises:
      AttentionUnsupportedError: a pinned implementation cannot run these inputs.
    """
    decision = explain_dispatch(q, k, v, spec=spec, impl=impl)
    if impl is None:
        _log_decision(decision, q, k)
    return IMPLEMENTATIONS[decision.chosen].run(q, k, v, spec=spec)


#: call signatures whose dispatch decision was logged already (one line per signature)
_LOGGED: set[tuple] = set()


def _log_decision(decision: DispatchDecision, q, k) -> None:
    """Log the dispatcher's choice once per distinct call signature (shapes, dtype,
    platform, choice): at DEBUG when it is the platform's first preference, at INFO
    when a preferred implementation declined (the reasons say why). Passing by the
    band is routine (it is a specialisation, tried for every window) and stays at
    DEBUG."""
    key = (decision.platform, decision.chosen, tuple(q.shape), tuple(k.shape), str(q.dtype),
           decision.declined)
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    news = any(name is not Impl.BANDED for name, _ in decision.declined)
    level = logging.INFO if news else logging.DEBUG
    log.log(level, "attention: using %s on %s for q%s k%s %s (declined: %s)", decision.chosen.value,
            decision.platform, tuple(q.shape), tuple(k.shape), q.dtype,
            ", ".join(f"{n.value}: {r}" for n, r in decision.declined) or "none")
