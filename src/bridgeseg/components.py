"""The baseline the paper's grouping must beat: connected components of the class map.

Each 8-connected region of one foreground class in the image's class map is one instance; its
confidence is the mean (upsampled) probability of that class over the region, so that the
ranking AP needs is comparable with the grouping's mean cluster probability. Regions smaller than
``min_cluster_size`` grid cells (``min_cluster_size * stride**2`` pixels) are dropped, as the
grouping drops small clusters. Touching instances of one class merge into one region: that is
what the grouping's localization network is there to undo. Void pixels of a ground-truth class
map (255, the boundary band of VOC-style labels) first take the class of the nearest labelled
pixel, so that touching objects touch there too, as they do in any predicted class map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import torch

from .data.io import VOID
from .geometry import resize_to_input
from .grouping import InstanceConfig, Instances

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool non-empty masks -> (K, 4) float xyxy boxes (pixel k's centre at k, edges at k +- 0.5)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    index_y = torch.arange(masks.shape[1], device=masks.device)
    index_x = torch.arange(masks.shape[2], device=masks.device)
    y0 = torch.where(rows, index_y, masks.shape[1]).amin(dim=1)
    y1 = torch.where(rows, index_y, -1).amax(dim=1)
    x0 = torch.where(cols, index_x, masks.shape[2]).amin(dim=1)
    x1 = torch.where(cols, index_x, -1).amax(dim=1)
    return torch.stack([x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5], dim=1).float()


def void_filled(class_map: np.ndarray) -> np.ndarray:
    """The class map with every void pixel given the class of the nearest non-void pixel."""
    void = class_map == VOID
    if not void.any() or void.all():
        return class_map
    _, (rows, cols) = scipy.ndimage.distance_transform_edt(void, return_indices=True)
    return class_map[rows, cols]


def connected_component_instances(class_map: torch.Tensor, probs: torch.Tensor, stride: int,
                                  settings: InstanceConfig = InstanceConfig(),
                                  classes: Sequence[int] | None = None) -> Instances:
    """Instances as the connected regions of each class of a class map.

    Args:
        class_map: (H, W) long classes (values outside 1..C-1, e.g. background 0 and void 255,
            are no class).
        probs: (C, h, w) grid probabilities on a grid of ``stride`` (for the confidences).
        settings: ``min_cluster_size`` and ``max_instances`` are used.
        classes: the classes that have instances; None: every foreground class.

    Returns:
        ``Instances`` on ``class_map``'s device, by descending score.
    """
    image_size = tuple(class_map.shape)
    labels_np = void_filled(class_map.cpu().numpy())
    min_pixels = settings.min_cluster_size * stride * stride
    masks, labels, scores = [], [], []
    for label in [int(c) for c in np.unique(labels_np) if 0 < c < probs.shape[0] and (classes is None or c in classes)]:
        regions, count = scipy.ndimage.label(labels_np == label, structure=_EIGHT_CONNECTED)
        if not count:
            continue
        areas = np.bincount(regions.ravel(), minlength=count + 1)
        score_map = resize_to_input(probs[label][None, None].float(), image_size, stride)[0, 0].cpu().numpy()
        sums = np.bincount(regions.ravel(), weights=score_map.ravel(), minlength=count + 1)
        for region in range(1, count + 1):
            if areas[region] >= min_pixels:
                masks.append(regions == region)
                labels.append(label)
                scores.append(sums[region] / areas[region])
    if not masks:
        return Instances.empty(image_size, class_map.device)
    order = np.argsort(-np.asarray(scores), kind="stable")[:settings.max_instances]
    mask_tensor = torch.from_numpy(np.stack([masks[i] for i in order])).to(class_map.device)
    return Instances(masks=mask_tensor, labels=torch.tensor([labels[i] for i in order], device=class_map.device),
                     scores=torch.tensor([scores[i] for i in order], dtype=torch.float32, device=class_map.device),
                     boxes=mask_boxes(mask_tensor))
