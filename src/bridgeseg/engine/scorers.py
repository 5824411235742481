"""What ``evaluate`` measures on each image: one scorer per family of metrics, all fed the same
``ImageOutcome`` (an image's ground truth and what the ``Predictor``'s two steps made of it).

Each scorer has a ``key`` (its part of the results), ``process(outcome) -> dict`` (adds the image
and returns its own numbers for the report's gallery) and ``finish() -> dict`` (combines the
statistics of all ranks under torch.distributed and computes the metrics). They hold per-image
statistics only, never predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.cityscapes import train_ids_to_label_ids
from ..data.instances import instances_from_maps
from ..evaluation.cityscapes_instance import CityscapesInstanceEvaluator
from ..evaluation.instance import InstanceEvaluator, average_precision
from ..evaluation.panoptic import PanopticEvaluator, image_pq
from ..evaluation.semantic import SemanticEvaluator, metrics_from_confusion
from ..grouping import Instances
from ..panoptic import panoptic_from_labels, panoptic_from_prediction
from ..tta import ImageMaps


def image_average_precision(tp: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_labels: np.ndarray,
                            method: str = "area") -> float | None:
    """One image's mean AP over the classes of its ground-truth instances (the gallery's per-image AP).

    Args:
        tp: (P,) true-positive flags at one threshold; scores, labels: (P,); gt_labels: (G,).

    Returns:
        The mean AP, or None when the image has no ground-truth instance.
    """
    classes, counts = np.unique(np.asarray(gt_labels).reshape(-1), return_counts=True)
    if not classes.size:
        return None
    labels = np.asarray(labels).reshape(-1)
    return float(np.mean([average_precision(tp[labels == c], np.asarray(scores)[labels == c], int(n), method)
                          for c, n in zip(classes, counts)]))


@dataclass
class ImageOutcome:
    """One evaluated image.

    Attributes:
        name: the dataset's image id.
        semantic: (H, W) ground-truth classes (255 void), on the evaluation device.
        instance: (H, W) ground-truth instance ids (0 none, 255 void), or None.
        maps: the image's maps (predicted, or oracle); ``maps.semantic`` is the predicted class map.
        found: the instances found in ``maps`` (``find_instances``), or None.
    """

    name: str
    semantic: torch.Tensor
    instance: torch.Tensor | None
    maps: ImageMaps
    found: Instances | None

    def found_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The found instances on the CPU: masks (K, H, W) bool, labels (K,), scores (K,)."""
        found = self.found.to("cpu")
        return found.masks.numpy(), found.labels.numpy(), found.scores.numpy()


class SemanticScorer:
    """Pixel accuracy, mean accuracy, mean IoU (one dataset-wide confusion matrix); per image: IoU."""

    key = "semantic"

    def __init__(self, num_classes: int) -> None:
        self.evaluator = SemanticEvaluator(num_classes)

    def process(self, outcome: ImageOutcome) -> dict:
        counts = self.evaluator.process(outcome.maps.semantic, outcome.semantic)
        return {"iou": metrics_from_confusion(counts, 1)["mean_iou"]}

    def finish(self) -> dict:
        self.evaluator.all_reduce()
        return self.evaluator.evaluate()


class InstanceScorer:
    """mAP^r (``eval.protocol``); per image: AP at 0.5 and the instance counts."""

    key = "instance"

    def __init__(self, class_names: tuple[str, ...], protocol: str) -> None:
        self.evaluator = InstanceEvaluator(list(class_names), protocol)
        self.column = self.evaluator.thresholds.index(0.5)

    def process(self, outcome: ImageOutcome) -> dict:
        found = outcome.found
        gt_masks, gt_labels, void = instances_from_maps(outcome.instance, outcome.semantic, self.evaluator.num_classes)
        tp = self.evaluator.process(found.masks, found.labels, found.scores, gt_masks, gt_labels, void)
        ap = image_average_precision(tp[:, self.column], found.scores.cpu().numpy(), found.labels.cpu().numpy(),
                                     gt_labels.cpu().numpy(), self.evaluator.ap_method)
        return {"ap": ap, "true_instances": len(gt_labels), "found_instances": len(found.labels)}

    def finish(self) -> dict:
        self.evaluator.all_gather()
        return self.evaluator.evaluate()


class PanopticScorer:
    """PQ / SQ / RQ of the panoptic maps made from the class map and the instances; per image: PQ."""

    key = "panoptic"

    def __init__(self, class_names: tuple[str, ...], thing_classes: tuple[int, ...], min_area: int) -> None:
        self.evaluator = PanopticEvaluator(class_names, thing_classes)
        self.thing_classes, self.min_area = tuple(thing_classes), min_area

    def process(self, outcome: ImageOutcome) -> dict:
        num_classes = self.evaluator.num_classes
        instance = None if outcome.instance is None else outcome.instance.cpu().numpy()
        gt = panoptic_from_labels(outcome.semantic.cpu().numpy(), instance, self.thing_classes, num_classes)
        masks, labels, scores = outcome.found_arrays()
        pred = panoptic_from_prediction(outcome.maps.semantic.cpu().numpy(), masks, labels, scores,
                                        self.thing_classes, num_classes, self.min_area)
        return {"pq": image_pq(self.evaluator.process(gt, pred))}

    def finish(self) -> dict:
        self.evaluator.all_reduce()
        return self.evaluator.evaluate()


class CityscapesScorer:
    """The official Cityscapes AP, against each image's raw ``*_gtFine_instanceIds.png``.

    Args:
        instance_ids: image id -> (H, W) raw instance ids; the predictions' classes are train ids.
    """

    key = "cityscapes"

    def __init__(self, instance_ids: Callable[[str], np.ndarray]) -> None:
        self.evaluator = CityscapesInstanceEvaluator()
        self.instance_ids = instance_ids

    def process(self, outcome: ImageOutcome) -> dict:
        masks, labels, scores = outcome.found_arrays()
        self.evaluator.process(masks, train_ids_to_label_ids(labels), scores, self.instance_ids(outcome.name))
        return {}

    def finish(self) -> dict:
        self.evaluator.all_gather()
        return self.evaluator.evaluate()
