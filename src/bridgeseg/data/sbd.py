"""Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) and VOC 2012 + SBD ("train_aug").

``cls/<id>.mat`` holds struct ``GTcls`` whose ``Segmentation`` is an (H, W) map of classes 0..20;
``inst/<id>.mat`` holds struct ``GTinst`` whose ``Segmentation`` is an (H, W) map of instance ids
0..N and ``Categories`` the class (1..20) of each instance. SBD has no void pixels.

SBD's own layout (the ``dataset/`` folder of ``benchmark_RELEASE``, from ``benchmark.tgz``),
read by ``SBDSegmentation``:

```
SBD_ROOT/img/<id>.jpg
SBD_ROOT/cls/<id>.mat        struct GTcls:  Segmentation (H, W) classes 0..20
SBD_ROOT/inst/<id>.mat       struct GTinst: Segmentation (H, W) ids 0..N, Categories (N,) 1..20
SBD_ROOT/train.txt           8,498 ids
SBD_ROOT/val.txt             2,857 ids
```

VOC 2012 + SBD, the 10,582-image ``train_aug`` set of semantic segmentation, read by
``VOCAugSegmentation`` from the VOC 2012 folder and the SBD folder above:

```
VOC_ROOT/JPEGImages/<id>.jpg
VOC_ROOT/SegmentationClass/<id>.png             VOC labels (1,464 train + 1,449 val ids)
VOC_ROOT/ImageSets/Segmentation/{train,val}.txt
VOC_ROOT/SegmentationClassAug/<id>.png          optional: written by prepare_voc_aug (fast path)
VOC_ROOT/ImageSets/Segmentation/train_aug.txt   optional: written by prepare_voc_aug
```

``train_aug`` = (SBD train ∪ SBD val ∪ VOC train) minus VOC val. Its labels are VOC's PNG when
the id has one, else SBD's ``cls/<id>.mat``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import is_list_path, read_id_list, read_label, write_label
from .base import SegmentationDataset
from .voc import IMAGE_SUFFIXES, VOC_CLASSES, read_split


def _load_struct(path: str | Path, name: str):
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBD label file {path} does not exist")
    try:
        content = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as error:
        raise ValueError(f"SBD label file {path} is corrupt or not a MATLAB file ({error})") from error
    if name not in content:
        raise ValueError(f"SBD label file {path} has no struct {name!r} (found {sorted(k for k in content if not k.startswith('__'))}); "
                         f"cls/*.mat files hold GTcls, inst/*.mat files hold GTinst")
    return content[name]


def read_sbd_classes(path: str | Path) -> np.ndarray:
    """``cls/<id>.mat`` -> (H, W) int64 class map."""
    return np.asarray(_load_struct(path, "GTcls").Segmentation, dtype=np.int64)


def read_sbd_instances(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``inst/<id>.mat`` -> ``(instance map (H, W) int64 with ids 0..N, categories (N,) int64)``.

    The class of instance ``i`` is ``categories[i - 1]``.
    """
    struct = _load_struct(path, "GTinst")
    instance_map = np.asarray(struct.Segmentation, dtype=np.int64)
    categories = np.atleast_1d(np.asarray(struct.Categories, dtype=np.int64)).reshape(-1)
    if instance_map.max(initial=0) > len(categories):
        raise ValueError(f"SBD label file {path} has instance id {instance_map.max()} but only {len(categories)} "
                         "categories")
    return instance_map, categories


# ---------------------------------------------------------------------------------------------
# Datasets


def _check_sbd_root(root: Path, folders: tuple[str, ...]) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"SBD root {root} does not exist (set it to the dataset/ folder of "
                                f"benchmark_RELEASE, which holds img/, cls/, inst/, train.txt and val.txt)")
    for folder in folders:
        if not (root / folder).is_dir():
            hint = ""
            if (root / "dataset" / folder).is_dir():
                hint = f"; did you mean {root / 'dataset'}?"
            raise FileNotFoundError(f"SBD root {root} has no {folder}/ folder{hint} (expected the SBD layout: "
                                    "img/<id>.jpg, cls/<id>.mat, inst/<id>.mat, train.txt, val.txt)")


class SBDSegmentation(SegmentationDataset):
    """The Semantic Boundaries Dataset in its own layout (``benchmark_RELEASE/dataset``).

    ``dataset[i]`` is a dict: ``image`` (H, W, 3) uint8 RGB, ``semantic`` (H, W) int64 with
    classes 0..20 (SBD has no void), ``instance`` (H, W) int64 with ids 0..N (only with
    ``with_instances``; the class of an instance is the class of its pixels in ``semantic``),
    ``name`` (the id).

    SBD's own splits are ``train`` (8,498 ids) and ``val`` (2,857). The instance-segmentation
    protocol of the paper (after Hariharan et al. 2014) uses the PASCAL VOC 2012 splits instead:
    the SBD images of VOC 2012 ``ImageSets/Main/train.txt`` (5,623 ids) for training and of
    ``ImageSets/Main/val.txt`` (5,732) for evaluation. Write those ids to list files (see
    ``sbd_voc2012_instance_ids``) and pass the paths as ``split``.

    Args:
        root: the ``dataset/`` folder of ``benchmark_RELEASE``.
        split: ``train``, ``val`` (``<root>/<split>.txt``) or the path of an id list file.
        with_instances: also read ``inst/<id>.mat``.
    """

    class_names = VOC_CLASSES
    thing_classes = tuple(range(1, len(VOC_CLASSES)))

    def __init__(self, root: str | Path, split: str = "train", with_instances: bool = False) -> None:
        self.root = Path(root)
        _check_sbd_root(self.root, ("img", "cls") + (("inst",) if with_instances else ()))
        self.split = split
        self.with_instances = with_instances
        path = Path(split) if is_list_path(split) else self.root / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in self.root.glob("*.txt"))
            raise FileNotFoundError(f"SBD split list {path} does not exist; lists found in {self.root}: "
                                    f"{available or 'none'} (pass train, val or the path of an id list)")
        self.ids = read_id_list(path)

    @classmethod
    def instance_labels_at(cls, root: Path) -> bool:
        return (Path(root) / "inst").is_dir()

    def image_path(self, name: str) -> Path:
        """``img/<name>.jpg`` (whether it exists or not)."""
        return self.root / "img" / f"{name}.jpg"

    def semantic_path(self, name: str) -> Path:
        return self.root / "cls" / f"{name}.mat"

    def read_semantic(self, name: str) -> np.ndarray:
        """(H, W) int64 classes 0..20 of ``cls/<name>.mat``."""
        return read_sbd_classes(self.semantic_path(name))

    def instance_path(self, name: str) -> Path:
        return self.root / "inst" / f"{name}.mat"

    def read_instance(self, name: str) -> np.ndarray:
        """(H, W) int64 instance ids 0..N of ``inst/<name>.mat``."""
        return read_sbd_instances(self.instance_path(name))[0]

    def read_instance_categories(self, name: str) -> np.ndarray:
        """(N,) int64 class (1..20) of each instance of ``inst/<name>.mat`` (``GTinst.Categories``)."""
        return read_sbd_instances(self.instance_path(name))[1]



def sbd_voc2012_instance_ids(voc_root: str | Path, sbd_root: str | Path, split: str = "train") -> list[str]:
    """The SBD ids of a PASCAL VOC 2012 detection split: the instance-segmentation protocol.

    Hariharan et al. (2014), and the paper after them, train on the SBD annotations of VOC 2012
    ``train`` and evaluate on those of VOC 2012 ``val``: the ids of
    ``voc_root/ImageSets/Main/<split>.txt`` that have ``sbd_root/inst/<id>.mat`` (5,623 train /
    5,732 val ids with the full releases). Write them to a file and pass its path as the
    ``split`` of ``SBDSegmentation(..., with_instances=True)``.
    """
    voc_root, sbd_root = Path(voc_root), Path(sbd_root)
    _check_sbd_root(sbd_root, ("inst",))
    listed = read_id_list(voc_root / "ImageSets" / "Main" / f"{split}.txt")
    return sorted(name for name in listed if (sbd_root / "inst" / f"{name}.mat").is_file())


def voc_aug_train_ids(voc_root: str | Path, sbd_root: str | Path) -> list[str]:
    """The 10,582 ids of the VOC 2012 "train_aug" set, sorted.

    (SBD train ∪ SBD val ∪ VOC 2012 segmentation train) minus VOC 2012 segmentation val, read
    from ``voc_root/ImageSets/Segmentation/{train,val}.txt`` and ``sbd_root/{train,val}.txt``.
    """
    voc_lists = Path(voc_root) / "ImageSets" / "Segmentation"
    voc_train = read_id_list(voc_lists / "train.txt", allow_empty=True)
    voc_val = read_id_list(voc_lists / "val.txt", allow_empty=True)
    sbd_train = read_id_list(Path(sbd_root) / "train.txt", allow_empty=True)
    sbd_val = read_id_list(Path(sbd_root) / "val.txt", allow_empty=True)
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


class VOCAugSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 with the SBD class labels added: the 10,582-image ``train_aug`` set.

    Images come from ``voc_root/JPEGImages`` (SBD's images are VOC images; ``sbd_root/img`` is
    the fallback). The label of an id is the first that exists of
    ``voc_root/SegmentationClassAug/<id>.png`` (written by ``prepare_voc_aug``; the fast path),
    ``voc_root/SegmentationClass/<id>.png`` and ``sbd_root/cls/<id>.mat``. ``dataset[i]`` is a
    dict with ``image``, ``semantic`` (classes 0..20, 255 = void) and ``name``.

    Args:
        voc_root: the ``VOC2012`` folder (``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/``).
        sbd_root: the ``dataset/`` folder of SBD's ``benchmark_RELEASE``; may be ``None`` once
            ``prepare_voc_aug`` has written ``SegmentationClassAug/`` and ``train_aug.txt``.
        split: ``train_aug`` (``ImageSets/Segmentation/train_aug.txt`` if present, else
            ``voc_aug_train_ids``), any VOC split (``val``, ...) or the path of an id list.
    """

    class_names = VOC_CLASSES
    thing_classes = tuple(range(1, len(VOC_CLASSES)))
    default_splits = ("train_aug", "val")
    has_instances = False

    @classmethod
    def _from_root(cls, root: Path, split: str, with_instances: bool, sbd_root) -> "VOCAugSegmentation":
        return cls(root, sbd_root or None, split)

    def __init__(self, voc_root: str | Path, sbd_root: str | Path | None = None, split: str = "train_aug") -> None:
        self.root = Path(voc_root)
        self.sbd_root = Path(sbd_root) if sbd_root is not None else None
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root {self.root} does not exist (set it to the VOC2012 folder with "
                                    "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/)")
        if self.sbd_root is not None:
            _check_sbd_root(self.sbd_root, ("cls",))
        if not (self.root / "JPEGImages").is_dir() and (self.sbd_root is None or not (self.sbd_root / "img").is_dir()):
            raise FileNotFoundError(f"VOC root {self.root} has no JPEGImages/ folder (and there is no SBD img/ "
                                    "folder to fall back to)")
        self.split = split
        self.ids = self._read_ids(split)

    def _read_ids(self, split: str) -> list[str]:
        if split != "train_aug":
            return read_split(self.root, split)
        prepared = self.root / "ImageSets" / "Segmentation" / "train_aug.txt"
        if prepared.is_file():
            return read_id_list(prepared)
        if self.sbd_root is None:
            raise FileNotFoundError(f"{prepared} does not exist and no SBD root was given: pass sbd_root (the "
                                    "dataset/ folder of benchmark_RELEASE) or run prepare_voc_aug first")
        ids = voc_aug_train_ids(self.root, self.sbd_root)
        if not ids:
            raise ValueError(f"the train_aug split of {self.root} + {self.sbd_root} is empty")
        return ids

    def image_path(self, name: str) -> Path:
        """The image of ``name`` in ``JPEGImages/``, else in SBD's ``img/``; ``JPEGImages/<name>.jpg`` if neither."""
        candidates = [self.root / "JPEGImages" / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
        if self.sbd_root is not None:
            candidates.append(self.sbd_root / "img" / f"{name}.jpg")
        return next((path for path in candidates if path.is_file()), candidates[0])

    def _label_candidates(self, name: str) -> list[Path]:
        candidates = [self.root / folder / f"{name}.png" for folder in ("SegmentationClassAug", "SegmentationClass")]
        if self.sbd_root is not None:
            candidates.append(self.sbd_root / "cls" / f"{name}.mat")
        return candidates

    def semantic_path(self, name: str) -> Path:
        """The label file used for ``name`` (the last candidate when none exists)."""
        candidates = self._label_candidates(name)
        return next((path for path in candidates if path.is_file()), candidates[-1])

    def read_semantic(self, name: str) -> np.ndarray:
        """(H, W) int64 classes of ``name`` from the first label file that exists."""
        candidates = self._label_candidates(name)
        for path in candidates:
            if path.is_file():
                return read_sbd_classes(path) if path.suffix == ".mat" else read_label(path)
        raise FileNotFoundError(f"no label file for {name!r}: looked for {', '.join(str(p) for p in candidates)}"
                                + ("" if self.sbd_root else " (pass sbd_root to read SBD's cls/*.mat)"))



def prepare_voc_aug(voc_root: str | Path, sbd_root: str | Path, progress: bool = True) -> Path:
    """Write the train_aug labels as PNGs once, so that training reads no ``.mat`` files.

    Writes ``voc_root/SegmentationClassAug/<id>.png`` (VOC-palette PNGs, from the VOC PNG when
    the id has one, else from SBD's ``cls/<id>.mat``) for every id of ``voc_aug_train_ids``,
    skipping files already written (each file is written under a temporary name and then
    renamed, so an interrupted run leaves no partial file), then
    ``voc_root/ImageSets/Segmentation/train_aug.txt``.

    Returns:
        The path of ``train_aug.txt``.
    """
    voc_root, sbd_root = Path(voc_root), Path(sbd_root)
    _check_sbd_root(sbd_root, ("cls",))
    ids = voc_aug_train_ids(voc_root, sbd_root)
    out = voc_root / "SegmentationClassAug"
    out.mkdir(parents=True, exist_ok=True)
    iterator = ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ids, desc="SegmentationClassAug", unit="img")
    for name in iterator:
        target = out / f"{name}.png"
        if target.is_file():
            continue
        voc_png = voc_root / "SegmentationClass" / f"{name}.png"
        label = read_label(voc_png) if voc_png.is_file() else read_sbd_classes(sbd_root / "cls" / f"{name}.mat")
        partial = out / f".{name}.partial.png"
        write_label(partial, label)
        os.replace(partial, target)
    list_path = voc_root / "ImageSets" / "Segmentation" / "train_aug.txt"
    list_path.parent.mkdir(parents=True, exist_ok=True)
    partial = list_path.with_name(".train_aug.txt.partial")
    partial.write_text("\n".join(ids) + "\n")
    os.replace(partial, list_path)
    return list_path
