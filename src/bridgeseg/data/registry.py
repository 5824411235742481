"""Every dataset format by name: the one table that training, evaluation, ``data check``, config
validation and the command line read.

Names: ``voc`` (the VOC layout: PASCAL VOC 2012, the synthetic demo set, your own data),
``voc_aug`` (VOC 2012 + SBD, the 10,582-image ``train_aug`` set), ``sbd`` (SBD's own layout, the
paper's instance experiments), ``cityscapes``, ``context`` (PASCAL-Context, 60 classes) and
``context59`` (59 classes, background ignored).
"""

from __future__ import annotations

from pathlib import Path

from .base import SegmentationDataset
from .cityscapes import CityscapesSegmentation
from .context import PascalContext, PascalContext59
from .sbd import SBDSegmentation, VOCAugSegmentation
from .voc import VOCSegmentation

DATASETS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCSegmentation,
    "voc_aug": VOCAugSegmentation,
    "sbd": SBDSegmentation,
    "cityscapes": CityscapesSegmentation,
    "context": PascalContext,
    "context59": PascalContext59,
}


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The class of dataset ``name``; a ``ValueError`` listing the names for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    return DATASETS[name]


def open_dataset(name: str, root: str | Path, split: str, with_instances: bool | None = None,
                 sbd_root: str | Path | None = None) -> SegmentationDataset:
    """Dataset ``name`` at ``root`` for ``split`` (``with_instances=None``: where the root has them)."""
    return dataset_class(name).open(root, split, with_instances=with_instances, sbd_root=sbd_root)
