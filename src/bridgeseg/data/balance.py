"""Class balance of a training split: which classes each image holds, and what follows from it.

``class_statistics`` reads every class map of a split once (no image is decoded). From it,
``repeat_factors`` gives LVIS-style repeat factor sampling (Gupta et al. 2019): class c, present
in a fraction f_c of the images, gets r_c = max(1, sqrt(t / f_c)), and an image is drawn
max over its classes of r_c times as often as with uniform sampling, so images of rare classes
come round more often; ``median_frequency_weights`` gives per-class loss weights
(median class frequency / class frequency, by pixels; Eigen and Fergus 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .io import VOID


@dataclass
class ClassStatistics:
    """presence: (N, C) bool, image i holds class c; pixels: (C,) int64 labelled pixels per class."""

    presence: np.ndarray
    pixels: np.ndarray


def class_statistics(dataset, progress: bool = False) -> ClassStatistics:
    """Read the class map of every image of ``dataset`` (a ``SegmentationDataset``) once."""
    count = dataset.num_classes
    presence = np.zeros((len(dataset), count), dtype=bool)
    pixels = np.zeros(count, dtype=np.int64)
    for index, name in enumerate(tqdm(dataset.ids, desc="class statistics", unit="img", disable=not progress)):
        label = dataset.read_semantic(name)
        counts = np.bincount(label[(label != VOID) & (label >= 0) & (label < count)].ravel(), minlength=count)
        presence[index] = counts > 0
        pixels += counts
    return ClassStatistics(presence, pixels)


def repeat_factors(presence: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) float repeat factor of each image: max over its classes of max(1, sqrt(t / f_c)); 1 for an
    image without any class. The background (class 0) counts like any class."""
    frequency = presence.mean(axis=0)
    per_class = np.maximum(1.0, np.sqrt(threshold / np.maximum(frequency, 1e-12)))
    factors = np.where(presence, per_class[None, :], 1.0).max(axis=1, initial=1.0)
    return factors


def median_frequency_weights(pixels: np.ndarray, limit: float = 10.0) -> np.ndarray:
    """(C,) float: median class pixel frequency / the class's, at most ``limit`` (a class with no
    pixel gets weight 1)."""
    frequency = pixels / max(1, pixels.sum())
    present = frequency > 0
    weights = np.ones(len(pixels))
    weights[present] = np.median(frequency[present]) / frequency[present]
    return np.minimum(weights, limit)
