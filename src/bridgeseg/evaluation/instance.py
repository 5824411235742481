"""Instance segmentation mean region average precision (mAP^r).

Two matching protocols are provided.

``"sds"`` (default) follows Hariharan et al., "Simultaneous Detection and Segmentation"
(ECCV 2014), as reported by Wu, Shen and van den Hengel (2016):

* overlap is the mask IoU over the whole image; ground-truth void pixels are left out of both
  the intersection and the union;
* per image and class, detections are visited in descending score order; each one takes the
  ground-truth instance with the highest overlap among those not yet covered, and is a true
  positive when that overlap is strictly greater than the threshold (the instance becomes
  covered), otherwise a false positive;
* AP is the area under the precision envelope (VOC 2010+ style, not 11-point).

``"mnc"`` is the variant implemented in the Python evaluation code of MNC (Dai et al., 2016) and
FCIS (Li et al., 2017), which many later papers report:

* each detection takes its best overlap over *all* ground-truth instances of its class in the
  image, covered or not; if that overlap is ``>=`` the threshold and the best instance is not
  yet covered it is a true positive (and covers it); if the best instance is already covered it
  is a duplicate (false positive); below the threshold it is a false positive;
* AP is the VOC 2007 11-point interpolation: the mean over ``t`` in ``{0, 0.1, ..., 1.0}`` of
  the maximum precision at recall ``>= t`` (0 when no such point). The sample points are the
  exact decimals ``k / 10`` (the reference code's ``np.arange(0, 1.1, 0.1)`` yields e.g.
  ``0.30000000000000004``, which would miss a recall of exactly 0.3).

For both protocols, mAP at a threshold is the mean AP over the classes (background excluded)
that have at least one ground-truth instance in the dataset; a class with ground truth but no
detection has AP 0; ``mAP_r_vol`` is the mean of the mAPs at the thresholds 0.1, ..., 0.9.

Only per-detection statistics are accumulated (class, score and the true-positive flag at each
threshold), never masks, so the evaluator's memory grows with the number of detections only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import distributed
from ..masks import mask_iou

THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))
PROTOCOLS: tuple[str, ...] = ("sds", "mnc")
AP_METHODS: tuple[str, ...] = ("area", "11point")

_AP_METHOD_OF_PROTOCOL = {"sds": "area", "mnc": "11point"}


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int, method: str = "area") -> float:
    """Average precision of one class's detections.

    Args:
        tp: (D,) bool, whether each detection is a true positive (any order).
        scores: (D,) detection scores; detections are ranked by descending score, ties keeping
            their given order (stable sort).
        num_gt: number of ground-truth instances of the class (> 0).
        method: ``"area"``, the area under the precision envelope (VOC 2010+), or ``"11point"``,
            the VOC 2007 11-point interpolation.

    Returns:
        AP in [0, 1]; 0 when there is no detection.
    """
    if method not in AP_METHODS:
        raise ValueError(f"unknown AP method {method!r}; choose one of {AP_METHODS}")
    if num_gt <= 0:
        raise ValueError(f"average precision needs num_gt > 0, got {num_gt}")
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if tp.shape != scores.shape:
        raise ValueError(f"tp {tp.shape} and scores {scores.shape} must have the same shape")
    if tp.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp_sorted = tp[order]
    cum_tp = np.cumsum(tp_sorted, dtype=np.float64)
    cum_fp = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = cum_tp / float(num_gt)
    precision = cum_tp / (cum_tp + cum_fp)
    if method == "area":
        return _envelope_area(recall, precision)
    return _eleven_point(recall, precision)


def _envelope_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope; recall, precision (D,) in ranking order."""
    rec = np.concatenate(([0.0], recall, [1.0]))
    prec = np.concatenate(([0.0], precision, [0.0]))
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    changes = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[changes + 1] - rec[changes]) * prec[changes + 1]))


def _eleven_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2007 11-point interpolated AP; recall, precision (D,) in ranking order."""
    total = 0.0
    for k in range(11):
        reached = recall >= k / 10.0
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / 11.0


def _match_sds(ious: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """SDS greedy matching: best among uncovered instances, TP if overlap > threshold.

    Args:
        ious: (D, G) overlaps of one image's detections of a class with its instances.
        order: (D,) detection indices in descending score order.
        threshold: overlap threshold.

    Returns:
        (D,) bool true-positive flags, indexed like ``ious``' rows.
    """
    tp = np.zeros(ious.shape[0], dtype=bool)
    covered = np.zeros(ious.shape[1], dtype=bool)
    for det in order:
        if covered.all():
            break
        candidates = np.where(covered, -np.inf, ious[det])
        best = int(np.argmax(candidates))
        if candidates[best] > threshold:
            tp[det] = True
            covered[best] = True
    return tp


def _match_mnc(ious: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """MNC/FCIS matching: best over all instances, TP if overlap >= threshold and not covered.

    Args and return as :func:`_match_sds`.
    """
    tp = np.zeros(ious.shape[0], dtype=bool)
    covered = np.zeros(ious.shape[1], dtype=bool)
    if ious.shape[1] == 0:
        return tp
    for det in order:
        best = int(np.argmax(ious[det]))
        if ious[det, best] >= threshold and not covered[best]:
            tp[det] = True
            covered[best] = True
    return tp


_MATCHERS = {"sds": _match_sds, "mnc": _match_mnc}


def match_detections(ious: np.ndarray, scores: np.ndarray, protocol: str = "sds",
                     thresholds: tuple[float, ...] = THRESHOLDS) -> np.ndarray:
    """True-positive flags of one image's detections of one class, at every threshold.

    Args:
        ious: (D, G) overlaps between the detections and the ground-truth instances.
        scores: (D,) detection scores (descending order is visited first, ties stable).
        protocol: ``"sds"`` or ``"mnc"``.
        thresholds: overlap thresholds, length T.

    Returns:
        (D, T) bool true-positive flags.
    """
    matcher = _MATCHERS[protocol]
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    flags = np.zeros((ious.shape[0], len(thresholds)), dtype=bool)
    for column, threshold in enumerate(thresholds):
        flags[:, column] = matcher(ious, order, threshold)
    return flags


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.ascontiguousarray(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}") from error


def _as_mask(value: Any, name: str) -> torch.Tensor:
    mask = _as_tensor(value, name)
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"{name} must be a bool (or integer 0/1) mask, got dtype {mask.dtype}")
    return mask != 0


class InstanceEvaluator:
    """Accumulates per-image detection statistics and computes mAP^r.

    Args:
        class_names: names of all classes; index 0 is background and is never evaluated,
            classes ``1 .. C-1`` are.
        protocol: ``"sds"`` (default) or ``"mnc"``; see the module docstring.
        ignore_void: leave ground-truth void pixels out of the overlaps; when False the
            ``void`` argument of :meth:`process` is not used.
    """

    def __init__(self, class_names: list[str], protocol: str = "sds", ignore_void: bool = True) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
        if len(class_names) < 2:
            raise ValueError(f"class_names needs background plus at least one class, got {class_names}")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.protocol = protocol
        self.ap_method = _AP_METHOD_OF_PROTOCOL[protocol]
        self.ignore_void = ignore_void
        self.thresholds = THRESHOLDS
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated statistics."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._num_gt = np.zeros(self.num_classes, dtype=np.int64)
        self._num_images = 0

    def process(self, pred_masks: Any, pred_labels: Any, pred_scores: Any, gt_masks: Any,
                gt_labels: Any, void: Any = None) -> np.ndarray:
        """Match one image's predictions to its ground truth and record the statistics.

        Args:
            pred_masks: (P, H, W) bool predicted masks (tensor or array).
            pred_labels: (P,) int class of each prediction, in ``1 .. C-1``.
            pred_scores: (P,) finite float confidence of each prediction.
            gt_masks: (G, H, W) bool ground-truth instance masks.
            gt_labels: (G,) int class of each instance, in ``1 .. C-1``.
            void: (H, W) bool void pixels, or None.

        Returns:
            (P, T) bool: whether each prediction is a true positive at each threshold.
        """
        pred_masks = _as_mask(pred_masks, "pred_masks")
        gt_masks = _as_mask(gt_masks, "gt_masks")
        void_mask = None if void is None else _as_mask(void, "void")
        pred_labels = _as_tensor(pred_labels, "pred_labels").cpu().numpy().reshape(-1)
        gt_labels = _as_tensor(gt_labels, "gt_labels").cpu().numpy().reshape(-1)
        scores = _as_tensor(pred_scores, "pred_scores").cpu().numpy().astype(np.float64).reshape(-1)
        self._check_shapes(pred_masks, pred_labels, scores, gt_masks, gt_labels, void_mask)
        pred_labels = self._check_labels(pred_labels, "pred_labels")
        gt_labels = self._check_labels(gt_labels, "gt_labels")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"pred_scores must be finite, got {scores[~np.isfinite(scores)][:5]}")
        if not self.ignore_void:
            void_mask = None

        gt_masks = gt_masks.to(pred_masks.device)
        tp = np.zeros((pred_labels.size, len(self.thresholds)), dtype=bool)
        for label in np.unique(pred_labels):
            det = np.flatnonzero(pred_labels == label)
            inst = np.flatnonzero(gt_labels == label)
            ious = mask_iou(pred_masks[torch.as_tensor(det, device=pred_masks.device)],
                            gt_masks[torch.as_tensor(inst, device=pred_masks.device)],
                            void_mask).cpu().numpy()
            tp[det] = match_detections(ious, scores[det], self.protocol, self.thresholds)

        self._labels.append(pred_labels)
        self._scores.append(scores)
        self._tp.append(tp)
        self._num_gt += np.bincount(gt_labels, minlength=self.num_classes)
        self._num_images += 1
        return tp

    def _check_shapes(self, pred_masks: torch.Tensor, pred_labels: np.ndarray, scores: np.ndarray,
                      gt_masks: torch.Tensor, gt_labels: np.ndarray, void: torch.Tensor | None) -> None:
        shapes = (f"pred_masks {tuple(pred_masks.shape)}, pred_labels {pred_labels.shape}, "
                  f"pred_scores {scores.shape}, gt_masks {tuple(gt_masks.shape)}, "
                  f"gt_labels {gt_labels.shape}, void {None if void is None else tuple(void.shape)}")
        ok = (pred_masks.dim() == 3 and gt_masks.dim() == 3
              and pred_masks.shape[1:] == gt_masks.shape[1:]
              and pred_labels.size == pred_masks.shape[0] == scores.size
              and gt_labels.size == gt_masks.shape[0]
              and (void is None or void.shape == gt_masks.shape[1:]))
        if not ok:
            raise ValueError("shapes disagree; expected pred_masks (P, H, W), pred_labels (P,), "
                             f"pred_scores (P,), gt_masks (G, H, W), gt_labels (G,), void (H, W); "
                             f"got {shapes}")

    def _check_labels(self, labels: np.ndarray, name: str) -> np.ndarray:
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            if not np.all(labels == np.round(labels)):
                raise ValueError(f"{name} must be integers, got {labels[labels != np.round(labels)][:5]}")
        labels = labels.astype(np.int64)
        bad = labels[(labels < 1) | (labels >= self.num_classes)]
        if bad.size:
            raise ValueError(f"{name} holds class {int(bad[0])}, outside the evaluated classes "
                             f"1..{self.num_classes - 1}")
        return labels

    def _concatenated(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) labels, (N,) float64 scores, (N, T) bool flags of all detections so far."""
        if not self._labels:
            return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64),
                    np.zeros((0, len(self.thresholds)), dtype=bool))
        return np.concatenate(self._labels), np.concatenate(self._scores), np.concatenate(self._tp)

    def evaluate(self) -> dict:
        """Compute the metrics from everything processed so far.

        Returns:
            ``{"mAP_r@0.5", "mAP_r@0.7", "mAP_r_vol"}``: fractions in [0, 1] (NaN when no class
            has ground truth); ``"per_class"``: class name -> ``{"0.1": ap, ..., "0.9": ap}``,
            or None for a class without ground truth; ``"num_images"``; ``"protocol"``.
        """
        labels, scores, tp = self._concatenated()
        method = _AP_METHOD_OF_PROTOCOL[self.protocol]
        keys = [f"{t:.1f}" for t in self.thresholds]
        per_class: dict[str, dict[str, float] | None] = {}
        aps = []
        for label in range(1, self.num_classes):
            num_gt = int(self._num_gt[label])
            if num_gt == 0:
                per_class[self.class_names[label]] = None
                continue
            mine = labels == label
            class_aps = [average_precision(tp[mine, column], scores[mine], num_gt, method)
                         for column in range(len(self.thresholds))]
            per_class[self.class_names[label]] = dict(zip(keys, class_aps))
            aps.append(class_aps)
        if aps:
            maps = np.mean(np.asarray(aps, dtype=np.float64), axis=0)
        else:
            maps = np.full(len(self.thresholds), np.nan)
        return {
            "mAP_r@0.5": float(maps[keys.index("0.5")]),
            "mAP_r@0.7": float(maps[keys.index("0.7")]),
            "mAP_r_vol": float(np.mean(maps)),
            "per_class": per_class,
            "num_images": self._num_images,
            "protocol": self.protocol,
        }

    def state_dict(self) -> dict:
        """Accumulated statistics as plain data and CPU tensors (gatherable across ranks).

        Returns:
            ``protocol``, ``num_classes``, ``thresholds``, ``num_images``, ``num_gt`` (C,) int64,
            ``labels`` (N,) int64, ``scores`` (N,) float64, ``tp`` (N, T) bool.
        """
        labels, scores, tp = self._concatenated()
        return {
            "protocol": self.protocol,
            "num_classes": self.num_classes,
            "thresholds": list(self.thresholds),
            "num_images": self._num_images,
            "num_gt": torch.from_numpy(self._num_gt.copy()),
            "labels": torch.from_numpy(labels.copy()),
            "scores": torch.from_numpy(scores.copy()),
            "tp": torch.from_numpy(tp.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the accumulated statistics with those of ``state`` (from :meth:`state_dict`)."""
        self._check_compatible(state)
        self.reset()
        self._add_state(state)

    def merge(self, other: InstanceEvaluator | dict) -> None:
        """Add another evaluator's (or state dict's) statistics to this one's.

        Its detections are appended after this evaluator's, so ranking ties keep that order.
        """
        state = other.state_dict() if isinstance(other, InstanceEvaluator) else other
        self._check_compatible(state)
        self._add_state(state)

    def all_gather(self) -> None:
        """Under torch.distributed, combine every rank's statistics (rank order); no-op when alone."""
        if not distributed.is_enabled():
            return
        states = distributed.gather_objects(self.state_dict())
        self.load_state_dict(states[0])
        for state in states[1:]:
            self.merge(state)

    def _check_compatible(self, state: dict) -> None:
        mine = (self.protocol, self.num_classes, list(self.thresholds))
        theirs = (state.get("protocol"), state.get("num_classes"), list(state.get("thresholds", [])))
        if mine != theirs:
            raise ValueError(f"cannot combine evaluator state (protocol, num_classes, thresholds) = "
                             f"{theirs} with {mine}")

    def _add_state(self, state: dict) -> None:
        labels = np.asarray(_as_tensor(state["labels"], "labels").cpu().numpy(), dtype=np.int64)
        if labels.size:
            self._labels.append(labels)
            self._scores.append(np.asarray(_as_tensor(state["scores"], "scores").cpu().numpy(),
                                           dtype=np.float64))
            self._tp.append(np.asarray(_as_tensor(state["tp"], "tp").cpu().numpy(), dtype=bool)
                            .reshape(labels.size, len(self.thresholds)))
        self._num_gt += np.asarray(_as_tensor(state["num_gt"], "num_gt").cpu().numpy(), dtype=np.int64)
        self._num_images += int(state["num_images"])
