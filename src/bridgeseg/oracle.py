"""Ground-truth ("oracle") maps in place of a network's: the paper's pilot experiment and a check of
the grouping itself.

``semantic`` replaces the class probabilities by the ground-truth class map (the paper's pilot:
73.0 mAP^r@0.5 on VOC with its localization network), ``localization`` the transforms by the
ground-truth boxes, ``both`` needs no network and works at label resolution (stride 1), so that
it tests the grouping alone.

Ground-truth probabilities are one-hot: every cluster would get confidence 1.0 and AP would lose
the ranking it measures. With ``semantic``, the candidates and masks come from the ground truth
but the instances are still ranked by the network's own class probabilities (``confidences``),
when the network has a semantic head.
"""

from __future__ import annotations

import torch

from .targets import box_targets
from .tta import ImageMaps

ORACLES = ("semantic", "localization", "both")


def oracle_probabilities(semantic: torch.Tensor, num_classes: int, stride: int) -> torch.Tensor:
    """One-hot class probabilities from a label map: (H, W) -> (C, h, w); void counts as background."""
    labels = semantic[::stride, ::stride].clone()
    labels[(labels < 0) | (labels >= num_classes)] = 0
    return torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()


def oracle_transforms(instance: torch.Tensor, semantic: torch.Tensor, num_classes: int, stride: int) -> torch.Tensor:
    """Ground-truth transform maps: (H, W) label maps -> (4 (C - 1), h, w); each pixel's own
    instance transform in its class's channels, zeros elsewhere."""
    targets = box_targets(instance[None], semantic[None], num_classes, stride)
    classes = targets.classes[0]
    h, w = classes.shape
    maps = torch.zeros(num_classes - 1, 4, h, w, device=instance.device)
    has_target = classes > 0
    index = (classes - 1).clamp(min=0)
    maps[index[has_target], :, *has_target.nonzero(as_tuple=True)] = targets.transforms[0].permute(1, 2, 0)[has_target]
    return maps.view(4 * (num_classes - 1), h, w)


def apply_oracle(maps: ImageMaps | None, oracle: str, semantic: torch.Tensor, instance: torch.Tensor,
                 num_classes: int, output_stride: int) -> ImageMaps:
    """Replace predicted maps by ground truth: ``semantic``, ``localization`` or ``both``.

    Args:
        maps: the network's maps of the image (None only for ``both``).
        semantic, instance: (H, W) ground-truth label maps.
    """
    if oracle == "both":
        return ImageMaps(oracle_probabilities(semantic, num_classes, 1),
                         oracle_transforms(instance, semantic, num_classes, 1), 1, semantic)
    if maps is None:
        raise ValueError(f"oracle {oracle!r} replaces only part of the maps and needs a model checkpoint")
    if oracle == "semantic":
        return ImageMaps(oracle_probabilities(semantic, num_classes, output_stride), maps.transforms, output_stride,
                         semantic, confidences=maps.probs)
    if oracle == "localization":
        if maps.probs is None:
            raise ValueError("--oracle localization needs a checkpoint with a semantic head")
        return ImageMaps(maps.probs, oracle_transforms(instance, semantic, num_classes, output_stride),
                         output_stride, maps.semantic)
    raise ValueError(f"unknown oracle {oracle!r}; choose one of {ORACLES}")
