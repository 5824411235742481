"""Our Cityscapes semantic scores against the official ``cityscapesscripts`` pixel-level evaluator.

Slow and optional (``pip install bridgeseg[cityscapes]``; run with ``-m slow``): it needs
``cityscapesscripts`` and the real Cityscapes frames in ``../shared/fixtures`` and skips without them.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from PIL import Image

from bridgeseg.data.cityscapes import (EVALUATED_LABELS, TRAIN_CLASS_NAMES, CityscapesSegmentation,
                                        label_ids_to_train_ids)
from bridgeseg.data.io import VOID, read_label
from bridgeseg.evaluation.semantic import SemanticEvaluator, score_semantic_folders
from bridgeseg.outputs import write_cityscapes_prediction

from conftest import shared_fixture

pytestmark = pytest.mark.slow

NUM_CLASSES = len(TRAIN_CLASS_NAMES)  # 19
ABSENT_IN_PREDICTION = (15, 17)  # bus, motorcycle: never predicted, and in no fixture frame -> no score on either side
FALSE_POSITIVE_ONLY = 16  # train: predicted in a rectangle, in no fixture frame -> IoU 0 on both sides


def official_pixel_evaluator(monkeypatch):
    """``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``, or skip when it is not installed."""
    # at import the module reads these to build its default paths; CITYSCAPES_EXPORT_DIR must be a folder
    monkeypatch.delenv("CITYSCAPES_EXPORT_DIR", raising=False)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    return pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
                               reason="cityscapesscripts (with its pyquaternion) is not importable: "
                                      "pip install bridgeseg[cityscapes]")


def perturbed_prediction(gt: np.ndarray, seed: int) -> np.ndarray:
    """A train-id prediction: the ground truth with deterministic mistakes of several kinds.

    Every pixel with a ground-truth class gets a train id 0..18 (never void, see the test's
    docstring); void ground-truth pixels get a class on the right half (which neither side may count)
    and stay void (written as label id 0, "unlabeled") on the left half.
    """
    height, width = gt.shape
    pred = gt.copy()
    void = gt == VOID
    pred[void & (np.arange(width) >= width // 2)] = 13  # car on void ground truth: no false positive anywhere

    def box(top: float, bottom: float, left: float, right: float) -> tuple[slice, slice]:
        return slice(int(top * height), int(bottom * height)), slice(int(left * width), int(right * width))

    pred[box(0.10, 0.35, 0.05, 0.30)] = FALSE_POSITIVE_ONLY
    pred[box(0.55, 0.80, 0.40, 0.70)] = 0  # road
    shifted = box(0.30, 0.60, 0.65, 0.95)  # a cyclic shift of the classes, skipping the never-predicted ones
    cycle = np.array([c for c in range(NUM_CLASSES) if c not in ABSENT_IN_PREDICTION])
    following = np.array([cycle[np.searchsorted(cycle, c, side="right") % len(cycle)] for c in range(NUM_CLASSES)])
    pred[shifted] = np.where(gt[shifted] == VOID, pred[shifted], following[np.minimum(gt[shifted], NUM_CLASSES - 1)])
    rng = np.random.default_rng(seed)  # 3 % scattered pixels of random (allowed) classes
    scattered = rng.random(gt.shape) < 0.03
    pred[scattered] = rng.choice(cycle, size=int(scattered.sum()))
    pred[void & ~scattered & (np.arange(width) < width // 2)] = VOID
    assert not np.isin(pred, ABSENT_IN_PREDICTION).any()
    return pred


@pytest.mark.parametrize("folder", ["cityscapes_small", "cityscapes"])
def test_semantic_scores_match_official_cityscapes_evaluator(folder, tmp_path, monkeypatch):
    """Per-class IoU, mean IoU and the confusion matrix agree with ``evalPixelLevelSemanticLabeling``.

    The official evaluator builds a 34 x 34 confusion matrix of label ids over every pixel and scores
    the 19 evaluated classes (``ignoreInEval`` False, i.e. the train ids): true positives on the
    diagonal, false negatives from the class's whole row, false positives from the class's column
    restricted to rows of evaluated classes. Ours maps label ids to train ids (others 255), leaves
    ground-truth 255 out and scores a 19 x 19 matrix. Both therefore define identically:

    * void ground truth (any label id that is not evaluated): the pixel counts nowhere, whatever is
      predicted there (the prediction below puts "car" on half of the void pixels to check this);
    * a class predicted but absent from the ground truth: IoU 0 (official tp = fn = 0, fp > 0);
    * a class in neither: no score (official NaN, ours None), left out of both means;
    * the mean IoU: the mean over the classes that have a score.

    Protocol differences (not exercised by the comparison):

    * A prediction of a non-evaluated label id (e.g. 0 "unlabeled", which our writer emits for train
      id 255) at a pixel whose ground truth is evaluated is a false negative for the official
      evaluator (the pixel stays in the class's row but in no evaluated column). Our scorer has no
      void column: ``SemanticEvaluator`` raises ValueError for such a pixel. The prediction here
      therefore holds a train id at every evaluated ground-truth pixel.
    * The official instance-level scores (nIoU, ``evalInstLevelScore``) have no counterpart here and
      are switched off; with numpy >= 2.4 that code path fails anyway (it calls the removed
      ``np.in1d``), as does ``evalPixelAccuracy``. The official evaluator also stops (``sys.exit``) on a
      ground-truth value outside 0..33, e.g. 255 for the license plate, which we read as void.
    """
    official = official_pixel_evaluator(monkeypatch)
    root = shared_fixture(folder)
    dataset = CityscapesSegmentation(root, "val")
    pred_dir, ours_gt, ours_pred = tmp_path / "pred", tmp_path / "ours_gt", tmp_path / "ours_pred"
    ours_gt.mkdir()
    ours_pred.mkdir()

    evaluator = SemanticEvaluator(NUM_CLASSES)
    gt_files = []
    for seed, name in enumerate(dataset.ids):
        gt_file = dataset.semantic_path(name)
        assert gt_file.name.endswith("_gtFine_labelIds.png"), "the official evaluator reads label ids"
        gt_files.append(str(gt_file))
        gt = dataset.read_semantic(name)
        prediction = perturbed_prediction(gt, seed)
        write_cityscapes_prediction(pred_dir, name, prediction, None, None, None)
        # ours, on the files the official evaluator reads: the written label ids mapped back to train ids
        stem = name.split("/")[-1]
        pred = label_ids_to_train_ids(read_label(pred_dir / f"{stem}_labelIds.png"))
        # both evaluators read this same file, so only this round trip can catch a wrong label id in the writer
        assert np.array_equal(pred, prediction), "the written label ids do not map back to the prediction"
        evaluator.process(pred, gt)
        Image.fromarray(gt.astype(np.uint8)).save(ours_gt / f"{stem}.png")
        Image.fromarray(pred.astype(np.uint8)).save(ours_pred / f"{stem}.png")
    ours = evaluator.evaluate()
    assert score_semantic_folders(ours_gt, ours_pred, NUM_CLASSES, VOID) == ours

    args = copy.copy(official.args)
    args.quiet = True
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = True
    args.exportFile = str(tmp_path / "official" / "resultPixelLevelSemanticLabeling.json")
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    # the official file matching (<city>_<seq>_<frame>*.png) must find exactly our written file
    pred_files = [official.getPrediction(args, gt_file) for gt_file in gt_files]
    result = official.evaluateImgLists(pred_files, gt_files, args)
    assert (tmp_path / "official" / "resultPixelLevelSemanticLabeling.json").is_file()

    # the confusion matrix restricted to the evaluated classes is ours, pixel for pixel
    label_ids = [label_id for label_id, _, _, _ in sorted(EVALUATED_LABELS, key=lambda label: label[1])]
    official_matrix = np.asarray(result["confMatrix"], dtype=np.int64)
    assert np.array_equal(official_matrix[np.ix_(label_ids, label_ids)], evaluator.confusion.numpy())
    assert np.array_equal(official_matrix[label_ids].sum(axis=1), evaluator.confusion.numpy().sum(axis=1))

    scores = result["classScores"]
    assert all(math.isnan(score) for name, score in scores.items() if name not in TRAIN_CLASS_NAMES)
    for train_id, name in enumerate(TRAIN_CLASS_NAMES):
        theirs, mine = scores[name], ours["per_class_iou"][train_id]
        if math.isnan(theirs):
            assert mine is None, name
        else:
            assert mine == pytest.approx(theirs, abs=1e-6), name
    assert ours["mean_iou"] == pytest.approx(result["averageScoreClasses"], abs=1e-6)

    # the comparison is not vacuous: partial overlaps, a false-positive-only class, unscored classes
    ious = ours["per_class_iou"]
    assert sum(iou is not None and 0 < iou < 1 for iou in ious) >= 5
    assert ious[FALSE_POSITIVE_ONLY] == 0.0 and scores[TRAIN_CLASS_NAMES[FALSE_POSITIVE_ONLY]] == 0.0
    assert all(ious[train_id] is None for train_id in ABSENT_IN_PREDICTION)
    assert ours["mean_iou"] < 0.95
