"""PASCAL-Context (Mottaghi et al. 2014): PASCAL VOC 2010 images with whole-scene labels.

The paper (Sec. 4.1, Table 5) uses the 59 most frequent classes plus background: 60 classes,
4,998 train and 5,105 val images. ``PascalContext(root, split, num_classes=60)`` gives that
setting (0 = background); ``num_classes=59`` drops background (255, ignored) and shifts the 59
classes to 0..58, the setting most later papers report.

Layout (``root`` is the ``VOC2010`` folder; a ``VOCdevkit`` folder that holds ``VOC2010/`` works too):

```
VOC2010/JPEGImages/<id>.jpg                          from VOCtrainval_03-May-2010.tar
VOC2010/SegmentationClassContext/<id>.png            labels 0 = background, 1..59 (see below)
VOC2010/ImageSets/SegmentationContext/train.txt      4,998 ids
VOC2010/ImageSets/SegmentationContext/val.txt        5,105 ids
```

``SegmentationClassContext`` and the ``SegmentationContext`` lists are what mmsegmentation's
converter writes (``tools/dataset_converters/pascal_context.py VOCdevkit
VOCdevkit/VOC2010/trainval_merged.json``; it needs the Detail API and ``trainval_merged.json``):
8-bit PNGs whose value ``i`` is ``CONTEXT60_CLASSES[i]``, i.e. 0 = background and the 59
classes in alphabetical order (the order of their ids in the 459-class ``labels.txt``).

Without that converter the raw release works too:

```
VOC2010/trainval/<id>.mat       from trainval.tar.gz (cs.stanford.edu/~roozbeh/pascal-context):
                                field LabelMap, (H, W) uint16 ids 1..459 of labels.txt (0 = unlabelled)
VOC2010/labels.txt              optional: the 459 "<id>: <name>" lines of the same page
VOC2010/ImageSets/Main/{train,val}.txt     VOC 2010's own lists (4,998 / 5,105 ids)
```

A ``trainval/<id>.mat`` is mapped to the 60 classes by name: each of the 59 names gets the id
that ``labels.txt`` gives it (``CONTEXT59_LABEL_IDS`` when there is no ``labels.txt``), every
other id (and 0) is background. The split lists are read from ``ImageSets/SegmentationContext``
when present, else from ``ImageSets/Main``. A PNG in ``SegmentationClassContext`` wins over the
``.mat`` of the same id. The 59-class PNGs of ``59_context_labels.tar.gz`` (the same page) number
the classes in the order of ``59_labels.txt``, which is not this order: convert them, do not copy
them into ``SegmentationClassContext``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import VOID, is_list_path, read_id_list, read_label
from .base import SegmentationDataset
from .voc import IMAGE_SUFFIXES

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)
CONTEXT60_CLASSES = ("background",) + CONTEXT59_CLASSES

# id of each of CONTEXT59_CLASSES in the 459-class labels.txt ("1: accordion", "2: aeroplane", ...)
CONTEXT59_LABEL_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158,
    159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366,
    368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)


def read_context_labels(path: str | Path) -> dict[str, int]:
    """``labels.txt`` of the 459-class release (``"<id>: <name>"`` lines) -> ``{name: id}``."""
    path = Path(path)
    names: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise ValueError(f"{path} line {number} is {line!r}; expected '<id>: <name>'")
        names.setdefault(name.strip(), int(key))
    return names


def full_to_context60_lookup(labels_txt: str | Path | None = None) -> np.ndarray:
    """Lookup table from the 459-class ids of ``LabelMap`` to the 60 classes.

    Args:
        labels_txt: the release's ``labels.txt``; ``None`` uses ``CONTEXT59_LABEL_IDS``.

    Returns:
        (65536,) int64: ``lookup[full_id]`` is 1..59 for the 59 classes, 0 (background) otherwise.
    """
    if labels_txt is None:
        ids = CONTEXT59_LABEL_IDS
    else:
        names = read_context_labels(labels_txt)
        missing = [name for name in CONTEXT59_CLASSES if name not in names]
        if missing:
            raise ValueError(f"{labels_txt} lacks the classes {missing}; it must be the 459-class labels.txt of "
                             "PASCAL-Context (not 59_labels.txt)")
        ids = tuple(names[name] for name in CONTEXT59_CLASSES)
    lookup = np.zeros(1 << 16, dtype=np.int64)
    lookup[np.asarray(ids)] = np.arange(1, len(ids) + 1)
    return lookup


def read_context_mat(path: str | Path) -> np.ndarray:
    """``trainval/<id>.mat`` -> (H, W) int64 ``LabelMap`` (459-class ids, 0 = unlabelled)."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PASCAL-Context label file {path} does not exist")
    try:
        content = scipy.io.loadmat(path)
    except Exception as error:
        raise ValueError(f"PASCAL-Context label file {path} is corrupt or not a MATLAB file ({error})") from error
    if "LabelMap" not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise ValueError(f"PASCAL-Context label file {path} has no LabelMap (found {found})")
    label = np.asarray(content["LabelMap"])
    if label.ndim != 2:
        raise ValueError(f"PASCAL-Context label file {path} has a LabelMap of shape {label.shape}; expected (H, W)")
    return label.astype(np.int64)


def _resolve_root(root: Path) -> Path:
    if not (root / "JPEGImages").is_dir() and (root / "VOC2010" / "JPEGImages").is_dir():
        return root / "VOC2010"
    return root


class PascalContext(SegmentationDataset):
    """PASCAL-Context semantic segmentation with 60 (background + 59) or 59 classes.

    ``dataset[i]`` is a dict: ``image`` (H, W, 3) uint8 RGB, ``semantic`` (H, W) int64 (0..59 with
    ``num_classes=60``; 0..58 and 255 for background with ``num_classes=59``), ``name`` (the id).

    Args:
        root: the ``VOC2010`` folder (see the module docstring for the layout).
        split: ``train``, ``val`` or the path of an id list file.
        num_classes: 60 (the paper's setting, background = class 0) or 59 (background ignored).
    """

    has_instances = False

    @classmethod
    def _from_root(cls, root: Path, split: str, with_instances: bool, sbd_root) -> "PascalContext":
        return cls(root, split)

    def __init__(self, root: str | Path, split: str = "train", num_classes: int = 60) -> None:
        if num_classes not in (59, 60):
            raise ValueError(f"num_classes must be 60 (with background) or 59 (background ignored), not {num_classes}")
        self.root = _resolve_root(Path(root))
        self._check_layout()
        self.split = split
        self.class_names = CONTEXT60_CLASSES if num_classes == 60 else CONTEXT59_CLASSES
        self.ids = self._read_ids(split)
        labels_txt = self.root / "labels.txt"
        self._labels_txt = labels_txt if labels_txt.is_file() else None
        self._lookup: np.ndarray | None = None

    def _check_layout(self) -> None:
        layout = ("expected VOC2010/JPEGImages/, VOC2010/SegmentationClassContext/ (or the raw trainval/*.mat) "
                  "and VOC2010/ImageSets/SegmentationContext/{train,val}.txt")
        if not self.root.is_dir():
            raise FileNotFoundError(f"PASCAL-Context root {self.root} does not exist ({layout})")
        if not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"PASCAL-Context root {self.root} has no JPEGImages/ folder ({layout})")
        if not (self.root / "SegmentationClassContext").is_dir() and not (self.root / "trainval").is_dir():
            raise FileNotFoundError(f"PASCAL-Context root {self.root} has neither SegmentationClassContext/ nor "
                                    f"trainval/ ({layout}; see bridgeseg.data.context for the converters)")

    def _read_ids(self, split: str) -> list[str]:
        if is_list_path(split):
            candidates = [Path(split)]
        else:
            candidates = [self.root / "ImageSets" / folder / f"{split}.txt"
                          for folder in ("SegmentationContext", "Main")]
        for path in candidates:
            if path.is_file():
                return read_id_list(path)
        raise FileNotFoundError(f"split list {candidates[0]} does not exist"
                                + (f" (nor {candidates[1]})" if len(candidates) > 1 else ""))

    def image_path(self, name: str) -> Path:
        """``JPEGImages/<name>.jpg`` (or ``.jpeg``/``.png``), whether it exists or not."""
        candidates = [self.root / "JPEGImages" / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
        return next((path for path in candidates if path.is_file()), candidates[0])

    def semantic_path(self, name: str) -> Path:
        """``SegmentationClassContext/<id>.png`` if it exists, else ``trainval/<id>.mat`` (if that folder exists)."""
        png = self.root / "SegmentationClassContext" / f"{name}.png"
        mat = self.root / "trainval" / f"{name}.mat"
        return mat if not png.is_file() and mat.parent.is_dir() else png

    def read_semantic(self, name: str) -> np.ndarray:
        """(H, W) int64 labels in this dataset's class numbering (255 = ignored)."""
        path = self.semantic_path(name)
        if path.suffix == ".mat":
            if self._lookup is None:
                self._lookup = full_to_context60_lookup(self._labels_txt)
            label = self._lookup[np.clip(read_context_mat(path), 0, (1 << 16) - 1)]
        else:
            label = read_label(path)
        if self.num_classes == 59:
            label = np.where((label == 0) | (label == VOID), VOID, label - 1)
        return label



class PascalContext59(PascalContext):
    """PASCAL-Context with the 59 classes only (background ignored): ``PascalContext(num_classes=59)``."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        super().__init__(root, split, num_classes=59)
