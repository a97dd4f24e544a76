"""Model registry: families are chosen by config name, never by if/elif chains."""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx

from attnlab.models.attention_layers import VanillaAttention
from attnlab.models.sequence_model import ItemHead, SequenceModel

# name -> (attention layer class). Families register here.
ATTENTION_FAMILIES: dict[str, Callable[..., nnx.Module]] = {
    "vanilla": VanillaAttention,
}


def register_family(name: str, layer_cls: Callable[..., nnx.Module]) -> None:
    if name in ATTENTION_FAMILIES:
        raise ValueError(f"attention family {name!r} is already registered")
    ATTENTION_FAMILIES[name] = layer_cls


def build_model(model_cfg: Any, *, n_items: int, seed: int) -> SequenceModel:
    """Build a :class:`SequenceModel` from a ``model`` config group.

    Args:
      model_cfg: mapping with ``name`` (a registered family), ``d_model``, ``n_layers``,
        ``n_heads``, ``max_len``, ``dropout``, optional ``attention`` (kwargs for the
        family's layer, e.g. ``impl``).
      n_items: catalogue size.
      seed: parameter-init seed.
    """
    name = model_cfg["name"]
    if name not in ATTENTION_FAMILIES:
        raise KeyError(
            f"unknown model family {name!r}; registered: {sorted(ATTENTION_FAMILIES)}. "
            "Pick one with model=<name>."
        )
    layer_cls = ATTENTION_FAMILIES[name]
    layer_kwargs = dict(model_cfg.get("attention") or {})
    n_heads = int(model_cfg["n_heads"])

    def factory(d_model, rngs):
        return layer_cls(d_model, n_heads=n_heads, rngs=rngs, **layer_kwargs)

    return SequenceModel(
        n_items=n_items,
        d_model=int(model_cfg["d_model"]),
        n_layers=int(model_cfg["n_layers"]),
        max_len=int(model_cfg["max_len"]),
        dropout=float(model_cfg["dropout"]),
        attention_factory=factory,
        item_head=ItemHead(model_cfg.get("item_head", "softmax")),
        rngs=nnx.Rngs(params=seed),
    )
