"""Experiment configuration: frozen dataclasses, flat YAML files, ``--set section.key=value``.

A config file has up to six sections (``model``, ``data``, ``loss``, ``train``, ``eval``,
``instance``); every key is optional and defaults to the value below. Each key is declared once,
with its valid values (``bridgeseg.settings.setting``), and checked when its section is built:
an unknown section or key, a value of the wrong type, or a value outside its choices or range is a
``ConfigError`` that names the key and what it accepts, before any work starts. The option lists
are read from the modules that implement the options (ResNet depths from ``models.backbone``,
dataset names from ``data.registry``, ...); the ``instance`` section is ``grouping.InstanceConfig``,
the settings type the grouping itself takes. There is no inheritance between files: each
experiment is one file.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.registry import DATASETS
from .evaluation.instance import PROTOCOLS
from .files import write_text
from .grouping import InstanceConfig
from .models.backbone import DEPTHS, OUTPUT_STRIDES
from .models.decoder import DECODER_STRIDES
from .models.fcrn import ARCHITECTURES
from .models.heads import HEAD_TYPES, KERNELS
from .panoptic import DEFAULT_MIN_AREA
from .settings import ConfigError, check_section, coerce, setting
from .targets import INSTANCE_WEIGHTINGS

__all__ = ["Config", "ConfigError", "DataConfig", "EvalConfig", "InstanceConfig", "LossConfig", "ModelConfig",
           "TrainConfig", "config_from_dict", "load_config", "parse_override", "save_config"]

LOSS_RESOLUTIONS = ("label", "output", "output_x2")
CLASS_WEIGHTINGS = ("none", "median_frequency")
OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("off", "auto", "bf16", "fp16")
# keys that moved: old dotted key -> new one (configs stored in checkpoints are migrated)
MOVED_KEYS = {"instance.protocol": "eval.protocol"}


@dataclass(frozen=True)
class ModelConfig:
    """The network (paper section 2.3).

    arch: ``semantic`` (class scores), ``localization`` (box transforms), ``joint`` (one backbone,
        both heads) or ``separate`` (two FCRNs, the paper's arrangement, both trained at once).
    width: channels of the ResNet's first stage (64 = torchvision's; smaller, a multiple of 8,
        for CPU-scale work from random weights).
    init: ``imagenet`` (torchvision's weights, downloaded once), ``random``, or a local ``.pth`` file.
    output_stride: the backbone's (8, 16 or 32; the paper's "hole algorithm").
    decoder_stride: 0 (the paper's: heads on the backbone's last features), or 8 / 4: a light skip
        decoder (``models.decoder``) brings those features to that stride first, with
        ``decoder_channels`` channels; ``prediction_stride`` is the stride of the maps either way.
    """

    arch: str = setting("semantic", choices=ARCHITECTURES)
    depth: int = setting(101, choices=DEPTHS)
    width: int = setting(64, minimum=8)
    output_stride: int = setting(8, choices=OUTPUT_STRIDES)
    decoder_stride: int = setting(0, choices=DECODER_STRIDES)
    decoder_channels: int = setting(256, minimum=1)
    kernel: int = setting(5, choices=KERNELS)
    dilation: int = setting(12, minimum=1)
    head: str = setting("linear", choices=HEAD_TYPES)
    head_channels: int = setting(512, minimum=1)
    head_dropout: float = setting(0.1, minimum=0.0, maximum=1.0)
    dropout: float = setting(0.0, minimum=0.0, maximum=1.0)
    dropout_blocks: int = setting(0, minimum=0)
    init: str = setting("imagenet")
    freeze_bn: bool = setting(False)
    channels_last: bool = setting(False)

    @property
    def prediction_stride(self) -> int:
        """The stride of the maps the heads produce: the decoder's, or the backbone's output stride."""
        return self.decoder_stride or self.output_stride

    def __post_init__(self) -> None:
        check_section(self, "model")
        if self.width % 8:
            raise ConfigError(f"model.width = {self.width} is not valid: use a multiple of 8 (64 = torchvision's "
                              "ResNet)", "model.width")
        if self.width != 64 and self.init != "random":
            raise ConfigError(f"model.width = {self.width} cannot load pretrained weights (model.init = "
                              f"{self.init!r}); pretrained ResNets have width 64: set model.init=random or "
                              "model.width=64", "model.width", "model.init")
        if self.decoder_stride and self.decoder_stride >= self.output_stride:
            raise ConfigError(f"model.decoder_stride = {self.decoder_stride} must be below model.output_stride = "
                              f"{self.output_stride} (or 0: no decoder)", "model.decoder_stride")


@dataclass(frozen=True)
class DataConfig:
    """Dataset and augmentation. ``root`` holds the dataset's layout; ``--data-root`` overrides it.
    ``train_split`` / ``val_split`` empty: the format's own (``train`` / ``val``; ``train_aug`` for
    ``voc_aug``), see ``training_split`` / ``validation_split``. Augmentation: random scale in
    [``scale_min``, ``scale_max``], crop, ``flip``; ``color_jitter`` s > 0: random brightness,
    contrast, saturation (x [1 - s, 1 + s]) and hue; ``copy_paste`` p > 0: with probability p a crop
    gets objects of another training crop pasted in (``data.augment.paste_objects``).
    ``repeat_threshold`` t > 0: repeat factor sampling, images of classes present in fewer than a
    fraction t of the training images come round more often (``data.balance``), both as crops and as
    the sources of pasted objects. ``workers``: loader
    processes, or ``auto`` (``data.loading.loader_workers``: none for CPU training below 8 cores,
    where a worker only takes a core from the network, up to 8 beside a GPU). ``cache_mb``: decoded
    training samples are kept in memory up to this many MB per training process, shared out among
    its loader workers (a small dataset is read from disk once), 0 to read every sample from disk
    each time."""

    dataset: str = setting("voc", choices=DATASETS)
    root: str = setting("data/VOCdevkit/VOC2012")
    sbd_root: str = setting("")
    train_split: str = setting("")
    val_split: str = setting("")
    crop_size: int = setting(321, minimum=1)
    scale_min: float = setting(0.5, above=0.0)
    scale_max: float = setting(1.5, above=0.0)
    flip: bool = setting(True)
    color_jitter: float = setting(0.0, minimum=0.0, below=1.0)
    copy_paste: float = setting(0.0, minimum=0.0, maximum=1.0)
    repeat_threshold: float = setting(0.0, minimum=0.0, maximum=1.0)
    mean: tuple[float, float, float] = setting((0.485, 0.456, 0.406))
    std: tuple[float, float, float] = setting((0.229, 0.224, 0.225), above=0.0)
    workers: int | str = setting("auto", minimum=0)
    cache_mb: int = setting(2048, minimum=0)
    skip_bad: bool = setting(False)

    def __post_init__(self) -> None:
        check_section(self, "data")
        if isinstance(self.workers, str) and self.workers != "auto":
            raise ConfigError(f"data.workers = {self.workers!r} is not valid: give a number of loader processes or "
                              "'auto'", "data.workers")
        if self.scale_min > self.scale_max:
            raise ConfigError(f"data.scale_min ({self.scale_min}) must not exceed data.scale_max ({self.scale_max})",
                              "data.scale_min", "data.scale_max")

    @property
    def training_split(self) -> str:
        """``train_split``, or the dataset format's default training split."""
        return self.train_split or DATASETS[self.dataset].default_splits[0]

    @property
    def validation_split(self) -> str:
        """``val_split``, or the dataset format's default validation split."""
        return self.val_split or DATASETS[self.dataset].default_splits[1]


@dataclass(frozen=True)
class LossConfig:
    """Online bootstrapping (paper eq. 1) for the semantic and the localization head.

    Semantic: cross-entropy over labelled pixels whose ground-truth probability is below
    ``threshold``, keeping at least ``min_kept`` pixels per crop (threshold null: exactly the
    ``min_kept`` hardest); ``bootstrap: false`` is plain cross-entropy. ``warmup_iterations`` of
    plain cross-entropy come first. ``resolution``: ``label`` upsamples the outputs to the label
    size, ``output`` samples the labels at the output stride, ``output_x2`` upsamples the outputs
    to a grid twice as fine (stride 2 for maps at stride 4) and samples the labels there.
    Localization: smooth-L1 with per-instance weighting; a pixel is easy when its predicted box
    has IoU above ``box_iou_threshold`` with its ground-truth box. ``class_weighting``:
    ``median_frequency`` weights each class's pixels in the semantic loss by median class pixel
    frequency / its own (not in the paper, which relies on bootstrapping to balance classes).
    """

    bootstrap: bool = setting(True)
    threshold: float | None = setting(0.6, above=0.0, maximum=1.0)
    min_kept: int = setting(512, minimum=0)
    warmup_iterations: int = setting(0, minimum=0)
    resolution: str = setting("label", choices=LOSS_RESOLUTIONS)
    box_bootstrap: bool = setting(True)
    box_iou_threshold: float = setting(0.8, minimum=0.0, maximum=1.0)
    box_min_kept: int = setting(512, minimum=0)
    instance_weighting: str = setting("equal", choices=INSTANCE_WEIGHTINGS)
    smooth_l1_beta: float = setting(1.0, minimum=0.0)
    class_weighting: str = setting("none", choices=CLASS_WEIGHTINGS)
    localization_weight: float = setting(1.0, minimum=0.0)

    def __post_init__(self) -> None:
        check_section(self, "loss")
        if self.threshold is None and self.bootstrap and self.min_kept == 0:
            raise ConfigError("loss.threshold is null and loss.min_kept is 0: bootstrapping would keep no pixel; "
                              "set loss.min_kept (e.g. 512) or a threshold", "loss.threshold", "loss.min_kept")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: SGD with momentum (or AdamW), poly learning-rate decay.

    weight_average: 0 (the paper's: the last weights are the result), or a decay d in (0, 1): keep
    an exponential moving average of the weights and BatchNorm statistics (``engine.weight_average``);
    ``final.pt`` holds it and the final evaluation scores it.
    lr_warmup_iterations: 0 (the paper's: the poly schedule from the first step), or N: the rate
    rises linearly from base / N to the poly schedule's over the first N steps.
    amp: autocast of the forward pass: ``off`` (float32, the paper's), ``bf16``, ``fp16`` (with
    loss scaling), or ``auto``: ``bf16`` where the device computes it natively (a GPU with bf16, a
    CPU with AVX512-BF16 or AMX), else ``off``. Losses and evaluations run in float32 either way.
    """

    optimizer: str = setting("sgd", choices=OPTIMIZERS)
    iterations: int = setting(20000, minimum=1)
    batch_size: int = setting(10, minimum=1)
    lr: float = setting(0.001, above=0.0)
    head_lr_mult: float = setting(10.0, above=0.0)
    momentum: float = setting(0.9, minimum=0.0, maximum=1.0)
    weight_decay: float = setting(0.0005, minimum=0.0)
    poly_power: float = setting(0.9, minimum=0.0)
    lr_warmup_iterations: int = setting(0, minimum=0)
    weight_average: float = setting(0.0, minimum=0.0, below=1.0)
    time_limit_minutes: float = setting(0.0, minimum=0.0)
    eval_every: int = setting(2000, minimum=0)
    checkpoint_every: int = setting(1000, minimum=0)
    log_every: int = setting(20, minimum=1)
    seed: int = setting(0)
    device: str = setting("auto")
    threads: int = setting(0, minimum=0)
    amp: str = setting("off", choices=AMP_MODES)
    compile: bool = setting(False)
    sync_bn: bool = setting(False)
    deterministic: bool = setting(False)

    def __post_init__(self) -> None:
        check_section(self, "train")
        if self.deterministic and self.time_limit_minutes > 0:
            raise ConfigError("train.deterministic is true but train.time_limit_minutes makes the learning rate "
                              "depend on wall-clock time; set train.time_limit_minutes=0 for reproducible runs",
                              "train.deterministic", "train.time_limit_minutes")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation and inference. ``split`` empty: the data's validation split. ``max_images`` 0 =
    the whole split (periodic evaluation may use fewer). Multi-view testing averages class
    probabilities (and transforms) over ``scales`` and, with ``flip``, their mirror images.
    ``tile_size`` > 0 predicts large images in overlapping tiles of that size (``tile_overlap`` the
    overlapping fraction). ``protocol``: how found instances are matched to the ground truth
    (``sds``: Hariharan et al., the paper's; ``mnc``: the MNC/FCIS evaluation code's).
    ``panoptic_min_area``: the smallest segment, in pixels, of a predicted panoptic map (the rule
    is in ``bridgeseg.panoptic``)."""

    split: str = setting("")
    max_images: int = setting(0, minimum=0)
    periodic_max_images: int = setting(0, minimum=0)
    scales: tuple[float, ...] = setting((1.0,), above=0.0)
    flip: bool = setting(False)
    tile_size: int = setting(0, minimum=0)
    tile_overlap: float = setting(0.33, minimum=0.0, maximum=0.9)
    protocol: str = setting("sds", choices=PROTOCOLS)
    panoptic_min_area: int = setting(DEFAULT_MIN_AREA, minimum=1)

    def __post_init__(self) -> None:
        check_section(self, "eval")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)

    def __post_init__(self) -> None:
        if self.eval.tile_size and self.eval.tile_size < self.model.prediction_stride:
            raise ConfigError(f"eval.tile_size ({self.eval.tile_size}) must be 0 (whole images) or at least the "
                              f"stride of the maps ({self.model.prediction_stride})", "eval.tile_size",
                              "model.output_stride")

    @property
    def evaluation_split(self) -> str:
        """``eval.split``, or the data's validation split."""
        return self.eval.split or self.data.validation_split

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


def _split_key(dotted: str) -> tuple[str, str]:
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(f"unknown config key {dotted!r}: keys look like section.key with section one of "
                          f"{list(SECTIONS)}")
    return section, key


def _migrated(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the keys of ``MOVED_KEYS`` under their new names (for configs stored in old checkpoints)."""
    raw = {section: dict(values) if isinstance(values, dict) else values for section, values in raw.items()}
    for old, new in MOVED_KEYS.items():
        old_section, old_key = old.split(".")
        if isinstance(raw.get(old_section), dict) and old_key in raw[old_section]:
            new_section, new_key = new.split(".")
            raw.setdefault(new_section, {}).setdefault(new_key, raw[old_section].pop(old_key))
    return raw


def _section(section: str, values: Any) -> Any:
    """One section dataclass from its ``{key: value}`` mapping (types coerced, values checked)."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be a mapping of keys, got {values!r}")
    cls = SECTIONS[section]
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if dotted in MOVED_KEYS:
            raise ConfigError(f"config key {dotted!r} is now {MOVED_KEYS[dotted]!r}; rename it", dotted)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            raise ConfigError(f"unknown config key {dotted!r}" + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
                              + f"; valid keys of {section!r}: {sorted(fields)}", dotted)
        kwargs[key] = coerce(dotted, value, hints[key])
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any] | None, migrate: bool = False) -> Config:
    """Build and validate a ``Config`` from ``{section: {key: value}}``.

    ``migrate=True`` (for configs stored in checkpoints) first renames the keys of ``MOVED_KEYS``;
    otherwise a moved key is an error that gives its new name.
    """
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections {list(SECTIONS)}, got {type(raw).__name__}")
    for section in raw:
        if section not in SECTIONS:
            hint = difflib.get_close_matches(str(section), SECTIONS, n=1)
            raise ConfigError(f"unknown config section {section!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; valid sections: {list(SECTIONS)}")
    if migrate:
        raw = _migrated(raw)
    return Config(**{section: _section(section, values) for section, values in raw.items()})


class _Loader(yaml.SafeLoader):
    """YAML whose booleans are YAML 1.2's, true and false: ``off``, ``on``, ``yes`` and ``no`` stay
    words, so ``train.amp=off`` means the mode "off" (YAML 1.1 would read it as False). A key given
    twice in one mapping is an error (plain YAML loaders keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=0.01"`` -> ``("train.lr", 0.01)``; values are read as YAML (numbers, true, null, [1, 2])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=0.01")
    key, _, value = text.partition("=")
    key = key.strip()
    _split_key(key)
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _read_file(path: Path) -> dict[str, Any]:
    """The ``{section: {key: value}}`` of a YAML config file; an empty file is an error (it would
    silently mean every default)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (the configs shipped with bridgeseg are in "
                          f"{packaged_config_dir()})")
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if raw is None:
        model, data = ModelConfig(), DataConfig()
        raise ConfigError(f"config file {path} is empty: it would mean every default (ResNet-{model.depth}, "
                          f"model.init = {model.init}, data.root = {data.root}); write your experiment's settings "
                          f"in it, e.g. starting from {packaged_config_dir() / 'demo.yaml'}")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections {list(SECTIONS)}")
    return raw


def _origin(error: ConfigError, path: Path | None, given: dict[str, str]) -> str:
    """Where the values at fault came from: the overrides that set them and/or the file."""
    overridden = [given[key] for key in error.keys if key in given]
    places = [f"from {', '.join(overridden)}"] if overridden else []
    if path is not None and (not error.keys or any(key not in given for key in error.keys)):
        places.append(f"in {path}")
    return f" ({'; '.join(places)})" if places else ""


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a YAML config (None = defaults) and apply overrides: ``--set`` strings
    (``section.key=value``) or a ``{"section.key": value}`` dict. An error says whether the value
    at fault came from the file or from an override (and which)."""
    raw: dict[str, Any] = {} if path is None else _read_file(Path(path))
    if isinstance(overrides, dict):
        pairs = [(key, value, f"the override {key}={value!r}") for key, value in overrides.items()]
    else:
        pairs = [(*parse_override(text), f"--set {text}") for text in overrides or []]
    given = {}
    for dotted, value, text in pairs:
        section, key = _split_key(dotted)
        if not isinstance(raw.get(section) or {}, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {}, **{key: value})
        given[dotted] = text
    try:
        return config_from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"{error}{_origin(error, None if path is None else Path(path), given)}",
                          *error.keys) from None


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every key, defaults included) as YAML, atomically."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


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
