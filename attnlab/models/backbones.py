"""Backbones: what sits between the shared event encoder and the shared heads.

A backbone maps encoded events ``x float32[batch, length, d_model]`` (zeros at
padding) and ``context`` (``lengths int32[batch]``, ``time float32[batch, length]``)
to hidden states of the same shape. Attention families use :class:`TransformerStack`
(``n_layers`` shared :class:`TransformerBlock` s around the family's attention layer);
a family may instead supply a whole backbone, like the :class:`LSTMBackbone` baseline.

Streaming (optional): ``init_state(batch)`` and ``step(state, x [batch, d], valid
bool[batch]) -> (state, [batch, d])`` score one new event per customer without
re-reading the history. Rows with ``valid = False`` keep their state.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.encoder import TransformerBlock


class TransformerStack(nnx.Module):
    """``n_layers`` pre-LN transformer blocks around one attention family.

    Args:
      d_model: width.
      n_layers: blocks.
      attention_factory: ``(d_model, rngs) -> attention layer``.
      dropout: residual / FFN dropout.
    """

    def __init__(self, d_model: int, *, n_layers: int, attention_factory: Callable, dropout: float,
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([
            TransformerBlock(d_model, attention_factory(d_model, rngs), dropout=dropout, rngs=rngs)
            for _ in range(n_layers)
        ])

    def __call__(self, x, context, *, rngs=None):
        for block in self.blocks:
            x = block(x, context, rngs=rngs)
        return x

    def init_state(self, batch: int) -> tuple:
        return tuple(block.init_state(batch) for block in self.blocks)

    def step(self, state: tuple, x: jax.Array, valid: jax.Array):
        new = []
        for block, s in zip(self.blocks, state):
            s, x = block.step(s, x, valid)
            new.append(s)
        return tuple(new), x


class LSTMLayer(nnx.Module):
    """One LSTM layer (Hochreiter & Schmidhuber, 1997; forget gate of Gers et al., 2000).

    ``i, f, g, o = split(W x_t + U h_{t-1} + b)``; ``c_t = s(f) c_{t-1} + s(i) tanh(g)``;
    ``h_t = s(o) tanh(c_t)``. The input projection is one matmul over all positions;
    only ``U h`` runs inside the scan. The forget-gate bias starts at 1.
    """

    def __init__(self, d_in: int, d_hidden: int, *, rngs: nnx.Rngs):
        self.d_hidden = d_hidden
        self.ih = nnx.Linear(d_in, 4 * d_hidden, rngs=rngs)
        self.hh = nnx.Linear(d_hidden, 4 * d_hidden, use_bias=False, rngs=rngs,
                             kernel_init=nnx.initializers.orthogonal())
        self.ih.bias[...] = self.ih.bias[...].at[d_hidden:2 * d_hidden].set(1.0)

    def cell(self, carry, xw, valid):
        """``carry = (h, c)`` each ``[b, d]``, ``xw = W x_t + b`` ``[b, 4d]`` -> new carry."""
        h, c = carry
        gates = xw + self.hh(h)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        keep = valid[:, None]
        return (jnp.where(keep, h_new, h), jnp.where(keep, c_new, c))

    def zeros(self, batch: int):
        z = jnp.zeros((batch, self.d_hidden), jnp.float32)
        return (z, z)

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """``x [b, l, d_in]``, ``valid bool[b, l]`` -> ``[b, l, d_hidden]`` (0 at padding)."""
        xw = self.ih(x)

        def body(carry, xs):  # reads (never writes) parameters: plain lax.scan is fine
            carry = self.cell(carry, *xs)
            return carry, carry[0]

        _, h = jax.lax.scan(body, self.zeros(x.shape[0]), (jnp.moveaxis(xw, 1, 0), valid.T))
        return jnp.where(valid[..., None], jnp.moveaxis(h, 0, 1), 0.0)


class LSTMBackbone(nnx.Module):
    """Stacked LSTM baseline replacing the transformer blocks (same encoder and heads).

    Right padding is respected: padded steps do not change the carry and output 0, so
    the state after the last valid event is the customer's state. Between layers:
    residual connection, LayerNorm and dropout.

    Args:
      d_model: width (input = hidden size).
      n_layers: stacked LSTM layers.
      dropout: between layers.
    """

    def __init__(self, d_model: int, *, n_layers: int, dropout: float, rngs: nnx.Rngs):
        self.layers = nnx.List([LSTMLayer(d_model, d_model, rngs=rngs) for _ in range(n_layers)])
        self.norms = nnx.List([nnx.LayerNorm(d_model, rngs=rngs) for _ in range(n_layers)])
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, context, *, rngs=None):
        pos = jnp.arange(x.shape[1])[None, :]
        valid = pos < context["lengths"][:, None]
        for layer, norm in zip(self.layers, self.norms):
            h = layer(norm(x), valid)
            x = x + self.dropout(h, rngs=rngs, deterministic=rngs is None)
        return jnp.where(valid[..., None], x, 0.0)

    def init_state(self, batch: int) -> tuple:
        return tuple(layer.zeros(batch) for layer in self.layers)

    def step(self, state: tuple, x: jax.Array, valid: jax.Array):
        new = []
        for layer, norm, carry in zip(self.layers, self.norms, state):
            carry = layer.cell(carry, layer.ih(norm(x)), valid)
            new.append(carry)
            x = x + carry[0]
        return tuple(new), x
