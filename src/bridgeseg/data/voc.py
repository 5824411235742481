"""Datasets in the PASCAL VOC 2012 layout (also the layout of the synthetic demo dataset).

```
ROOT/JPEGImages/<id>.jpg
ROOT/SegmentationClass/<id>.png      class index per pixel, 255 = void
ROOT/SegmentationObject/<id>.png     instance index per pixel (0 background, 255 void); optional
ROOT/ImageSets/Segmentation/<split>.txt   one <id> per line
ROOT/classes.txt                     optional: one class name per line, background first
```

Things and stuff (for panoptic segmentation): the first class (background) and every class whose
``classes.txt`` line ends with the marker ``[stuff]`` (``sky [stuff]``) are stuff, one region per
image; all other classes are things, counted instance by instance. Without ``classes.txt``: the 20
VOC object classes are things, background is stuff.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from .base import SegmentationDataset
from .io import read_id_list, read_label

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
STUFF_MARKER = "[stuff]"


def _class_lines(root: str | Path) -> list[str] | None:
    """The non-empty lines of ``ROOT/classes.txt``, stripped; None without the file."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_thing_classes(root: str | Path) -> tuple[int, ...]:
    """Indices of the thing classes of a VOC-layout root: every class but the first (background) and
    those marked ``[stuff]`` in ``classes.txt``."""
    lines = _class_lines(root)
    if lines is None:
        return tuple(range(1, len(VOC_CLASSES)))
    return tuple(index for index, line in enumerate(lines) if index > 0 and not line.endswith(STUFF_MARKER))


def read_class_names(root: str | Path) -> tuple[str, ...]:
    """Class names of a VOC-layout root: its ``classes.txt`` if present (``[stuff]`` markers
    removed), else the 21 VOC classes."""
    path = Path(root) / "classes.txt"
    lines = _class_lines(root)
    if lines is None:
        return VOC_CLASSES
    names = tuple(line.removesuffix(STUFF_MARKER).strip() for line in lines)
    if len(names) < 2:
        raise ValueError(f"{path} must list at least two classes (background first), one per line")
    if len(names) > 255:
        raise ValueError(f"{path} lists {len(names)} classes; at most 255 fit in 8-bit label PNGs")
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists a class name twice")
    return names


def read_split(root: Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Segmentation/<split>.txt`` (or a path to a list file)."""
    path = Path(split) if split.endswith(".txt") else root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
        raise FileNotFoundError(f"split list {path} does not exist; splits found under {root}: {available or 'none'}")
    return read_id_list(path)


class VOCSegmentation(SegmentationDataset):
    """Images with class labels (and optionally instance labels) in the VOC layout.

    ``dataset[i]`` is a dict: ``image`` (H, W, 3) uint8, ``semantic`` (H, W) int64 with values
    in 0..C-1 or 255, ``instance`` (H, W) int64 (only with ``with_instances``), ``name`` (the id).

    Args:
        root: the folder holding ``JPEGImages``, ``SegmentationClass``, ...
        split: a split name (``train``, ``val``) or the path of an id list.
        with_instances: also read ``SegmentationObject``.
        class_names: overrides the names from ``classes.txt`` / VOC.
    """

    def __init__(self, root: str | Path, split: str = "train", with_instances: bool = False,
                 class_names: tuple[str, ...] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist (set data.root or --data-root to a "
                                    "folder with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/)")
        for folder in ("JPEGImages", "SegmentationClass") + (("SegmentationObject",) if with_instances else ()):
            if not (self.root / folder).is_dir():
                raise FileNotFoundError(f"dataset root {self.root} has no {folder}/ folder (expected the PASCAL VOC "
                                        "layout: JPEGImages/, SegmentationClass/, SegmentationObject/, "
                                        "ImageSets/Segmentation/)")
        self.split = split
        self.with_instances = with_instances
        self.class_names = tuple(class_names) if class_names else read_class_names(self.root)
        self.ids = read_split(self.root, split)
        self.thing_classes = read_thing_classes(self.root) if not class_names else tuple(range(1, len(class_names)))

    @classmethod
    def instance_labels_at(cls, root: Path) -> bool:
        return (Path(root) / "SegmentationObject").is_dir()

    def image_path(self, name: str) -> Path:
        """``JPEGImages/<name>.jpg`` (or ``.jpeg``/``.png``), whether it exists or not."""
        candidates = [self.root / "JPEGImages" / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
        return next((path for path in candidates if path.is_file()), candidates[0])

    def semantic_path(self, name: str) -> Path:
        return self.root / "SegmentationClass" / f"{name}.png"

    def read_semantic(self, name: str) -> np.ndarray:
        return read_label(self.semantic_path(name))

    def instance_path(self, name: str) -> Path:
        return self.root / "SegmentationObject" / f"{name}.png"

    def read_instance(self, name: str) -> np.ndarray:
        return read_label(self.instance_path(name))
