"""Causal linear attention with an optional per-head forgetting factor.

Linear attention (Katharopoulos, Vyas, Pappas & Fleuret, 2020, "Transformers are
RNNs") replaces ``softmax(q k^T)`` by a positive feature map ``phi`` (here
``elu(x) + 1``), so that causal attention becomes a recurrence over a fixed-size state

    S_t = gamma_t * S_{t-1} + phi(k_t) v_t^T      [heads, d_k, d_v]
    z_t = gamma_t * z_{t-1} + phi(k_t)            [heads, d_k]
    o_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

with ``gamma_t = gamma_h`` in ``(0, 1]`` a per-head forgetting factor (the decay of
RetNet, Sun et al., 2023; ``gamma_h = 1`` is plain linear attention). Here the
normalised (Katharopoulos) form is kept, so the output is a decayed weighted average
of past values.

Two forms compute the same function:

* :func:`linear_attention` (module ``chunked``) -- chunked parallel form for
  training: inside a chunk of ``C`` positions a causal ``C x C`` score block; across
  chunks the carried state. Memory O(length * C + chunks * d_k * d_v), never
  O(length^2).
* :func:`linear_attention_step` / :func:`linear_attention_recurrent` (module
  ``recurrent``) -- the recurrence, O(1) work and memory per new event (streaming
  scoring).

``base`` holds the feature map and the state; ``reference`` the naive oracle.

Ragged right-padded histories: a position ``t >= lengths[b]`` neither enters the
state (``phi(k_t) = 0``) nor decays it (``gamma_t = 1``), and its output is exactly 0.
So the final state of the parallel form equals the state after the last valid event.

All accumulation is in fp32; outputs are cast back to ``q.dtype``.
"""

from attnlab.ops.linear.base import FeatureMap, LinearState
from attnlab.ops.linear.chunked import linear_attention
from attnlab.ops.linear.recurrent import linear_attention_recurrent, linear_attention_step
from attnlab.ops.linear.reference import linear_attention_reference

__all__ = [
    "FeatureMap",
    "LinearState",
    "linear_attention",
    "linear_attention_step",
    "linear_attention_recurrent",
    "linear_attention_reference",
]
