"""Panoptic quality (PQ, Kirillov et al. 2019), segment matching as COCO's and Cityscapes' tools do.

Per image, for ground truth and prediction ``bridgeseg.panoptic.Panoptic`` maps:

* a predicted segment and a ground-truth segment of the same class match when their IoU is
  strictly above 0.5 (``MATCH_IOU``; so a match is unique); the union leaves out the predicted
  segment's pixels that are void in the ground truth; crowd segments are never matched;
* a match is a true positive (its IoU is added up); an unmatched non-crowd ground-truth segment
  is a false negative;
* an unmatched predicted segment is a false positive unless more than half of its pixels are
  ground-truth void or lie in a crowd region of its class.

Per class: PQ = IoU sum / (TP + FP / 2 + FN / 2), SQ = IoU sum / TP (0 without TP), RQ = TP /
(TP + FP / 2 + FN / 2). The averages (all, things, stuff) are means over the classes with
TP + FP + FN > 0; a class without any is left out (``None``). Void prediction pixels are no
segment; they count in no union. (torchmetrics' ``PanopticQuality`` differs there: it also
leaves a ground-truth segment's predicted-void pixels out of the union and drops a false
negative that is mostly predicted void.)

Only four numbers per class are accumulated (TP, FP, FN, IoU sum), summed over ranks under
torch.distributed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import distributed
from ..outputs import read_panoptic_files
from ..panoptic import Panoptic, segment_index

MATCH_IOU = 0.5
IGNORED_FRACTION = 0.5


def _overlaps(gt: Panoptic, pred: Panoptic) -> np.ndarray:
    """(G + 1, P + 1) int64 pixel counts of (ground-truth segment, predicted segment) pairs; row and
    column 0 are void."""
    rows, cols = segment_index(gt).reshape(-1) + 1, segment_index(pred).reshape(-1) + 1
    counts = np.bincount(rows * (len(pred) + 1) + cols, minlength=(len(gt) + 1) * (len(pred) + 1))
    return counts.reshape(len(gt) + 1, len(pred) + 1).astype(np.int64)


def image_statistics(gt: Panoptic, pred: Panoptic, num_classes: int) -> np.ndarray:
    """One image's (4, C) float64 statistics per class: TP, FP, FN, IoU sum.

    Raises:
        ValueError: the maps differ in size, or a segment's class is outside 0..C-1.
    """
    if gt.ids.shape != pred.ids.shape:
        raise ValueError(f"panoptic maps differ in size: ground truth {gt.ids.shape}, prediction {pred.ids.shape}")
    for name, panoptic in (("ground-truth", gt), ("predicted", pred)):
        bad = panoptic.categories[(panoptic.categories < 0) | (panoptic.categories >= num_classes)]
        if bad.size:
            raise ValueError(f"a {name} segment has class {int(bad[0])}, outside 0..{num_classes - 1}")
    overlap = _overlaps(gt, pred)
    inter = overlap[1:, 1:].astype(np.float64)
    gt_area, pred_area = overlap[1:].sum(axis=1), overlap[:, 1:].sum(axis=0)
    union = gt_area[:, None] + (pred_area - overlap[0, 1:])[None, :] - inter
    same = (gt.categories[:, None] == pred.categories[None, :]) & ~gt.crowd[:, None]
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=same & (inter > 0))
    matched = iou > MATCH_IOU
    stats = np.zeros((4, num_classes), dtype=np.float64)
    gt_rows, pred_cols = np.nonzero(matched)
    np.add.at(stats[0], gt.categories[gt_rows], 1)
    np.add.at(stats[3], gt.categories[gt_rows], iou[gt_rows, pred_cols])
    missed = ~matched.any(axis=1) & ~gt.crowd
    np.add.at(stats[2], gt.categories[missed], 1)
    in_crowd = (gt.crowd[:, None] & (gt.categories[:, None] == pred.categories[None, :])) * inter
    ignored = overlap[0, 1:] + in_crowd.sum(axis=0)
    false = ~matched.any(axis=0) & (ignored <= IGNORED_FRACTION * pred_area)
    np.add.at(stats[1], pred.categories[false], 1)
    return stats


def quality(stats: np.ndarray, classes: Sequence[int]) -> dict:
    """``{"pq", "sq", "rq", "n"}`` averaged over ``classes`` that have TP + FP + FN > 0 (None when none has)."""
    tp, fp, fn, iou = (stats[row, list(classes)] for row in range(4))
    counted = tp + fp + fn > 0
    if not counted.any():
        return {"pq": None, "sq": None, "rq": None, "n": 0}
    denominator = tp + fp / 2 + fn / 2
    pq = iou[counted] / denominator[counted]
    sq = np.divide(iou, tp, out=np.zeros_like(iou), where=tp > 0)[counted]
    rq = tp[counted] / denominator[counted]
    return {"pq": float(pq.mean()), "sq": float(sq.mean()), "rq": float(rq.mean()), "n": int(counted.sum())}


class PanopticEvaluator:
    """Accumulates PQ statistics image by image.

    Args:
        class_names: C names (class indices 0..C-1 are the panoptic categories).
        thing_classes: the indices of the thing classes; all others are stuff.
    """

    def __init__(self, class_names: Sequence[str], thing_classes: Sequence[int]) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.thing_classes = sorted(int(c) for c in thing_classes)
        if any(not 0 <= c < self.num_classes for c in self.thing_classes):
            raise ValueError(f"thing classes {self.thing_classes} lie outside 0..{self.num_classes - 1}")
        self.stuff_classes = [c for c in range(self.num_classes) if c not in self.thing_classes]
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self.stats = np.zeros((4, self.num_classes), dtype=np.float64)
        self.num_images = 0

    def process(self, gt: Panoptic, pred: Panoptic) -> np.ndarray:
        """Add one image; returns its own (4, C) statistics (TP, FP, FN, IoU sum per class)."""
        stats = image_statistics(gt, pred, self.num_classes)
        self.stats += stats
        self.num_images += 1
        return stats

    def all_reduce(self) -> None:
        """Sum the statistics over all torch.distributed ranks (no-op when alone)."""
        if not distributed.is_enabled():
            return
        packed = torch.from_numpy(np.append(self.stats.reshape(-1), self.num_images))
        packed = distributed.all_reduce_sum(packed).numpy()
        self.stats, self.num_images = packed[:-1].reshape(4, self.num_classes).copy(), int(packed[-1])

    def evaluate(self) -> dict:
        """``{"all", "things", "stuff"}``: each ``{"pq", "sq", "rq", "n"}`` (fractions; n = classes
        averaged); ``"per_class"``: name -> ``{"pq", "sq", "rq"}`` or None for a class without any
        segment; ``"num_images"``."""
        per_class = {}
        for index, name in enumerate(self.class_names):
            result = quality(self.stats, [index])
            per_class[name] = None if result["n"] == 0 else {key: result[key] for key in ("pq", "sq", "rq")}
        return {"all": quality(self.stats, range(self.num_classes)), "things": quality(self.stats, self.thing_classes),
                "stuff": quality(self.stats, self.stuff_classes), "per_class": per_class,
                "num_images": self.num_images}


def image_pq(stats: np.ndarray) -> float | None:
    """The PQ of one image's statistics (mean over its classes with a segment), None without any."""
    return quality(stats, range(stats.shape[1]))["pq"]


def _as_classes(panoptic: Panoptic, index_of: dict[int, int], where: str) -> Panoptic:
    """A file's segments with category ids replaced by class indices; errors name the image."""
    unknown = [int(c) for c in panoptic.categories if int(c) not in index_of]
    if unknown:
        raise ValueError(f"{where}: segment category {unknown[0]} is not a category of the ground truth")
    empty = panoptic.segment_ids[panoptic.areas() == 0]
    if empty.size:
        raise ValueError(f"{where}: segment {int(empty[0])} is listed in the JSON but has no pixel in the PNG")
    categories = np.array([index_of[int(c)] for c in panoptic.categories], dtype=np.int64)
    return Panoptic(panoptic.ids, panoptic.segment_ids, categories, panoptic.crowd)


def score_panoptic_files(gt_json, pred_json, gt_folder=None, pred_folder=None, progress: bool = False) -> dict:
    """PQ of a predicted panoptic JSON + PNG folder against a ground-truth one (COCO's panoptic format,
    e.g. cityscapesscripts' ``cityscapes_panoptic_val.json``; see ``bridgeseg.outputs``).

    The categories (and which are things) are the ground truth's; images are matched by
    ``image_id`` and every ground-truth image needs a prediction. Segment areas are counted from
    the PNGs. Returns the dict of ``PanopticEvaluator.evaluate`` with the categories' names, plus
    ``"category_ids"`` (name -> id).
    """
    categories, gt_annotations, load_gt = read_panoptic_files(gt_json, gt_folder)
    _, pred_annotations, load_pred = read_panoptic_files(pred_json, pred_folder)
    index_of = {int(category["id"]): index for index, category in enumerate(categories)}
    evaluator = PanopticEvaluator([str(c["name"]) for c in categories],
                                  [index for index, c in enumerate(categories) if c.get("isthing")])
    by_image = {annotation["image_id"]: annotation for annotation in pred_annotations}
    missing = [a["image_id"] for a in gt_annotations if a["image_id"] not in by_image]
    if missing:
        raise ValueError(f"{len(missing)} ground-truth images have no prediction in {pred_json}, e.g. {missing[0]!r}")
    iterator = gt_annotations
    if progress:
        from tqdm import tqdm

        iterator = tqdm(gt_annotations, desc="scoring", unit="img")
    for gt_annotation in iterator:
        image_id = gt_annotation["image_id"]
        gt = _as_classes(load_gt(gt_annotation), index_of, f"{gt_json}, image {image_id}")
        pred = _as_classes(load_pred(by_image[image_id]), index_of, f"{pred_json}, image {image_id}")
        evaluator.process(gt, pred)
    results = evaluator.evaluate()
    results["category_ids"] = {str(c["name"]): int(c["id"]) for c in categories}
    return results
