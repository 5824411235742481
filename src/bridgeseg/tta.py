"""Test-time augmentation: dense maps of an image from several views and/or overlapping tiles.

Pure functions of a network and normalised image tensors; no config, no files. All predictions
of an image live on its *base grid*, positions ``i * s`` of the original image
(``h = ceil(H / s)``, ``bridgeseg.geometry``), which is what ``bridgeseg.grouping`` reads.

Multi-view testing (the paper's "multi-view testing"; ``predict_views``):

* A view resizes the image bilinearly to ``(round(H * scale), round(W * scale))`` (half-pixel
  centres, antialiased when shrinking) and optionally mirrors it; its maps are resampled onto the
  base grid with ``geometry.base_grid_coordinates`` (``grid_sample``, ``align_corners=True``,
  edges replicated).
* Transforms are brought back to the original frame (``undo_view_transforms``): a mirror negates
  ``dx``; a resize by ``H_v / H`` (``W_v / W``) leaves the relative offsets unchanged and subtracts
  its logarithm from ``log_h`` (``log_w``), so decoded boxes shrink back by the same factor.
* Class probabilities are averaged over views. The transforms of class c are averaged with
  weights ``p_c``, the view's probability of c at the sampled grid positions: a transform is only
  meaningful where its class is present, and this keeps the background's arbitrary regressions
  out of instance borders.
* The image-resolution class map is the argmax of the averaged probabilities upsampled like
  ``geometry.resize_to_input`` (``geometry.upsampled_argmax``): no (C, H, W) map is held.

Sliding window (``tile_size`` > 0, ``network_maps``): each view is cut into overlapping tiles of
at most ``tile_size`` pixels whose origins are multiples of the output stride, so a tile's grid is
a window of the view's grid; probabilities and transforms are averaged where tiles overlap. The
network only ever sees a tile, so its activation memory is bounded by the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import base_grid_coordinates, grid_size, upsampled_argmax

_WEIGHT_FLOOR = 1e-6  # keeps the probability-weighted transform average defined where p_c ~ 0


@dataclass
class ImageMaps:
    """Dense predictions of one image on a grid of ``stride`` input pixels: ``probs`` (C, h, w)
    class probabilities, ``transforms`` (4 (C - 1), h, w) box transforms, ``semantic`` (H, W)
    the per-pixel class at image resolution; a map the model does not produce is None.
    ``confidences`` (C, h, w): the probabilities that rank instances, when they are not ``probs``
    (ground-truth one-hot ``probs`` of an oracle cannot rank; the network's can)."""

    probs: torch.Tensor | None
    transforms: torch.Tensor | None
    stride: int
    semantic: torch.Tensor | None
    confidences: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Views and their geometry
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """One test-time view: the image resized by ``scale`` and, with ``flip``, mirrored left-right."""

    scale: float = 1.0
    flip: bool = False


def make_views(scales: Sequence[float] = (1.0,), flip: bool = False) -> list[View]:
    """Every scale, each also mirrored when ``flip`` (``len(scales) * (1 + flip)`` views)."""
    if not scales:
        raise ValueError("multi-view testing needs at least one scale, e.g. scales=(1.0,)")
    bad = [scale for scale in scales if not scale > 0]
    if bad:
        raise ValueError(f"test scales must be > 0, got {list(scales)}")
    return [View(float(scale), mirrored) for scale in scales for mirrored in ((False, True) if flip else (False,))]


def view_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H_v, W_v) = the image size times ``scale``, rounded, at least 1."""
    return max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))


def render_view(images: torch.Tensor, view: View) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, H_v, W_v): resized bilinearly (antialiased when shrinking), mirrored."""
    size = view_size(tuple(images.shape[-2:]), view.scale)
    if size != tuple(images.shape[-2:]):
        shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return images.flip(-1) if view.flip else images


def undo_view_transforms(transforms: torch.Tensor, scale_y: float, scale_x: float, flip: bool) -> torch.Tensor:
    """Transform channels predicted on a view, expressed in the original image frame.

    Only the values change; the maps still sit on the view's grid (see ``base_grid_coordinates``).

    Args:
        transforms: (N, 4 (C - 1), h_v, w_v) in ``bridgeseg.targets`` order (dy, dx, log_h, log_w).
        scale_y, scale_x: view size / image size along each axis (``H_v / H``, ``W_v / W``).
        flip: whether the view was mirrored left-right.

    Returns:
        (N, 4 (C - 1), h_v, w_v): ``dx`` negated if mirrored, ``log_h -= log(scale_y)``,
        ``log_w -= log(scale_x)``; ``dy``, ``dx`` otherwise unchanged (they are relative to the box).
    """
    n, channels, h, w = transforms.shape
    out = transforms.reshape(n, channels // 4, 4, h, w).clone()
    if flip:
        out[:, :, 1].neg_()
    out[:, :, 2] -= math.log(scale_y)
    out[:, :, 3] -= math.log(scale_x)
    return out.view(n, channels, h, w)


def _resample(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(N, K, h_v, w_v) sampled at grid (1, h, w, 2) -> (N, K, h, w), bilinear, edges replicated."""
    return F.grid_sample(maps, grid.expand(maps.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=True)


# ----------------------------------------------------------------------------------------------
# The network on one view, whole or in tiles
# ----------------------------------------------------------------------------------------------

def _forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(N, 3, H, W) -> (softmax probabilities (N, C, h, w) or None, transforms (N, 4(C-1), h, w) or None)."""
    outputs = model(images)
    probs = torch.softmax(outputs["semantic"].float(), dim=1) if "semantic" in outputs else None
    transforms = outputs["localization"].float() if "localization" in outputs else None
    if probs is None and transforms is None:
        raise ValueError(f"the model returned {sorted(outputs)}; inference needs a 'semantic' and/or "
                         "'localization' output (an FCRN built by bridgeseg.models.build_model)")
    return probs, transforms


def tile_origins(length: int, tile_size: int, stride: int, overlap: float) -> list[int]:
    """Start offsets of the tiles covering ``length`` pixels along one axis.

    Origins are multiples of ``stride`` (so tile grids are windows of the full grid), consecutive
    tiles overlap by at least ``overlap`` of a tile (the step is rounded down to a multiple of the
    stride), and the last tile ends at or past the end. Tiles are cut at the image edge, so the
    last one may be shorter than ``tile_size``.
    """
    if tile_size < stride:
        raise ValueError(f"tile size {tile_size} is smaller than the output stride {stride}; use at least "
                         f"{stride} (or 0 for whole images)")
    if length <= tile_size:
        return [0]
    step = max(stride, int(tile_size * (1.0 - overlap)) // stride * stride)
    last = -(-(length - tile_size) // stride) * stride
    return sorted(set(range(0, last, step)) | {last})


def network_maps(model: nn.Module, images: torch.Tensor, stride: int, tile_size: int = 0,
                 tile_overlap: float = 0.33) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Class probabilities and transforms of a batch on its own grid, whole or tile by tile.

    Args:
        model: the network (eval mode), ``{"semantic"?: (N, C, h, w), "localization"?: ...}``.
        images: (N, 3, H, W) normalised.
        stride: the model's output stride.
        tile_size: 0, or the largest tile side in pixels; images no larger run whole.
        tile_overlap: the overlapping fraction of neighbouring tiles.

    Returns:
        ``(probs (N, C, h, w) or None, transforms (N, 4 (C - 1), h, w) or None)``, h = ceil(H / stride);
        where tiles overlap, the average of their predictions.
    """
    height, width = images.shape[-2:]
    if tile_size <= 0 or (height <= tile_size and width <= tile_size):
        return _forward(model, images)
    rows, cols = grid_size(height, stride), grid_size(width, stride)
    sums: list[torch.Tensor | None] = [None, None]
    count = torch.zeros(1, 1, rows, cols, device=images.device)
    for top in tile_origins(height, tile_size, stride, tile_overlap):
        for left in tile_origins(width, tile_size, stride, tile_overlap):
            tile = images[:, :, top:top + tile_size, left:left + tile_size]
            r0, c0 = top // stride, left // stride
            for index, maps in enumerate(_forward(model, tile)):
                if maps is None:
                    continue
                if sums[index] is None:
                    sums[index] = maps.new_zeros(maps.shape[0], maps.shape[1], rows, cols)
                sums[index][:, :, r0:r0 + maps.shape[-2], c0:c0 + maps.shape[-1]] += maps
            count[:, :, r0:r0 + grid_size(tile.shape[-2], stride), c0:c0 + grid_size(tile.shape[-1], stride)] += 1
    probs, transforms = (None if total is None else total / count for total in sums)
    return probs, transforms


# ----------------------------------------------------------------------------------------------
# Multi-view prediction
# ----------------------------------------------------------------------------------------------

@dataclass
class _Accumulator:
    """Sums over views on the base grid: probabilities, p-weighted transforms, their weights."""

    probs: torch.Tensor | None = None
    transforms: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    views: int = 0

    def add(self, probs, transforms, weights) -> None:
        if probs is not None:
            self.probs = probs if self.probs is None else self.probs + probs
        if transforms is not None:
            self.transforms = transforms if self.transforms is None else self.transforms + transforms
            self.weights = weights if self.weights is None else self.weights + weights
        self.views += 1


def _transform_weights(probs: torch.Tensor | None, transforms: torch.Tensor) -> torch.Tensor:
    """(N, C - 1, h, w) weight of each class's 4 transforms: its probability (+ a floor); ones without probs."""
    if probs is None:
        n, channels, h, w = transforms.shape
        return transforms.new_ones(n, channels // 4, h, w)
    return probs[:, 1:] + _WEIGHT_FLOOR


def _per_class(transforms: torch.Tensor, weights: torch.Tensor, operation) -> torch.Tensor:
    """(N, 4 (C - 1), h, w) transforms ``operation``-ed with (N, C - 1, h, w) per-class weights."""
    n, channels, h, w = transforms.shape
    return operation(transforms.view(n, channels // 4, 4, h, w), weights.unsqueeze(2)).view(n, channels, h, w)


def _add_view(accumulator: _Accumulator, model: nn.Module, images: torch.Tensor, view: View, stride: int,
              tile_size: int, tile_overlap: float) -> None:
    """Run one view and add its maps, brought onto the base grid, to ``accumulator``."""
    image_size = tuple(images.shape[-2:])
    pixels = render_view(images, view)
    shape = tuple(pixels.shape[-2:])
    probs, transforms = network_maps(model, pixels, stride, tile_size, tile_overlap)
    identity = shape == image_size and not view.flip
    weights = None
    if transforms is not None:
        transforms = undo_view_transforms(transforms, shape[0] / image_size[0], shape[1] / image_size[1], view.flip)
        weights = _transform_weights(probs, transforms)
        transforms = _per_class(transforms, weights, torch.mul)
    if not identity:
        grid_shape = (probs if probs is not None else transforms).shape[-2:]
        grid = base_grid_coordinates(image_size, shape, tuple(grid_shape), stride, view.flip, images.device)
        probs = None if probs is None else _resample(probs, grid)
        if transforms is not None:
            transforms, weights = _resample(transforms, grid), _resample(weights, grid)
    accumulator.add(probs, transforms, weights)


def _combine_views(model: nn.Module, images: torch.Tensor, stride: int, views: Sequence[View], tile_size: int,
                   tile_overlap: float) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(N, C, h, w) view-averaged probabilities and (N, 4 (C - 1), h, w) weighted transforms."""
    accumulator = _Accumulator()
    for view in views:
        _add_view(accumulator, model, images, view, stride, tile_size, tile_overlap)
    probs = None if accumulator.probs is None else accumulator.probs / accumulator.views
    transforms = None if accumulator.transforms is None else _per_class(accumulator.transforms, accumulator.weights,
                                                                         torch.div)
    return probs, transforms


@torch.no_grad()
def predict_views(model: nn.Module, images: torch.Tensor, output_stride: int, views: Sequence[View],
                  tile_size: int = 0, tile_overlap: float = 0.33) -> list[ImageMaps]:
    """Multi-view (and optionally tiled) dense predictions of a batch of same-size images.

    Args:
        model: the network in eval mode.
        images: (N, 3, H, W) normalised.
        output_stride: the model's output stride s.
        views: the views to combine (``make_views``).
        tile_size, tile_overlap: sliding window per view (``network_maps``); 0 = whole views.

    Returns:
        One ``ImageMaps`` per image on the base grid (stride s): probs (C, h, w), the view
        average; transforms (4 (C - 1), h, w), the class-probability-weighted view average;
        semantic (H, W) long, the argmax of the averaged probabilities at image resolution.
        A single identity view returns the network's maps unchanged.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected normalised images (N, 3, H, W), got shape {tuple(images.shape)}")
    if not views:
        raise ValueError("predict_views needs at least one view, e.g. make_views((1.0,))")
    if list(views) == [View(1.0, False)]:  # the network's own maps, untouched
        probs, transforms = network_maps(model, images, output_stride, tile_size, tile_overlap)
    else:
        probs, transforms = _combine_views(model, images, output_stride, views, tile_size, tile_overlap)
    image_size = tuple(images.shape[-2:])
    maps = []
    for index in range(images.shape[0]):
        image_probs = None if probs is None else probs[index]
        semantic = None if image_probs is None else upsampled_argmax(image_probs, output_stride, image_size)
        maps.append(ImageMaps(image_probs, None if transforms is None else transforms[index], output_stride, semantic))
    return maps


def predict_maps(model: nn.Module, image: torch.Tensor, output_stride: int, scales: Sequence[float] = (1.0,),
                 flip: bool = False, tile_size: int = 0, tile_overlap: float = 0.33) -> ImageMaps:
    """Dense predictions of one image, multi-view and/or tiled (see the module docstring).

    Args:
        model: the network in eval mode.
        image: (1, 3, H, W) normalised.
        output_stride: the model's output stride s.
        scales: resize factors of the views; flip: also run every scale mirrored.
        tile_size: 0 (whole views) or the sliding-window tile side in pixels.
        tile_overlap: overlapping fraction of neighbouring tiles.

    Returns:
        ``ImageMaps``: probs (C, h, w) and transforms (4 (C - 1), h, w) on the base grid
        (h = ceil(H / s), position i on pixel i * s), semantic (H, W); None for a missing head.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"predict_maps takes one image (1, 3, H, W), got shape {tuple(image.shape)}; "
                         "use predict_views for a batch")
    return predict_views(model, image, output_stride, make_views(scales, flip), tile_size, tile_overlap)[0]
