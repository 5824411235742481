"""Experiment configuration: frozen dataclasses, flat YAML files, ``--set section.key=value``.

A config file has up to six sections (``model``, ``data``, ``loss``, ``train``, ``eval``,
``instance``); every key is optional and defaults to the value below. An unknown section or key,
a value of the wrong type, or a value outside its choices is a ``ConfigError`` that names the key
and what it accepts. There is no inheritance between files: each experiment is one file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    """The network (paper section 2.3).

    arch: ``semantic`` (class scores), ``localization`` (box transforms), ``joint`` (one backbone,
        both heads) or ``separate`` (two FCRNs, the paper's arrangement, both trained at once).
    width: channels of the ResNet's first stage (64 = torchvision's; smaller, a multiple of 8,
        for CPU-scale work from random weights).
    """

    arch: str = "semantic"
    depth: int = 101
    width: int = 64
    output_stride: int = 8
    kernel: int = 5
    dilation: int = 12
    head: str = "linear"
    head_channels: int = 512
    head_dropout: float = 0.1
    dropout: float = 0.0
    dropout_blocks: int = 0
    init: str = "imagenet"
    freeze_bn: bool = False
    channels_last: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Dataset and augmentation. ``root`` holds the VOC layout; ``--data-root`` overrides it."""

    dataset: str = "voc"
    root: str = "data/VOCdevkit/VOC2012"
    sbd_root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 321
    scale_min: float = 0.5
    scale_max: float = 1.5
    flip: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    workers: int = 2
    skip_bad: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Online bootstrapping (paper eq. 1) for the semantic and the localization head.

    Semantic: cross-entropy over labelled pixels whose ground-truth probability is below
    ``threshold``, keeping at least ``min_kept`` pixels per crop (threshold null: exactly the
    ``min_kept`` hardest); ``bootstrap: false`` is plain cross-entropy. ``warmup_iterations`` of
    plain cross-entropy come first. ``resolution``: ``label`` upsamples the outputs to the label
    size, ``output`` samples the labels at the output stride.
    Localization: smooth-L1 with per-instance weighting; a pixel is easy when its predicted box
    has IoU above ``box_iou_threshold`` with its ground-truth box.
    """

    bootstrap: bool = True
    threshold: float | None = 0.6
    min_kept: int = 512
    warmup_iterations: int = 0
    resolution: str = "label"
    box_bootstrap: bool = True
    box_iou_threshold: float = 0.8
    box_min_kept: int = 512
    instance_weighting: str = "equal"
    smooth_l1_beta: float = 1.0
    localization_weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: SGD with momentum (or AdamW), poly learning-rate decay."""

    optimizer: str = "sgd"
    iterations: int = 20000
    batch_size: int = 10
    lr: float = 0.001
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 0.0005
    poly_power: float = 0.9
    time_limit_minutes: float = 0.0
    eval_every: int = 2000
    checkpoint_every: int = 1000
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: str = "off"
    compile: bool = False
    sync_bn: bool = False
    deterministic: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation and inference. ``max_images`` 0 = the whole split (periodic evaluation may use
    fewer). Multi-view testing averages class probabilities (and transforms) over ``scales`` and,
    with ``flip``, their mirror images. ``tile_size`` > 0 predicts large images in overlapping
    tiles of that size (``tile_overlap`` the overlapping fraction)."""

    split: str = ""
    max_images: int = 0
    periodic_max_images: int = 0
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile_size: int = 0
    tile_overlap: float = 0.33


@dataclass(frozen=True)
class InstanceConfig:
    """Grouping of score and transform maps into instances (paper section 2.1)."""

    top_n: int = 1
    nms_threshold: float = 0.5
    region_nms_threshold: float = 0.5
    min_cluster_size: int = 2
    max_instances: int = 100
    protocol: str = "sds"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {section: {key: list(value) if isinstance(value, tuple) else value
                          for key, value in dataclasses.asdict(getattr(self, section)).items()}
                for section in SECTIONS}

    def replace(self, **overrides: Any) -> Config:
        """A copy with ``{"section.key": value}`` overrides applied and validated."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            section, key = _split_key(dotted)
            raw[section][key] = value
        return config_from_dict(raw)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "train": TrainConfig,
                             "eval": EvalConfig, "instance": InstanceConfig}

CHOICES: dict[str, tuple] = {
    "model.arch": ("semantic", "localization", "joint", "separate"),
    "model.depth": (18, 34, 50, 101, 152),
    "model.output_stride": (8, 16, 32),
    "model.kernel": (1, 3, 5, 7),
    "model.head": ("linear", "nonlinear"),
    "data.dataset": ("voc", "voc_aug", "sbd", "cityscapes", "context", "context59"),
    "train.amp": ("off", "bf16", "fp16"),
    "loss.resolution": ("label", "output"),
    "train.optimizer": ("sgd", "adamw"),
    "loss.instance_weighting": ("equal", "box", "sqrt", "none"),
    "instance.protocol": ("sds", "mnc"),
}

# (minimum, maximum, inclusive minimum?) for numbers; None = unbounded
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "model.width": (8, None, True),
    "model.dilation": (1, None, True),
    "model.head_channels": (1, None, True),
    "model.head_dropout": (0.0, 1.0, True),
    "model.dropout": (0.0, 1.0, True),
    "model.dropout_blocks": (0, None, True),
    "data.crop_size": (1, None, True),
    "data.scale_min": (0.0, None, False),
    "data.scale_max": (0.0, None, False),
    "data.workers": (0, None, True),
    "loss.threshold": (0.0, 1.0, False),
    "loss.min_kept": (0, None, True),
    "loss.warmup_iterations": (0, None, True),
    "loss.box_iou_threshold": (0.0, 1.0, True),
    "loss.box_min_kept": (0, None, True),
    "loss.smooth_l1_beta": (0.0, None, True),
    "loss.localization_weight": (0.0, None, True),
    "train.iterations": (1, None, True),
    "train.batch_size": (1, None, True),
    "train.lr": (0.0, None, False),
    "train.head_lr_mult": (0.0, None, False),
    "train.momentum": (0.0, 1.0, True),
    "train.weight_decay": (0.0, None, True),
    "train.poly_power": (0.0, None, True),
    "train.time_limit_minutes": (0.0, None, True),
    "train.eval_every": (0, None, True),
    "train.checkpoint_every": (0, None, True),
    "train.log_every": (1, None, True),
    "train.threads": (0, None, True),
    "eval.max_images": (0, None, True),
    "eval.periodic_max_images": (0, None, True),
    "eval.tile_size": (0, None, True),
    "eval.tile_overlap": (0.0, 0.9, True),
    "instance.top_n": (1, None, True),
    "instance.nms_threshold": (0.0, 1.0, True),
    "instance.region_nms_threshold": (0.0, 1.0, True),
    "instance.min_cluster_size": (1, None, True),
    "instance.max_instances": (1, None, True),
}


def _split_key(dotted: str) -> tuple[str, str]:
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(f"unknown config key {dotted!r}: keys look like section.key with section one of "
                          f"{list(SECTIONS)}")
    return section, key


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _coerce(dotted: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [option for option in options if option is not type(None)]
        return _coerce(dotted, value, inner[0])
    if origin is tuple and typing.get_args(annotation)[-1] is Ellipsis:
        item_type = typing.get_args(annotation)[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{dotted} must be a non-empty list of numbers, got {value!r}")
        return tuple(_coerce(dotted, item, item_type) for item in value)
    if origin is tuple:
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"{dotted} must be a list of {len(item_types)} numbers, got {value!r}")
        return tuple(_coerce(dotted, item, item_type) for item, item_type in zip(value, item_types))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{dotted} must be {_type_name(annotation)}, got {value!r}")


def _validate(dotted: str, value: Any) -> None:
    if dotted in CHOICES and value not in CHOICES[dotted]:
        raise ConfigError(f"{dotted} = {value!r} is not valid; choose one of {list(CHOICES[dotted])}")
    if dotted in RANGES and value is not None:
        low, high, inclusive = RANGES[dotted]
        if low is not None and (value < low or (value == low and not inclusive)):
            raise ConfigError(f"{dotted} = {value!r} is out of range: it must be {'>=' if inclusive else '>'} {low}")
        if high is not None and value > high:
            raise ConfigError(f"{dotted} = {value!r} is out of range: it must be <= {high}")


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Build and validate a ``Config`` from ``{section: {key: value}}``."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections {list(SECTIONS)}, got {type(raw).__name__}")
    sections = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            hint = difflib.get_close_matches(str(section), SECTIONS, n=1)
            raise ConfigError(f"unknown config section {section!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; valid sections: {list(SECTIONS)}")
        values = values or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys, got {values!r}")
        cls = SECTIONS[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key not in fields:
                hint = difflib.get_close_matches(str(key), fields, n=1)
                raise ConfigError(f"unknown config key {dotted!r}" + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
                                  + f"; valid keys of {section!r}: {sorted(fields)}")
            value = _coerce(dotted, value, hints[key])
            _validate(dotted, value)
            kwargs[key] = value
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    data = config.data
    model = config.model
    if model.width % 8:
        raise ConfigError(f"model.width = {model.width} is not valid: use a multiple of 8 (64 = torchvision's ResNet)")
    if model.width != 64 and model.init != "random":
        raise ConfigError(f"model.width = {model.width} cannot load pretrained weights (model.init = {model.init!r}); "
                          "pretrained ResNets have width 64: set model.init=random or model.width=64")
    if data.scale_min > data.scale_max:
        raise ConfigError(f"data.scale_min ({data.scale_min}) must not exceed data.scale_max ({data.scale_max})")
    if config.train.deterministic and config.train.time_limit_minutes > 0:
        raise ConfigError("train.deterministic is true but train.time_limit_minutes makes the learning rate depend "
                          "on wall-clock time; set train.time_limit_minutes=0 for reproducible runs")
    if any(scale <= 0 for scale in config.eval.scales):
        raise ConfigError(f"eval.scales must all be > 0, got {list(config.eval.scales)}")
    if config.eval.tile_size and config.eval.tile_size < config.model.output_stride:
        raise ConfigError(f"eval.tile_size ({config.eval.tile_size}) must be 0 (whole images) or at least the "
                          f"output stride ({config.model.output_stride})")
    if config.loss.threshold is None and config.loss.bootstrap and config.loss.min_kept == 0:
        raise ConfigError("loss.threshold is null and loss.min_kept is 0: bootstrapping would keep no pixel; "
                          "set loss.min_kept (e.g. 512) or a threshold")


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=0.01"`` -> ``("train.lr", 0.01)``; values are read as YAML (numbers, true, null, [1, 2])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=0.01")
    key, _, value = text.partition("=")
    key = key.strip()
    _split_key(key)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a YAML config (None = defaults) and apply ``section.key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (the configs shipped with bridgeseg are in "
                              f"{packaged_config_dir()})")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections {list(SECTIONS)}")
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = [parse_override(text) for text in overrides or []]
    for dotted, value in pairs:
        section, key = _split_key(dotted)
        if not isinstance(raw.get(section) or {}, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {}, **{key: value})
    try:
        return config_from_dict(raw)
    except ConfigError as error:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{error}{where}") from None


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every key, defaults included) as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def packaged_config_dir() -> Path:
    """The folder of configs shipped inside the package (``configs/`` in the repository)."""
    return Path(__file__).resolve().parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config path as given, or else the shipped config of that name (``demo`` or ``demo.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = packaged_config_dir() / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    available = sorted(p.stem for p in packaged_config_dir().glob("*.yaml"))
    raise ConfigError(f"config {name} not found; give a YAML file or one of the shipped configs: {available}")
