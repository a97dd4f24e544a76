"""The ``model`` config group, typed: :class:`ModelConfig` holds every default once.

The keys every family reads are fields here; a family's own options (under
``attention:`` for attention families, ``backbone:`` for whole-backbone families) are
the keyword arguments of its layer or backbone, whose signature holds their defaults
(:data:`attnlab.models.registry.FAMILY_OPTIONS`). ``configs/model/<family>.yaml`` states
the same values for readers; ``tests/train/test_typed_configs.py`` proves they agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from attnlab.typed_config import ConfigError, TypedConfig, unknown_keys

ITEM_HEADS = ("softmax", "copy")         # attnlab.models.sequence_model.ItemHead
ENCODERS = ("causal", "cutoff_relative", "event_local")  # attnlab.models.encoder.EncoderMode
CHURN_POOLS = ("last", "attention")


@dataclasses.dataclass(frozen=True)
class ModelConfig(TypedConfig):
    """A model: the shared encoder and heads, and the family's backbone between them."""

    GROUP: ClassVar[str] = "model"
    CHOICES: ClassVar[dict] = {"item_head": ITEM_HEADS, "encoder": ENCODERS, "churn_pool": CHURN_POOLS}

    name: str = "vanilla"            # the family (attnlab.models.registry.FAMILIES)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2                 # attention heads (unused by lstm)
    max_len: int = 200               # events per window
    dropout: float = 0.2
    encoder: str = "cutoff_relative"  # causal | cutoff_relative | event_local; the YAML files use ${task.encoder}
    continuous_std: float | None = 0.02  # init scale of the continuous-feature projection (null = fan-in default)
    churn_pool: str = "attention"    # churn head: last | attention (the cut-off state attends over the window)
    history_memory: int = 64         # copy head: also point at the K most purchased items older than the window
    history_summary: bool = False    # churn head: also read the whole history's RFM summary (frequency, tenure, recency)
    summary_bgnbd: bool = False      # ... and BG/NBD's P(alive), P(no purchase), expected purchases (the task's key)
    item_head: str = "copy"          # copy (pointer over the history + catalogue softmax) | softmax (plain SASRec)
    gap_buckets: int = 0             # > 0: a learned embedding of the bucketed gap to the previous event
    attention: dict[str, Any] | None = None  # the attention layer's options (attention families)
    backbone: dict[str, Any] | None = None   # the backbone's options (whole-backbone families)

    def check(self) -> None:
        from attnlab.models.registry import FAMILIES, FAMILY_OPTIONS, validate_family_options

        if self.name not in FAMILIES:
            raise KeyError(f"unknown model family {self.name!r}; registered: {sorted(FAMILIES)}. "
                           "Pick one with model=<name>.")
        for key, low, what in (("d_model", 1, "the model width"), ("n_layers", 1, "stacked blocks"),
                               ("n_heads", 1, "attention heads"), ("max_len", 1, "events per window"),
                               ("history_memory", 0, "0 = off"), ("gap_buckets", 0, "0 = off")):
            if getattr(self, key) < low:
                raise self.bad(key, getattr(self, key), f"must be an integer >= {low} ({what})")
        section, options = FAMILY_OPTIONS[self.name]
        if section == "attention" and self.d_model % self.n_heads:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0]
            raise self.bad("n_heads", self.n_heads,
                           f"must divide model.d_model={self.d_model} (heads split the width); "
                           f"allowed: {divisors[:12]}{' ...' if len(divisors) > 12 else ''}")
        if not 0.0 <= self.dropout < 1.0:
            raise self.bad("dropout", self.dropout, "a probability in [0, 1)")
        if self.continuous_std is not None and not self.continuous_std > 0:
            raise self.bad("continuous_std", self.continuous_std,
                           "a positive init scale, or null for flax's fan-in default")
        if self.history_memory and self.item_head != "copy":
            raise ConfigError(
                f"model.history_memory={self.history_memory} feeds the copy head, but model.item_head="
                f"{self.item_head} has none: set model.history_memory=0 with the softmax head (or "
                "model.item_head=copy).")
        other = "backbone" if section == "attention" else "attention"
        if getattr(self, other):
            raise unknown_keys("model", [f"model.{other}"], sorted(_FIELDS - {other}), self.name)
        opts = self.options
        bad = sorted(set(opts) - options)
        if bad:
            raise unknown_keys(f"model.{section}", [f"model.{section}.{k}" for k in bad], sorted(options), self.name)
        validate_family_options(self.name, opts)

    @property
    def options(self) -> dict[str, Any]:
        """The family's options (the ``attention:`` or ``backbone:`` section; {} when absent)."""
        return dict(self.attention or self.backbone or {})


_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def model_config(cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """``cfg`` typed and checked (a :class:`ModelConfig` passes through)."""
    return cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
