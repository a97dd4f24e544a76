"""Every config group composes, and every experiment config runs at tiny size."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ["data", "task", "model", "trainer", "logger", "paths", "experiment", "debug"]


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_cfg([f"{group}={option}"])
    # resolve everything except hydra's runtime-only interpolations
    OmegaConf.resolve(cfg.data)
    OmegaConf.resolve(cfg.model)
    OmegaConf.resolve(cfg.trainer)
    assert cfg.data.name and cfg.task.name and cfg.model.name


def test_experiment_configs_carry_their_command():
    for path in (CONFIGS / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path
        assert f"experiment={path.stem}" in text, f"{path} header must show its command"


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), f"config group {g} is empty"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_overrides_root_keys(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.experiment_name == experiment


def test_every_package_folder_is_listed_in_pyproject():
    """pyproject.toml lists packages explicitly (kernels/ installs as attnlab.kernels): a new
    sub-package left out of the list would be missing from a wheel."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "attnlab").rglob("__init__.py")}
    found |= {"attnlab." + ".".join(p.parent.relative_to(root).parts) for p in (root / "kernels").rglob("__init__.py")}
    assert found == listed, (sorted(found - listed), sorted(listed - found))
