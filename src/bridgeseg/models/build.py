"""Networks from settings: a ``model:`` config section -> an FCRN, a checkpoint -> a trained one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..config import Config, ModelConfig, config_from_dict
from .backbone import DilatedResNet
from .decoder import SkipDecoder
from .fcrn import ARCHITECTURES, FCRN, SeparateNetworks
from .heads import build_head


def head_channels(head: str, num_classes: int) -> int:
    """Output channels of a head: C class scores, or 4 transforms per foreground class."""
    return num_classes if head == "semantic" else 4 * (num_classes - 1)


def _build_fcrn(config: ModelConfig, num_classes: int, heads: tuple[str, ...], load_weights: bool) -> FCRN:
    backbone = DilatedResNet(config.depth, config.output_stride, config.dropout, config.dropout_blocks,
                             config.width)
    if load_weights and config.init == "imagenet":
        backbone.load_imagenet_weights()
    elif load_weights and config.init != "random":
        backbone.load_weights_file(config.init)
    decoder = (SkipDecoder(backbone.feature_info, config.decoder_stride, config.decoder_channels)
               if config.decoder_stride else None)
    features = backbone.out_channels if decoder is None else decoder.out_channels
    modules = {name: build_head(config.head, features, head_channels(name, num_classes),
                                config.kernel, config.dilation, config.head_channels, config.head_dropout)
               for name in heads}
    return FCRN(backbone, modules, decoder)


def build_model(config: ModelConfig, num_classes: int, load_weights: bool = True) -> FCRN | SeparateNetworks:
    """The network of ``config.arch`` for ``num_classes`` classes (background included).

    ``semantic`` and ``localization`` are one FCRN with one head; ``joint`` is one FCRN with both
    heads on a shared backbone; ``separate`` is two FCRNs (the paper's arrangement). Every variant
    returns ``{"semantic": (N, C, h, w)}`` and/or ``{"localization": (N, 4(C-1), h, w)}``.
    ``load_weights=False`` skips backbone initialisation (when a checkpoint will be loaded).
    """
    if num_classes < 2:
        raise ValueError(f"a segmentation model needs at least 2 classes (background + one), got {num_classes}")
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown model.arch {config.arch!r}; choose one of {list(ARCHITECTURES)}")
    heads, shared = ARCHITECTURES[config.arch]
    if shared:
        return _build_fcrn(config, num_classes, heads, load_weights)
    return SeparateNetworks({name: _build_fcrn(config, num_classes, (name,), load_weights) for name in heads})


@dataclass
class TrainedModel:
    """A network rebuilt from a training checkpoint.

    Attributes:
        model: the network, in eval mode.
        class_names: C names, background first.
        config: the training run's config.
        thing_classes: the classes that have instances (the dataset's; every foreground class for
            checkpoints that do not say).
    """

    model: FCRN | SeparateNetworks
    class_names: tuple[str, ...]
    config: Config
    thing_classes: tuple[int, ...]


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The network of a training checkpoint, rebuilt from the config it was trained with.

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing, unsafe, corrupt or not
        written by bridgeseg training.
    """
    state = load_checkpoint(path, map_location="cpu")
    missing = [key for key in ("config", "class_names") if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} has no {' / '.join(missing)} entry; use a checkpoint written by "
                         "bridgeseg training (<run>/last.pt or <run>/final.pt)")
    config: Config = config_from_dict(state["config"], migrate=True)
    class_names = tuple(state["class_names"])
    model = build_model(config.model, len(class_names), load_weights=False)
    model.load_state_dict(state["model"])
    things = tuple(int(c) for c in state.get("thing_classes", range(1, len(class_names))))
    return TrainedModel(model.to(device).eval(), class_names, config, things)


def heads_of(config: ModelConfig) -> tuple[str, ...]:
    """The maps a model of ``config.arch`` produces, before it is built (``model.heads`` after)."""
    return ARCHITECTURES[config.arch][0]


def load_trained_models(paths, device: str | torch.device = "cpu") -> TrainedModel:
    """One network from one checkpoint, or from a semantic and a localization checkpoint trained apart
    (the paper trains the two networks separately) combined into one ``SeparateNetworks``.

    Args:
        paths: a checkpoint path, or a sequence of one or two.

    Returns:
        The ``TrainedModel``; for two checkpoints the config is the first's with ``model.arch`` =
        ``separate``.

    Raises:
        ValueError naming the files when the two do not fit together: the same head twice,
        other classes, another output stride or another input normalisation.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"give one checkpoint, or a semantic and a localization one; got {len(paths)}")
    loaded = [load_trained_model(path, device) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    first, second = loaded
    problems = []
    if set(first.model.heads) & set(second.model.heads):
        problems.append(f"both produce {sorted(set(first.model.heads) & set(second.model.heads))}")
    if first.class_names != second.class_names:
        problems.append(f"classes {list(first.class_names)} vs {list(second.class_names)}")
    if first.model.output_stride != second.model.output_stride:
        problems.append(f"output stride {first.model.output_stride} vs {second.model.output_stride}")
    if (first.config.data.mean, first.config.data.std) != (second.config.data.mean, second.config.data.std):
        problems.append("different data.mean / data.std")
    if problems:
        raise ValueError(f"checkpoints {paths[0]} and {paths[1]} cannot be combined: {'; '.join(problems)}; combine a "
                         "semantic checkpoint with a localization one trained on the same classes")
    semantic, localization = (first, second) if "semantic" in first.model.heads else (second, first)
    combined = SeparateNetworks({"semantic": semantic.model, "localization": localization.model}).to(device).eval()
    return TrainedModel(combined, first.class_names, first.config.replace(**{"model.arch": "separate"}),
                        localization.thing_classes)
