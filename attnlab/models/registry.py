"""Model registry: families are chosen by config name, never by if/elif chains.

Every family shares the event encoder and the heads; a family supplies the backbone
between them, in one of two ways:

* an attention layer (:func:`register_family`): the backbone is ``n_layers`` shared
  transformer blocks around it; its options come from the config's ``attention:``;
* a whole backbone (:func:`register_backbone`), e.g. the LSTM baseline; its options
  come from the config's ``backbone:``.

Both end up in :data:`FAMILIES` as a :data:`BackboneBuilder`, so :func:`build_model`
does one dictionary lookup.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

from flax import nnx

from attnlab.models.attention_layers import (
    LinearAttention, SparseAttention, TimeDecayAttention, VanillaAttention,
)
from attnlab.models.backbones import LSTMBackbone, TransformerStack
from attnlab.models.encoder import EncoderMode
from attnlab.models.sequence_model import ItemHead, SequenceModel


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """Architecture numbers every backbone receives."""

    d_model: int
    n_layers: int
    n_heads: int
    dropout: float


#: ``(model_cfg, dims, rngs) -> backbone module`` (see :mod:`attnlab.models.backbones`).
BackboneBuilder = Callable[[Mapping[str, Any], ModelDims, nnx.Rngs], nnx.Module]

#: name -> attention layer class (attention families only; kept for inspection).
ATTENTION_FAMILIES: dict[str, Callable[..., nnx.Module]] = {}
#: name -> backbone builder (every family).
FAMILIES: dict[str, BackboneBuilder] = {}


def _transformer(layer_cls, model_cfg: Mapping[str, Any], dims: ModelDims, rngs: nnx.Rngs):
    options = dict(model_cfg.get("attention") or {})

    def factory(d_model, rngs):
        return layer_cls(d_model, n_heads=dims.n_heads, rngs=rngs, **options)

    return TransformerStack(dims.d_model, n_layers=dims.n_layers, attention_factory=factory,
                            dropout=dims.dropout, rngs=rngs)


def register_family(name: str, layer_cls: Callable[..., nnx.Module]) -> None:
    """Register an attention family: ``layer_cls(d_model, *, n_heads, rngs, **attention)``."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    ATTENTION_FAMILIES[name] = layer_cls
    FAMILIES[name] = functools.partial(_transformer, layer_cls)


def register_backbone(name: str, builder: BackboneBuilder) -> None:
    """Register a family that supplies its whole backbone (e.g. a recurrent baseline)."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    FAMILIES[name] = builder


def _lstm(model_cfg: Mapping[str, Any], dims: ModelDims, rngs: nnx.Rngs) -> LSTMBackbone:
    return LSTMBackbone(dims.d_model, n_layers=dims.n_layers, dropout=dims.dropout, rngs=rngs,
                        **dict(model_cfg.get("backbone") or {}))


register_family("vanilla", VanillaAttention)
register_family("time_decay", TimeDecayAttention)
register_family("sparse", SparseAttention)
register_family("linear", LinearAttention)
register_backbone("lstm", _lstm)


def build_model(model_cfg: Any, *, n_items: int, seed: int) -> SequenceModel:
    """Build a :class:`SequenceModel` from a ``model`` config group.

    Args:
      model_cfg: mapping with ``name`` (a registered family), ``d_model``, ``n_layers``,
        ``n_heads``, ``max_len``, ``dropout``, optional ``item_head`` (softmax | copy),
        ``encoder`` (causal | cutoff_relative | event_local; the model configs default
        to ``${task.encoder}``: causal for ranking, cutoff_relative for churn),
        ``gap_buckets`` (0 = off), ``continuous_std`` (0.02 when absent; null = flax's
        fan-in default), and the family's options under ``attention:`` (attention
        families) or ``backbone:``.
      n_items: catalogue size.
      seed: parameter-init seed.
    """
    name = model_cfg["name"]
    if name not in FAMILIES:
        raise KeyError(
            f"unknown model family {name!r}; registered: {sorted(FAMILIES)}. "
            "Pick one with model=<name>."
        )
    dims = ModelDims(d_model=int(model_cfg["d_model"]), n_layers=int(model_cfg["n_layers"]),
                     n_heads=int(model_cfg["n_heads"]), dropout=float(model_cfg["dropout"]))
    return SequenceModel(
        n_items=n_items,
        d_model=dims.d_model,
        max_len=int(model_cfg["max_len"]),
        dropout=dims.dropout,
        backbone_factory=lambda rngs: FAMILIES[name](model_cfg, dims, rngs),
        item_head=ItemHead(model_cfg.get("item_head", "softmax")),
        encoder_mode=EncoderMode(model_cfg.get("encoder") or "cutoff_relative"),
        gap_buckets=int(model_cfg.get("gap_buckets", 0) or 0),
        continuous_std=None if (std := model_cfg.get("continuous_std", 0.02)) is None else float(std),
        churn_pool=str(model_cfg.get("churn_pool") or "last"),
        history_memory=int(model_cfg.get("history_memory") or 0),
        rngs=nnx.Rngs(params=seed),
    )
