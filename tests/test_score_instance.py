"""``bridgeseg score instance`` on real VOC / SBD / Cityscapes ground truth and its error cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bridgeseg.cli import main
from bridgeseg.data.cityscapes import read_instance_ids, thing_instances
from bridgeseg.data.instances import instances_from_maps
from bridgeseg.data.io import read_label
from bridgeseg.data.sbd import read_sbd_instances
from bridgeseg.outputs import read_instance_txt, write_instance_txt

from conftest import shared_fixture


def run(*args) -> int:
    return main([str(a) for a in args])


def score(tmp_path, gt, gt_format, pred, *extra) -> dict:
    out = tmp_path / "scores.json"
    assert run("score", "instance", "--gt", gt, "--gt-format", gt_format, "--pred", pred, "--json", out, *extra) == 0
    return json.loads(out.read_text())


def test_formats_round_trip(tmp_path):
    masks = np.random.default_rng(0).random((3, 5, 7)) > 0.5
    write_instance_txt(tmp_path / "a.txt", masks, [3, 15, 15], [0.9, 0.5, 0.25])
    read_masks, ids, scores = read_instance_txt(tmp_path / "a.txt", image_size=(5, 7))
    assert np.array_equal(read_masks, masks) and ids.tolist() == [3, 15, 15] and scores.tolist() == [0.9, 0.5, 0.25]
    write_instance_txt(tmp_path / "empty.txt", np.zeros((0, 5, 7), bool), [], [])
    assert read_instance_txt(tmp_path / "empty.txt", (5, 7))[0].shape == (0, 5, 7)


def test_voc_ground_truth_back_as_predictions_scores_one(tmp_path):
    root = shared_fixture("voc2012")
    masks, labels, _ = instances_from_maps(read_label(root / "SegmentationObject" / "2007_000063.png"),
                                           read_label(root / "SegmentationClass" / "2007_000063.png"), 21)
    write_instance_txt(tmp_path / "pred" / "2007_000063.txt", masks.numpy(), labels.tolist(), [0.9, 0.8])
    results = score(tmp_path, root, "voc", tmp_path / "pred")
    assert results["mAP_r@0.5"] == 1.0 and results["mAP_r_vol"] == 1.0 and results["num_images"] == 1
    assert results["per_class"]["dog"]["0.9"] == 1.0 and results["per_class"]["cat"] is None


def test_sbd_ground_truth_with_one_instance_missed(tmp_path):
    root = shared_fixture("sbd")
    for stem in ("2008_000051", "2008_000195"):
        instance_map, categories = read_sbd_instances(root / "inst" / f"{stem}.mat")
        masks = np.stack([instance_map == i for i in range(1, len(categories) + 1)])
        keep = slice(None) if stem == "2008_000195" else slice(0, 4)  # miss 2008_000051's last person
        write_instance_txt(tmp_path / "pred" / f"{stem}.txt", masks[keep], categories[keep],
                           np.linspace(0.9, 0.5, len(categories))[keep])
    results = score(tmp_path, root, "sbd", tmp_path / "pred", "--split", root / "val.txt")
    # classes with ground truth: bottle (5), chair (9), person (15) and boat (4); person: 5 instances, 4 found,
    # all with the highest scores -> the envelope AP is recall 4/5 at precision 1
    assert results["per_class"]["person"]["0.5"] == pytest.approx(4 / 5)
    assert results["mAP_r@0.5"] == pytest.approx((1 + 1 + 1 + 4 / 5) / 4)
    mnc = score(tmp_path, root, "sbd", tmp_path / "pred", "--protocol", "mnc")
    assert mnc["protocol"] == "mnc"
    assert mnc["per_class"]["person"]["0.5"] == pytest.approx(9 / 11)  # 11-point: 9 of 11 recall points reached


def test_cityscapes_instance_ids(tmp_path):
    gt = shared_fixture("cityscapes_small", "gtFine")
    path = next(gt.rglob("*_gtFine_instanceIds.png"))
    masks, label_ids, void = thing_instances(read_instance_ids(path))
    assert set(label_ids.tolist()) <= {24, 25, 26, 27, 28, 31, 32, 33} and len(masks) >= 2
    stem = path.name.removesuffix("_gtFine_instanceIds.png")
    write_instance_txt(tmp_path / "pred" / f"{stem}.txt", masks, label_ids, np.ones(len(masks)))
    assert score(tmp_path, gt, "cityscapes", tmp_path / "pred")["mAP_r@0.5"] == 1.0


def test_errors_name_the_file(tmp_path, capsys):
    root = shared_fixture("voc2012")
    pred = tmp_path / "pred"
    pred.mkdir()
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "2007_000063.txt" in capsys.readouterr().err  # missing prediction file

    (pred / "2007_000063.txt").write_text("masks/nowhere.png 12 0.5\n")
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "nowhere.png does not exist" in capsys.readouterr().err

    write_instance_txt(pred / "2007_000063.txt", np.ones((1, 375, 500), bool), [12], [0.5])
    text = (pred / "2007_000063.txt").read_text()
    (pred / "2007_000063.txt").write_text(text.replace(" 12 ", " 42 "))
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "class id 42" in capsys.readouterr().err

    (pred / "2007_000063.txt").write_text(text.replace("0.500000", "high"))
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "line 1: score 'high' is not a number" in capsys.readouterr().err

    (pred / "2007_000063.txt").write_text(text.replace("0.500000", "nan"))
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "not finite" in capsys.readouterr().err

    write_instance_txt(pred / "2007_000063.txt", np.ones((1, 10, 10), bool), [12], [0.5])
    assert run("score", "instance", "--gt", root, "--gt-format", "voc", "--pred", pred) == 2
    assert "is 10x10, the image is 500x375" in capsys.readouterr().err
