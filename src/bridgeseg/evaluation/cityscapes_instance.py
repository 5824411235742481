"""The official Cityscapes instance-level metric: AP (mean over IoU 0.50:0.95) and AP50.

The rules of cityscapesscripts' ``evalInstanceLevelSemanticLabeling`` (without its distance
variants), re-implemented here; a slow test checks that both give the same numbers:

* **Ground truth** comes from ``*_gtFine_instanceIds.png``: every raw value of one of the 8
  instance classes is a region of that class (its pixel count is its size); values >= 1000 are
  instances, smaller ones (the plain label id) "group" regions. An instance is evaluated when it
  has at least ``MIN_REGION_SIZE`` (100) pixels. Void are the pixels whose raw value is a label id
  marked "ignore in evaluation" (instances of those classes, e.g. caravan ``29001``, are not void).
* **Predictions**: masks with a Cityscapes label id and a confidence; a mask of another class or
  with no pixel is left out. Overlap is the plain IoU of two masks (void included).
* **Matching**, per class and threshold ``t`` of ``OVERLAPS`` (0.5, 0.55, ..., 0.95): an evaluated
  instance is found when some prediction has IoU > ``t`` with it; it counts once as a true
  positive with the best such confidence, the other such predictions are false positives;
  otherwise it is a miss. A prediction with IoU > ``t`` with no region of its class (of any size
  or kind) is a false positive unless the share of its pixels that are void, in group regions of
  its class, or in too-small instances of its class (a too-small group region counts twice, as in
  the official code) exceeds ``t``.
* **AP** of a class at ``t``: with evaluated instances and predictions of the class anywhere, the
  area under the precision-recall curve sampled at every distinct confidence (recall counting the
  misses), with the official code's central-difference step widths; 0 with instances but no
  prediction; undefined (NaN, left out of means) without instances. A class's AP is the mean
  over the 10 thresholds, AP the mean over all (class, threshold) pairs, AP50 the mean at 0.5.

Only per-(class, threshold) lists of (true/false, confidence) pairs and miss counts are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import distributed
from ..data.cityscapes import EVALUATED_LABELS, THING_LABEL_IDS, THING_NAMES

OVERLAPS = np.arange(0.5, 1.0, 0.05)  # the official thresholds, made the same way (the same floats)
MIN_REGION_SIZE = 100
VOID_LABEL_IDS = tuple(i for i in range(-1, 34) if i not in {label for label, _, _, _ in EVALUATED_LABELS})
CITYSCAPES_PROTOCOL = "cityscapes"


def _region_labels(values: np.ndarray) -> np.ndarray:
    """The label id of each raw instanceIds value: ``v // 1000`` for instances, ``v`` itself below 1000."""
    return np.where(values >= 1000, values // 1000, values)


def _class_entries(inter: np.ndarray, sizes: np.ndarray, is_instance: np.ndarray, areas: np.ndarray,
                   void_pixels: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per threshold, one image's ``(is_true (N,), confidence (N,), misses)`` for one class.

    Args:
        inter: (P, R) pixels shared by the class's predictions and its ground-truth regions.
        sizes: (R,) region pixel counts; is_instance: (R,) instance (True) or group region.
        areas: (P,) prediction pixel counts (> 0); void_pixels: (P,) their void pixels.
        scores: (P,) confidences.
    """
    iou = inter / np.maximum(sizes[None, :] + areas[:, None] - inter, 1)
    evaluated = is_instance & (sizes >= MIN_REGION_SIZE)
    ignored = void_pixels + inter[:, ~is_instance].sum(axis=1) + inter[:, sizes < MIN_REGION_SIZE].sum(axis=1)
    entries = []
    for threshold in OVERLAPS:
        hits = (iou > threshold) & (inter > 0)
        truths, confidences, misses = [], [], 0
        for region in np.flatnonzero(evaluated):
            found = scores[hits[:, region]]
            if found.size == 0:
                misses += 1
                continue
            best = int(np.argmax(found))
            truths += [1] + [0] * (found.size - 1)
            confidences += [found[best]] + [value for k, value in enumerate(found) if k != best]
        for index in np.flatnonzero(~hits.any(axis=1) & (ignored / areas <= threshold)):
            truths.append(0)
            confidences.append(scores[index])
        entries.append((np.array(truths, dtype=bool), np.array(confidences, dtype=np.float64), misses))
    return entries


def cityscapes_average_precision(is_true: np.ndarray, confidence: np.ndarray, misses: int) -> float:
    """AP of one class at one threshold from all its (true/false, confidence) pairs and misses.

    Precision and recall are taken at every distinct confidence ``u`` (the pairs with confidence
    >= u count as detections), then a final point (recall 0, precision 1); the AP is
    sum_i precision_i * (recall_{i-1} - recall_{i+1}) / 2 with recall_{-1} = recall_0 and
    recall_{n+1} = 0. No pair at all gives 0.
    """
    if confidence.size == 0:
        return 0.0
    order = np.argsort(confidence, kind="stable")
    ranked, truths = confidence[order], is_true[order].astype(np.int64)
    levels, first = np.unique(ranked, return_index=True)
    below = np.concatenate([[0], np.cumsum(truths)])[first]  # true pairs with a lower confidence
    true_positives = truths.sum() - below
    detections = ranked.size - first
    precision = np.append(true_positives / detections, 1.0)
    recall = np.append(true_positives / (truths.sum() + misses), 0.0)
    before = np.concatenate([[recall[0]], recall[:-1]])
    after = np.append(recall[1:], 0.0)
    return float(np.dot(precision, (before - after) / 2))


class CityscapesInstanceEvaluator:
    """Accumulates the official Cityscapes instance statistics image by image.

    Args:
        label_ids: the Cityscapes label ids of the evaluated classes (default: the 8 instance
            classes, 24 person .. 33 bicycle); names: their names.
    """

    def __init__(self, label_ids: Sequence[int] = THING_LABEL_IDS, names: Sequence[str] = THING_NAMES) -> None:
        self.label_ids, self.names = [int(i) for i in label_ids], list(names)
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        shape = (len(self.label_ids), len(OVERLAPS))
        self._truths = [[[] for _ in range(shape[1])] for _ in range(shape[0])]
        self._confidences = [[[] for _ in range(shape[1])] for _ in range(shape[0])]
        self._misses = np.zeros(shape, dtype=np.int64)
        self._has_gt = np.zeros(shape[0], dtype=bool)
        self._has_pred = np.zeros(shape[0], dtype=bool)
        self.num_images = 0

    def process(self, pred_masks, pred_label_ids, pred_scores, instance_ids: np.ndarray) -> None:
        """Add one image.

        Args:
            pred_masks: (P, H, W) bool predicted masks.
            pred_label_ids: (P,) Cityscapes label ids (other classes are left out).
            pred_scores: (P,) confidences.
            instance_ids: (H, W) the raw ``*_gtFine_instanceIds.png`` values.
        """
        raw = np.asarray(instance_ids, dtype=np.int64)
        pred_masks = np.asarray(pred_masks, dtype=bool).reshape(-1, *raw.shape)
        label_ids = np.asarray(pred_label_ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if not len(pred_masks) == len(label_ids) == len(scores):
            raise ValueError(f"{len(pred_masks)} masks, {len(label_ids)} label ids and {len(scores)} scores")
        values, inverse = np.unique(raw, return_inverse=True)
        inverse = inverse.reshape(-1)
        sizes, region_labels = np.bincount(inverse, minlength=len(values)), _region_labels(values)
        is_void = np.isin(values, VOID_LABEL_IDS)
        flat = pred_masks.reshape(len(pred_masks), -1)
        areas = flat.sum(axis=1).astype(np.int64)
        inter = np.stack([np.bincount(inverse[mask], minlength=len(values)) for mask in flat]) if len(flat) else \
            np.zeros((0, len(values)), dtype=np.int64)
        void_pixels = inter[:, is_void].sum(axis=1)
        for row, label_id in enumerate(self.label_ids):
            mine = (label_ids == label_id) & (areas > 0)
            columns = region_labels == label_id
            is_instance = values[columns] >= 1000
            self._has_gt[row] |= bool((is_instance & (sizes[columns] >= MIN_REGION_SIZE)).any())
            self._has_pred[row] |= bool(mine.any())
            entries = _class_entries(inter[np.ix_(mine, columns)], sizes[columns], is_instance, areas[mine],
                                     void_pixels[mine], scores[mine])
            for column, (truths, confidences, misses) in enumerate(entries):
                self._truths[row][column].append(truths)
                self._confidences[row][column].append(confidences)
                self._misses[row, column] += misses
        self.num_images += 1

    def ap_matrix(self) -> np.ndarray:
        """(classes, thresholds) AP, NaN for a class without evaluated instances."""
        out = np.full((len(self.label_ids), len(OVERLAPS)), np.nan)
        for row in range(len(self.label_ids)):
            for column in range(len(OVERLAPS)):
                if self._has_gt[row] and self._has_pred[row]:
                    out[row, column] = cityscapes_average_precision(
                        np.concatenate(self._truths[row][column] or [np.zeros(0, bool)]),
                        np.concatenate(self._confidences[row][column] or [np.zeros(0)]), self._misses[row, column])
                elif self._has_gt[row]:
                    out[row, column] = 0.0
        return out

    def evaluate(self) -> dict:
        """``{"AP", "AP50"}`` (fractions, None when no class has instances), ``"per_class"``: name ->
        ``{"AP", "AP50"}`` or None, ``"num_images"``, ``"protocol": "cityscapes"``."""
        aps = self.ap_matrix()
        defined = ~np.isnan(aps)
        per_class = {name: None if not defined[row].all() else {"AP": float(aps[row].mean()), "AP50": float(aps[row, 0])}
                     for row, name in enumerate(self.names)}
        return {"AP": float(aps[defined].mean()) if defined.any() else None,
                "AP50": float(aps[defined[:, 0], 0].mean()) if defined[:, 0].any() else None,
                "per_class": per_class, "num_images": self.num_images, "protocol": CITYSCAPES_PROTOCOL}

    def state_dict(self) -> dict:
        """The accumulated statistics as plain data (gatherable across ranks)."""
        return {"truths": self._truths, "confidences": self._confidences, "misses": self._misses.copy(),
                "has_gt": self._has_gt.copy(), "has_pred": self._has_pred.copy(), "num_images": self.num_images}

    def merge(self, state: dict) -> None:
        """Add another evaluator's ``state_dict``."""
        for row in range(len(self.label_ids)):
            for column in range(len(OVERLAPS)):
                self._truths[row][column] += state["truths"][row][column]
                self._confidences[row][column] += state["confidences"][row][column]
        self._misses += state["misses"]
        self._has_gt |= state["has_gt"]
        self._has_pred |= state["has_pred"]
        self.num_images += state["num_images"]

    def all_gather(self) -> None:
        """Under torch.distributed, combine every rank's statistics (no-op when alone)."""
        if not distributed.is_enabled():
            return
        states = distributed.gather_objects(self.state_dict())
        self.reset()
        for state in states:
            self.merge(state)
