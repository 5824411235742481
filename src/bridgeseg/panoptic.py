"""Panoptic maps: every pixel to one segment (a thing instance or a stuff class) or to void.

A ``Panoptic`` is an (H, W) map of segment ids (0 = void) with, per segment, its class and
whether it is a "crowd" region (pixels of a thing class whose instances were not told apart,
such as Cityscapes' group regions). Which classes are things is a dataset property
(``SegmentationDataset.thing_classes``); every other class is stuff.

Ground truth (``panoptic_from_labels``): one segment per instance of a thing class, one per stuff
class present, one crowd segment per thing class for its pixels without an instance, void where
the class map is void. For Cityscapes this is what cityscapesscripts' ``createPanopticImgs``
makes of the same files.

Prediction (``panoptic_from_prediction``), the rule:

1. instances of thing classes, by descending score, each take the pixels of their mask that no
   better instance took; an instance is dropped (its pixels stay free) when fewer than
   ``min_area`` pixels, or less than half (``MIN_VISIBLE_FRACTION``) of its mask, remain;
2. stuff classes come from the class map on the pixels still free, one segment per class; a
   region of fewer than ``min_area`` pixels is dropped;
3. everything else is void: free pixels of thing classes (the class map says "car" but no
   instance covers them), dropped instances and stuff regions, void in the class map.

Segment ids are 1..S in the order segments are made. This module takes arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.io import VOID

MIN_VISIBLE_FRACTION = 0.5
DEFAULT_MIN_AREA = 16


@dataclass
class Panoptic:
    """One image's panoptic segmentation.

    Attributes:
        ids: (H, W) int64 segment id per pixel, 0 = void.
        segment_ids: (S,) int64 the ids of the segments (none is 0).
        categories: (S,) int64 the class of each segment.
        crowd: (S,) bool whether a segment is a crowd region (ground truth only).
    """

    ids: np.ndarray
    segment_ids: np.ndarray
    categories: np.ndarray
    crowd: np.ndarray

    def __len__(self) -> int:
        return len(self.segment_ids)

    @classmethod
    def from_masks(cls, shape: tuple[int, int], masks: list[np.ndarray], categories: list[int],
                   crowd: list[bool] | None = None) -> "Panoptic":
        """Disjoint (H, W) bool masks -> segments 1..S in the given order."""
        ids = np.zeros(shape, dtype=np.int64)
        for index, mask in enumerate(masks):
            ids[mask] = index + 1
        crowd = [False] * len(masks) if crowd is None else crowd
        return cls(ids, np.arange(1, len(masks) + 1, dtype=np.int64), np.asarray(categories, dtype=np.int64),
                   np.asarray(crowd, dtype=bool))

    def areas(self) -> np.ndarray:
        """(S,) int64 pixels of each segment."""
        index = segment_index(self)
        return np.bincount(index[index >= 0], minlength=len(self)).astype(np.int64)


def segment_index(panoptic: Panoptic) -> np.ndarray:
    """(H, W) int64 position of each pixel's segment in ``segment_ids``, -1 for void.

    Raises:
        ValueError: a pixel holds an id that is neither 0 nor a listed segment.
    """
    order = np.argsort(panoptic.segment_ids)
    sorted_ids = panoptic.segment_ids[order]
    flat = panoptic.ids.reshape(-1)
    position = np.searchsorted(sorted_ids, flat).clip(max=max(len(sorted_ids) - 1, 0))
    known = (sorted_ids[position] == flat) if len(sorted_ids) else np.zeros(flat.shape, dtype=bool)
    unknown = ~known & (flat != 0)
    if unknown.any():
        raise ValueError(f"segment id {int(flat[unknown][0])} is in the map but not in the segment list")
    index = np.where(known, order[position] if len(order) else 0, -1)
    return index.reshape(panoptic.ids.shape)


def panoptic_from_labels(semantic: np.ndarray, instance: np.ndarray | None,
                         thing_classes: tuple[int, ...] | list[int], num_classes: int) -> Panoptic:
    """The ground-truth panoptic map of a dataset sample.

    Args:
        semantic: (H, W) class per pixel, 255 = void.
        instance: (H, W) instance ids (0 none, 255 void or group), or None (no instance labels:
            all thing pixels are crowd).
        thing_classes: the classes with instances.
        num_classes: C; values outside 0..C-1 are void.

    Returns:
        Segments in the order: thing instances (increasing id; the class is the instance's most
        frequent thing class), stuff classes (increasing), crowd regions (increasing class).
    """
    semantic = np.asarray(semantic, dtype=np.int64)
    valid = (semantic >= 0) & (semantic < num_classes) & (semantic != VOID)
    is_thing = np.zeros(max(num_classes, 1), dtype=bool)
    is_thing[list(thing_classes)] = True
    thing_pixel = valid & is_thing[np.where(valid, semantic, 0)]
    masks, categories, crowd = [], [], []
    taken = np.zeros(semantic.shape, dtype=bool)
    if instance is not None:
        instance = np.asarray(instance, dtype=np.int64)
        for instance_id in np.unique(instance[thing_pixel & (instance != 0) & (instance != VOID)]):
            mask = (instance == instance_id) & thing_pixel
            masks.append(mask)
            categories.append(int(np.bincount(semantic[mask]).argmax()))
            crowd.append(False)
            taken |= mask
    for category in np.unique(semantic[valid]):
        region = (semantic == category) & ~taken
        if region.any():
            masks.append(region)
            categories.append(int(category))
            crowd.append(bool(is_thing[category]))
    order = np.argsort(np.array(crowd, dtype=bool), kind="stable")  # crowd regions last
    return Panoptic.from_masks(semantic.shape, [masks[i] for i in order], [categories[i] for i in order],
                               [crowd[i] for i in order])


def panoptic_from_prediction(semantic: np.ndarray, masks: np.ndarray | None, labels, scores,
                             thing_classes: tuple[int, ...] | list[int], num_classes: int,
                             min_area: int = DEFAULT_MIN_AREA) -> Panoptic:
    """A predicted panoptic map from a class map and instances (the rule of the module docstring).

    Args:
        semantic: (H, W) predicted class per pixel.
        masks: (K, H, W) bool instance masks, or None (no instances: thing pixels are void).
        labels: (K,) instance classes; scores: (K,) confidences.
        thing_classes: the classes with instances; instances of other classes are left out.
        num_classes: C.
        min_area: the smallest segment kept, in pixels.

    Returns:
        Segments: the kept instances by descending score, then stuff classes (increasing).
    """
    semantic = np.asarray(semantic, dtype=np.int64)
    things = set(int(c) for c in thing_classes)
    taken = np.zeros(semantic.shape, dtype=bool)
    kept, categories = [], []
    if masks is not None and len(masks):
        masks = np.asarray(masks, dtype=bool)
        labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
        for index in np.argsort(-scores, kind="stable"):
            if int(labels[index]) not in things:
                continue
            visible = masks[index] & ~taken
            area = int(visible.sum())
            if area < max(min_area, 1) or area < MIN_VISIBLE_FRACTION * int(masks[index].sum()):
                continue
            kept.append(visible)
            categories.append(int(labels[index]))
            taken |= visible
    for category in np.unique(semantic):
        if category in things or not 0 <= category < num_classes:
            continue
        region = (semantic == category) & ~taken
        if int(region.sum()) >= max(min_area, 1):
            kept.append(region)
            categories.append(int(category))
    return Panoptic.from_masks(semantic.shape, kept, categories)


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8, id = R + 256 G + 256^2 B (COCO's panoptic PNGs)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError("panoptic segment ids must lie in 0 .. 256^3 - 1")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids (the inverse of ``ids_to_rgb``)."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segment_boxes(panoptic: Panoptic) -> np.ndarray:
    """(S, 4) int64 COCO boxes ``[x, y, width, height]`` of the segments (zeros for an empty one)."""
    index = segment_index(panoptic)
    rows, cols = np.nonzero(index >= 0)
    owners = index[rows, cols]
    count = len(panoptic)
    low = np.full((2, count), np.iinfo(np.int64).max)
    high = np.full((2, count), -1)
    for axis, values in enumerate((cols, rows)):
        np.minimum.at(low[axis], owners, values)
        np.maximum.at(high[axis], owners, values)
    present = high[0] >= 0
    boxes = np.zeros((count, 4), dtype=np.int64)
    boxes[present] = np.stack([low[0], low[1], high[0] - low[0] + 1, high[1] - low[1] + 1], axis=1)[present]
    return boxes
