"""Model zoo: one attention family per layer class, chosen by config name."""

from attnlab.models.registry import ATTENTION_FAMILIES, build_model, register_family
from attnlab.models.sequence_model import SequenceModel

__all__ = ["ATTENTION_FAMILIES", "SequenceModel", "build_model", "register_family"]
