"""Our Cityscapes AP against the official ``cityscapesscripts`` instance-level evaluator, on the real frames.

Slow and optional (``make test-slow`` installs cityscapesscripts); it needs the frames in
``../shared/fixtures`` and skips without them. The official code runs as it is published, with
two patches for numpy 2 and its settings pointed at the test's folder:

* ``np.in1d``, which numpy 2.4 removed (it calls it once, for its void mask), is given back as
  ``np.isin(...).ravel()``, its documented replacement;
* its JSON writer ``writeDict2JSON`` fails on the numpy integers that numpy 2's
  ``np.count_nonzero`` returns (pixel counts in ``matches.json``); the patched writer turns numpy
  scalars into Python numbers and writes the same file;
* its cache file (``gtInstances.json``, by default next to the installed package and then reused
  for any later ground truth) and result file go into the test's folder, which is also the working
  directory (it writes ``matches.json`` there).

It reads our ``predict-dataset --format cityscapes`` files (``write_cityscapes_prediction``) unchanged.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import bridgeseg.evaluation.cityscapes_instance as ours_module
from bridgeseg.data.cityscapes import EVALUATED_LABELS, CityscapesSegmentation, read_instance_ids
from bridgeseg.evaluation.cityscapes_instance import CityscapesInstanceEvaluator
from bridgeseg.evaluation.instance_files import score_instance_folders
from bridgeseg.outputs import read_instance_txt, write_cityscapes_prediction

from cityscapes_predictions import grouped_instances, perturbed_instances
from conftest import shared_fixture

pytestmark = pytest.mark.slow
TRAIN_ID_OF_LABEL = {label_id: train_id for label_id, train_id, _, _ in EVALUATED_LABELS}


def _write_json_with_numpy_scalars(record, path):
    with open(path, "w") as file:
        file.write(json.dumps(record, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__,
                              sort_keys=True, indent=4))


def official_instance_evaluator(monkeypatch, folder):
    """The official module and a copy of its settings that write only into ``folder``."""
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.delenv("CITYSCAPES_RESULTS", raising=False)
    module = pytest.importorskip("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
                                 reason="cityscapesscripts is not installed: pip install --no-deps cityscapesscripts "
                                        "pyquaternion (make test-slow does)")
    if not hasattr(np, "in1d"):  # removed in numpy 2.4; np.isin is its documented replacement
        monkeypatch.setattr(np, "in1d", lambda values, test: np.isin(values, test).ravel(), raising=False)
    monkeypatch.setattr(module, "writeDict2JSON", _write_json_with_numpy_scalars)
    monkeypatch.chdir(folder)
    args = copy.copy(module.args)
    args.gtInstancesFile = str(folder / "gtInstances.json")
    args.exportFile = str(folder / "resultInstanceLevelSemanticLabeling.json")
    args.quiet, args.JSONOutput, args.colorized = True, True, False
    return module, args


def write_predictions(dataset: CityscapesSegmentation, kind: str, out_dir) -> None:
    """Our writer's files for every frame: perturbed ground truth or our grouping's instances."""
    for seed, name in enumerate(dataset.ids):
        raw = read_instance_ids(dataset.instance_path(name))
        if kind == "perturbed":
            masks, label_ids, scores = perturbed_instances(raw, seed)
            train_ids = np.array([TRAIN_ID_OF_LABEL[int(i)] for i in label_ids], dtype=np.int64)
        else:
            sample = dataset[dataset.ids.index(name)]
            masks, train_ids, scores = grouped_instances(sample["semantic"], sample["instance"], dataset.num_classes,
                                                         seed)
        write_cityscapes_prediction(out_dir, name, dataset.read_semantic(name), masks, train_ids, scores)


def run_official(monkeypatch, tmp_path, dataset, pred_dir) -> dict:
    official, args = official_instance_evaluator(monkeypatch, tmp_path)
    args.predictionPath, args.predictionWalk = str(pred_dir.resolve()), None
    gt_files = [str(dataset.instance_path(name)) for name in dataset.ids]
    pred_files = [official.getPrediction(gt_file, args) for gt_file in gt_files]
    return official.evaluateImgLists(pred_files, gt_files, args)


def ours_in_memory(dataset, pred_dir) -> CityscapesInstanceEvaluator:
    """The evaluator fed as ``evaluate`` feeds it, with the written masks and scores read back."""
    evaluator = CityscapesInstanceEvaluator()
    for name in dataset.ids:
        raw = read_instance_ids(dataset.instance_path(name))
        masks, label_ids, scores = read_instance_txt(pred_dir / f"{name.split('/')[-1]}.txt", raw.shape)
        evaluator.process(masks, label_ids, scores, raw)
    return evaluator


def assert_same(ours: dict, matrix: np.ndarray, theirs: dict) -> None:
    averages = theirs["averages"]
    assert ours["AP"] == pytest.approx(averages["allAp"], abs=1e-6)
    assert ours["AP50"] == pytest.approx(averages["allAp50%"], abs=1e-6)
    assert theirs["instLabels"] == list(ours["per_class"])
    for name, scores in averages["classes"].items():
        if np.isnan(scores["ap"]):
            assert ours["per_class"][name] is None, name
        else:
            assert ours["per_class"][name]["AP"] == pytest.approx(scores["ap"], abs=1e-6), name
            assert ours["per_class"][name]["AP50"] == pytest.approx(scores["ap50%"], abs=1e-6), name
    assert np.allclose(matrix, np.asarray(theirs["resultApMatrix"][0], dtype=np.float64), atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("kind", ["perturbed", "grouped"])
@pytest.mark.parametrize("folder", ["cityscapes", "cityscapes_small"])
def test_cityscapes_ap_matches_the_official_evaluator(folder, kind, tmp_path, monkeypatch):
    """AP, AP50, per-class AP and the whole (class x threshold) matrix agree to 1e-6, on perturbed ground
    truth (missed, shifted, duplicated, wrong-class instances; predictions on void, half on void, on a
    group region, on background, too small) and on our grouping's instances; both from the same files."""
    dataset = CityscapesSegmentation(shared_fixture(folder), "val", with_instances=True)
    pred_dir = tmp_path / "results"
    write_predictions(dataset, kind, pred_dir)
    theirs = run_official(monkeypatch, tmp_path, dataset, pred_dir)

    from_files = score_instance_folders(shared_fixture(folder, "gtFine"), "cityscapes", pred_dir, "cityscapes")
    in_memory = ours_in_memory(dataset, pred_dir)
    assert in_memory.evaluate() == from_files
    assert_same(from_files, in_memory.ap_matrix(), theirs)
    # not vacuous: partial scores on several classes of the full frames (the small one has 2 instances >= 100 px)
    defined = [v["AP"] for v in from_files["per_class"].values() if v is not None]
    if folder == "cityscapes":
        assert len(defined) >= 3 and sum(0 < value < 1 for value in defined) >= 2, from_files

    # a deliberately wrong rule fails the comparison (on the full frames; the small one has too few instances):
    # no minimum region size, or every threshold 0.05 lower (as if IoU >= t were counted instead of > t)
    for constant, value in (("MIN_REGION_SIZE", 0), ("OVERLAPS", np.arange(0.45, 0.95, 0.05))):
        if folder == "cityscapes_small":
            continue
        with monkeypatch.context() as patch:
            patch.setattr(ours_module, constant, value)
            broken = ours_in_memory(dataset, pred_dir)
            with pytest.raises(AssertionError):
                assert_same(broken.evaluate(), broken.ap_matrix(), theirs)


def test_predict_dataset_output_is_read_by_the_official_evaluator(tmp_path, monkeypatch):
    """`bridgeseg predict-dataset --format cityscapes` of a (near random) network, read as it is."""
    from bridgeseg.cli import main

    root = shared_fixture("cityscapes_small")
    tiny = ["data.dataset=cityscapes", "data.train_split=val", "model.arch=joint", "model.depth=18", "model.width=8",
            "model.output_stride=16", "model.kernel=3", "model.dilation=1", "model.init=random", "data.crop_size=64",
            "data.workers=0", "train.batch_size=1", "train.iterations=2", "train.eval_every=0", "train.threads=2",
            "loss.min_kept=64", "loss.box_min_kept=64", "instance.min_score=0.0"]
    run_dir, pred_dir = tmp_path / "run", tmp_path / "results"
    assert main(["train", "demo", "--data-root", str(root), "--out", str(run_dir), "--set", *tiny]) == 0
    assert main(["predict-dataset", "demo", "--data-root", str(root), "--checkpoint", str(run_dir / "final.pt"),
                 "--out", str(pred_dir), "--format", "cityscapes", "--set", *tiny]) == 0
    dataset = CityscapesSegmentation(root, "val", with_instances=True)
    theirs = run_official(monkeypatch, tmp_path, dataset, pred_dir)
    assert_same(score_instance_folders(root / "gtFine", "cityscapes", pred_dir, "cityscapes"),
                ours_in_memory(dataset, pred_dir).ap_matrix(), theirs)
    assert sum(1 for _ in pred_dir.glob("masks/*.png")) > 0
