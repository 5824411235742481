"""Losses with online bootstrapping of hard pixels (paper section 2.2, eq. 1).

Semantic: cross-entropy over the labelled pixels whose ground-truth probability is below a
threshold ``t``, normalised by the number of pixels kept; if fewer than ``K`` pixels of a crop are
below ``t``, the ``K`` hardest are kept (``t`` rises for that crop). With no threshold, exactly the
``K`` hardest. Plain cross-entropy is the same code with bootstrapping off.

Localization: smooth-L1 on the 4 transforms of each pixel's own class; every pixel of an instance
has the same weight (see ``targets.instance_weights``); a pixel is easy when the IoU of its
predicted box with its ground-truth box is above a threshold, and easy pixels are dropped, keeping
at least ``K`` per crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed
from .config import LossConfig
from .geometry import resize_to_input
from .targets import BoxTargets, box_targets, class_transforms, decode_boxes, elementwise_box_iou


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (or float64) whatever the autocast dtype of the outputs."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _normalised(total: torch.Tensor, normalizer: torch.Tensor, minimum: float) -> torch.Tensor:
    """``total / normalizer``. Under DDP the normalizer is the global one divided by the world size:
    DDP averages gradients over ranks, so a step then equals one process's step on the whole batch."""
    if distributed.is_enabled():
        normalizer = distributed.all_reduce_sum(normalizer.detach().clone()) / torch.distributed.get_world_size()
    return total / normalizer.clamp(min=minimum)


def hard_pixel_mask(easiness: torch.Tensor, valid: torch.Tensor, threshold: float | None,
                    min_kept: int) -> torch.Tensor:
    """Which pixels bootstrapping keeps.

    Args:
        easiness: (N, P) per-pixel easiness (ground-truth probability, or box IoU); one row per crop.
        valid: (N, P) bool, pixels that have a target.
        threshold: keep valid pixels with ``easiness < threshold``; None keeps only the hardest.
        min_kept: per crop, also keep the ``min_kept`` least easy valid pixels (all of them if
            a crop has fewer).

    Returns:
        (N, P) bool.
    """
    if threshold is None:
        keep = torch.zeros_like(valid)
    else:
        keep = valid & (easiness < threshold)
    if min_kept > 0:
        k = min(min_kept, easiness.shape[1])
        ranked = easiness.masked_fill(~valid, float("inf"))
        hardest = torch.topk(ranked, k, dim=1, largest=False, sorted=False).indices
        keep |= torch.zeros_like(valid).scatter_(1, hardest, True) & valid
    return keep


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, threshold: float | None = 0.6,
                               min_kept: int = 512, bootstrap: bool = True, ignore_index: int = 255,
                               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 of the paper.

    Args:
        logits: (N, C, H, W) class scores (computed in float32 whatever their dtype).
        target: (N, H, W) long labels; ``ignore_index`` pixels never count.
        threshold: probability threshold ``t`` in (0, 1], or None for exactly ``min_kept``.
        min_kept: ``K``, the fewest pixels kept per crop.
        bootstrap: False gives plain cross-entropy averaged over labelled pixels.
        class_weights: (C,) weight of each class's pixels (None: all 1, the paper's); the loss is
            then the weighted mean over the kept pixels. Which pixels are hard does not change.

    Returns:
        Scalar loss; 0 (with a graph) when no pixel is labelled.
    """
    per_pixel = F.cross_entropy(_full_precision(logits), target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    if bootstrap:
        with torch.no_grad():
            probability = torch.exp(-per_pixel).flatten(1)
            keep = hard_pixel_mask(probability, valid.flatten(1), threshold, min_kept).view_as(valid)
    else:
        keep = valid
    if class_weights is None:
        return _normalised((per_pixel * keep).sum(), keep.sum().to(per_pixel.dtype), 1.0)
    weights = class_weights.to(per_pixel.device)[target.clamp(0, len(class_weights) - 1)] * keep
    return _normalised((per_pixel * weights).sum(), weights.sum(), 1e-12)


def bootstrapped_box_loss(transforms: torch.Tensor, target_transforms: torch.Tensor, target_boxes: torch.Tensor,
                          classes: torch.Tensor, weights: torch.Tensor, stride: int, iou_threshold: float | None = 0.8,
                          min_kept: int = 512, bootstrap: bool = True, beta: float = 1.0) -> torch.Tensor:
    """Weighted, bootstrapped smooth-L1 on box transforms.

    Args:
        transforms: (N, 4 * (C - 1), h, w) predicted transform maps.
        target_transforms, target_boxes: (N, 4, h, w) from ``targets.box_targets`` on the same grid.
        classes: (N, h, w) each pixel's instance class (0: no target).
        weights: (N, h, w) per-pixel weights.
        stride: the grid's stride in input pixels (to decode boxes for the IoU).
        iou_threshold: a pixel is easy when its box IoU is above this; None keeps only the hardest.
        min_kept: fewest pixels kept per crop.

    Returns:
        Scalar: sum of weight x loss over kept pixels / sum of their weights.
    """
    predicted = _full_precision(class_transforms(transforms, classes))
    per_pixel = F.smooth_l1_loss(predicted, target_transforms, beta=beta, reduction="none").sum(dim=1)
    valid = classes > 0
    if bootstrap:
        with torch.no_grad():
            iou = elementwise_box_iou(decode_boxes(predicted, stride), target_boxes)
            keep = hard_pixel_mask(iou.flatten(1), valid.flatten(1), iou_threshold, min_kept).view_as(valid)
    else:
        keep = valid
    kept_weights = weights * keep
    return _normalised((per_pixel * kept_weights).sum(), kept_weights.sum(), 1e-12)


@dataclass
class LossTargets:
    """What a batch's labels give the loss, at the loss resolution: ``semantic`` (N, H', W') class
    labels and, for a localization head, ``boxes`` (``targets.BoxTargets`` on the same grid)."""

    semantic: torch.Tensor
    boxes: BoxTargets | None


class SegmentationLoss:
    """The training loss of a model's outputs, configured by ``LossConfig``.

    ``loss(outputs, batch, step)`` takes the model's output dict (``semantic`` (N, C, h, w) and/or
    ``localization`` (N, 4(C-1), h, w)) and a batch with ``semantic`` (N, H, W) and, for
    localization, ``instance`` (N, H, W) (or the ``LossTargets`` that ``loss.targets(batch)`` made of
    it); returns ``(total, {name: value})``.
    """

    def __init__(self, config: LossConfig, num_classes: int, output_stride: int,
                 class_weights: torch.Tensor | None = None) -> None:
        self.config = config
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.class_weights = class_weights  # (C,) for loss.class_weighting, from the training split

    @property
    def stride(self) -> int:
        """The stride of the loss's grid in label pixels: 1 at label resolution, the output stride
        on the output grid, half of it on the grid twice as fine."""
        if self.config.resolution == "label":
            return 1
        if self.config.resolution == "output_x2":
            return max(1, self.output_stride // 2)
        return self.output_stride

    def targets(self, batch: dict[str, torch.Tensor]) -> LossTargets:
        """The labels of ``batch`` on the loss's grid; box targets when it has ``instance`` maps."""
        semantic = batch["semantic"]
        boxes = None
        if "instance" in batch:
            boxes = box_targets(batch["instance"], semantic, self.num_classes, self.stride,
                                self.config.instance_weighting)
        return LossTargets(semantic[:, ::self.stride, ::self.stride], boxes)

    def at_loss_grid(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, C, h, w) maps at the output stride -> (N, C, H', W') on the loss's grid of ``size``
        (position ``i`` of the output grid is position ``i * output_stride / stride`` there)."""
        if self.stride == self.output_stride:
            return maps
        return resize_to_input(_full_precision(maps), size, self.output_stride // self.stride)

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor] | LossTargets,
                 step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        targets = batch if isinstance(batch, LossTargets) else self.targets(batch)
        size = tuple(targets.semantic.shape[-2:])
        parts: dict[str, torch.Tensor] = {}
        if "semantic" in outputs:
            logits = self.at_loss_grid(outputs["semantic"], size)
            parts["semantic"] = bootstrapped_cross_entropy(
                logits, targets.semantic, cfg.threshold, cfg.min_kept,
                bootstrap=cfg.bootstrap and step >= cfg.warmup_iterations, class_weights=self.class_weights)
        if "localization" in outputs:
            boxes = targets.boxes
            if boxes is None:
                raise ValueError("the localization loss needs instance labels: the batch has no 'instance' maps")
            transforms = self.at_loss_grid(outputs["localization"], size)
            parts["localization"] = cfg.localization_weight * bootstrapped_box_loss(
                transforms, boxes.transforms, boxes.boxes, boxes.classes, boxes.weights, self.stride,
                cfg.box_iou_threshold, cfg.box_min_kept,
                bootstrap=cfg.box_bootstrap and step >= cfg.warmup_iterations, beta=cfg.smooth_l1_beta)
        total = sum(parts.values())
        return total, {name: float(value.detach()) for name, value in parts.items()}
