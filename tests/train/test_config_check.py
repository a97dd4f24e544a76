"""Config mistakes in the trainer, task and model groups fail before any work, naming the key, the
group and what is allowed (issue 12, "nothing silent")."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import attnlab.train.loop as loop
from attnlab.models.config import ModelConfig
from attnlab.train.loop import train_and_evaluate
from attnlab.train.optim import TrainerConfig
from attnlab.train.task_config import TASK_CONFIGS
from tests.train.test_train import CONFIGS, tiny_cfg

MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml"))


@pytest.fixture
def no_data(monkeypatch):
    """Loading data is the first piece of work: a config error must come before it."""
    def refuse(*a, **k):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(loop, "load_sequences", refuse)


@pytest.mark.parametrize("overrides,match", [
    (["+model.dropuot=0.1"], r"unknown key\(s\) \['model.dropuot'\] in config group model \(model=vanilla\); "
                             r"allowed keys of model.\*: \[.*'dropout'"),
    (["task=churn", "+task.horizn=4W"], r"\['task.horizn'\] in config group task \(task=churn\); "
                                        r"allowed keys of task.\*: \[.*'horizon'"),
    (["+task.ks_=[5]"], r"\['task.ks_'\] in config group task \(task=next_item\)"),
    (["+model.attention.window=8"], r"\['model.attention.window'\] .* \(model=vanilla\); allowed keys of "
                                    r"model.attention: \['impl'\]"),  # a sparse option on vanilla
    (["model=lstm", "+model.backbone.hidden=8"], r"\['model.backbone.hidden'\] .* \(model=lstm\)"),
    (["model=lstm", "+model.attention={impl: null}"], r"\['model.attention'\] .* \(model=lstm\)"),
    (["+task.sampled_softmax.negativs=8"], r"allowed keys of task.sampled_softmax: \['alpha', 'negatives'"),
    (["task=churn", "+task.min_baskets=2"], r"\['task.min_baskets'\] .* \(task=churn\)"),  # a next_item key
])
def test_unknown_keys_fail_before_any_work(tmp_path, no_data, overrides, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(tiny_cfg(tmp_path, *overrides))


@pytest.mark.parametrize("overrides,match", [
    (["model.max_len=0"], r"model.max_len=0 is out of range: must be an integer >= 1"),
    (["model.d_model=0"], r"model.d_model=0 is out of range: must be an integer >= 1"),
    (["model.n_layers=0"], r"model.n_layers=0 is out of range"),
    (["model.n_heads=3"], r"model.n_heads=3 is out of range: must divide model.d_model=16 .*\[1, 2, 4, 8, 16\]"),
    (["model.dropout=1.0"], r"model.dropout=1.0 is out of range: a probability in \[0, 1\)"),
    (["model.dropout=-0.1"], r"model.dropout=-0.1 is out of range"),
    (["model.history_memory=-1"], r"model.history_memory=-1 is out of range: must be an integer >= 0"),
    (["model.item_head=softmax"], r"model.history_memory=64 feeds the copy head"),
    (["model.encoder=later"], r"model.encoder='later' is out of range: one of \['causal'"),
    (["model=sparse", "model.attention.window=0"], r"model.attention.window=0 is out of range"),
    (["model=time_decay", "model.attention.slope_min=0"], r"slope_min=0, slope_max=1.0 are out of range"),
    (["model=linear", "model.attention.decay=yes"], r"model.attention.decay='yes' is out of range"),
    (["task.windows_per_customer=0"], r"task.windows_per_customer=0 is out of range: must be an integer >= 1"),
    (["task.ks=[0,10]"], r"task.ks=\[0, 10\] is out of range"),
    (["task.min_baskets=1"], r"task.min_baskets=1 is out of range: must be an integer >= 2"),
    (["task.baselines=[most_popular,nope]"], r"unknown ranking baseline 'nope'"),
    (["task=next_basket", "task.valid_cutoff=2020-03-01", "task.test_cutoff=2020-02-01"],
     r"task.valid_cutoff='2020-03-01' must be before task.test_cutoff='2020-02-01'"),
    (["task=churn", "task.horizon=soon"], r"task.horizon='soon': cannot parse duration"),
    (["task=churn", "task.mode=random"], r"task.mode='random' is out of range: one of \['temporal'"),
    (["trainer.batch_size=abc"], r"trainer.batch_size='abc' is out of range: must be an integer"),
])
def test_out_of_range_values_fail_before_any_work(tmp_path, no_data, overrides, match):
    with pytest.raises((ValueError, KeyError), match=match):
        train_and_evaluate(tiny_cfg(tmp_path, *overrides))


def test_every_experiment_and_search_config_passes_the_check():
    """The shipped configs never trip the typed groups (they only set keys the code reads,
    with values in range)."""
    combos = [[f"experiment={p.stem}"] for p in (CONFIGS / "experiment").glob("*.yaml")]
    combos += [[f"hparams_search={p.stem}", f"model={p.stem}"] for p in (CONFIGS / "hparams_search").glob("*.yaml")]
    combos += [[f"model={m}", f"task={t}"] for m in MODELS for t in TASKS]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for overrides in combos:
            cfg = compose(config_name="config", overrides=["debug=tiny", *overrides])
            group = lambda name: OmegaConf.to_container(cfg[name], resolve=True)  # noqa: E731
            TrainerConfig.from_dict(group("trainer"))
            TASK_CONFIGS[cfg.task.name].from_dict(group("task"))
            ModelConfig.from_dict(group("model"))


def test_trainer_keys_are_typed_too():
    with pytest.raises(ValueError, match=r"trainer.resume='yes' is out of range: must be true or false"):
        TrainerConfig.from_dict({"resume": "yes"})
    assert TrainerConfig.from_dict({"lr": 1}).lr == 1  # an int learning rate is a number
