"""Localization targets: instance masks -> per-pixel box regression targets and weights.

The encoding, used everywhere (targets, losses, grouping, test-time flips and scales):

* Coordinates are continuous pixel coordinates in the input image, pixel ``k``'s centre at ``k``.
  Output position ``i`` of a network with output stride ``s`` sits at input pixel ``i * s``.
* An instance spanning rows ``r0..r1`` and columns ``c0..c1`` has the box
  ``(x0, y0, x1, y1) = (c0 - 0.5, r0 - 0.5, c1 + 0.5, r1 + 0.5)`` (torchvision's xyxy order), so
  its height is ``r1 - r0 + 1`` pixels and its centre ``((c0 + c1) / 2, (r0 + r1) / 2)``.
* Each foreground class owns 4 transform channels, in order ``TRANSFORM_CHANNELS``:
  ``dy = (cy - y) / h`` and ``dx = (cx - x) / w``, the offset from the pixel to its box centre
  relative to the box size (in [-0.5, 0.5] for a pixel inside its box), and
  ``log_h = log(h / SIZE_REFERENCE)``, ``log_w = log(w / SIZE_REFERENCE)``.
  Class ``c`` (1..C-1) uses channels ``4 * (c - 1) .. 4 * (c - 1) + 3`` (80 channels for VOC).

Relative offsets make the targets scale invariant: a horizontal flip negates ``dx``; resizing the
image by ``s`` adds ``log(s)`` to both log sizes and leaves the offsets unchanged, so decoded boxes
scale by ``s`` (divide by ``s`` to return to the original image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRANSFORM_CHANNELS = ("dy", "dx", "log_h", "log_w")
SIZE_REFERENCE = 64.0
INSTANCE_WEIGHTINGS = ("equal", "box", "sqrt", "none")
_LOG_SIZE_LIMIT = 8.0  # exp(8) * 64 px: far beyond any image; keeps exp() finite for wild predictions


@dataclass
class BoxTargets:
    """Per-pixel localization targets of a batch, sampled on the output grid.

    Attributes:
        transforms: (N, 4, h, w) float, ``TRANSFORM_CHANNELS`` of each pixel's own instance (0 where
            ``classes`` is 0).
        boxes: (N, 4, h, w) float, that instance's box (x0, y0, x1, y1); 0 where ``classes`` is 0.
        classes: (N, h, w) long, the instance's class 1..C-1; 0 where a pixel has no target
            (background, void, or no instance).
        weights: (N, h, w) float, the pixel's loss weight (0 where ``classes`` is 0).
    """

    transforms: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor
    weights: torch.Tensor


def instance_statistics(instances: torch.Tensor, semantic: torch.Tensor, num_classes: int,
                        ignore_index: int = 255):
    """Box, class and area of every instance in a batch.

    Args:
        instances: (N, H, W) long instance ids; 0 = background and ``ignore_index`` = void.
        semantic: (N, H, W) long class labels; ``ignore_index`` = void.
        num_classes: C, background included.

    Returns:
        ``(inverse, boxes, classes, areas)``: ``inverse`` (N, H, W) long, the row of each pixel's
        instance in the other outputs, -1 where the pixel belongs to no instance; ``boxes`` (K, 4)
        float xyxy; ``classes`` (K,) long, the most frequent class of the instance's pixels;
        ``areas`` (K,) float pixel counts.
    """
    n, height, width = instances.shape
    device = instances.device
    valid = (instances > 0) & (instances != ignore_index) & (semantic > 0) & (semantic < num_classes)
    inverse = torch.full_like(instances, -1)
    positions = valid.view(-1).nonzero().squeeze(1)  # the instance pixels, in raster order over the batch
    if not len(positions):
        empty = torch.zeros(0, device=device)
        return inverse, empty.view(0, 4), empty.long(), empty
    # one key per (image, instance id), in the order of torch.unique's sorted keys; counted with
    # bincount rather than sorted (half the time; benchmarks/train_loop_overhead.py "targets")
    ids = instances.view(-1).index_select(0, positions)
    slots = int(ids.max()) + 1
    if n * slots > 2 * len(positions) + 2**16:  # sparse large ids (32-bit ones): the same order, made dense
        ids = torch.unique(ids, return_inverse=True)[1] + 1
        slots = int(ids.max()) + 1
    image, within = torch.div(positions, height * width, rounding_mode="floor"), positions % (height * width)
    present = torch.bincount(image * slots + ids, minlength=n * slots) > 0
    rank = torch.cumsum(present, 0) - 1  # key -> its row among the present ones
    flat_inverse = rank.index_select(0, image * slots + ids)
    count = int(rank[-1]) + 1
    inverse.view(-1).index_copy_(0, positions, flat_inverse)

    def extent(coordinate: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) the first and last of ``coordinate`` (rows or columns, one per instance pixel) each
        instance covers."""
        covered = torch.bincount(flat_inverse * size + coordinate, minlength=count * size).view(count, size) > 0
        first = covered.to(torch.uint8).argmax(dim=1)
        last = size - 1 - covered.flip(1).to(torch.uint8).argmax(dim=1)
        return first, last

    row0, row1 = extent(torch.div(within, width, rounding_mode="floor"), height)
    col0, col1 = extent(within % width, width)
    boxes = torch.stack([col0, row0, col1, row1], dim=1).float()
    boxes += torch.tensor([-0.5, -0.5, 0.5, 0.5], device=device)
    areas = torch.bincount(flat_inverse, minlength=count).float()
    class_votes = torch.bincount(flat_inverse * num_classes + semantic.view(-1).index_select(0, positions),
                                 minlength=count * num_classes)
    classes = class_votes.view(count, num_classes).argmax(dim=1)
    return inverse, boxes, classes, areas


def instance_weights(boxes: torch.Tensor, areas: torch.Tensor, weighting: str = "equal") -> torch.Tensor:
    """Per-pixel loss weight of each instance's pixels, (K,) float.

    ``equal``: 1 / area, so every instance contributes the same whatever its size (default);
    ``box``: 1 / (box height x width), the paper's wording; ``sqrt``: 1 / sqrt(area), a middle
    ground; ``none``: 1, every pixel counts the same (large instances dominate).
    """
    if weighting == "equal":
        return 1.0 / areas
    if weighting == "box":
        return 1.0 / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    if weighting == "sqrt":
        return areas.rsqrt()
    if weighting == "none":
        return torch.ones_like(areas)
    raise ValueError(f"unknown instance weighting {weighting!r}; choose one of {INSTANCE_WEIGHTINGS}")


def encode_boxes(boxes: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Transforms of pixels at (ys, xs) towards boxes.

    Args:
        boxes: (..., 4) xyxy; ys, xs: (...) pixel coordinates.

    Returns:
        (..., 4) in ``TRANSFORM_CHANNELS`` order.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    h, w = y1 - y0, x1 - x0
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return torch.stack([(cy - ys) / h, (cx - xs) / w, torch.log(h / SIZE_REFERENCE), torch.log(w / SIZE_REFERENCE)], -1)


def decode_boxes(transforms: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Boxes voted by every pixel of a transform map.

    Args:
        transforms: (..., 4, h, w) in ``TRANSFORM_CHANNELS`` order; position (i, j) is the input
            pixel (i * stride, j * stride).
        stride: the map's stride relative to the input image.

    Returns:
        (..., 4, h, w) boxes (x0, y0, x1, y1) in input pixel coordinates.
    """
    dy, dx, log_h, log_w = transforms.unbind(-3)
    h = SIZE_REFERENCE * torch.exp(log_h.clamp(-_LOG_SIZE_LIMIT, _LOG_SIZE_LIMIT))
    w = SIZE_REFERENCE * torch.exp(log_w.clamp(-_LOG_SIZE_LIMIT, _LOG_SIZE_LIMIT))
    rows, cols = transforms.shape[-2:]
    ys = torch.arange(rows, device=transforms.device, dtype=transforms.dtype).view(rows, 1) * stride
    xs = torch.arange(cols, device=transforms.device, dtype=transforms.dtype).view(1, cols) * stride
    cy, cx = ys + dy * h, xs + dx * w
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-3)


def elementwise_box_iou(a: torch.Tensor, b: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """IoU of corresponding boxes: a, b (..., 4, ...) xyxy along ``dim`` -> (...) without that dim."""
    ax0, ay0, ax1, ay1 = a.unbind(dim)
    bx0, by0, bx1, by1 = b.unbind(dim)
    iw = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0)
    ih = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp(min=0)
    inter = iw * ih
    union = (ax1 - ax0).clamp(min=0) * (ay1 - ay0).clamp(min=0) + (bx1 - bx0).clamp(min=0) * (by1 - by0).clamp(min=0)
    return inter / (union - inter).clamp(min=1e-9)


def box_targets(instances: torch.Tensor, semantic: torch.Tensor, num_classes: int, stride: int = 1,
                weighting: str = "equal", ignore_index: int = 255) -> BoxTargets:
    """Localization targets for a batch, sampled every ``stride`` pixels.

    Boxes, areas and weights come from the full-resolution masks; targets are taken at pixels
    (i * stride, j * stride), i.e. on a network's output grid (stride 1: label resolution).

    Args:
        instances: (N, H, W) long instance ids (0 background, ``ignore_index`` void).
        semantic: (N, H, W) long class labels.
        num_classes: C, background included.
        stride: sampling stride (the model's output stride, or 1).
        weighting: see ``instance_weights``.
    """
    inverse, boxes, classes, areas = instance_statistics(instances, semantic, num_classes, ignore_index)
    sampled = inverse[:, ::stride, ::stride]
    n, h, w = sampled.shape
    device = instances.device
    out_transforms = torch.zeros(4, n * h * w, device=device)
    out_boxes = torch.zeros(4, n * h * w, device=device)
    out_classes = torch.zeros(n * h * w, dtype=torch.long, device=device)
    out_weights = torch.zeros(n * h * w, device=device)
    flat = sampled.reshape(-1)
    where = (flat >= 0).nonzero().squeeze(1)  # only the pixels with a target are computed
    if len(where):
        owner = flat.index_select(0, where)
        within = where % (h * w)
        ys = (torch.div(within, w, rounding_mode="floor") * stride).float()
        xs = (within % w * stride).float()
        pixel_boxes = boxes.index_select(0, owner)
        out_transforms.index_copy_(1, where, encode_boxes(pixel_boxes, ys, xs).T)
        out_boxes.index_copy_(1, where, pixel_boxes.T)
        out_classes.index_copy_(0, where, classes.index_select(0, owner))
        out_weights.index_copy_(0, where, instance_weights(boxes, areas, weighting).index_select(0, owner))
    return BoxTargets(transforms=out_transforms.view(4, n, h, w).transpose(0, 1),
                      boxes=out_boxes.view(4, n, h, w).transpose(0, 1),
                      classes=out_classes.view(n, h, w), weights=out_weights.view(n, h, w))


def class_transforms(transforms: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick each pixel's 4 channels of a class from a (N, 4 * (C - 1), h, w) transform map.

    Args:
        transforms: (N, 4 * (C - 1), h, w) network output.
        classes: (N, h, w) long class 1..C-1 per pixel (0 is mapped to class 1's channels; mask
            those pixels out yourself).

    Returns:
        (N, 4, h, w).
    """
    n, channels, h, w = transforms.shape
    index = ((classes - 1).clamp(min=0) * 4).unsqueeze(1) + torch.arange(4, device=classes.device).view(1, 4, 1, 1)
    return transforms.gather(1, index)

