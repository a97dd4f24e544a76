"""Multi-head self-attention layers: one base, one subclass per attention family.

A softmax family only decides the :class:`attnlab.ops.AttentionSpec` (and owns any
parameters that spec needs, e.g. learnable decay slopes); projections and the call
into the shared op :func:`attnlab.ops.attention` are common. The linear family swaps
the op for :mod:`attnlab.ops.linear` and can also stream (``init_state`` /
``step``). Every layer maps ``(x [batch, length, d_model], context) -> [batch, length,
d_model]`` where ``context`` carries ``lengths int32[batch]`` and ``time
float32[batch, length]`` (days relative to the cutoff, <= 0).

Explanations read the weights from this same code. :meth:`SelfAttention.attention_weights`
returns the normalised ``float32[batch, heads, L, L]`` weights a layer would use (its own
spec: mask, window, decay; for linear attention its own feature map, forgetting factor and
``eps``). The fast path (flash / chunked op, no ``L x L`` array) is the default; a view
``nnx.view(model, record_weights=True)`` switches every layer to the materialising path,
which computes its output *from* those weights and sows ``{"weights", "inputs",
"outputs"}`` as ``nnx.Intermediate`` ``"recorded"``, so ``nnx.capture`` around the model's
own forward pass (any block, any residual) returns the weights that forward used
(:func:`attnlab.explain.trace_attention`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.ops import AttentionSpec, DecayFn, attention
from attnlab.ops import linear as lin
from attnlab.ops.attention.reference import reference_attention

#: ``nnx.Intermediate`` name under which a layer in ``record_weights`` mode sows its weights.
RECORDED = "recorded"


class SelfAttention(nnx.Module):
    """Causal multi-head self-attention over right-padded histories.

    Args:
      d_model: model width (divisible by ``n_heads``).
      n_heads: attention heads.
      impl: pin an attention implementation (``reference``, ``xla_chunked``,
        ``pallas_triton``) or None for the dispatcher.

    ``record_weights`` (static, False): see the module docstring; set it with
    ``nnx.view(model, record_weights=True)``, never for training.
    """

    def __init__(self, d_model: int, *, n_heads: int, impl: str | None = None, rngs: nnx.Rngs):
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.impl = impl
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)
        self.record_weights = False

    def set_view(self, record_weights: bool | None = None):
        """Used by ``nnx.view(model, record_weights=True)`` (see the module docstring)."""
        if record_weights is not None:
            self.record_weights = bool(record_weights)

    def spec(self, context: dict[str, jax.Array]) -> AttentionSpec:
        return AttentionSpec(causal=True, lengths=context["lengths"])

    def project(self, x: jax.Array):
        """``[..., d] -> q, k, v`` each ``[..., heads, head_dim]``."""
        qkv = self.qkv(x).reshape(x.shape[:-1] + (3, self.n_heads, self.head_dim))
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def _attend(self, q, k, v, context) -> jax.Array:
        """Fast path: ``[b, l, heads, head_dim]`` output, weights never materialised."""
        return attention(q, k, v, spec=self.spec(context), impl=self.impl)

    def _weighted(self, q, k, v, context) -> tuple[jax.Array, jax.Array]:
        """Materialising path: ``(output [b, l, heads, head_dim], float32[b, heads, l, l]
        weights)``, the output computed from the weights."""
        return reference_attention(q, k, v, spec=self.spec(context), return_weights=True)

    def attention_weights(self, x: jax.Array, context: dict[str, jax.Array]) -> jax.Array:
        """``float32[batch, heads, L, L]`` normalised (query, key) weights this layer uses
        on ``x [batch, L, d_model]``; zero on masked pairs and padded rows."""
        return self._weighted(*self.project(x), context)[1]

    def __call__(self, x: jax.Array, context: dict[str, jax.Array]) -> jax.Array:
        b, l, d = x.shape
        q, k, v = self.project(x)
        if not self.record_weights:
            return self.out(self._attend(q, k, v, context).reshape(b, l, d))
        o, w = self._weighted(q, k, v, context)
        a = self.out(o.reshape(b, l, d))
        self.sow(nnx.Intermediate, RECORDED, {"weights": w, "inputs": x, "outputs": a})
        return a

    def init_state(self, batch: int):
        raise NotImplementedError(
            f"{type(self).__name__} is softmax attention: scoring a new event needs every past "
            "key, so it has no O(1) streaming state. Use model=linear (or model=lstm) to stream.")

    def step(self, state, x, valid):
        return self.init_state(x.shape[0])


class VanillaAttention(SelfAttention):
    """SASRec-style causal softmax attention (Kang & McAuley, 2018)."""


class TimeDecayAttention(SelfAttention):
    """Softmax attention with a learnable per-head penalty on the real time gap.

    Score ``q_i.k_j / sqrt(d) - slope_h * g(|t_i - t_j| / 1 day)`` with ``slope_h =
    softplus(raw_h) >= 0`` and ``g`` = ``log1p`` or ``linear`` (:class:`DecayFn`),
    computed inside the attention op (never materialised). Slopes are initialised
    geometrically from ``slope_max`` (head 0: mostly the last days) down to
    ``slope_min`` (last head: looks back about a year), so heads start with different
    horizons and learn their own. Real-time relative attention in the spirit of
    TiSASRec (Li, Wang & McAuley, 2020), with a parametric monotone decay instead of
    TiSASRec's learned per-bucket interval embeddings; ALiBi-like with ``linear``.

    Args:
      decay_fn: ``"log1p"`` or ``"linear"``.
      slope_min, slope_max: initial slope range, per day.
    """

    def __init__(self, d_model: int, *, n_heads: int, impl: str | None = None,
                 decay_fn: str = "log1p", slope_min: float = 1.0 / 365.0, slope_max: float = 1.0,
                 rngs: nnx.Rngs):
        super().__init__(d_model, n_heads=n_heads, impl=impl, rngs=rngs)
        if not 0 < slope_min <= slope_max:
            raise ValueError(f"time_decay: need 0 < slope_min <= slope_max, got {slope_min}, {slope_max}.")
        self.decay_fn = DecayFn(decay_fn)
        init = jnp.geomspace(slope_max, slope_min, n_heads) if n_heads > 1 else jnp.array([slope_max])
        self.raw_slopes = nnx.Param(jnp.log(jnp.expm1(init)).astype(jnp.float32))  # softplus^-1

    def slopes(self) -> jax.Array:
        """``float32[heads]`` current decay slopes (per day, >= 0)."""
        return jax.nn.softplus(self.raw_slopes[...])

    def spec(self, context):
        return AttentionSpec(causal=True, lengths=context["lengths"], timestamps=context["time"],
                             decay_slopes=self.slopes(), decay_fn=self.decay_fn, time_unit=1.0)


class SparseAttention(SelfAttention):
    """Local causal window of the last ``window`` events plus ``num_global`` leading
    positions every query sees (Longformer, Beltagy, Peters & Cohan, 2020), computed by
    the attention op from the spec (block-skipping / banded; never ``length^2``).

    Args:
      window: local window ``W >= 1`` (the query itself counts).
      num_global: ``G`` leading (oldest) positions of the window that every query sees.
    """

    def __init__(self, d_model: int, *, n_heads: int, impl: str | None = None, window: int = 64,
                 num_global: int = 4, rngs: nnx.Rngs):
        super().__init__(d_model, n_heads=n_heads, impl=impl, rngs=rngs)
        self.window = int(window)
        self.num_global = int(num_global)
        AttentionSpec(window=self.window, num_global=self.num_global)  # validate early

    def spec(self, context):
        return AttentionSpec(causal=True, lengths=context["lengths"], window=self.window,
                             num_global=self.num_global)


class LinearAttention(SelfAttention):
    """Causal linear attention with ``phi = elu + 1`` (Katharopoulos et al., 2020) and an
    optional learnable per-head forgetting factor ``gamma_h = sigmoid(raw_h)`` in (0, 1)
    (RetNet-style decay, Sun et al., 2023), via :mod:`attnlab.ops.linear`.

    Training uses the chunked parallel form; :meth:`step` is the O(1)-per-event
    recurrence on a per-customer state.

    Its weights (:meth:`attention_weights`) are the implied normalised ones,
    ``w_ij = gamma^(i-j) phi(q_i).phi(k_j) / (sum_j' ... + eps)``: exact for the layer
    output, rows sum to ``1 - O(eps)``.

    Args:
      decay: ``"learned"`` (gamma per head, initialised ``1 - 2^-(3 + h)`` so heads
        range from a ~8-event to a longer memory) or ``"none"`` (gamma = 1).
      chunk: chunk size ``C`` of the parallel form.
    """

    #: added to the normaliser, in every form (parallel, streaming, implied weights)
    eps: float = 1e-6

    def __init__(self, d_model: int, *, n_heads: int, decay: str = "learned", chunk: int = 64,
                 feature_map: str = "elu1", rngs: nnx.Rngs):
        super().__init__(d_model, n_heads=n_heads, impl=None, rngs=rngs)
        if decay not in ("learned", "none"):
            raise ValueError(f"linear: decay must be 'learned' or 'none', got {decay!r}.")
        self.chunk = int(chunk)
        self.feature_map = lin.FeatureMap(feature_map)
        if decay == "learned":
            gamma = 1.0 - 2.0 ** -(3.0 + 2.0 * jnp.arange(n_heads, dtype=jnp.float32))
            self.raw_gamma = nnx.Param(jnp.log(gamma) - jnp.log1p(-gamma))  # logit
        else:
            self.raw_gamma = None

    def log_decay(self) -> jax.Array | None:
        """``float32[heads]`` ``log gamma_h`` or None (no forgetting)."""
        return None if self.raw_gamma is None else jax.nn.log_sigmoid(self.raw_gamma[...])

    def _attend(self, q, k, v, context):
        o, _ = lin.linear_attention(q, k, v, lengths=context["lengths"], log_decay=self.log_decay(),
                                    chunk=self.chunk, feature_map=self.feature_map, eps=self.eps)
        return o

    def _weighted(self, q, k, v, context):
        hi = jax.lax.Precision.HIGHEST
        phi_q, phi_k = self.feature_map(q.astype(jnp.float32)), self.feature_map(k.astype(jnp.float32))
        s = jnp.einsum("bqhd,bkhd->bhqk", phi_q, phi_k, precision=hi)
        length = q.shape[1]
        i, j = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
        log_decay = self.log_decay()
        if log_decay is not None:
            s = s * jnp.exp(log_decay[:, None, None] * jnp.maximum(i - j, 0))[None]
        lengths = context["lengths"]
        valid = (i[None] < lengths[:, None, None]) & (j[None] < lengths[:, None, None]) & (j <= i)[None]
        s = jnp.where(valid[:, None], s, 0.0)
        w = s / (jnp.sum(s, axis=-1, keepdims=True) + self.eps)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, v.astype(jnp.float32), precision=hi).astype(v.dtype)
        return o, w

    def init_state(self, batch: int) -> lin.LinearState:
        return lin.LinearState.zeros(batch, self.n_heads, self.head_dim, self.head_dim)

    def step(self, state: lin.LinearState, x: jax.Array, valid: jax.Array):
        """``x [b, d]``, ``valid bool[b]`` -> ``(state, [b, d])``."""
        q, k, v = self.project(x)
        state, o = lin.linear_attention_step(state, q, k, v, valid=valid, log_decay=self.log_decay(),
                                             feature_map=self.feature_map, eps=self.eps)
        return state, self.out(o.reshape(x.shape))


def decay_horizon_days(slope: float, *, decay_fn: DecayFn, penalty: float = math.log(10.0)) -> float:
    """Time gap (days) at which a head's decay penalty reaches ``penalty`` (default: a
    10x down-weighting): how far back the head effectively looks."""
    if slope <= 0:
        return math.inf
    x = penalty / slope
    if decay_fn is DecayFn.LOG1P:
        return math.expm1(x) if x < 700 else math.inf
    return x
