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


def resize(sample: dict, scale: float) -> dict:
    """Resize image and label maps by ``scale`` (new size rounded, at least 1 pixel)."""
    height, width = sample["image"].shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return sample
    out = dict(sample)
    out["image"] = np.asarray(Image.fromarray(sample["image"]).resize(size, Image.BILINEAR))
    for key in _labels(sample):
        label = sample[key]
        # int64 label maps go through 32-bit PIL images ("I") to keep values above 255 (Cityscapes ids)
        out[key] = np.asarray(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
    return out


def pad_to(sample: dict, height: int, width: int, mean_color: tuple[int, int, int]) -> dict:
    """Pad bottom/right to at least (height, width): image with ``mean_color``, labels with 255."""
    h, w = sample["image"].shape[:2]
    pad_h, pad_w = max(height - h, 0), max(width - w, 0)
    if pad_h == 0 and pad_w == 0:
        return sample
    out = dict(sample)
    image = np.empty((h + pad_h, w + pad_w, 3), dtype=np.uint8)
    image[...] = np.asarray(mean_color, dtype=np.uint8)
    image[:h, :w] = sample["image"]
    out["image"] = image
    for key in _labels(sample):
        label = np.full((h + pad_h, w + pad_w), VOID, dtype=np.int64)
        label[:h, :w] = sample[key]
        out[key] = label
    return out


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    out = dict(sample)
    for key in ("image", *_labels(sample)):
        out[key] = sample[key][top:top + height, left:left + width]
    return out


def hflip(sample: dict) -> dict:
    out = dict(sample)
    for key in ("image", *_labels(sample)):
        out[key] = sample[key][:, ::-1]
    return out


class TrainAugmentation:
    """Random scale in [scale_min, scale_max], pad to the crop, random crop, random horizontal flip."""

    def __init__(self, crop_size: int, scale_min: float, scale_max: float, flip: bool,
                 mean: tuple[float, float, float]) -> None:
        self.crop_size = crop_size
        self.scale_min, self.scale_max = scale_min, scale_max
        self.flip = flip
        self.mean_color = tuple(int(round(255 * m)) for m in mean)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample = resize(sample, rng.uniform(self.scale_min, self.scale_max))
        sample = pad_to(sample, self.crop_size, self.crop_size, self.mean_color)
        height, width = sample["image"].shape[:2]
        top = int(rng.integers(0, height - self.crop_size + 1))
        left = int(rng.integers(0, width - self.crop_size + 1))
        sample = crop(sample, top, left, self.crop_size, self.crop_size)
        if self.flip and rng.random() < 0.5:
            sample = hflip(sample)
        return sample


def to_tensors(sample: dict, mean: tuple[float, float, float], std: tuple[float, float, float]) -> dict:
    """image -> (3, H, W) float normalised; label maps -> (H, W) int64 tensors; other keys kept."""
    out = dict(sample)
    image = torch.from_numpy(np.array(sample["image"], dtype=np.float32)).permute(2, 0, 1).div_(255)
    out["image"] = (image - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    for key in _labels(sample):
        out[key] = torch.from_numpy(np.array(sample[key], dtype=np.int64))
    return out
