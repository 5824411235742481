"""Models: dilated ResNet backbones, classifier heads, FCRN (``build_model`` puts them together)."""

from __future__ import annotations

from ..config import ModelConfig
from .backbone import DilatedResNet, FeatureInfo
from .fcrn import FCRN, SeparateNetworks, resize_to_input
from .heads import LinearHead, NonLinearHead, build_head, field_of_view

__all__ = ["DilatedResNet", "FeatureInfo", "FCRN", "SeparateNetworks", "LinearHead", "NonLinearHead",
           "build_head", "build_model", "field_of_view", "head_channels", "resize_to_input"]


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
    modules = {name: build_head(config.head, backbone.out_channels, head_channels(name, num_classes),
                                config.kernel, config.dilation, config.head_channels, config.head_dropout)
               for name in heads}
    return FCRN(backbone, modules)


def build_model(config: ModelConfig, num_classes: int, load_weights: bool = True):
    """The network of ``config.arch`` for ``num_classes`` classes (background included).

    ``semantic`` and ``localization`` are one FCRN with one head; ``joint`` is one FCRN with both
    heads on a shared backbone; ``separate`` is two FCRNs (the paper's arrangement). Every variant
    returns ``{"semantic": (N, C, h, w)}`` and/or ``{"localization": (N, 4(C-1), h, w)}``.
    ``load_weights=False`` skips backbone initialisation (when a checkpoint will be loaded).
    """
    if num_classes < 2:
        raise ValueError(f"a segmentation model needs at least 2 classes (background + one), got {num_classes}")
    if config.arch == "semantic":
        return _build_fcrn(config, num_classes, ("semantic",), load_weights)
    if config.arch == "localization":
        return _build_fcrn(config, num_classes, ("localization",), load_weights)
    if config.arch == "joint":
        return _build_fcrn(config, num_classes, ("semantic", "localization"), load_weights)
    if config.arch == "separate":
        return SeparateNetworks({name: _build_fcrn(config, num_classes, (name,), load_weights)
                                 for name in ("semantic", "localization")})
    raise ValueError(f"unknown model.arch {config.arch!r}; choose semantic, localization, joint or separate")
