"""``bridgeseg.data.check``: every kind of problem is found, with its file, without stopping at the first."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from bridgeseg.data.check import CheckReport, check_dataset, format_report, instance_problems
from bridgeseg.data.io import read_label, write_label
from bridgeseg.data.synthetic import CLASS_NAMES, SceneSpec, generate_dataset

from conftest import shared_fixture


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("check") / "clean"
    return generate_dataset(root, 4, 2, spec=SceneSpec(image_size=32, min_size=8, max_size=14))


@pytest.fixture
def root(clean_root, tmp_path):
    copy = tmp_path / "voc"
    shutil.copytree(clean_root, copy)
    return copy


def test_clean_dataset_passes(clean_root):
    report = check_dataset("voc", clean_root, progress=False)
    assert report.ok and report.problems == []
    assert [(s.name, s.num_images) for s in report.splits] == [("train", 4), ("val", 2)]
    assert report.class_names == CLASS_NAMES
    train = report.splits[0]
    assert train.pixels.sum() + train.void_pixels == 4 * 32 * 32
    assert train.images[0] == 4 and train.instances > 0
    text = format_report(report)
    assert "split train: 4 images" in text and "circle" in text and "result: OK" in text


def test_every_kind_of_problem_is_collected(root):
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    # 0: missing label, 1: size mismatch, 2: value out of range, 3: corrupt image
    (root / "SegmentationClass" / f"{ids[0]}.png").unlink()
    write_label(root / "SegmentationClass" / f"{ids[1]}.png", np.zeros((30, 32)))
    label = read_label(root / "SegmentationClass" / f"{ids[2]}.png")
    label[0, 0] = 9
    write_label(root / "SegmentationClass" / f"{ids[2]}.png", label)
    (root / "JPEGImages" / f"{ids[3]}.jpg").write_bytes(b"not a jpeg at all")
    # val 0: an instance id painted on background pixels
    val = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    semantic = read_label(root / "SegmentationClass" / f"{val[0]}.png")
    instance = read_label(root / "SegmentationObject" / f"{val[0]}.png", colors=None)
    background = np.argwhere(semantic == 0)[:3]
    instance[tuple(background.T)] = 1
    write_label(root / "SegmentationObject" / f"{val[0]}.png", instance)

    report = check_dataset("voc", root, progress=False)
    assert not report.ok
    by_kind = {p.kind: p for p in report.problems}
    assert {"missing_label", "size_mismatch", "label_value", "corrupt_image", "instance_background"} <= set(by_kind)
    assert by_kind["missing_label"].file.endswith(f"SegmentationClass/{ids[0]}.png")
    assert by_kind["size_mismatch"].file.endswith(f"SegmentationClass/{ids[1]}.png")
    assert "32x30" in by_kind["size_mismatch"].message
    assert by_kind["label_value"].file.endswith(f"{ids[2]}.png")
    assert "values 9 on 1 pixels" in by_kind["label_value"].message
    assert by_kind["corrupt_image"].file.endswith(f"JPEGImages/{ids[3]}.jpg")
    assert by_kind["instance_background"].file.endswith(f"SegmentationObject/{val[0]}.png")
    assert "1 (3 px)" in by_kind["instance_background"].message
    # the class table still counts the readable images
    assert report.splits[0].num_images == 4 and report.splits[0].images[0] == 3
    text = format_report(report, max_problems=3)
    assert "result: FAILED" in text and "instance_background: 1" in text and "... and" in text


def test_missing_folder_is_a_layout_error(root):
    shutil.rmtree(root / "SegmentationClass")
    report = check_dataset("voc", root, split="train", progress=False)
    assert not report.ok and [p.kind for p in report.problems] == ["layout"]
    assert "no SegmentationClass/ folder" in report.problems[0].message
    report = check_dataset("voc", root / "nowhere", progress=False)
    assert report.counts() == {"layout": 2} and "does not exist" in report.problems[0].message


def test_missing_image_and_duplicate_id(root):
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (root / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids + ids[1:2]))
    report = check_dataset("voc", root, split="train", progress=False, num_workers=2)
    assert report.counts() == {"missing_image": 1, "duplicate_id": 1}
    assert report.errors[0].file.endswith(f"JPEGImages/{ids[0]}.jpg")
    assert report.splits[0].num_images == 5


def test_instance_checks_on_arrays():
    semantic = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [255, 3, 0, 0]])
    instance = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [1, 0, 0, 0]])
    assert instance_problems(semantic, instance, 4, (1, 2), "x.png") == []  # void pixels are left out
    instance[0, 0] = 2  # instance 2 covers background and class 1 + 2
    instance[1, 1] = 2
    kinds = [p.kind for p in instance_problems(semantic, instance, 4, (1, 2), "x.png")]
    assert kinds == ["instance_background", "instance_multiclass"]
    instance[0, 1] = 0  # a class-1 pixel outside every instance: a warning only
    problems = instance_problems(semantic, instance, 4, (1, 2), "x.png")
    assert problems[-1].kind == "uncovered_foreground" and problems[-1].severity == "warning"
    assert CheckReport("voc", ".", problems=[problems[-1]]).ok


def test_context_root_check(tmp_path):
    root = tmp_path / "VOC2010"
    for folder in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (root / folder).mkdir(parents=True)
    for name, value in (("a", 59), ("b", 60)):
        Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        write_label(root / "SegmentationClassContext" / f"{name}.png", np.full((4, 5), value))
    (root / "ImageSets" / "SegmentationContext" / "train.txt").write_text("a\nb\n")
    report = check_dataset("context", root, split="train", progress=False)
    assert report.counts() == {"label_value": 1} and report.problems[0].file.endswith("b.png")
    assert report.splits[0].pixels[59] == 20 and len(report.class_names) == 60
    report = check_dataset("context59", root, split="train", progress=False)
    assert report.splits[0].pixels[58] == 20 and report.counts() == {"label_value": 1}
    assert "layout" in check_dataset("context", root, progress=False).counts()  # no val list


def test_real_fixtures_pass():
    report = check_dataset("sbd", shared_fixture("sbd"), split="val", progress=False)
    assert report.ok and report.problems == [] and report.splits[0].instances == 10
    report = check_dataset("cityscapes", shared_fixture("cityscapes_small"), split="val", progress=False)
    assert report.ok and report.problems == [] and report.splits[0].instances == 7


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        check_dataset("coco", ".")
