"""Predictions on the real Cityscapes frames for the cross-checks against cityscapesscripts.

Two kinds, both deterministic:

* ``grouped_instances``: our own pipeline's instances. The class probabilities are the ground truth
  made noisy (one-hot logits plus Gaussian noise: wrong pixels, varied confidences; the stuff
  classes merged into background, so that the 100 instances kept are things) and the transforms
  are the ground-truth boxes, both on the stride-8 grid of a real network; the grouping
  (``find_instances``) then finds instances with the errors of the real thing (fragments, merges,
  blurred borders).
* ``perturbed_instances``: the ground-truth instances with deliberate mistakes: missed, shifted by
  various amounts, duplicated, of the wrong class, plus predictions on void, half on void, on a
  group region, on background, and too small to count.
"""

from __future__ import annotations

import numpy as np
import torch

from bridgeseg.data.cityscapes import THING_LABEL_IDS, THING_TRAIN_IDS
from bridgeseg.grouping import InstanceConfig
from bridgeseg.oracle import oracle_transforms
from bridgeseg.predictor import find_instances
from bridgeseg.tta import ImageMaps

STRIDE = 8


def grouped_instances(semantic: np.ndarray, instance: np.ndarray, num_classes: int, seed: int):
    """Our grouping on noisy ground-truth maps of one frame: (masks (K, H, W), train ids (K,), scores (K,))."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(semantic[::STRIDE, ::STRIDE].copy())
    labels[labels >= num_classes] = 0
    logits = 3.0 * torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()
    probs = torch.softmax(logits + torch.randn(logits.shape, generator=generator), dim=0)
    stuff = [c for c in range(num_classes) if c not in THING_TRAIN_IDS]
    probs[0] = probs[stuff].sum(dim=0)  # a network of things and background: the stuff classes form no instance
    probs[stuff[1:]] = 0
    transforms = oracle_transforms(torch.from_numpy(instance), torch.from_numpy(semantic), num_classes, STRIDE)
    maps = ImageMaps(probs, transforms, STRIDE, torch.from_numpy(semantic))
    found = find_instances(maps, semantic.shape, InstanceConfig(min_cluster_size=2))
    return found.masks.numpy(), found.labels.numpy(), found.scores.numpy()


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        mask[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def _box(shape, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + height, left:left + width] = True
    return mask


def perturbed_instances(raw: np.ndarray, seed: int):
    """The ground-truth instances of a raw instanceIds map with mistakes: (masks, label ids, scores)."""
    rng = np.random.default_rng(seed)
    masks, label_ids, scores = [], [], []

    def add(mask, label_id, score):
        if mask.any():
            masks.append(mask)
            label_ids.append(int(label_id))
            scores.append(round(float(score), 6))

    for number, value in enumerate(v for v in np.unique(raw) if v >= 1000 and v // 1000 in THING_LABEL_IDS):
        mask, label_id, fate = raw == value, value // 1000, number % 6
        rows, cols = np.nonzero(mask)
        size = max(np.ptp(rows), np.ptp(cols)) + 1
        if fate == 0:
            continue  # missed
        if fate == 5:  # of the wrong class
            label_id = THING_LABEL_IDS[(THING_LABEL_IDS.index(label_id) + 1) % len(THING_LABEL_IDS)]
        step = int(round(size * rng.uniform(0.0, 0.35)))  # IoU from 1 down to about 0.5
        add(_shift(mask, step // 2, step), label_id, rng.uniform(0.3, 1.0))
        if fate == 3:  # duplicated, lower or higher
            add(_shift(mask, -step // 3, 0), label_id, rng.uniform(0.0, 1.0))
    height, width = raw.shape
    void_rows = np.nonzero(np.isin(raw, (1, 2, 3)).any(axis=1))[0]  # ego vehicle, borders, out of ROI
    if void_rows.size:
        top = int(void_rows.max()) - height // 20
        add(_box(raw.shape, top, width // 3, height // 20, width // 10), 26, 0.9)  # on void
        add(_box(raw.shape, top - height // 40, width // 2, height // 20, width // 10), 26, 0.8)  # half on void
    group = raw == 26  # a car group region
    if group.any():
        rows, cols = np.nonzero(group)
        add(_box(raw.shape, int(rows.min()), int(cols.min()), int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1), 26, 0.7)
    add(_box(raw.shape, height // 10, width // 10, height // 8, width // 8), 24, 0.95)  # a person in the sky
    add(_box(raw.shape, height // 2, width // 2, 7, 7), 26, 0.99)  # 49 pixels
    return np.stack(masks), np.array(label_ids, dtype=np.int64), np.array(scores, dtype=np.float64)
