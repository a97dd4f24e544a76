"""Model zoo: every family shares the event encoder, blocks and heads; chosen by config name.

Families: ``vanilla`` (SASRec), ``time_decay``, ``sparse``, ``linear`` (attention
layers in :mod:`attnlab.models.attention_layers`) and ``lstm`` (a whole backbone in
:mod:`attnlab.models.backbones`). See ``docs/models.md``.
"""

from attnlab.models.inspection import decay_horizons, decay_slopes, forgetting_factors
from attnlab.models.registry import (
    ATTENTION_FAMILIES, FAMILIES, ModelDims, build_model, register_backbone, register_family,
)
from attnlab.models.sequence_model import ItemHead, SequenceModel, StreamScores

__all__ = [
    "ATTENTION_FAMILIES", "FAMILIES", "ItemHead", "ModelDims", "SequenceModel", "StreamScores",
    "build_model", "decay_horizons", "decay_slopes", "forgetting_factors", "register_backbone",
    "register_family",
]
