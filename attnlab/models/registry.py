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
#: name -> (the config section holding the family's options, the option names it accepts):
#: ``("attention", {...})`` for attention families (the layer's keyword arguments),
#: ``("backbone", {...})`` for whole-backbone families.
FAMILY_OPTIONS: dict[str, tuple[str, frozenset[str]]] = {}

#: Keys of a ``model`` config group every family reads (``build_model`` and the trainer);
#: the family's own options live under :data:`FAMILY_OPTIONS` ``[name][0]``.
MODEL_KEYS = frozenset({
    "name", "d_model", "n_layers", "n_heads", "max_len", "dropout", "item_head", "encoder",
    "gap_buckets", "continuous_std", "churn_pool", "history_memory",
})
ITEM_HEADS = tuple(h.value for h in ItemHead)
ENCODERS = tuple(m.value for m in EncoderMode)
CHURN_POOLS = ("last", "attention")


def _keyword_options(fn: Callable[..., Any], exclude: Iterable[str]) -> frozenset[str]:
    """The keyword arguments ``fn`` accepts, minus those the builder passes itself."""
    params = inspect.signature(getattr(fn, "__init__", fn) if isinstance(fn, type) else fn).parameters.values()
    return frozenset(p.name for p in params
                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in {"self", *exclude})


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
    FAMILY_OPTIONS[name] = ("attention", _keyword_options(layer_cls, ("d_model", "n_heads", "rngs")))


def register_backbone(name: str, builder: BackboneBuilder, *, options: Iterable[str] = ()) -> None:
    """Register a family that supplies its whole backbone (e.g. a recurrent baseline);
    ``options``: the keys it reads from the config's ``backbone:`` (anything else there is
    refused by :func:`validate_model_config`)."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    FAMILIES[name] = builder
    FAMILY_OPTIONS[name] = ("backbone", frozenset(options))


def _lstm(model_cfg: Mapping[str, Any], dims: ModelDims, rngs: nnx.Rngs) -> LSTMBackbone:
    return LSTMBackbone(dims.d_model, n_layers=dims.n_layers, dropout=dims.dropout, rngs=rngs,
                        **dict(model_cfg.get("backbone") or {}))


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


def validate_model_config(model_cfg: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the key and the allowed range for any value of a
    ``model`` config group that cannot build a model (cheap: no arrays; the trainer calls
    it before loading data). Unknown keys are checked by
    :func:`attnlab.train.config_check.check_config` against the group's YAML."""
    name = model_cfg.get("name")
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}. "
                       "Pick one with model=<name>.")
    for key in ("name", "d_model", "n_layers", "n_heads", "max_len", "dropout"):
        if key not in model_cfg:
            raise ValueError(f"model.{key} is missing (model={name}); configs/model/{name}.yaml sets it.")
    _integer(model_cfg, "d_model", low=1, what="the model width")
    _integer(model_cfg, "n_layers", low=1, what="stacked blocks")
    _integer(model_cfg, "n_heads", low=1, what="attention heads")
    _integer(model_cfg, "max_len", low=1, what="events per window")
    section, _ = FAMILY_OPTIONS[name]
    if section == "attention" and model_cfg["d_model"] % model_cfg["n_heads"]:
        divisors = [h for h in range(1, model_cfg["d_model"] + 1) if model_cfg["d_model"] % h == 0]
        raise _bad("n_heads", model_cfg["n_heads"],
                   f"must divide model.d_model={model_cfg['d_model']} (heads split the width); "
                   f"allowed: {divisors[:12]}{' ...' if len(divisors) > 12 else ''}")
    dropout = model_cfg["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise _bad("dropout", dropout, "a probability in [0, 1)")
    for key in ("history_memory", "gap_buckets"):
        if model_cfg.get(key) is not None:
            _integer(model_cfg, key, low=0, what="0 = off")
    std = model_cfg.get("continuous_std", 0.02)
    if std is not None and (isinstance(std, bool) or not isinstance(std, numbers.Real) or not std > 0):
        raise _bad("continuous_std", std, "a positive init scale, or null for flax's fan-in default")
    for key, allowed, default in (("item_head", ITEM_HEADS, "softmax"), ("encoder", ENCODERS, None),
                                  ("churn_pool", CHURN_POOLS, None)):
        value = model_cfg.get(key, default)
        if value is not None and value not in allowed:
            raise _bad(key, value, f"one of {list(allowed)}")
    if model_cfg.get("history_memory") and model_cfg.get("item_head", "softmax") != "copy":
        raise ValueError(
            f"model.history_memory={model_cfg['history_memory']} feeds the copy head, but "
            f"model.item_head={model_cfg.get('item_head', 'softmax')} has none: set model.history_memory=0 "
            "with the softmax head (or model.item_head=copy).")
    _validate_family_options(name, dict(model_cfg.get(section) or {}))


def _validate_family_options(name: str, opts: dict[str, Any]) -> None:
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
    validate_model_config(model_cfg)
    name = model_cfg["name"]
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
