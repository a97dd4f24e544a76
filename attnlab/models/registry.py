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
import inspect
import numbers
from typing import Any, Callable, Iterable, Mapping

from flax import nnx

from attnlab.models.attention_layers import (
    LinearAttention, SparseAttention, TimeDecayAttention, VanillaAttention,
)
from attnlab.models.backbones import LSTMBackbone, TransformerStack
from attnlab.models.config import ModelConfig, model_config
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
BackboneBuilder = Callable[[ModelConfig, ModelDims, nnx.Rngs], nnx.Module]

#: name -> attention layer class (attention families only; kept for inspection).
ATTENTION_FAMILIES: dict[str, Callable[..., nnx.Module]] = {}
#: name -> backbone builder (every family).
FAMILIES: dict[str, BackboneBuilder] = {}
#: name -> (the config section holding the family's options, the option names it accepts):
#: ``("attention", {...})`` for attention families (the layer's keyword arguments),
#: ``("backbone", {...})`` for whole-backbone families.
FAMILY_OPTIONS: dict[str, tuple[str, frozenset[str]]] = {}

#: Keys of a ``model`` config group every family reads (the fields of
#: :class:`attnlab.models.config.ModelConfig`); the family's own options live under
#: :data:`FAMILY_OPTIONS` ``[name][0]``.
MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {"attention", "backbone"}


def _keyword_options(fn: Callable[..., Any], exclude: Iterable[str]) -> frozenset[str]:
    """The keyword arguments ``fn`` accepts, minus those the builder passes itself."""
    params = inspect.signature(getattr(fn, "__init__", fn) if isinstance(fn, type) else fn).parameters.values()
    return frozenset(p.name for p in params
                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in {"self", *exclude})


def _transformer(layer_cls, model_cfg: ModelConfig, dims: ModelDims, rngs: nnx.Rngs):
    options = model_cfg.options

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
    FAMILY_OPTIONS[name] = ("attention", _keyword_options(layer_cls, ("d_model", "n_heads", "rngs")))


def register_backbone(name: str, builder: BackboneBuilder, *, options: Iterable[str] = ()) -> None:
    """Register a family that supplies its whole backbone (e.g. a recurrent baseline);
    ``options``: the keys it reads from the config's ``backbone:`` (anything else there is
    refused by :func:`validate_model_config`)."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    FAMILIES[name] = builder
    FAMILY_OPTIONS[name] = ("backbone", frozenset(options))


def _lstm(model_cfg: ModelConfig, dims: ModelDims, rngs: nnx.Rngs) -> LSTMBackbone:
    return LSTMBackbone(dims.d_model, n_layers=dims.n_layers, dropout=dims.dropout, rngs=rngs,
                        **model_cfg.options)


register_family("vanilla", VanillaAttention)
register_family("time_decay", TimeDecayAttention)
register_family("sparse", SparseAttention)
register_family("linear", LinearAttention)
register_backbone("lstm", _lstm,
                  options=_keyword_options(LSTMBackbone, ("d_model", "n_layers", "dropout", "rngs")))


def _bad(key: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"model.{key}={value!r} is out of range: {rule}.")


def _integer(cfg: Mapping[str, Any], key: str, *, low: int, what: str, section: str = "") -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _bad(section + key, value, f"must be an integer >= {low} ({what})")


def validate_model_config(model_cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """The ``model`` group typed and checked (:class:`attnlab.models.config.ModelConfig`):
    an unknown key or a value that cannot build a model raises, naming the key and the
    allowed range (cheap: no arrays; the trainer calls it before loading data)."""
    return model_config(model_cfg)


def validate_family_options(name: str, opts: dict[str, Any]) -> None:
    """Value checks of a family's options (their keys are checked by :class:`ModelConfig`)."""
    from attnlab.ops.attention import DecayFn, Impl
    from attnlab.ops.linear import FeatureMap

    def choice(key, allowed):
        if key in opts and opts[key] not in allowed:
            raise _bad(f"attention.{key}", opts[key], f"one of {list(allowed)} (model={name})")

    choice("impl", [None, *(i.value for i in Impl)])
    if name == "sparse":
        if "window" in opts:
            _integer(opts, "window", low=1, what="events each query sees", section="attention.")
        if "num_global" in opts:
            _integer(opts, "num_global", low=0, what="leading positions every query sees", section="attention.")
    elif name == "time_decay":
        choice("decay_fn", [d.value for d in DecayFn])
        lo, hi = opts.get("slope_min", 1.0 / 365.0), opts.get("slope_max", 1.0)
        if not (isinstance(lo, numbers.Real) and isinstance(hi, numbers.Real) and 0 < lo <= hi):
            raise ValueError(f"model.attention.slope_min={lo!r}, slope_max={hi!r} are out of range: "
                             "need 0 < slope_min <= slope_max (per day).")
    elif name == "linear":
        choice("decay", ["learned", "none"])
        choice("feature_map", [f.value for f in FeatureMap])
        if "chunk" in opts:
            _integer(opts, "chunk", low=1, what="chunk size of the parallel form", section="attention.")


def build_model(model_cfg: ModelConfig | Mapping[str, Any], *, n_items: int, seed: int) -> SequenceModel:
    """Build a :class:`SequenceModel` from a ``model`` config group.

    Args:
      model_cfg: a :class:`attnlab.models.config.ModelConfig` or a mapping of its keys
        (missing keys take its defaults: the recipe of ``configs/model/*.yaml``); the
        family's options under ``attention:`` (attention families) or ``backbone:``.
      n_items: catalogue size.
      seed: parameter-init seed.
    """
    cfg = model_config(model_cfg)
    dims = ModelDims(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, dropout=float(cfg.dropout))
    return SequenceModel(
        n_items=n_items,
        d_model=cfg.d_model,
        max_len=cfg.max_len,
        dropout=dims.dropout,
        backbone_factory=lambda rngs: FAMILIES[cfg.name](cfg, dims, rngs),
        item_head=ItemHead(cfg.item_head),
        encoder_mode=EncoderMode(cfg.encoder),
        gap_buckets=cfg.gap_buckets,
        continuous_std=None if cfg.continuous_std is None else float(cfg.continuous_std),
        churn_pool=cfg.churn_pool,
        history_memory=cfg.history_memory,
        history_summary=bool(cfg.history_summary),
        summary_bgnbd=bool(cfg.summary_bgnbd),
        rngs=nnx.Rngs(params=seed),
    )
