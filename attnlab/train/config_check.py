"""Unknown keys in the ``task`` and ``model`` config groups fail before any work.

Hydra lets ``+model.dropuot=0.1`` or ``+task.horizn=4W`` through (``+`` adds a key), and
nothing reads them: the run would silently train the defaults. :func:`check_config`
refuses such keys with the group, the key and the keys that are allowed.

The allowed keys of a group are the keys of its YAML defaults
(``configs/<group>/<name>.yaml``, when the repository's ``configs/`` is there) plus the
optional keys the code reads: :data:`attnlab.models.registry.MODEL_KEYS` and the
family's options (:data:`attnlab.models.registry.FAMILY_OPTIONS`: the attention layer's
keyword arguments under ``model.attention``, a backbone's under ``model.backbone``), and
the fields of each typed task config (:mod:`attnlab.train.task_config`).
``tests/train/test_config_check.py`` checks that every key the code reads is allowed and
that no YAML default is a key nothing reads. The trainer group is typed separately
(:class:`attnlab.train.optim.TrainerConfig`); value ranges are checked by
:func:`attnlab.models.registry.validate_model_config` and the task constructors.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Mapping

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


@functools.lru_cache(maxsize=None)
def yaml_keys(group: str, name: str) -> dict[str, frozenset[str]]:
    """``{"": top-level keys, "<section>": its keys, ...}`` of ``configs/<group>/<name>.yaml``
    (empty when the file is not there, e.g. an installed package without the repository)."""
    path = CONFIGS_DIR / group / f"{name}.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    out = {"": frozenset(cfg)}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out[key] = frozenset(value)
    return out


def allowed_keys(group: str, name: str) -> dict[str, frozenset[str]]:
    """``{"": allowed top-level keys, "<section>": allowed keys of that mapping}``."""
    from attnlab.models.registry import FAMILY_OPTIONS, MODEL_KEYS
    from attnlab.train.task_config import TASK_CONFIGS, SampledSoftmaxConfig

    if group == "model":
        section, options = FAMILY_OPTIONS[name]
        code = {"": MODEL_KEYS | {section}, section: options}
    elif group == "task":
        cls = TASK_CONFIGS[name]
        code = {"": frozenset(f.name for f in dataclasses.fields(cls)),
                "sampled_softmax": frozenset(f.name for f in dataclasses.fields(SampledSoftmaxConfig))}
        if "sampled_softmax" not in code[""]:
            del code["sampled_softmax"]
    else:
        raise ValueError(f"no key check for config group {group!r}")
    from_yaml = yaml_keys(group, name)
    return {k: code.get(k, frozenset()) | from_yaml.get(k, frozenset()) for k in {*code, *from_yaml}}


def _unknown(group: str, name: str, where: str, keys: list[str], allowed: frozenset[str]) -> ValueError:
    dotted = [f"{group}.{where}{k}" for k in keys]
    hint = (f"Remove {'it' if len(keys) == 1 else 'them'} (a typo? `+{dotted[0]}=...` adds a key nothing "
            "reads, so the run would silently use the default)")
    return ValueError(f"unknown key(s) {dotted} in config group {group} ({group}={name}); allowed keys of "
                      f"{group}.{where.rstrip('.') or '*'}: {sorted(allowed)}. {hint}; "
                      f"configs/{group}/{name}.yaml documents each.")


def check_group_keys(group: str, cfg: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming any key of ``cfg`` (the ``group`` section of a resolved
    config) that the chosen ``group`` file and the code do not define."""
    name = cfg.get("name")
    if group == "model":
        from attnlab.models.registry import FAMILIES

        if name not in FAMILIES:
            raise KeyError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}. "
                           "Pick one with model=<name>.")
    else:
        from attnlab.train.task_config import TASK_CONFIGS

        if name not in TASK_CONFIGS:
            raise KeyError(f"unknown task {name!r}; available: {sorted(TASK_CONFIGS)}. Pick one with task=<name>.")
    allowed = allowed_keys(group, name)
    top = allowed[""]
    bad = sorted(set(cfg) - top)
    if bad:
        raise _unknown(group, name, "", bad, top)
    for section, keys in allowed.items():
        value = cfg.get(section) if section else None
        if section and isinstance(value, Mapping):
            bad = sorted(set(value) - keys)
            if bad:
                raise _unknown(group, name, f"{section}.", bad, keys)


def check_config(c: Mapping[str, Any]) -> None:
    """Keys of the ``task`` and ``model`` groups, then the model's value ranges (the task's
    are checked when :func:`attnlab.train.tasks.make_task` builds it)."""
    from attnlab.models.registry import validate_model_config

    check_group_keys("task", c["task"])
    check_group_keys("model", c["model"])
    validate_model_config(c["model"])
