"""Inference: a trained checkpoint -> semantic map + instances, for files, arrays or PIL images.

Geometry (the conventions of ``bridgeseg.targets`` and ``bridgeseg.models.fcrn``): pixel ``k``'s
centre is at coordinate ``k``; a network with output stride ``s`` puts grid position ``i`` on input
pixel ``i * s``. All predictions of an image live on its *base grid*, positions ``i * s`` of the
original image (``h = ceil(H / s)``), which is what ``bridgeseg.grouping.group_instances`` reads.

Multi-view testing (the paper's "multi-view testing"; ``predict_views``):

* A view resizes the image bilinearly to ``(round(H * scale), round(W * scale))`` (half-pixel
  centres, antialiased when shrinking) and optionally mirrors it; its grid position ``j`` sits on
  view pixel ``j * s``, i.e. original pixel ``(j * s + 0.5) * H / H_v - 0.5`` (mirrored:
  ``W - 1`` minus that along x).
* Transforms are brought back to the original frame (``undo_view_transforms``): a mirror negates
  ``dx``; a resize by ``H_v / H`` (``W_v / W``) leaves the relative offsets unchanged and subtracts
  its logarithm from ``log_h`` (``log_w``), so decoded boxes shrink back by the same factor.
* Each view's maps are resampled onto the base grid with that exact mapping (``grid_sample``,
  ``align_corners=True``, edges replicated). Class probabilities are averaged over views. The
  transforms of class c are averaged with weights ``p_c``, the view's probability of c at the
  sampled grid positions: a transform is only meaningful where its class is present, and this
  keeps the background's arbitrary regressions out of instance borders.
* The image-resolution class map is the argmax of the averaged probabilities upsampled like
  ``resize_to_input`` (``upsampled_argmax``), computed in row chunks: no (C, H, W) map is held.

Sliding window (``tile_size`` > 0, ``network_maps``): each view is cut into overlapping tiles of
at most ``tile_size`` pixels whose origins are multiples of the output stride, so a tile's grid is
a window of the view's grid; probabilities and transforms are averaged where tiles overlap. The
network only ever sees a tile, so its activation memory is bounded by the tile.
"""

from __future__ import annotations

import glob
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .config import Config, InstanceConfig
from .data.io import read_image, write_label
from .grouping import GroupingParams, Instances, group_instances
from .engine.distributed import resolve_device
from .visualize import instance_colors, legend, mask_outline, semantic_overlay, stack_vertically

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_CHUNK_ELEMENTS = 1 << 22  # floats of one (C, rows, W) block when upsampling to image resolution
_WEIGHT_FLOOR = 1e-6  # keeps the probability-weighted transform average defined where p_c ~ 0


@dataclass
class ImageMaps:
    """Dense predictions of one image on a grid of ``stride`` input pixels: ``probs`` (C, h, w)
    class probabilities, ``transforms`` (4 (C - 1), h, w) box transforms, ``semantic`` (H, W)
    the per-pixel class at image resolution; a map the model does not produce is None."""

    probs: torch.Tensor | None
    transforms: torch.Tensor | None
    stride: int
    semantic: torch.Tensor | None


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


def _axis_coordinates(base_cells: int, length: int, view_length: int, view_cells: int, stride: int,
                      flip: bool, device) -> torch.Tensor:
    """grid_sample coordinates (align_corners=True) on a view grid axis of every base grid position."""
    pixels = torch.arange(base_cells, device=device, dtype=torch.float64) * stride
    view_pixels = (pixels + 0.5) * (view_length / length) - 0.5
    if flip:
        view_pixels = (view_length - 1) - view_pixels
    cells = view_pixels / stride
    if view_cells == 1:
        return torch.zeros_like(cells)
    return cells * (2.0 / (view_cells - 1)) - 1.0


def base_grid_coordinates(image_size: tuple[int, int], view_shape: tuple[int, int], view_grid: tuple[int, int],
                          stride: int, flip: bool, device=None) -> torch.Tensor:
    """Where every base grid position lies on a view's grid, for ``F.grid_sample``.

    Args:
        image_size: original (H, W); view_shape: the view's (H_v, W_v); view_grid: its grid (h_v, w_v).
        stride: output stride; flip: whether the view is mirrored.

    Returns:
        (1, h, w, 2) float32 (x, y) in [-1, 1] with ``align_corners=True`` semantics; positions
        past the view grid's last centre fall outside and take the edge value with
        ``padding_mode="border"``.
    """
    height, width = image_size
    rows, cols = -(-height // stride), -(-width // stride)
    ys = _axis_coordinates(rows, height, view_shape[0], view_grid[0], stride, False, device)
    xs = _axis_coordinates(cols, width, view_shape[1], view_grid[1], stride, flip, device)
    grid = torch.stack([xs.view(1, cols).expand(rows, cols), ys.view(rows, 1).expand(rows, cols)], dim=-1)
    return grid.unsqueeze(0).float()


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
    rows, cols = -(-height // stride), -(-width // stride)
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
            count[:, :, r0:r0 + -(-tile.shape[-2] // stride), c0:c0 + -(-tile.shape[-1] // stride)] += 1
    probs, transforms = (None if total is None else total / count for total in sums)
    return probs, transforms


# ----------------------------------------------------------------------------------------------
# Image-resolution maps, in row chunks
# ----------------------------------------------------------------------------------------------

def _interpolation(length: int, cells: int, stride: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output pixel: lower grid index, upper grid index, weight of the upper one."""
    pixels = torch.arange(length, device=device)
    lower = torch.div(pixels, stride, rounding_mode="floor").clamp(max=cells - 1)
    upper = (lower + 1).clamp(max=cells - 1)
    return lower, upper, (pixels - lower * stride).float() / stride  # where upper == lower any weight gives lower


def _upsample_columns(maps: torch.Tensor, stride: int, width: int) -> torch.Tensor:
    """(C, h, w) -> (C, h, W): columns only, with the geometry of ``resize_to_input``."""
    cells_x = maps.shape[-1]
    if cells_x == width:
        return maps
    full = (cells_x - 1) * stride + 1
    out = F.interpolate(maps.unsqueeze(0), size=(maps.shape[1], full), mode="bilinear", align_corners=True)
    if full < width:
        out = F.pad(out, (0, width - full, 0, 0), mode="replicate")
    return out[0, :, :, :width]


def upsampled_rows(maps: torch.Tensor, stride: int, image_size: tuple[int, int]) -> Iterable[tuple[slice, torch.Tensor]]:
    """``maps`` at image resolution, a block of rows at a time.

    The geometry of ``bridgeseg.models.fcrn.resize_to_input``: grid position i on pixel
    i * stride, linear in between, edge values repeated past the last centre. Columns are
    upsampled once for all grid rows ((C, h, W): ``stride`` times smaller than the image-size
    map), then rows block by block.

    Args:
        maps: (C, h, w) on the image's grid.
        stride: its stride; image_size: (H, W).

    Yields:
        ``(rows, block)``: a slice of image rows and the (C, len(rows), W) values there; blocks
        hold about ``_CHUNK_ELEMENTS`` numbers.
    """
    height, width = image_size
    channels, cells_y, cells_x = maps.shape
    columns = _upsample_columns(maps, stride, width)
    lower, upper, weight = _interpolation(height, cells_y, stride, maps.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, channels * width))
    for start in range(0, height, step):
        rows = slice(start, min(start + step, height))
        fraction = weight[rows].view(1, -1, 1)
        low, high = columns.index_select(1, lower[rows]), columns.index_select(1, upper[rows])
        yield rows, torch.lerp(low, high, fraction)


def upsampled_argmax(probs: torch.Tensor, stride: int, image_size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) grid probabilities -> (H, W) long argmax at image resolution, without a (C, H, W) map."""
    out = torch.empty(image_size, dtype=torch.long, device=probs.device)
    for rows, block in upsampled_rows(probs, stride, image_size):
        out[rows] = block.max(dim=0).indices  # faster than argmax over the leading dim; same first-index ties
    return out


def upsampled_probs(probs: torch.Tensor, stride: int, image_size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) grid probabilities -> (C, H, W) float32 numpy at image resolution (filled in chunks)."""
    out = np.empty((probs.shape[0], *image_size), dtype=np.float32)
    for rows, block in upsampled_rows(probs, stride, image_size):
        out[:, rows] = block.cpu().numpy()
    return out


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


# ----------------------------------------------------------------------------------------------
# RLE (COCO's uncompressed form)
# ----------------------------------------------------------------------------------------------

def rle_encode(mask: np.ndarray | torch.Tensor) -> dict:
    """A binary mask as COCO uncompressed RLE.

    Args:
        mask: (H, W) bool (or 0/1).

    Returns:
        ``{"size": [H, W], "counts": [...]}``: run lengths of the column-major (Fortran order)
        flattening, alternating zeros and ones, starting with zeros (a leading 0 when the first
        pixel is set).
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode takes one (H, W) mask, got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) bool mask (the inverse of ``rle_encode``)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not an uncompressed COCO RLE ({error}); expected {{'size': [H, W], 'counts': [...]}} "
                         "(compressed string counts need pycocotools)") from error
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum()) if counts.ndim == 1 else '?'} but size "
                         f"{height}x{width} has {height * width} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T.copy()


# ----------------------------------------------------------------------------------------------
# Predictions of one image
# ----------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        semantic: (H, W) int64 class per pixel.
        instances: ``Instances`` on the CPU (masks (K, H, W) bool, labels, scores, boxes), by
            descending score; None when the model has no localization head.
        class_names: C names, background first.
        probs: (C, H, W) float32 class probabilities, only when asked for (``return_probs``).
    """

    semantic: np.ndarray
    instances: Instances | None
    class_names: tuple[str, ...]
    probs: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.semantic.shape[0]), int(self.semantic.shape[1])

    def instance_map(self) -> np.ndarray:
        """(H, W) int32 instance ids 1..K (K = number of instances, in ``instances`` order), 0 elsewhere.

        Where masks overlap, the higher-scoring instance wins.
        """
        out = np.zeros(self.image_size, dtype=np.int32)
        if self.instances is None:
            return out
        masks = self.instances.masks.cpu().numpy()
        for index in range(len(masks) - 1, -1, -1):  # lowest score first; better ones paint over it
            out[masks[index]] = index + 1
        return out

    def to_json(self) -> dict:
        """``{"image_size": [H, W], "class_names": [...], "instances": [...]}``; each instance has
        ``id`` (its value in ``instance_map``), ``class_id``, ``class_name``, ``score``,
        ``box`` [x0, y0, x1, y1] (pixel coordinates, pixel k's centre at k), ``area`` and
        ``mask`` (COCO uncompressed RLE)."""
        items = []
        if self.instances is not None:
            inst = self.instances.to("cpu")
            for index in range(len(inst)):
                label = int(inst.labels[index])
                items.append({"id": index + 1, "class_id": label, "class_name": self.class_names[label],
                              "score": round(float(inst.scores[index]), 6),
                              "box": [round(float(v), 3) for v in inst.boxes[index].tolist()],
                              "area": int(inst.masks[index].sum()), "mask": rle_encode(inst.masks[index])})
        return {"image_size": list(self.image_size), "class_names": list(self.class_names), "instances": items}


# ----------------------------------------------------------------------------------------------
# Predictor
# ----------------------------------------------------------------------------------------------

def load_image(image) -> np.ndarray:
    """A path (str/Path), PIL image or (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 RGB array.

    Raises:
        FileNotFoundError / ValueError naming the file for a missing or corrupt file; ValueError
        for an array of another shape or dtype.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype "
                             f"{image.dtype}; convert with np.asarray(PIL.Image.open(path).convert('RGB'))")
        return image
    raise TypeError(f"cannot predict on a {type(image).__name__}; give a path, a PIL image or an (H, W, 3) "
                    "uint8 array")


class Predictor:
    """A trained network plus its test-time settings: images in, ``Prediction`` out.

    Args:
        model: the network; it is moved to ``device`` and put in eval mode.
        class_names: C names, background first.
        config: the training config (normalisation from ``config.data``, defaults from
            ``config.eval`` / ``config.instance``).
        device: where the network runs.
        scales, flip: multi-view testing (None: ``config.eval``).
        tile_size, tile_overlap: sliding window (None: ``config.eval``); 0 = whole images.
        instance_config: grouping settings (None: ``config.instance``).
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], config: Config,
                 device: str | torch.device = "cpu", scales: Sequence[float] | None = None,
                 flip: bool | None = None, tile_size: int | None = None, tile_overlap: float | None = None,
                 instance_config: InstanceConfig | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        self.config = config
        self.output_stride = int(model.output_stride)
        self.views = make_views(tuple(config.eval.scales if scales is None else scales),
                                config.eval.flip if flip is None else flip)
        self.tile_size = int(config.eval.tile_size if tile_size is None else tile_size)
        self.tile_overlap = float(config.eval.tile_overlap if tile_overlap is None else tile_overlap)
        if self.tile_size and self.tile_size < self.output_stride:
            raise ValueError(f"tile size {self.tile_size} is smaller than the output stride {self.output_stride}; "
                             f"use 0 (whole images) or at least {self.output_stride}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.tile_overlap}")
        self.instance_config = instance_config or config.instance
        self.grouping = GroupingParams.from_config(self.instance_config)
        self._mean = torch.tensor(config.data.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(config.data.std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        scales: Sequence[float] | None = None, flip: bool | None = None,
                        tile_size: int | None = None, instance_config: InstanceConfig | None = None,
                        tile_overlap: float | None = None) -> "Predictor":
        """Load a training checkpoint; unset options default to its config's eval/instance sections."""
        from .engine.checkpoint import load_trained_model

        model, class_names, config = load_trained_model(path)
        if config.model.arch == "localization":
            raise ValueError(f"checkpoint {path} holds only a localization network; inference needs class scores: "
                             "use a joint or separate checkpoint (or a semantic one for class maps alone)")
        return cls(model, class_names, config, device, scales, flip, tile_size, tile_overlap, instance_config)

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, H, W) normalised float on the device (as training's ``to_tensors``)."""
        pixels = torch.from_numpy(np.array(array, dtype=np.uint8)).to(self.device)  # a writable copy
        pixels = pixels.permute(2, 0, 1).unsqueeze(0).float().div_(255)
        return (pixels - self._mean) / self._std

    def __call__(self, image, return_probs: bool = False) -> Prediction:
        """Predict one image: a path, a PIL image or an (H, W, 3) uint8 RGB array."""
        return self._predict_arrays([load_image(image)], return_probs)[0]

    def predict_batch(self, images: Sequence, batch_size: int = 4, return_probs: bool = False) -> list[Prediction]:
        """Predict several images; same-size images share network batches of up to ``batch_size``.

        Returns:
            One ``Prediction`` per input, in input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = [load_image(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            groups.setdefault(array.shape[:2], []).append(index)
        results: list[Prediction | None] = [None] * len(arrays)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                for index, prediction in zip(chunk, self._predict_arrays([arrays[i] for i in chunk], return_probs)):
                    results[index] = prediction
        return results

    def _predict_arrays(self, arrays: list[np.ndarray], return_probs: bool) -> list[Prediction]:
        """Same-size (H, W, 3) uint8 arrays -> predictions, one network batch."""
        batch = torch.cat([self.to_tensor(array) for array in arrays])
        maps = predict_views(self.model, batch, self.output_stride, self.views, self.tile_size, self.tile_overlap)
        return [self._finish(image_maps, tuple(arrays[0].shape[:2]), return_probs) for image_maps in maps]

    def _finish(self, maps: ImageMaps, image_size: tuple[int, int], return_probs: bool) -> Prediction:
        """Grouping and conversion to CPU of one image's maps."""
        instances = None
        if maps.transforms is not None:
            instances = group_instances(maps.probs, maps.transforms, maps.stride, image_size, self.grouping).to("cpu")
        probs = upsampled_probs(maps.probs, maps.stride, image_size) if return_probs else None
        return Prediction(maps.semantic.cpu().numpy().astype(np.int64), instances, self.class_names, probs)


# ----------------------------------------------------------------------------------------------
# Files in, files out
# ----------------------------------------------------------------------------------------------

@dataclass
class PredictSummary:
    """What ``predict_files`` did.

    Attributes:
        images: images predicted and written.
        failed: ``(path, reason)`` of every image that could not be read (skipped).
        instances_per_class: class name -> instances found over all images.
        out_dir: the output folder.
    """

    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    instances_per_class: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""

    @property
    def instances(self) -> int:
        return sum(self.instances_per_class.values())

    def format(self) -> str:
        """A short plain-text summary: counts, a per-class instance table, the failures."""
        lines = [f"{self.images} images predicted, {len(self.failed)} failed, {self.instances} instances"
                 + (f" -> {self.out_dir}" if self.out_dir else "")]
        if self.instances_per_class:
            width = max(8, *(len(name) for name in self.instances_per_class)) + 2
            lines += [f"{'class':<{width}}{'instances':>10}", "-" * (width + 10)]
            lines += [f"{name:<{width}}{count:>10}" for name, count in self.instances_per_class.items()]
        if self.failed:
            lines.append("failed (skipped):")
            lines += [f"  {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, duplicates removed.

    Raises:
        FileNotFoundError naming every input that matches nothing (or a folder without images).
    """
    found: list[Path] = []
    unmatched = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image(p))
        else:
            matches = sorted(p for p in map(Path, glob.glob(str(item), recursive=True)) if _is_image(p))
        if not matches:
            unmatched.append(str(item))
        found += matches
    if unmatched:
        raise FileNotFoundError(f"no image found for input(s) {unmatched}: give image files, folders of images "
                                f"({' '.join(IMAGE_EXTENSIONS)}) or glob patterns such as 'photos/*.jpg'")
    seen, unique = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _output_stems(paths: list[Path]) -> list[str]:
    """A distinct output stem per image: its file stem, ``-2``, ``-3``... on collisions."""
    used: Counter = Counter()
    stems = []
    for path in paths:
        used[path.stem] += 1
        stems.append(path.stem if used[path.stem] == 1 else f"{path.stem}-{used[path.stem]}")
    return stems


def render_overlay(image: np.ndarray, prediction: Prediction) -> Image.Image:
    """The image tinted with class colours, each instance outlined in its own colour, and below it a
    legend of the classes present: (H + legend, W) RGB."""
    picture = semantic_overlay(image, prediction.semantic)
    if prediction.instances is not None and len(prediction.instances):
        masks = prediction.instances.masks.cpu().numpy()
        for mask, color in zip(masks, instance_colors(len(masks))):
            outline = mask_outline(mask)
            picture[outline] = color
    present = [int(c) for c in np.unique(prediction.semantic) if 0 < c < len(prediction.class_names)]
    if prediction.instances is not None:
        present = sorted(set(present) | set(prediction.instances.labels.tolist()))
    canvas = Image.fromarray(picture)
    strip = legend(prediction.class_names, canvas.width, present)
    if strip is None:
        return canvas
    return stack_vertically([canvas, strip], gap=0)


def write_instance_map(path: str | Path, instance_map: np.ndarray) -> None:
    """(H, W) instance ids as a grayscale PNG: 8-bit, or 16-bit when an id exceeds 255."""
    if instance_map.max(initial=0) > 65535:
        raise ValueError(f"cannot write {path}: more than 65535 instances")
    dtype = np.uint16 if instance_map.max(initial=0) > 255 else np.uint8
    Image.fromarray(instance_map.astype(dtype)).save(path)


def write_prediction(out_dir: Path, stem: str, image: np.ndarray, prediction: Prediction,
                     source: str | None = None) -> list[Path]:
    """Write ``<stem>_semantic.png``, ``<stem>_instances.png``, ``<stem>.json``, ``<stem>_overlay.png``."""
    import json

    paths = [out_dir / f"{stem}_semantic.png", out_dir / f"{stem}_instances.png", out_dir / f"{stem}.json",
             out_dir / f"{stem}_overlay.png"]
    write_label(paths[0], prediction.semantic)
    write_instance_map(paths[1], prediction.instance_map())
    record = prediction.to_json()
    if source is not None:
        record = {"image": source, **record}
    paths[2].write_text(json.dumps(record))
    render_overlay(image, prediction).save(paths[3])
    return paths


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path,
                  progress: bool = True) -> PredictSummary:
    """Predict every image of ``inputs`` and write its files into ``out_dir``.

    Args:
        predictor: a ``Predictor``.
        inputs: image files, folders (images inside, sorted) and glob patterns.
        out_dir: created if needed; per image ``<stem>_semantic.png`` (palette PNG of class
            indices), ``<stem>_instances.png`` (ids 1..K, 0 elsewhere; 16-bit if K > 255),
            ``<stem>.json`` (image size, class names, instances with RLE masks) and
            ``<stem>_overlay.png``.
        progress: show a progress bar.

    Returns:
        A ``PredictSummary``. An image that cannot be read is reported (a warning line naming it)
        and skipped; the run goes on.

    Raises:
        FileNotFoundError: an input matches no image.
    """
    paths = expand_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out_dir=str(out))
    counts: Counter = Counter()
    bar = tqdm(list(zip(paths, _output_stems(paths))), desc="predicting", unit="img", disable=not progress)
    for path, stem in bar:
        try:
            image = read_image(path)
        except (ValueError, OSError) as error:
            summary.failed.append((str(path), str(error)))
            tqdm.write(f"warning: skipping {path}: {error}", file=sys.stderr)
            continue
        prediction = predictor(image)
        write_prediction(out, stem, image, prediction, source=str(path))
        summary.images += 1
        if prediction.instances is not None:
            counts.update(prediction.class_names[label] for label in prediction.instances.labels.tolist())
    summary.instances_per_class = {name: counts[name] for name in predictor.class_names[1:] if counts[name]}
    return summary
