"""What every dataset shares: reading one sample from its image, class and instance files.

A dataset names its files (``image_path``, ``semantic_path``, ``instance_path``) and knows how to
read its label formats (``read_semantic``, ``read_instance``); this class does the rest. A sample
is a dict: ``image`` (H, W, 3) uint8, ``semantic`` (H, W) int64 in 0..C-1 or 255 (void),
``instance`` (H, W) int64 (0 no instance, 255 void; only with ``with_instances``), ``name``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .io import VOID, read_image


def check_label(label: np.ndarray, num_classes: int | None, path: Callable[[], Path],
                image_size: tuple[int, int]) -> None:
    """Raise ``ValueError`` naming the file (``path()``, only looked up on failure) when a label map does
    not fit its image or its classes."""
    if label.shape != tuple(image_size):
        raise ValueError(f"label {path()} is {label.shape[1]}x{label.shape[0]} but its image is "
                         f"{image_size[1]}x{image_size[0]} (width x height); they must match")
    if num_classes is not None:
        bad = (label >= num_classes) & (label != VOID)
        if bad.any():
            raise ValueError(f"label {path()} has value {int(label[bad].max())}, but there are only {num_classes} "
                             f"classes (0..{num_classes - 1}, 255 = void); fix the file or list the classes in "
                             "classes.txt")


class SegmentationDataset(Dataset):
    """Base of the dataset classes. Subclasses set ``root``, ``split``, ``ids``, ``class_names``,
    ``with_instances`` and ``thing_classes`` (the classes that have instances) and define the
    path and reader methods."""

    root: Path
    split: str
    ids: list[str]
    class_names: tuple[str, ...]
    with_instances: bool = False
    thing_classes: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, name: str) -> Path:
        raise NotImplementedError

    def semantic_path(self, name: str) -> Path:
        raise NotImplementedError

    def read_semantic(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def instance_path(self, name: str) -> Path:
        raise NotImplementedError(f"{type(self).__name__} has no instance labels")

    def read_instance(self, name: str) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no instance labels")

    def __getitem__(self, index: int) -> dict:
        name = self.ids[index]
        image = read_image(self.image_path(name))
        semantic = self.read_semantic(name)
        check_label(semantic, self.num_classes, lambda: self.semantic_path(name), image.shape[:2])
        sample = {"image": image, "semantic": semantic, "name": name}
        if self.with_instances:
            instance = self.read_instance(name)
            check_label(instance, None, lambda: self.instance_path(name), image.shape[:2])
            sample["instance"] = instance
        return sample
