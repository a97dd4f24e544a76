"""Defaults live in one place: the typed config dataclasses. The YAML group files state
the same values for readers; these tests fail the moment the two disagree."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from attnlab.train.optim import TrainerConfig
from attnlab.train.task_config import TASK_CONFIGS
from attnlab.typed_config import ConfigError
from tests.train.test_train import CONFIGS


def _yaml(group: str, name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{name}.yaml"), resolve=False)


def _defaults(cls) -> dict:
    return cls().to_dict()


@pytest.mark.parametrize("group,name,cls", [("trainer", "default", TrainerConfig)]
                         + [("task", n, c) for n, c in TASK_CONFIGS.items()])
def test_yaml_states_exactly_the_dataclass_defaults(group, name, cls):
    yaml, code = _yaml(group, name), _defaults(cls)
    assert set(yaml) == set(code), (set(yaml) ^ set(code))  # every key documented, none extra
    for key, value in yaml.items():
        if isinstance(value, float) or isinstance(code[key], float):
            assert value == pytest.approx(code[key]), key
        else:
            assert value == code[key], (key, value, code[key])


def test_the_yaml_task_files_are_the_tasks_the_code_knows():
    assert {p.stem for p in (CONFIGS / "task").glob("*.yaml")} == set(TASK_CONFIGS)


@pytest.mark.parametrize("cls", [TrainerConfig, *TASK_CONFIGS.values()])
def test_every_field_has_a_type_the_checker_understands(cls):
    """A default must pass its own type check (a field typed int with a float default
    would make every run fail)."""
    assert cls.from_dict({}) == cls()
    for f in dataclasses.fields(cls):
        assert f.type, f.name


@pytest.mark.parametrize("cfg,match", [
    ({"name": "next_item", "ks": [10, "20"]}, r"task.ks=\[10, '20'\] is out of range: every entry must be an integer"),
    ({"name": "next_item", "sampled_softmax": 8}, r"task.sampled_softmax=8 must be a mapping with keys"),
    ({"name": "next_item", "sampled_softmax": {"proposal": "zipf"}},
     r"task.sampled_softmax.proposal='zipf' is out of range: one of \['uniform'"),
    ({"name": "churn", "windows_per_customer": 1.5}, r"task.windows_per_customer=1.5 is out of range: must be an integer"),
    ({"name": "next_basket", "min_baskets": 3}, r"unknown key\(s\) \['task.min_baskets'\] in config group task "
                                                r"\(task=next_basket\)"),
])
def test_typed_task_configs_name_the_key_and_the_rule(cfg, match):
    with pytest.raises(ConfigError, match=match):
        TASK_CONFIGS[cfg["name"]].from_dict(cfg)


MODEL_FILES = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_yaml_states_the_dataclass_and_layer_defaults(name):
    """Every key of configs/model/<family>.yaml is a ModelConfig field with the same value
    (``encoder`` is ``${task.encoder}``, ``history_summary`` and ``summary_bgnbd`` the task's too), and the family's options equal
    the defaults in its layer's / backbone's signature: no default is written twice with
    two values."""
    import inspect

    from attnlab.models.config import ModelConfig
    from attnlab.models.registry import ATTENTION_FAMILIES, FAMILY_OPTIONS

    yaml, code = _yaml("model", name), _defaults(ModelConfig)
    section, options = FAMILY_OPTIONS[name]
    assert set(yaml) <= set(code), set(yaml) - set(code)
    for key, value in yaml.items():
        if key in ("name", "attention", "backbone"):
            continue
        if key == "encoder":
            assert value == "${task.encoder}"
            continue
        if key in ("history_summary", "summary_bgnbd"):   # the task's choice (churn: true), else the dataclass default
            assert value == f"${{oc.select:task.{key},false}}" and code[key] is False
            continue
        assert value == pytest.approx(code[key]) if isinstance(value, float) else value == code[key], (key, value)
    assert yaml["name"] == name
    opts = yaml.get(section) or {}
    assert set(opts) <= options
    if name in ATTENTION_FAMILIES:
        params = inspect.signature(ATTENTION_FAMILIES[name].__init__).parameters
        for key, value in opts.items():
            default = params[key].default
            assert value == pytest.approx(default) if isinstance(value, float) else value == default, (key, value)


def test_a_model_built_from_a_partial_mapping_is_the_yaml_recipe():
    """Code paths that build a model from a few keys get the same defaults the YAML runs use."""
    from attnlab.models.config import ModelConfig, model_config

    cfg = model_config({"name": "vanilla"})
    assert (cfg.item_head, cfg.history_memory, cfg.churn_pool) == ("copy", 64, "attention")
    assert model_config(cfg) is cfg
    with pytest.raises(ConfigError, match=r"model.history_memory=64 feeds the copy head"):
        ModelConfig.from_dict({"name": "vanilla", "item_head": "softmax"})
