"""Semantic segmentation metrics from one dataset-wide confusion matrix.

Wu, Shen and van den Hengel (2016) report pixel accuracy, mean (per-class) accuracy and mean
intersection-over-union on PASCAL VOC. All three come from a single confusion matrix summed over
every labelled pixel of the dataset (not averaged per image), which is what this module builds.

Conventions: rows of the confusion matrix are ground-truth classes, columns are predicted classes;
pixels whose ground truth equals ``ignore_index`` (255, the VOC "void" border) are left out, and the
prediction at such pixels is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..data.io import read_label, read_split_stems
from ..data.voc import read_class_names

VOC_NUM_CLASSES = 21
CLASSES_FILE = "classes.txt"
_MAX_LISTED_MISSING = 5


# --------------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def _find_bad_value(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    ignore_index: int) -> tuple[str, int] | None:
    """Return ``("target", v)`` or ``("pred", v)`` for the first invalid value found, else None.

    Args:
        pred: integer tensor of predicted classes, same shape as ``target``.
        target: integer tensor of ground-truth classes or ``ignore_index``.
        num_classes: number of classes K; valid classes are 0..K-1.
        ignore_index: ground-truth value for unlabelled pixels.

    A target value is invalid when it is neither in [0, K) nor ``ignore_index``. A predicted
    value is invalid when it is outside [0, K) at a labelled (non-ignored) pixel.
    """
    labelled = target != ignore_index
    bad_target = labelled & ((target < 0) | (target >= num_classes))
    bad_pred = labelled & ((pred < 0) | (pred >= num_classes))
    flags = torch.stack([bad_target.any(), bad_pred.any()]).tolist()  # one device sync
    if flags[0]:
        return "target", int(target[bad_target].unique()[0])
    if flags[1]:
        return "pred", int(pred[bad_pred].unique()[0])
    return None


def _as_integer_tensor(values: Any, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {tensor.dtype}; "
                        "for scores/logits take argmax over the class dimension first")
    return tensor


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """Count (ground truth, prediction) class pairs over all labelled pixels.

    Args:
        pred: integer tensor of predicted class indices, any shape, e.g. (N, H, W) or (H, W).
        target: integer tensor of ground-truth class indices, same shape as ``pred``; pixels equal
            to ``ignore_index`` are left out (and ``pred`` there is not checked).
        num_classes: number of classes K.
        ignore_index: ground-truth value of unlabelled ("void") pixels.

    Returns:
        (K, K) int64 tensor on the device of ``target``; entry [i, j] is the number of pixels of
        ground-truth class i predicted as class j (rows = ground truth, columns = prediction).

    Raises:
        ValueError: shapes differ, or a target value is neither in [0, K) nor ``ignore_index``, or a
            predicted value at a labelled pixel is outside [0, K).
        TypeError: a non-integer input (e.g. float logits).
    """
    _check_num_classes(num_classes)
    pred = _as_integer_tensor(pred, "pred")
    target = _as_integer_tensor(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
                         "they must match")
    pred = pred.to(device=target.device, dtype=torch.int64)
    target = target.to(torch.int64)
    bad = _find_bad_value(pred, target, num_classes, ignore_index)
    if bad is not None:
        kind, value = bad
        if kind == "target":
            raise ValueError(f"target value {value} is neither a class in [0, {num_classes - 1}] "
                             f"nor ignore_index {ignore_index}")
        raise ValueError(f"pred value {value} is outside the class range [0, {num_classes - 1}] "
                         f"(num_classes={num_classes})")
    labelled = target != ignore_index
    pair_codes = target[labelled] * num_classes + pred[labelled]
    counts = torch.bincount(pair_codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator, NaN where the denominator is 0 (float64)."""
    ratio = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=ratio, where=denominator > 0)
    return ratio


def _mean_or_zero(values: np.ndarray) -> float:
    """Mean of the non-NaN values, 0.0 when there are none."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else 0.0


def _to_list(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(value) else float(value) for value in values]


def metrics_from_confusion(confusion: np.ndarray | torch.Tensor, num_images: int) -> dict:
    """Pixel accuracy, mean accuracy and mean IoU from a confusion matrix.

    Args:
        confusion: (K, K) non-negative counts, rows = ground truth, columns = prediction.
        num_images: number of images the matrix was accumulated over (copied into the result).

    Returns:
        dict with
            ``pixel_accuracy``: trace / total;
            ``mean_accuracy``: mean over classes present in the ground truth (row sum > 0) of
                diag / row sum;
            ``mean_iou``: mean over classes with a non-empty union of diag / (row + col - diag);
            ``per_class_iou``: K floats, None where the class is in neither ground truth nor
                prediction;
            ``per_class_accuracy``: K floats, None where the class is absent from the ground truth;
            ``per_class_mistaken_for``: K entries ``{"class": j, "fraction": f}``: the other class
                j that most of class k's true pixels are predicted as (the largest off-diagonal
                count of row k; ties: the lower index) and f, that count over the row sum; None
                where the class is absent from the ground truth or none of its pixels is wrong;
            ``num_images``: int.
        All fractions lie in [0, 1]; a matrix with no pixel gives 0.0 rather than NaN.
    """
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {matrix.shape}")
    if (matrix < 0).any():
        raise ValueError("confusion matrix has negative counts; it must hold pixel counts")
    true_positive = np.diag(matrix)
    gt_count = matrix.sum(axis=1)
    pred_count = matrix.sum(axis=0)
    total = matrix.sum()
    accuracy = _safe_ratio(true_positive, gt_count)
    iou = _safe_ratio(true_positive, gt_count + pred_count - true_positive)
    return {
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else 0.0,
        "mean_accuracy": _mean_or_zero(accuracy),
        "mean_iou": _mean_or_zero(iou),
        "per_class_iou": _to_list(iou),
        "per_class_accuracy": _to_list(accuracy),
        "per_class_mistaken_for": _mistaken_for(matrix),
        "num_images": int(num_images),
    }


def _mistaken_for(matrix: np.ndarray) -> list[dict | None]:
    """For each ground-truth row of the (K, K) ``matrix``, the predicted class that takes the most
    of its pixels besides itself, and that share of the row (see ``metrics_from_confusion``)."""
    wrong = matrix.copy()
    np.fill_diagonal(wrong, 0)
    rows = matrix.sum(axis=1)
    entries: list[dict | None] = []
    for k, row in enumerate(wrong):
        j = int(row.argmax())
        entries.append({"class": j, "fraction": float(row[j] / rows[k])} if row[j] > 0 else None)
    return entries


# --------------------------------------------------------------------------------------------------
# Accumulating evaluator
# --------------------------------------------------------------------------------------------------


class SemanticEvaluator:
    """Accumulates a dataset-wide confusion matrix image by image.

    Usage::

        evaluator = SemanticEvaluator(num_classes=21)
        for images, labels in loader:
            evaluator.process(model(images).argmax(1), labels)   # (N, H, W) each
        evaluator.all_reduce()                                  # under torch.distributed
        metrics = evaluator.evaluate()

    Attributes:
        confusion: (K, K) int64 tensor, rows = ground truth, columns = prediction. It lives on the
            device of the last ``process`` input (CPU initially).
        num_images: number of images processed.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        _check_num_classes(num_classes)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.num_images = 0

    def process(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add one image (H, W) or a batch (N, H, W) of predictions and ground truths.

        Args:
            pred: integer class indices, (H, W) or (N, H, W).
            target: integer ground truth of the same shape, ``ignore_index`` for void pixels.

        Returns:
            The (K, K) confusion matrix of these images alone.
        """
        target = torch.as_tensor(target)
        pred = torch.as_tensor(pred)
        if target.dim() not in (2, 3):
            raise ValueError(f"target must be (H, W) or (N, H, W), got shape {tuple(target.shape)}")
        if pred.dim() == target.dim() + 1:
            raise ValueError(f"pred has shape {tuple(pred.shape)}, one dimension more than target "
                             f"{tuple(target.shape)}; pass class indices (e.g. scores.argmax(1)), not scores")
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self._add(counts, 1 if target.dim() == 2 else target.shape[0])
        return counts

    def _add(self, counts: torch.Tensor, num_images: int) -> None:
        if self.confusion.device != counts.device:
            self.confusion = self.confusion.to(counts.device)
        self.confusion += counts
        self.num_images += int(num_images)

    def merge(self, other: SemanticEvaluator) -> None:
        """Add the matrix and image count of another evaluator with the same classes."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge an evaluator with num_classes={other.num_classes}, ignore_index={other.ignore_index} "
                f"into one with num_classes={self.num_classes}, ignore_index={self.ignore_index}")
        self._add(other.confusion.to(self.confusion.device), other.num_images)

    def all_reduce(self) -> None:
        """Sum the matrix and image count over all torch.distributed ranks (no-op if not initialised)."""
        if not distributed.is_enabled():
            return
        packed = torch.cat([self.confusion.flatten(),
                            torch.tensor([self.num_images], dtype=torch.int64, device=self.confusion.device)])
        packed = distributed.all_reduce_sum(packed)
        self.confusion = packed[:-1].reshape(self.num_classes, self.num_classes).clone()
        self.num_images = int(packed[-1])

    def evaluate(self) -> dict:
        """The metrics of everything processed so far (see ``metrics_from_confusion``)."""
        return metrics_from_confusion(self.confusion, self.num_images)

    def state_dict(self) -> dict:
        """A checkpointable copy of the state (matrix on CPU)."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "confusion": self.confusion.detach().cpu().clone(),
            "num_images": self.num_images,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by ``state_dict`` of an evaluator with the same classes."""
        confusion = torch.as_tensor(state["confusion"], dtype=torch.int64)
        expected = (self.num_classes, self.num_classes)
        if tuple(confusion.shape) != expected or int(state.get("num_classes", self.num_classes)) != self.num_classes:
            raise ValueError(f"state has a {tuple(confusion.shape)} confusion matrix; this evaluator "
                             f"expects {expected} (num_classes={self.num_classes})")
        self.ignore_index = int(state.get("ignore_index", self.ignore_index))
        self.confusion = confusion.clone()
        self.num_images = int(state["num_images"])


# --------------------------------------------------------------------------------------------------
# Scoring folders of label PNGs
# --------------------------------------------------------------------------------------------------


def _png_files(directory: Path, role: str) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{role} folder {directory} does not exist; pass the folder of {role} label PNGs")
    files = sorted(directory.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{role} folder {directory} holds no .png file; pass the folder of {role} label PNGs")
    return files


def _resolve_num_classes(gt_dir: Path, num_classes: int | None) -> tuple[int, str]:
    """The number of classes and where it came from (for error messages)."""
    if num_classes is not None:
        _check_num_classes(num_classes)
        return int(num_classes), "given"
    for folder in (gt_dir, gt_dir.parent):
        candidate = folder / CLASSES_FILE
        if candidate.is_file():
            return len(read_class_names(folder)), f"from {candidate}"
    return VOC_NUM_CLASSES, f"the PASCAL VOC default; no {CLASSES_FILE} in {gt_dir} or its parent"


def _match_predictions(gt_files: Sequence[Path], pred_dir: Path) -> list[Path]:
    """The prediction path of each ground-truth file; FileNotFoundError listing any that are missing."""
    pred_files = [pred_dir / f"{gt_file.stem}.png" for gt_file in gt_files]
    missing = [(gt, pred) for gt, pred in zip(gt_files, pred_files) if not pred.is_file()]
    if len(missing) == 1:
        gt_file, pred_file = missing[0]
        raise FileNotFoundError(f"prediction {pred_file} is missing (for ground truth {gt_file}); "
                                "write a prediction PNG with the same file name as each ground-truth PNG")
    if missing:
        listed = ", ".join(str(pred) for _, pred in missing[:_MAX_LISTED_MISSING])
        more = f", ... ({len(missing) - _MAX_LISTED_MISSING} more)" if len(missing) > _MAX_LISTED_MISSING else ""
        raise FileNotFoundError(f"{len(missing)} of {len(gt_files)} predictions are missing: {listed}{more}; "
                                "write a prediction PNG with the same file name as each ground-truth PNG")
    return pred_files


def _score_pair(gt_file: Path, pred_file: Path, num_classes: int, ignore_index: int,
                num_classes_source: str) -> torch.Tensor:
    """The (K, K) confusion matrix of one ground-truth / prediction PNG pair, with file-specific errors."""
    target = torch.from_numpy(read_label(gt_file))
    pred = torch.from_numpy(read_label(pred_file))
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred_file} is {pred.shape[0]}x{pred.shape[1]} (HxW) but ground truth "
                         f"{gt_file} is {target.shape[0]}x{target.shape[1]}; predict at (or resize to) the "
                         "ground-truth size")
    bad = _find_bad_value(pred, target, num_classes, ignore_index)
    if bad is not None:
        kind, value = bad
        if kind == "pred":
            raise ValueError(f"prediction {pred_file} has value {value}, but num_classes={num_classes} "
                             f"({num_classes_source}; valid classes 0..{num_classes - 1}); fix the prediction "
                             f"or pass the right num_classes / {CLASSES_FILE}")
        raise ValueError(f"ground truth {gt_file} has value {value}, which is neither a class 0..{num_classes - 1} "
                         f"(num_classes={num_classes}, {num_classes_source}) nor ignore_index {ignore_index}; "
                         f"pass the right num_classes / {CLASSES_FILE} or ignore_index")
    return confusion_matrix(pred, target, num_classes, ignore_index)


def score_semantic_folders(gt_dir: str | Path, pred_dir: str | Path, num_classes: int | None = None,
                           ignore_index: int = 255, progress: bool = False, split: str | Path | None = None) -> dict:
    """Score a folder of predicted label PNGs against a folder of ground-truth label PNGs.

    Files are matched by stem (``gt/2007_000063.png`` <-> ``pred/2007_000063.png``); every ``*.png``
    in ``gt_dir`` needs a prediction, extra prediction files are ignored. Labels are read with
    ``bridgeseg.data.io.read_label`` (palette, grayscale or VOC-coloured RGB PNGs).

    Args:
        gt_dir: folder of ground-truth label PNGs (``ignore_index`` marks void pixels).
        pred_dir: folder of predicted label PNGs of the same sizes.
        num_classes: number of classes; None reads ``classes.txt`` (one name per line, background
            first) from ``gt_dir`` or its parent, falling back to 21 (PASCAL VOC).
        ignore_index: ground-truth value of void pixels.
        progress: show a tqdm progress bar.
        split: a list file of image ids (e.g. VOC's ``ImageSets/Segmentation/val.txt``): only
            those ground-truth files are scored; None scores every PNG of ``gt_dir``.

    Returns:
        The dict of ``metrics_from_confusion`` over the whole folder (or split).

    Raises:
        FileNotFoundError: a folder is missing or holds no PNG, or a prediction is missing.
        ValueError: a size mismatch or an out-of-range value, naming the file.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files = _png_files(gt_dir, "ground-truth")
    if split is not None:
        by_stem = {path.stem: path for path in gt_files}
        stems = read_split_stems(split)
        absent = [stem for stem in stems if stem not in by_stem]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image(s) of split {split} have no ground truth in {gt_dir}, "
                                    f"e.g. {gt_dir / (absent[0] + '.png')}")
        gt_files = [by_stem[stem] for stem in stems]
    _png_files(pred_dir, "prediction")
    pred_files = _match_predictions(gt_files, pred_dir)
    num_classes, num_classes_source = _resolve_num_classes(gt_dir, num_classes)
    evaluator = SemanticEvaluator(num_classes, ignore_index)
    pairs = zip(gt_files, pred_files)
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, total=len(gt_files), desc="scoring", unit="image")
    for gt_file, pred_file in pairs:
        evaluator._add(_score_pair(gt_file, pred_file, num_classes, ignore_index, num_classes_source), 1)
    return evaluator.evaluate()
