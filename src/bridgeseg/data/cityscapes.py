"""Cityscapes label ids, train ids and instance-id PNGs.

``*_gtFine_labelIds.png`` holds label ids 0..33 (-1 = license plate); training uses the 19
"train ids" (others 255). ``*_gtFine_instanceIds.png`` (16-bit) holds ``labelId * 1000 + k`` for
the pixels of instance ``k`` of a thing class, and the plain label id elsewhere (including the
"group" regions of things, where instances could not be told apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (label id, train id, name, is a thing class with instances) of the classes that are evaluated
EVALUATED_LABELS = (
    (7, 0, "road", False), (8, 1, "sidewalk", False), (11, 2, "building", False), (12, 3, "wall", False),
    (13, 4, "fence", False), (17, 5, "pole", False), (19, 6, "traffic light", False), (20, 7, "traffic sign", False),
    (21, 8, "vegetation", False), (22, 9, "terrain", False), (23, 10, "sky", False), (24, 11, "person", True),
    (25, 12, "rider", True), (26, 13, "car", True), (27, 14, "truck", True), (28, 15, "bus", True),
    (31, 16, "train", True), (32, 17, "motorcycle", True), (33, 18, "bicycle", True),
)
TRAIN_CLASS_NAMES = tuple(name for _, _, name, _ in EVALUATED_LABELS)
THING_LABEL_IDS = tuple(label_id for label_id, _, _, thing in EVALUATED_LABELS if thing)
THING_NAMES = tuple(name for _, _, name, thing in EVALUATED_LABELS if thing)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) label ids -> train ids 0..18, 255 for every class that is not evaluated."""
    lookup = np.full(256, 255, dtype=np.int64)
    for label_id, train_id, _, _ in EVALUATED_LABELS:
        lookup[label_id] = train_id
    label_ids = np.asarray(label_ids, dtype=np.int64)
    return np.where((label_ids >= 0) & (label_ids < 256), lookup[np.clip(label_ids, 0, 255)], 255)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) train ids 0..18 -> label ids; 255 (or anything else) -> 0 (unlabeled)."""
    lookup = np.zeros(256, dtype=np.int64)
    for label_id, train_id, _, _ in EVALUATED_LABELS:
        lookup[train_id] = label_id
    return lookup[np.clip(np.asarray(train_ids, dtype=np.int64), 0, 255)]


def read_instance_ids(path: str | Path) -> np.ndarray:
    """A ``*_instanceIds.png`` as an (H, W) int64 array."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"Cityscapes instance file {path} does not exist") from None
    except OSError as error:
        raise ValueError(f"Cityscapes instance file {path} is corrupt ({error})") from error


def thing_instances(instance_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an instance-id map into the instances of the 8 thing classes.

    Returns:
        ``(masks (G, H, W) bool, label ids (G,), void (H, W) bool)``; void marks the "group"
        regions of thing classes (label id without an instance number) and unlabeled pixels (0),
        which are left out of the overlaps.
    """
    ids = np.unique(instance_ids)
    instances = [i for i in ids if i >= 1000 and i // 1000 in THING_LABEL_IDS]
    masks = np.stack([instance_ids == i for i in instances]) if instances else \
        np.zeros((0, *instance_ids.shape), dtype=bool)
    labels = np.array([i // 1000 for i in instances], dtype=np.int64)
    void = np.isin(instance_ids, THING_LABEL_IDS) | (instance_ids == 0)
    return masks, labels, void
