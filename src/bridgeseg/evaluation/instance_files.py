"""``bridgeseg score instance``: mAP^r of prediction files against a dataset's ground truth.

Ground truth in three formats (``--gt-format``):

* ``voc``: a VOC-layout root; ``SegmentationObject/<stem>.png`` instances (255 void) with their
  classes from ``SegmentationClass/<stem>.png``; class ids 1..20 (or those of ``classes.txt``).
* ``sbd``: an SBD root; ``inst/<stem>.mat`` (``GTinst``); class ids 1..20; no void.
* ``cityscapes``: a folder searched recursively for ``*_gtFine_instanceIds.png``; the 8 thing
  classes by their Cityscapes label ids (24 person .. 33 bicycle); group regions and unlabeled
  pixels are void.

Predictions: ``PRED/<stem>.txt`` in the format of ``bridgeseg.outputs.read_instance_txt``.

Protocols: ``sds`` and ``mnc`` give mAP^r (``bridgeseg.evaluation.instance``); ``cityscapes``
(with ``--gt-format cityscapes`` only) the official Cityscapes AP / AP50
(``bridgeseg.evaluation.cityscapes_instance``), reading the same files the official evaluator reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.cityscapes import THING_LABEL_IDS, THING_NAMES, read_instance_ids, thing_instances
from ..data.instances import instances_from_maps
from ..data.io import read_label, read_split_stems
from ..data.sbd import read_sbd_instances
from ..data.voc import read_class_names
from ..outputs import read_instance_txt
from .cityscapes_instance import CITYSCAPES_PROTOCOL, CityscapesInstanceEvaluator
from .instance import PROTOCOLS, InstanceEvaluator

GT_FORMATS = ("voc", "sbd", "cityscapes")
SCORE_PROTOCOLS = PROTOCOLS + (CITYSCAPES_PROTOCOL,)
CITYSCAPES_LABEL_IDS = range(-1, 34)
CITYSCAPES_SUFFIX = "_gtFine_instanceIds.png"


class _GroundTruth:
    """Where a format keeps its instances: ``stems()``, ``load(stem)`` and the class ids."""

    def __init__(self, root: Path, gt_format: str) -> None:
        self.root, self.format = root, gt_format
        if not root.is_dir():
            raise FileNotFoundError(f"ground-truth folder {root} does not exist")
        if gt_format == "voc":
            self.class_names = read_class_names(root)
            self.folder = root / "SegmentationObject"
            self.files = {p.stem: p for p in sorted(self.folder.glob("*.png"))}
            self.dataset_ids = {index: index for index in range(1, len(self.class_names))}
        elif gt_format == "sbd":
            self.class_names = read_class_names(root)
            self.folder = root / "inst"
            self.files = {p.stem: p for p in sorted(self.folder.glob("*.mat"))}
            self.dataset_ids = {index: index for index in range(1, len(self.class_names))}
        elif gt_format == "cityscapes":
            self.class_names = ("background", *THING_NAMES)
            self.folder = root
            self.files = {p.name[:-len(CITYSCAPES_SUFFIX)]: p for p in sorted(root.rglob(f"*{CITYSCAPES_SUFFIX}"))}
            self.dataset_ids = {label_id: index + 1 for index, label_id in enumerate(THING_LABEL_IDS)}
        else:
            raise ValueError(f"unknown ground-truth format {gt_format!r}; choose one of {GT_FORMATS}")
        if not self.files:
            raise FileNotFoundError(f"no ground-truth instances found in {self.folder} for format {gt_format!r}")

    def load(self, stem: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One image's ``(masks (G, H, W) bool, evaluator class indices (G,), void (H, W) or None)``."""
        path = self.files.get(stem)
        if path is None:
            raise FileNotFoundError(f"image {stem!r} of the split list has no ground truth in {self.folder}")
        if self.format == "voc":
            instance_map = torch.from_numpy(read_label(path))
            semantic = torch.from_numpy(read_label(self.root / "SegmentationClass" / f"{stem}.png"))
            return instances_from_maps(instance_map, semantic, len(self.class_names))
        if self.format == "sbd":
            instance_map, categories = read_sbd_instances(path)
            ids = np.arange(1, len(categories) + 1)
            present = np.isin(ids, instance_map)
            masks = instance_map[None] == ids[present, None, None]
            return torch.from_numpy(masks), torch.from_numpy(categories[present]), None
        masks, label_ids, void = thing_instances(read_instance_ids(path))
        labels = np.array([self.dataset_ids[i] for i in label_ids], dtype=np.int64)
        return torch.from_numpy(masks), torch.from_numpy(labels), torch.from_numpy(void)

    def evaluator_labels(self, class_ids: np.ndarray, where: Path) -> np.ndarray:
        """Map the dataset's class ids of a prediction file to evaluator indices 1..C-1."""
        bad = [int(i) for i in class_ids if int(i) not in self.dataset_ids]
        if bad:
            raise ValueError(f"{where} has class id {bad[0]}, which is not an instance class of the {self.format} "
                             f"ground truth (valid ids: {sorted(self.dataset_ids)})")
        return np.array([self.dataset_ids[int(i)] for i in class_ids], dtype=np.int64)


def _stems_with_predictions(truth: _GroundTruth, pred_dir: Path, split) -> list[str]:
    """The stems to score (all ground-truth images, or those of ``split``), each with its ``.txt``."""
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    stems = read_split_stems(split) if split is not None else list(truth.files)
    missing = [pred_dir / f"{stem}.txt" for stem in stems if not (pred_dir / f"{stem}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(stems)} images have no prediction file, e.g. {missing[0]} "
                                "(every ground-truth image needs a .txt, empty when nothing was detected)")
    return stems


def _progress(stems: list[str], progress: bool):
    if not progress:
        return stems
    from tqdm import tqdm

    return tqdm(stems, desc="scoring", unit="img")


def score_instance_folders(gt_dir: str | Path, gt_format: str, pred_dir: str | Path, protocol: str = "sds",
                           split: str | Path | None = None, progress: bool = False) -> dict:
    """Scores of ``PRED/<stem>.txt`` files against every ground-truth image (or those of ``split``).

    Returns the dict of ``InstanceEvaluator.evaluate`` (``mAP_r@0.5``, ``mAP_r@0.7``,
    ``mAP_r_vol``, ``per_class``, ``num_images``, ``protocol``), or with ``protocol="cityscapes"``
    that of ``CityscapesInstanceEvaluator.evaluate`` (``AP``, ``AP50``, ``per_class``, ...).
    """
    if protocol not in SCORE_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {SCORE_PROTOCOLS}")
    if protocol == CITYSCAPES_PROTOCOL and gt_format != "cityscapes":
        raise ValueError("--protocol cityscapes scores Cityscapes ground truth: use --gt-format cityscapes")
    truth = _GroundTruth(Path(gt_dir), gt_format)
    pred_dir = Path(pred_dir)
    stems = _stems_with_predictions(truth, pred_dir, split)
    if protocol == CITYSCAPES_PROTOCOL:
        return _score_cityscapes(truth, pred_dir, stems, progress)
    evaluator = InstanceEvaluator(list(truth.class_names), protocol)
    for stem in _progress(stems, progress):
        gt_masks, gt_labels, void = truth.load(stem)
        txt = pred_dir / f"{stem}.txt"
        masks, class_ids, scores = read_instance_txt(txt, image_size=tuple(gt_masks.shape[-2:]) if void is None
                                                     else tuple(void.shape))
        labels = truth.evaluator_labels(class_ids, txt)
        evaluator.process(torch.from_numpy(masks), torch.from_numpy(labels), torch.from_numpy(scores),
                          gt_masks, gt_labels, void)
    return evaluator.evaluate()


def _score_cityscapes(truth: _GroundTruth, pred_dir: Path, stems: list[str], progress: bool) -> dict:
    """The official Cityscapes AP of the ``.txt`` files (label ids, as the official evaluator reads them)."""
    evaluator = CityscapesInstanceEvaluator()
    for stem in _progress(stems, progress):
        path = truth.files.get(stem)
        if path is None:
            raise FileNotFoundError(f"image {stem!r} of the split list has no ground truth in {truth.folder}")
        raw = read_instance_ids(path)
        txt = pred_dir / f"{stem}.txt"
        masks, label_ids, scores = read_instance_txt(txt, image_size=raw.shape)
        bad = [int(i) for i in label_ids if int(i) not in CITYSCAPES_LABEL_IDS]
        if bad:
            raise ValueError(f"{txt} has class id {bad[0]}, which is no Cityscapes label id (-1..33)")
        evaluator.process(masks, label_ids, scores, raw)
    return evaluator.evaluate()
