"""Typed config groups: one dataclass per Hydra group holds every default once.

A group (``trainer``, ``task=<name>``, ``model``) is a frozen dataclass deriving from
:class:`TypedConfig`. :meth:`TypedConfig.from_dict` builds it from the group's resolved
mapping: an unknown key fails (naming the group, the key and the allowed keys: a typo
added with Hydra's ``+`` would otherwise be read by nothing), values are checked
against the field types (``int``, ``float``, ``bool``, ``str``, optional, tuples,
nested groups), then against :attr:`TypedConfig.CHOICES` and the class's own
:meth:`TypedConfig.check` for ranges. Code reads attributes, never
``cfg.get(key, fallback)``, so a default cannot be written twice. The YAML files under
``configs/`` state the same values for readers; ``tests/train/test_typed_configs.py``
proves they equal the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="TypedConfig")


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message names ``group.key``."""


@dataclasses.dataclass(frozen=True)
class TypedConfig:
    """Base of the typed config groups (see the module docstring)."""

    #: the dotted prefix in messages (``trainer``, ``task``, ``model.attention``)
    GROUP: ClassVar[str] = ""
    #: field -> allowed values
    CHOICES: ClassVar[Mapping[str, tuple]] = {}

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any] | None, *, group: str | None = None,
                  choice: str | None = None) -> T:
        """The typed group from a resolved mapping; missing keys take the defaults.

        ``group``: the dotted path in messages (default :attr:`GROUP`); ``choice``: the
        group's chosen file, as in ``task=churn`` (default: the mapping's ``name``)."""
        group = group or cls.GROUP
        d = dict(d or {})
        choice = choice or str(d.get("name") or getattr(cls, "name", "default"))
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise unknown_keys(group, [f"{group}.{k}" for k in unknown], sorted(fields), choice)
        values = {k: _coerce(f"{group}.{k}", v, hints[k], choice) for k, v in d.items()}
        cfg = cls(**values)
        cfg._check_types(hints, group)
        for key, allowed in cls.CHOICES.items():
            if getattr(cfg, key) not in allowed:
                raise cfg.bad(key, getattr(cfg, key), f"one of {list(allowed)}", group=group)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Range checks beyond the field types (raise :meth:`bad`)."""

    def bad(self, key: str, value: Any, rule: str, *, group: str | None = None) -> ConfigError:
        value = list(value) if isinstance(value, tuple) else value  # as written in YAML
        return ConfigError(f"{group or self.GROUP}.{key}={value!r} is out of range: {rule}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (tuples as lists), e.g. to hash or to write into a result."""
        return _plain(dataclasses.asdict(self))

    def _check_types(self, hints: dict[str, Any], group: str) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            rule = _type_rule(value, hints[f.name])
            if rule:
                raise self.bad(f.name, value, rule, group=group)


def unknown_keys(group: str, dotted: list[str], allowed: list[str], choice: str) -> ConfigError:
    """The error for keys nothing reads, naming the group's file and the allowed keys."""
    root = group.split(".")[0]
    where = group if "." in group else f"{group}.*"
    return ConfigError(
        f"unknown key(s) {dotted} in config group {root} ({root}={choice}); allowed keys of {where}: "
        f"{sorted(allowed)}. Remove {'it' if len(dotted) == 1 else 'them'} (a typo? `+{dotted[0]}=...` "
        f"adds a key nothing reads, so the run would silently use the default); "
        f"configs/{root}/{choice}.yaml documents each.")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _optional(tp: Any) -> tuple[Any, bool]:
    """``(inner type, allows None)`` of ``X | None`` / ``Optional[X]``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def _coerce(where: str, value: Any, tp: Any, choice: str) -> Any:
    """Lists -> tuples, mappings -> nested groups; everything else is checked, not cast."""
    inner, _ = _optional(tp)
    if value is None:
        return None
    if isinstance(inner, type) and issubclass(inner, TypedConfig):
        if not isinstance(value, Mapping):
            keys = sorted(f.name for f in dataclasses.fields(inner))
            raise ConfigError(f"{where}={value!r} must be a mapping with keys {keys}.")
        return inner.from_dict(value, group=where, choice=choice)
    if (inner is dict or typing.get_origin(inner) is dict) and isinstance(value, Mapping):
        return dict(value)  # dicts, and OmegaConf's DictConfig
    if typing.get_origin(inner) is tuple and isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(value)  # lists, and OmegaConf's ListConfig
    return value


def _type_rule(value: Any, tp: Any) -> str | None:
    """Why ``value`` does not fit ``tp`` (None when it does)."""
    inner, optional = _optional(tp)
    if value is None:
        return None if optional else "must not be null"
    tail = " or null" if optional else ""
    if inner is bool:
        return None if isinstance(value, bool) else "must be true or false" + tail
    if inner is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else "must be an integer" + tail
    if inner is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if ok else "must be a number" + tail
    if inner is str:
        return None if isinstance(value, str) else "must be a string" + tail
    if inner is dict or typing.get_origin(inner) is dict:
        return None if isinstance(value, dict) else "must be a mapping" + tail
    if typing.get_origin(inner) is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, tuple):
            return "must be a list" + tail
        (item,) = [a for a in typing.get_args(inner) if a is not Ellipsis]
        bad = [v for v in value if _type_rule(v, item)]
        return f"every entry {_type_rule(bad[0], item)}" if bad else None
    return None
