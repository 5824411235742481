"""Cityscapes: label ids, train ids, instance-id PNGs and the dataset.

``*_gtFine_labelIds.png`` holds label ids 0..33 (-1 = license plate); training uses the 19
"train ids" (others 255). ``*_gtFine_instanceIds.png`` (16-bit) holds ``labelId * 1000 + k`` for
the pixels of instance ``k`` of a thing class, and the plain label id elsewhere (including the
"group" regions of things, where instances could not be told apart).

Layout read by ``CityscapesSegmentation`` (``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` unpacked into one folder):

```
ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     (or ..._gtFine_labelTrainIds.png)
ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png  for instances
```

``<split>`` is ``train`` (2,975 frames), ``val`` (500) or ``test``. Image ids are
``"<city>/<city>_<seq>_<frame>"``. ``*_labelTrainIds.png`` (from cityscapesscripts'
``createTrainIdLabelImgs``) is used only where ``*_labelIds.png`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .io import VOID, is_list_path, read_id_list, read_label
from .base import SegmentationDataset

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


# ---------------------------------------------------------------------------------------------
# Dataset

THING_TRAIN_IDS = tuple(train_id for _, train_id, _, thing in EVALUATED_LABELS if thing)
NUM_LABEL_IDS = 34  # label ids 0..33 (license plate, -1, is stored as 255 in 8-bit PNGs)


class LabelValueError(ValueError):
    """A label file holds a value that is no class (the file reads fine otherwise)."""


def instance_ids_to_instance_map(instance_ids: np.ndarray) -> np.ndarray:
    """A raw ``*_instanceIds.png`` map -> consecutive instance ids.

    Args:
        instance_ids: (H, W) ``labelId * 1000 + k`` on instance ``k`` of a thing class, the plain
            label id elsewhere.

    Returns:
        (H, W) int64: the instances of the 8 thing classes numbered 1..N in increasing raw-id order
        (value 255 is skipped, so a frame with more than 254 instances continues at 256); 255 on the
        "group" regions of thing classes (a thing label id with no instance number); 0 elsewhere.
    """
    instance_ids = np.asarray(instance_ids, dtype=np.int64)
    out = np.zeros(instance_ids.shape, dtype=np.int64)
    out[np.isin(instance_ids, THING_LABEL_IDS)] = VOID
    things = (instance_ids >= 1000) & np.isin(instance_ids // 1000, THING_LABEL_IDS)
    raw, inverse = np.unique(instance_ids[things], return_inverse=True)
    numbers = np.arange(1, len(raw) + 1, dtype=np.int64)
    numbers[numbers >= VOID] += 1
    out[things] = numbers[inverse.reshape(-1)]
    return out


def _check_cityscapes_root(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"Cityscapes root {root} does not exist (set it to the folder holding "
                                "leftImg8bit/ and gtFine/)")
    for folder, package in (("leftImg8bit", "leftImg8bit_trainvaltest.zip"), ("gtFine", "gtFine_trainvaltest.zip")):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"Cityscapes root {root} has no {folder}/ folder (unpack {package} there; "
                                    "expected leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png and "
                                    "gtFine/<split>/<city>/<stem>_gtFine_labelIds.png)")


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes fine annotations with the 19 train ids (and optionally thing instances).

    ``dataset[i]`` is a dict: ``image`` (H, W, 3) uint8 RGB, ``semantic`` (H, W) int64 train ids
    0..18 or 255, ``instance`` (H, W) int64 (only with ``with_instances``: instances of the 8
    thing classes numbered 1..N, 255 on "group" regions of things, 0 elsewhere; an instance's
    class is its train id in ``semantic``), ``name`` (``"<city>/<stem>"``).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (a folder of ``leftImg8bit/``), or the path of a
            list file of ``<city>/<stem>`` (or ``<split>/<city>/<stem>``) lines.
        with_instances: also read ``*_gtFine_instanceIds.png``.
    """

    class_names = TRAIN_CLASS_NAMES
    thing_classes = THING_TRAIN_IDS

    def __init__(self, root: str | Path, split: str = "train", with_instances: bool = False) -> None:
        self.root = Path(root)
        _check_cityscapes_root(self.root)
        self.split = split
        self.with_instances = with_instances
        self._folder: dict[str, str] = {}
        if is_list_path(split):
            self.ids = self._ids_from_list(Path(split))
        else:
            self.ids = self._ids_from_folder(split)

    @classmethod
    def instance_labels_at(cls, root: Path) -> bool:
        gt = Path(root) / "gtFine"
        return gt.is_dir() and next(gt.glob("*/*/*_gtFine_instanceIds.png"), None) is not None

    def _available_splits(self) -> list[str]:
        return sorted(p.name for p in (self.root / "leftImg8bit").iterdir() if p.is_dir())

    def _ids_from_folder(self, split: str) -> list[str]:
        for top in ("leftImg8bit", "gtFine"):
            if not (self.root / top / split).is_dir():
                found = self._available_splits() or "none"
                raise FileNotFoundError(f"Cityscapes split folder {self.root / top / split} does not exist; splits "
                                        f"found under {self.root / 'leftImg8bit'}: {found}")
        suffix = "_leftImg8bit.png"
        ids = sorted(f"{path.parent.name}/{path.name[:-len(suffix)]}"
                     for path in (self.root / "leftImg8bit" / split).glob(f"*/*{suffix}"))
        if not ids:
            raise ValueError(f"{self.root / 'leftImg8bit' / split} holds no <city>/<stem>{suffix} images")
        self._folder = dict.fromkeys(ids, split)
        return ids

    def _ids_from_list(self, path: Path) -> list[str]:
        if not path.is_file():
            raise FileNotFoundError(f"Cityscapes id list {path} does not exist")
        splits = self._available_splits()
        ids = []
        for entry in read_id_list(path, allow_empty=True):
            parts = entry.strip("/").split("/")
            if len(parts) == 3:
                folder, name = parts[0], "/".join(parts[1:])
            elif len(parts) == 2:
                name = "/".join(parts)
                found = [s for s in splits if (self.root / "leftImg8bit" / s / f"{name}_leftImg8bit.png").is_file()]
                folder = found[0] if found else (splits[0] if splits else "")
            else:
                raise ValueError(f"id list {path} has entry {entry!r}; expected <city>/<stem> or <split>/<city>/<stem>")
            self._folder[name] = folder
            ids.append(name)
        if not ids:
            raise ValueError(f"id list {path} is empty")
        return ids

    def _gt(self, name: str, kind: str) -> Path:
        return self.root / "gtFine" / self._folder[name] / f"{name}_gtFine_{kind}.png"

    def image_path(self, name: str) -> Path:
        """``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` (whether it exists or not)."""
        return self.root / "leftImg8bit" / self._folder[name] / f"{name}_leftImg8bit.png"

    def semantic_path(self, name: str) -> Path:
        """``*_gtFine_labelIds.png``, or ``*_gtFine_labelTrainIds.png`` when only that exists."""
        label_ids = self._gt(name, "labelIds")
        train_ids = self._gt(name, "labelTrainIds")
        return train_ids if not label_ids.is_file() and train_ids.is_file() else label_ids

    def read_semantic(self, name: str) -> np.ndarray:
        """(H, W) int64 train ids 0..18, 255 for classes that are not evaluated."""
        path = self.semantic_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"label file {path} does not exist (nor {self._gt(name, 'labelTrainIds').name})")
        label = read_label(path)
        if path.name.endswith("_labelTrainIds.png"):
            return label
        bad = (label >= NUM_LABEL_IDS) & (label != VOID)
        if bad.any():
            raise LabelValueError(f"label {path} has label id {int(label[bad].max())}; Cityscapes label ids are "
                                  f"0..{NUM_LABEL_IDS - 1} (255 for the license plate)")
        return label_ids_to_train_ids(label)

    def instance_path(self, name: str) -> Path:
        return self._gt(name, "instanceIds")

    def read_instance(self, name: str) -> np.ndarray:
        """(H, W) int64 consecutive instance ids, see ``instance_ids_to_instance_map``."""
        return instance_ids_to_instance_map(read_instance_ids(self.instance_path(name)))

