"""Config loading, overrides and the errors a user sees."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from bridgeseg.config import (Config, ConfigError, load_config, packaged_config_dir, parse_override,
                              resolve_config_path, save_config)


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_s_best_voc_model():
    config = Config()
    assert (config.model.depth, config.model.output_stride, config.model.kernel, config.model.dilation) == (101, 8, 5, 12)
    assert config.loss.min_kept == 512


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "model:\n  depth: 50\ntrain:\n  lr: 0.01\n")
    config = load_config(path, ["train.lr=0.02", "loss.threshold=null", "data.mean=[0.5, 0.5, 0.5]",
                                "train.optimizer=adamw"])
    assert config.model.depth == 50
    assert config.train.lr == 0.02
    assert config.loss.threshold is None
    assert config.data.mean == (0.5, 0.5, 0.5)
    assert config.train.optimizer == "adamw"


def test_ints_are_accepted_for_floats_but_not_the_reverse(tmp_path):
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001  # YAML would read this as a string
    with pytest.raises(ConfigError, match="train.iterations must be int"):
        load_config(None, ["train.iterations=1.5"])
    with pytest.raises(ConfigError, match="data.flip must be bool"):
        load_config(None, ["data.flip=3"])


@pytest.mark.parametrize("text,message", [
    ("model:\n  detph: 50\n", "unknown config key 'model.detph' \\(did you mean model.depth\\?\\)"),
    ("modle:\n  depth: 50\n", "unknown config section 'modle' \\(did you mean 'model'\\?\\)"),
    ("model:\n  depth: 20\n", "model.depth = 20 is not valid; choose one of \\[18, 34, 50, 101, 152\\]"),
    ("model:\n  output_stride: 4\n", "model.output_stride = 4 is not valid"),
    ("model:\n  kernel: 4\n", "model.kernel"),
    ("model:\n  width: 20\n", "model.width = 20 is not valid: use a multiple of 8"),
    ("model:\n  width: 32\n  init: imagenet\n", "set model.init=random or model.width=64"),
    ("loss:\n  threshold: 1.5\n", "loss.threshold = 1.5 is out of range"),
    ("loss:\n  threshold: 0\n", "loss.threshold = 0.0 is out of range: it must be > 0"),
    ("train:\n  batch_size: 0\n", "train.batch_size = 0 is out of range"),
    ("data:\n  scale_min: 2.0\n  scale_max: 1.0\n", "data.scale_min"),
    ("loss:\n  threshold: null\n  min_kept: 0\n", "min_kept"),
    ("train: 5\n", "section 'train' must be a mapping"),
    ("- a\n- b\n", "must hold a mapping"),
    ("model: {depth: [\n", "not valid YAML"),
    ("train:\n  amp: auto\n  lr: 0.1\n  amp: off\n", "key 'amp' appears twice in one section"),
    ("train:\n  lr: 0.1\ntrain:\n  lr: 0.2\n", "key 'train' appears twice"),
])
def test_bad_files_name_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_error_names_the_file(tmp_path):
    path = write(tmp_path, "model:\n  depth: 20\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_bad_overrides():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="unknown config key 'training.lr'"):
        parse_override("training.lr=0.1")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(None, ["train.learning_rate=0.1"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/config.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["model.depth=18", "loss.threshold=null", "data.std=[1, 1, 1]"])
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_every_shipped_config_loads_and_resolves_by_name():
    shipped = sorted(packaged_config_dir().glob("*.yaml"))
    assert any(path.stem == "demo" for path in shipped)
    for path in shipped:
        load_config(path)
    assert resolve_config_path("demo") == packaged_config_dir() / "demo.yaml"
    with pytest.raises(ConfigError, match="demo"):
        resolve_config_path("no-such-config")


def test_replace_validates():
    config = Config().replace(**{"model.depth": 18})
    assert config.model.depth == 18
    with pytest.raises(ConfigError):
        Config().replace(**{"model.depth": 19})


# every grouping key: out of range is refused when the config loads, naming the key and the range
BAD_INSTANCE_VALUES = [
    ("top_n", 0, ">= 1"), ("nms_threshold", 1.0, "< 1.0"), ("nms_threshold", -0.1, ">= 0.0"),
    ("region_nms_threshold", 1.0, "< 1.0"), ("min_cluster_size", 0, ">= 1"), ("min_score", 1.5, "<= 1.0"),
    ("max_instances", 0, ">= 1"), ("pre_nms_top_k", 0, ">= 1"), ("nms_chunk_size", 0, ">= 1"),
    ("vote_quantum", -0.5, ">= 0.0"), ("mask_threshold", 0.0, "> 0.0"), ("mask_threshold", 1.5, "<= 1.0"),
]
BAD_INSTANCE_CHOICES = [("masks", "octagons", ["class_map", "grid"]), ("method", "watershed", ["grouping", "connected_components"])]


@pytest.mark.parametrize("key, value, rule", BAD_INSTANCE_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_INSTANCE_VALUES])
def test_out_of_range_grouping_values_are_refused_at_load(tmp_path, key, value, rule):
    message = f"instance.{key} = {value!r} is out of range: it must be {rule}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"instance.{key}={value}"])
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, f"instance:\n  {key}: {value}\n"))


@pytest.mark.parametrize("key, value, choices", BAD_INSTANCE_CHOICES, ids=[k for k, _, _ in BAD_INSTANCE_CHOICES])
def test_unknown_grouping_choices_are_refused_at_load(key, value, choices):
    with pytest.raises(ConfigError, match=re.escape(f"instance.{key} = {value!r} is not valid; choose one of {choices}")):
        load_config(None, [f"instance.{key}={value}"])


def test_every_grouping_key_is_settable_from_yaml_and_set(tmp_path):
    from bridgeseg.grouping import InstanceConfig

    values = {"top_n": 2, "nms_threshold": 0.6, "region_nms_threshold": 0.7, "min_cluster_size": 3, "min_score": 0.05,
              "max_instances": 50, "per_rank_masks": True, "pre_nms_top_k": 500, "nms_chunk_size": 1024,
              "vote_quantum": 0.25, "mask_threshold": 0.4, "masks": "grid", "method": "connected_components",
              "merge_fragments": 0.7, "merge_across_classes": False}
    assert set(values) == {f.name for f in dataclasses.fields(InstanceConfig)}  # no key left out
    from_set = load_config(None, [f"instance.{key}={value}" for key, value in values.items()]).instance
    yaml_text = "instance:\n" + "".join(f"  {key}: {str(value).lower() if not isinstance(value, str) else value}\n"
                                         for key, value in values.items())
    from_yaml = load_config(write(tmp_path, yaml_text)).instance
    assert from_set == from_yaml == InstanceConfig(**values)
    assert load_config(None, ["instance.pre_nms_top_k=null"]).instance.pre_nms_top_k is None


def test_config_and_grouping_share_one_settings_type():
    from bridgeseg.config import InstanceConfig as ConfigSection
    from bridgeseg.grouping import InstanceConfig, group_instances

    assert ConfigSection is InstanceConfig and type(Config().instance) is InstanceConfig
    default = inspect.signature(group_instances).parameters["settings"].default
    assert default == InstanceConfig() == Config().instance  # the grouping's default is the config's


def test_moved_keys_name_their_new_place(tmp_path):
    with pytest.raises(ConfigError, match="'instance.protocol' is now 'eval.protocol'"):
        load_config(write(tmp_path, "instance:\n  protocol: mnc\n"))
    from bridgeseg.config import config_from_dict

    stored = {"instance": {"protocol": "mnc", "top_n": 2}}  # the config of a checkpoint written before the move
    migrated = config_from_dict(stored, migrate=True)
    assert migrated.eval.protocol == "mnc" and migrated.instance.top_n == 2


def test_option_lists_come_from_the_modules_that_implement_them():
    from bridgeseg.data.registry import DATASETS
    from bridgeseg.models.backbone import DEPTHS

    for name in DATASETS:
        assert load_config(None, [f"data.dataset={name}"]).data.dataset == name
    for depth in DEPTHS:
        assert load_config(None, [f"model.depth={depth}"]).model.depth == depth
    with pytest.raises(ConfigError, match=re.escape(f"choose one of {list(DATASETS)}")):
        load_config(None, ["data.dataset=kitti"])


def test_words_that_yaml_1_1_calls_booleans_stay_words(tmp_path):
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert load_config(write(tmp_path, "train:\n  amp: off\n")).train.amp == "off"
    assert load_config(None, ["data.flip=false"]).data.flip is False
    with pytest.raises(ConfigError, match="data.flip must be bool"):
        load_config(None, ["data.flip=no"])


def test_loader_workers_a_number_or_auto(monkeypatch):
    from bridgeseg.data.loading import loader_workers

    assert load_config(None, ["data.workers=3"]).data.workers == 3
    assert load_config(None, []).data.workers == "auto"
    with pytest.raises(ConfigError, match="data.workers = 'many' is not valid"):
        load_config(None, ["data.workers=many"])
    with pytest.raises(ConfigError, match="data.workers"):
        load_config(None, ["data.workers=-1"])
    with pytest.raises(ConfigError, match="data.workers must be int or str"):
        load_config(None, ["data.workers=[1]"])
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)))
    assert loader_workers("auto", "cpu") == 0 and loader_workers("auto", "cuda") == 1 and loader_workers(5, "cpu") == 5
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    assert loader_workers("auto", "cpu") == 4 and loader_workers("auto", "cuda") == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: 8 processes share the 32 cores
    assert loader_workers("auto", "cuda") == 3
