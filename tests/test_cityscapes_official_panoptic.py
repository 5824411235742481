"""Our PQ against the official ``cityscapesscripts`` panoptic evaluator, on the real Cityscapes frames.

Slow and optional (``make test-slow`` installs cityscapesscripts); it needs the frames in
``../shared/fixtures`` and skips without them. The official code runs as it is published, without
any patch: its own ``createPanopticImgs`` makes the ground truth (``cityscapes_panoptic_val.json``
and PNGs, label ids as categories) from a copy of the frames' ``*_instanceIds.png``, and its
``evalPanopticSemanticLabeling`` scores our ``predict-dataset --format cityscapes-panoptic`` files.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import bridgeseg.evaluation.panoptic as ours_module
from bridgeseg.data.cityscapes import EVALUATED_LABELS, CityscapesSegmentation, read_instance_ids
from bridgeseg.engine.predict import _panoptic_files
from bridgeseg.evaluation.panoptic import PanopticEvaluator, score_panoptic_files
from bridgeseg.panoptic import Panoptic, panoptic_from_labels, panoptic_from_prediction

from cityscapes_predictions import grouped_instances, perturbed_instances
from conftest import shared_fixture
from test_cityscapes_official import perturbed_prediction

pytestmark = pytest.mark.slow
TRAIN_ID_OF_LABEL = {label_id: train_id for label_id, train_id, _, _ in EVALUATED_LABELS}
EMPTY_FRAME = 1  # the perturbed predictions of this frame have no segment at all


def official_modules(monkeypatch):
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    reason = "cityscapesscripts is not installed: pip install --no-deps cityscapesscripts pyquaternion"
    create = pytest.importorskip("cityscapesscripts.preparation.createPanopticImgs", reason=reason)
    evaluate = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling", reason=reason)
    return create, evaluate


def official_ground_truth(create, dataset: CityscapesSegmentation, folder) -> tuple:
    """``createPanopticImgs`` on a copy of the frames' instance files: (json path, PNG folder)."""
    for name in dataset.ids:
        target = folder / "gtFine" / "val" / name.split("/")[0]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(dataset.instance_path(name), target)
    create.convert2panoptic(cityscapesPath=str(folder / "gtFine"), outputFolder=str(folder / "gtFine"),
                            setNames=["val"])
    return folder / "gtFine" / "cityscapes_panoptic_val.json", folder / "gtFine" / "cityscapes_panoptic_val"


def predicted_panoptic(dataset, index: int, kind: str) -> Panoptic:
    """A perturbed class map with perturbed ground-truth instances or our grouping's instances."""
    name = dataset.ids[index]
    sample = dataset[index]
    semantic = perturbed_prediction(sample["semantic"], index)
    if kind == "perturbed":
        if index == EMPTY_FRAME:
            shape = semantic.shape
            return Panoptic(np.zeros(shape, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        masks, label_ids, scores = perturbed_instances(read_instance_ids(dataset.instance_path(name)), index)
        labels = np.array([TRAIN_ID_OF_LABEL[int(i)] for i in label_ids])
    else:
        masks, labels, scores = grouped_instances(sample["semantic"], sample["instance"], dataset.num_classes, index)
    return panoptic_from_prediction(semantic, masks, labels, scores, dataset.thing_classes, dataset.num_classes)


def assert_same(ours: dict, theirs: dict, names_by_label_id: dict) -> None:
    for part, key in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        for metric in ("pq", "sq", "rq"):
            assert ours[part][metric] == pytest.approx(theirs[key][metric], abs=1e-6), (part, metric)
        assert ours[part]["n"] == theirs[key]["n"], part
    for label_id, scores in theirs["per_class"].items():
        mine = ours["per_class"][names_by_label_id[int(label_id)]] or {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        assert [mine["pq"], mine["sq"], mine["rq"]] == pytest.approx([scores["pq"], scores["sq"], scores["rq"]],
                                                                       abs=1e-6), label_id


@pytest.mark.parametrize("kind", ["perturbed", "grouped"])
def test_pq_matches_the_official_panoptic_evaluator(kind, tmp_path, monkeypatch):
    """PQ / SQ / RQ (all, things, stuff, per class) agree to 1e-6: from the files, and in memory from our
    own ground-truth maps (so those equal createPanopticImgs'); with void, crowd (group) regions,
    unmatched segments and, for the perturbed predictions, one frame without any segment."""
    create, official = official_modules(monkeypatch)
    dataset = CityscapesSegmentation(shared_fixture("cityscapes"), "val", with_instances=True)
    gt_json, gt_folder = official_ground_truth(create, dataset, tmp_path)
    files = _panoptic_files("cityscapes-panoptic", tmp_path / "results", "val", dataset)
    evaluator = PanopticEvaluator(dataset.class_names, dataset.thing_classes)
    for index, name in enumerate(dataset.ids):
        pred = predicted_panoptic(dataset, index, kind)
        stem = name.split("/")[-1]
        files.add(stem, f"{stem}_gtFine_panoptic.png", pred)
        sample = dataset[index]
        evaluator.process(panoptic_from_labels(sample["semantic"], sample["instance"], dataset.thing_classes,
                                               dataset.num_classes), pred)
    pred_json = files.write()
    theirs = official.evaluatePanoptic(str(gt_json), str(gt_folder), str(pred_json), str(pred_json.with_suffix("")),
                                       str(tmp_path / "resultPanopticSemanticLabeling.json"))
    names = {label_id: name for label_id, _, name, _ in EVALUATED_LABELS}
    from_files = score_panoptic_files(gt_json, pred_json)
    assert_same(from_files, theirs, names)
    in_memory = evaluator.evaluate()
    assert_same(in_memory, theirs, names)
    assert 0.1 < in_memory["things"]["pq"] < 0.9 and 0.1 < in_memory["stuff"]["pq"] < 0.95

    # a deliberately wrong rule fails the comparison: a lower matching threshold; a false positive ignored as
    # soon as one of its pixels is void or crowd
    for constant, value in (("MATCH_IOU", 0.4), ("IGNORED_FRACTION", 0.0)):
        with monkeypatch.context() as patch:
            patch.setattr(ours_module, constant, value)
            with pytest.raises(AssertionError):
                assert_same(score_panoptic_files(gt_json, pred_json), theirs, names)
