"""The stride-grid convention, in one place: where a network's output cells sit on the image.

Pixel ``k``'s centre is at coordinate ``k``. A network with output stride ``s`` produces
``ceil(H / s)`` rows: output cell ``i`` sits on input pixel ``i * s``. Every map that goes back
to image resolution (class scores for the loss and for the class map, cluster masks) does so with
``resize_to_input``'s geometry: linear between cell centres (``align_corners=True`` onto the
``(h - 1) * s + 1`` pixels they span), the edge value repeated on the at most ``s - 1`` pixels
past the last centre. A resized (test-time) view of the image maps back with
``base_grid_coordinates``. Imports nothing of bridgeseg's.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 22  # floats of one (C, rows, W) block when upsampling to image resolution


def grid_size(length: int, stride: int) -> int:
    """Cells of the output grid along an axis of ``length`` pixels: ``ceil(length / stride)``."""
    return -(-length // stride)


def resize_to_input(maps: torch.Tensor, size: tuple[int, int], output_stride: int) -> torch.Tensor:
    """Bilinearly resample output-stride maps to input resolution.

    Args:
        maps: (N, C, h, w); position ``i`` is centred on input pixel ``i * output_stride``.
        size: the input's (H, W).
        output_stride: the model's output stride.

    Returns:
        (N, C, H, W). Rows and columns past the last centre (at most ``output_stride - 1`` of
        them) repeat the edge value.
    """
    h, w = maps.shape[-2:]
    height, width = size
    if (h, w) == (height, width):
        return maps
    full_h, full_w = (h - 1) * output_stride + 1, (w - 1) * output_stride + 1
    resized = F.interpolate(maps, size=(full_h, full_w), mode="bilinear", align_corners=True)
    pad_h, pad_w = height - full_h, width - full_w
    if pad_h > 0 or pad_w > 0:
        resized = F.pad(resized, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode="replicate")
    return resized[..., :height, :width]


# ----------------------------------------------------------------------------------------------
# Image-resolution maps, in row chunks (no (C, H, W) tensor for large images)
# ----------------------------------------------------------------------------------------------

def interpolation(length: int, cells: int, stride: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image pixel along an axis: lower grid index, upper grid index, weight of the upper one
    (``resize_to_input``'s linear interpolation; (length,) long, long, float)."""
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
    """``maps`` at image resolution, a block of rows at a time, with ``resize_to_input``'s geometry.

    Columns are upsampled once for all grid rows ((C, h, W): ``stride`` times smaller than the
    image-size map), then rows block by block.

    Args:
        maps: (C, h, w) on the image's grid.
        stride: its stride; image_size: (H, W).

    Yields:
        ``(rows, block)``: a slice of image rows and the (C, len(rows), W) values there; blocks
        hold about ``_CHUNK_ELEMENTS`` numbers.
    """
    height, width = image_size
    channels, cells_y, _ = maps.shape
    columns = _upsample_columns(maps, stride, width)
    lower, upper, weight = interpolation(height, cells_y, stride, maps.device)
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
# A resized / mirrored view of the image, back on the image's own grid
# ----------------------------------------------------------------------------------------------

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
    """Where every grid position of the image lies on a view's grid, for ``F.grid_sample``.

    A view resizes the image to ``view_shape`` with half-pixel centres (and may mirror it): its
    grid cell ``j`` sits on view pixel ``j * stride``, i.e. image pixel
    ``(j * stride + 0.5) * H / H_v - 0.5`` (mirrored: ``W - 1`` minus that along x).

    Args:
        image_size: original (H, W); view_shape: the view's (H_v, W_v); view_grid: its grid (h_v, w_v).
        stride: output stride; flip: whether the view is mirrored.

    Returns:
        (1, h, w, 2) float32 (x, y) in [-1, 1] with ``align_corners=True`` semantics; positions
        past the view grid's last centre fall outside and take the edge value with
        ``padding_mode="border"``.
    """
    height, width = image_size
    rows, cols = grid_size(height, stride), grid_size(width, stride)
    ys = _axis_coordinates(rows, height, view_shape[0], view_grid[0], stride, False, device)
    xs = _axis_coordinates(cols, width, view_shape[1], view_grid[1], stride, flip, device)
    grid = torch.stack([xs.view(1, cols).expand(rows, cols), ys.view(rows, 1).expand(rows, cols)], dim=-1)
    return grid.unsqueeze(0).float()
