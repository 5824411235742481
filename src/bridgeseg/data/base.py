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


def label_size_problem(label: np.ndarray, image_size: tuple[int, int]) -> str | None:
    """Why a label map does not fit its image, as the end of a sentence "label FILE ...", or None."""
    if label.shape == tuple(image_size):
        return None
    return (f"is {label.shape[1]}x{label.shape[0]} but its image is {image_size[1]}x{image_size[0]} "
            "(width x height); they must match")


def label_value_problem(label: np.ndarray, num_classes: int) -> str | None:
    """Why a class map holds values that are no class, as the end of a sentence "label FILE ...", or None."""
    bad = ((label < 0) | (label >= num_classes)) & (label != VOID)
    if not bad.any():
        return None
    values = np.unique(label[bad])
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    return (f"has value {int(values.max())}, but there are only {num_classes} classes (0..{num_classes - 1}, "
            f"255 = void): values {shown} on {int(bad.sum())} pixels; fix the file or list the classes in "
            "classes.txt")


def check_label(label: np.ndarray, num_classes: int | None, path: Callable[[], Path],
                image_size: tuple[int, int]) -> None:
    """Raise ``ValueError`` naming the file (``path()``, only looked up on failure) when a label map does
    not fit its image or (for class maps, ``num_classes`` given) its classes."""
    problem = label_size_problem(label, image_size)
    if problem is None and num_classes is not None:
        problem = label_value_problem(label, num_classes)
    if problem is not None:
        raise ValueError(f"label {path()} {problem}")


class SegmentationDataset(Dataset):
    """Base of the dataset classes. Subclasses set ``root``, ``split``, ``ids``, ``class_names``,
    ``with_instances`` and ``thing_classes`` (the classes that have instances) and define the
    path and reader methods; ``bridgeseg.data.registry`` lists them by name.

    Class attributes: ``default_splits`` (training, validation) split names; ``has_instances``:
    whether the format has instance labels at all.
    """

    root: Path
    split: str
    ids: list[str]
    class_names: tuple[str, ...]
    with_instances: bool = False
    thing_classes: tuple[int, ...] = ()
    default_splits: tuple[str, str] = ("train", "val")
    has_instances: bool = True

    @classmethod
    def open(cls, root: str | Path, split: str, with_instances: bool | None = None,
             sbd_root: str | Path | None = None) -> "SegmentationDataset":
        """The dataset at ``root`` for ``split``; ``with_instances=None`` reads instances when the
        root has them. ``sbd_root`` is only read by the VOC + SBD set."""
        if with_instances is None:
            with_instances = cls.has_instances and cls.instance_labels_at(Path(root))
        if with_instances and not cls.has_instances:
            raise ValueError(f"{cls.__name__} has class labels only, no instance labels; use model.arch=semantic "
                             "(or a dataset with instances: voc with SegmentationObject/, sbd, cityscapes)")
        return cls._from_root(Path(root), split, with_instances, sbd_root)

    @classmethod
    def _from_root(cls, root: Path, split: str, with_instances: bool,
                   sbd_root: str | Path | None) -> "SegmentationDataset":
        """The constructor call of ``open`` (override where the constructor differs)."""
        return cls(root, split, with_instances=with_instances)

    @classmethod
    def instance_labels_at(cls, root: Path) -> bool:
        """Whether the dataset root holds instance labels (override where the format has them)."""
        return False

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
