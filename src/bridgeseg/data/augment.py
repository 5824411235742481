"""Training augmentation and tensor conversion for samples ``{"image", "semantic", "instance"?, ...}``.

Each random step takes an explicit ``numpy.random.Generator`` so that a sample's
augmentation is a function of its seed alone (exact resume, any number of workers).
Images are resized bilinearly, label maps with nearest neighbour; padding uses the mean colour for
the image (0 after normalisation) and 255 (void) for label maps.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .io import VOID

LABEL_KEYS = ("semantic", "instance")


def _labels(sample: dict) -> list[str]:
    return [key for key in LABEL_KEYS if key in sample]


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """(size_out,) int64: the source row (or column) of each output one in a nearest-neighbour resize,
    exactly PIL's ``Image.NEAREST`` (its centre of output pixel x, (x + 0.5) * in / out, accumulated
    step by step in double precision as PIL does, then truncated)."""
    step = size_in / size_out
    centres = np.cumsum(np.concatenate([[step * 0.5], np.full(size_out - 1, step)]))
    return np.minimum(centres.astype(np.int64), size_in - 1)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image resized by ``scale``: rounded, at least 1 pixel."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def scaled_crop(sample: dict, size: tuple[int, int], top: int, left: int, crop_size: int,
                mean_color: tuple[int, int, int]) -> dict:
    """The ``crop_size`` square at (top, left) of the sample resized to ``size`` (height, width) and
    padded bottom/right to at least the crop: the image with ``mean_color``, label maps with 255
    (void) in their own integer type.

    Only the crop's window is resized (PIL's ``box``; labels gather just its rows and columns): the
    same pixels as resizing the whole image and then cropping, at the cost of the crop alone.
    Images are resized bilinearly; label maps take exactly PIL's ``Image.NEAREST`` pixels.
    """
    height, width = sample["image"].shape[:2]
    rows = min(size[0] - top, crop_size) if top < size[0] else 0
    cols = min(size[1] - left, crop_size) if left < size[1] else 0
    out = dict(sample)
    image = np.empty((crop_size, crop_size, 3), dtype=np.uint8)
    image[...] = np.asarray(mean_color, dtype=np.uint8)
    if rows > 0 and cols > 0:
        if size == (height, width):
            window = sample["image"][top:top + rows, left:left + cols]
        else:
            y_scale, x_scale = height / size[0], width / size[1]
            box = (left * x_scale, top * y_scale, (left + cols) * x_scale, (top + rows) * y_scale)
            window = np.asarray(Image.fromarray(sample["image"]).resize((cols, rows), Image.BILINEAR, box=box))
        image[:rows, :cols] = window
    out["image"] = image
    row_index = nearest_indices(height, size[0])[top:top + rows]
    col_index = nearest_indices(width, size[1])[left:left + cols]
    for key in _labels(sample):
        label = np.full((crop_size, crop_size), VOID, dtype=sample[key].dtype)
        # a gather of rows, then of columns (not PIL): any integer type and value, no conversions
        label[:rows, :cols] = sample[key].take(row_index, axis=0).take(col_index, axis=1)
        out[key] = label
    return out


def hflip(sample: dict) -> dict:
    out = dict(sample)
    for key in ("image", *_labels(sample)):
        out[key] = sample[key][:, ::-1]
    return out


# RGB <-> YIQ: hue is the angle of the (I, Q) chroma vector, so a hue shift is a rotation there
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def jitter_colors(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation (factors in [1 - s, 1 + s]) and hue (a rotation of
    up to s x 90 degrees), so that colour and lighting carry no class information.

    Args:
        image: (H, W, 3) uint8 RGB.
        strength: s in [0, 1); 0 returns the image unchanged.

    Returns:
        (H, W, 3) uint8.
    """
    if strength <= 0:
        return image
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, 3)
    angle = rng.uniform(-strength, strength) * np.pi / 2
    cos, sin = np.cos(angle), np.sin(angle)
    chroma = np.array([[1, 0, 0], [0, cos * saturation, -sin * saturation], [0, sin * saturation, cos * saturation]],
                      dtype=np.float32)
    transform = ((_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ) * brightness).astype(np.float32)
    # contrast c about the mean m of the colour-transformed pixels x T^T, folded into one pass:
    # (x T^T - m) c + m = x (c T^T) + (1 - c) m, where m = mean(x c T^T) / c
    pixels = image.astype(np.float32) @ (transform.T * np.float32(contrast))
    pixels += np.float32((1 - contrast) / contrast * float(pixels.mean()) + 0.5)
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


def paste_objects(target: dict, source: dict, rng: np.random.Generator, keep: float = 0.5) -> dict:
    """Copy-paste augmentation: objects of ``source`` (a crop of another training image, of the same
    size) pasted over ``target``, each kept with probability ``keep`` (at least one).

    Objects are the source's instances (ids of its ``instance`` map), or, without instance labels,
    its connected foreground as one object. Pasted pixels take the source's image, class and a new
    instance id; target instances they cover are occluded. Source void pixels next to a pasted
    object stay void in the result (the boundary band of VOC-style labels).
    """
    has_instances = "instance" in source and "instance" in target
    ids = source["instance"] if has_instances else (source["semantic"] > 0).astype(np.uint8)
    present = np.flatnonzero(np.bincount(ids.ravel())) if ids.dtype == np.uint8 else np.unique(ids)
    candidates = [int(i) for i in present if i not in (0, VOID)]
    labelled = (source["semantic"] > 0) & (source["semantic"] != VOID)
    chosen = [i for i in candidates if rng.random() < keep] or candidates[:1]
    if not chosen:
        return target
    if ids.dtype == np.uint8:  # a look-up table: cheaper than np.isin on small label types
        table = np.zeros(256, dtype=bool)
        table[chosen] = True
        mask = table[ids] & labelled
    else:
        mask = np.isin(ids, chosen) & labelled
    near = mask.copy()
    near[1:] |= mask[:-1]
    near[:-1] |= mask[1:]
    near[:, 1:] |= mask[:, :-1]
    near[:, :-1] |= mask[:, 1:]
    void = near & ~mask & (source["semantic"] == VOID)
    out = dict(target)
    out["image"] = np.where(mask[..., None], source["image"], target["image"])
    out["semantic"] = np.where(mask, source["semantic"], np.where(void, VOID, target["semantic"]))
    if has_instances:
        existing = target["instance"]
        offset = int(existing[existing != VOID].max(initial=0))
        new_ids = ids[mask].astype(np.int64) + offset
        new_ids[new_ids >= VOID] += 1  # never the void value
        instance = np.where(void, VOID, existing).astype(np.int64)
        instance[mask] = new_ids
        out["instance"] = instance
    return out


class TrainAugmentation:
    """Random scale in [scale_min, scale_max], pad to the crop, random crop, random horizontal flip,
    then random colours (``color_jitter`` > 0, see ``jitter_colors``)."""

    def __init__(self, crop_size: int, scale_min: float, scale_max: float, flip: bool,
                 mean: tuple[float, float, float], color_jitter: float = 0.0) -> None:
        self.crop_size = crop_size
        self.scale_min, self.scale_max = scale_min, scale_max
        self.flip = flip
        self.color_jitter = color_jitter
        self.mean_color = tuple(int(round(255 * m)) for m in mean)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        size = scaled_size(*sample["image"].shape[:2], rng.uniform(self.scale_min, self.scale_max))
        top = int(rng.integers(0, max(size[0], self.crop_size) - self.crop_size + 1))
        left = int(rng.integers(0, max(size[1], self.crop_size) - self.crop_size + 1))
        sample = scaled_crop(sample, size, top, left, self.crop_size, self.mean_color)
        if self.flip and rng.random() < 0.5:
            sample = hflip(sample)
        if self.color_jitter > 0:
            sample = dict(sample, image=jitter_colors(sample["image"], rng, self.color_jitter))
        return sample


def to_tensors(sample: dict) -> dict:
    """image -> (3, H, W) uint8 tensor (``normalize`` makes it the network's input, on the device,
    a batch at a time); label maps -> (H, W) int64 tensors; other keys kept."""
    out = dict(sample)
    out["image"] = torch.from_numpy(np.ascontiguousarray(np.asarray(sample["image"], dtype=np.uint8).transpose(2, 0, 1)))
    for key in _labels(sample):
        out[key] = torch.from_numpy(np.array(sample[key], dtype=np.int64))
    return out


def normalize(pixels: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB -> (N, 3, H, W) float32 ``(pixels / 255 - mean) / std``, on their device.

    The one place where images become network input: training batches (``engine.train``) and
    the ``Predictor``'s images go through it alike.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float().div_(255) - mean_t) / std_t
