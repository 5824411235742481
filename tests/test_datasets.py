"""Dataset classes on the real fixture files (VOC, SBD, Cityscapes) and on generated PASCAL-Context / VOC-aug trees."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from bridgeseg.data.cityscapes import (THING_TRAIN_IDS, TRAIN_CLASS_NAMES, CityscapesSegmentation,
                                       instance_ids_to_instance_map, read_instance_ids)
from bridgeseg.data.context import (CONTEXT59_CLASSES, CONTEXT59_LABEL_IDS, CONTEXT60_CLASSES, PascalContext,
                                    full_to_context60_lookup)
from bridgeseg.data.io import read_label, write_label
from bridgeseg.data.sbd import (SBDSegmentation, VOCAugSegmentation, prepare_voc_aug, read_sbd_instances,
                                sbd_voc2012_instance_ids, voc_aug_train_ids)
from bridgeseg.data.voc import VOC_CLASSES, VOCSegmentation

from conftest import shared_fixture

# ---------------------------------------------------------------------------------------------------------- VOC


def test_voc_image_from_a_split_list_file(tmp_path):
    root = shared_fixture("voc2012")
    split = tmp_path / "ids.txt"
    split.write_text("2007_000063\n")
    sample = VOCSegmentation(root, str(split), with_instances=True)[0]
    assert sample["image"].shape == (375, 500, 3)
    assert set(np.unique(sample["semantic"])) == {0, 9, 12, 255}
    assert set(np.unique(sample["instance"])) == {0, 1, 2, 255}


def test_voc_rgb_coded_labels():
    root = shared_fixture("voc_rgb_coded")
    dataset = VOCSegmentation(root, "train", with_instances=True)
    sample = dataset[0]
    assert sample["name"] == "2007_000001" and sample["image"].shape == (10, 20, 3)
    # the whole 20x10 image is one bicycle (class 2, colour (0, 128, 0)), object 1 (colour (128, 0, 0))
    assert sample["semantic"].dtype == np.int64 and np.all(sample["semantic"] == 2)
    assert np.all(sample["instance"] == 1)


# ---------------------------------------------------------------------------------------------------------- SBD


def test_sbd_mat_files_with_instances_match_gtinst_categories():
    root = shared_fixture("sbd")
    dataset = SBDSegmentation(root, "val", with_instances=True)
    assert dataset.ids == ["2008_000051", "2008_000195"] and dataset.class_names == VOC_CLASSES
    expected_classes = {"2008_000051": {0, 5, 9, 15}, "2008_000195": {0, 4, 15}}
    for sample in dataset:
        name = sample["name"]
        assert sample["image"].shape[:2] == sample["semantic"].shape == sample["instance"].shape
        assert set(np.unique(sample["semantic"])) == expected_classes[name]
        categories = dataset.read_instance_categories(name)
        ids = [i for i in np.unique(sample["instance"]) if i != 0]
        assert ids == list(range(1, len(categories) + 1))
        for instance_id in ids:  # every instance's pixels carry its GTinst category, and only that
            classes = set(np.unique(sample["semantic"][sample["instance"] == instance_id]))
            assert classes == {categories[instance_id - 1]}
        assert np.all(sample["semantic"][sample["instance"] == 0] == 0)


def test_sbd_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no img/ folder"):
        SBDSegmentation(tmp_path, "val")
    root = shared_fixture("sbd")
    with pytest.raises(FileNotFoundError, match=r"split list .*test.txt does not exist; lists found .*train.*val"):
        SBDSegmentation(root, "test")
    with pytest.raises(ValueError, match="train.txt is empty"):
        SBDSegmentation(root, "train")


def test_voc_aug_falls_back_to_sbd_images_and_mat_labels(tmp_path):
    voc, sbd = shared_fixture("voc2012"), shared_fixture("sbd")
    split = tmp_path / "ids.txt"
    split.write_text("2007_000063\n2008_000051\n")
    dataset = VOCAugSegmentation(voc, sbd, str(split))
    voc_sample, sbd_sample = dataset[0], dataset[1]
    assert np.array_equal(voc_sample["semantic"], read_label(voc / "SegmentationClass" / "2007_000063.png"))
    assert dataset.image_path("2008_000051") == sbd / "img" / "2008_000051.jpg"
    assert dataset.semantic_path("2008_000051") == sbd / "cls" / "2008_000051.mat"
    assert sbd_sample["image"].shape[:2] == sbd_sample["semantic"].shape == (371, 500)
    with pytest.raises(FileNotFoundError, match="no label file for '2008_000051'"):
        VOCAugSegmentation(voc, None, str(split)).read_semantic("2008_000051")


def write_lists(root, lists: dict[str, list[str]]) -> None:
    for relative, ids in lists.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids))


def test_voc_aug_train_ids_set_logic(tmp_path):
    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    write_lists(voc, {"ImageSets/Segmentation/train.txt": ["a", "b", "v0"],  # v0: also in VOC val (cannot be)
                      "ImageSets/Segmentation/val.txt": ["v0", "v1", "v2"]})
    write_lists(sbd, {"train.txt": ["c", "d", "v1", "a"], "val.txt": ["e", "v2", "b"]})
    assert voc_aug_train_ids(voc, sbd) == ["a", "b", "c", "d", "e"]


def test_voc2012_instance_split_ids(tmp_path):
    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    write_lists(voc, {"ImageSets/Main/train.txt": ["b", "a", "x"]})
    (sbd / "inst").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (sbd / "inst" / f"{name}.mat").write_bytes(b"")
    assert sbd_voc2012_instance_ids(voc, sbd, "train") == ["a", "b"]


def write_gtcls(path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.setdiff1d(np.unique(label), [0]).astype(np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": label.astype(np.uint8), "Boundaries": np.zeros((20, 1), object),
                                      "CategoriesPresent": present.reshape(-1, 1)}})


def make_voc_sbd_tree(tmp_path):
    """VOC: train a, val v; SBD: train b, c (c also a VOC id without a VOC label), val a, v."""
    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    write_lists(voc, {"ImageSets/Segmentation/train.txt": ["a"], "ImageSets/Segmentation/val.txt": ["v"]})
    write_lists(sbd, {"train.txt": ["b", "c"], "val.txt": ["a", "v"]})
    rng = np.random.default_rng(0)
    labels = {}
    for name in ("a", "b", "c", "v"):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        labels[name] = rng.integers(0, 21, (6, 7))
        write_gtcls(sbd / "cls" / f"{name}.mat", labels[name])
    (sbd / "img").mkdir()
    voc_label = np.full((6, 7), 3)
    voc_label[0] = 255
    write_label(voc / "SegmentationClass" / "a.png", voc_label)
    labels["a"] = voc_label  # the VOC label wins over SBD's
    return voc, sbd, labels


def test_prepare_voc_aug_writes_pngs_and_list_and_skips_done_files(tmp_path):
    voc, sbd, labels = make_voc_sbd_tree(tmp_path)
    direct = VOCAugSegmentation(voc, sbd)
    assert direct.ids == ["a", "b", "c"]
    list_path = prepare_voc_aug(voc, sbd, progress=False)
    assert list_path == voc / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert list_path.read_text().split() == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        png = voc / "SegmentationClassAug" / f"{name}.png"
        assert Image.open(png).mode == "P"
        assert np.array_equal(read_label(png), labels[name])
    prepared = VOCAugSegmentation(voc)  # no SBD root needed any more
    assert prepared.semantic_path("b") == voc / "SegmentationClassAug" / "b.png"
    for index, name in enumerate(prepared.ids):
        assert np.array_equal(prepared[index]["semantic"], direct[index]["semantic"])
    # a second run skips the files that exist
    write_label(voc / "SegmentationClassAug" / "b.png", np.zeros((6, 7)))
    prepare_voc_aug(voc, sbd, progress=False)
    assert read_label(voc / "SegmentationClassAug" / "b.png").max() == 0
    assert not list(voc.glob("**/.*partial*"))


def test_voc_aug_errors(tmp_path):
    voc, sbd, _ = make_voc_sbd_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass sbd_root"):
        VOCAugSegmentation(voc)
    with pytest.raises(FileNotFoundError, match="has no cls/ folder"):
        VOCAugSegmentation(voc, tmp_path)
    assert VOCAugSegmentation(voc, sbd, "val").ids == ["v"]


# ---------------------------------------------------------------------------------------------------- Cityscapes


def label_edges(label: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour of another value."""
    edge = np.zeros(label.shape, dtype=bool)
    horizontal, vertical = label[:, 1:] != label[:, :-1], label[1:] != label[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def assert_train_ids_match(semantic: np.ndarray, shipped: np.ndarray) -> None:
    """Our label-id -> train-id mapping against a shipped ``*_labelTrainIds.png``.

    The shipped train-id PNGs were drawn from the polygons, not mapped from ``*_labelIds.png``,
    so they differ on 0.2-0.5 % of pixels, every one of them on a label boundary; everywhere
    else the two must agree pixel for pixel.
    """
    differ = semantic != shipped
    assert differ.mean() < 0.006
    assert not np.any(differ & ~(label_edges(semantic) | label_edges(shipped)))
    assert set(np.unique(semantic)) <= set(range(19)) | {255}


def assert_instances_consistent(sample: dict, raw: np.ndarray) -> None:
    semantic, instance = sample["semantic"], sample["instance"]
    ids = [i for i in np.unique(instance) if i not in (0, 255)]
    raw_things = [i for i in np.unique(raw) if i >= 1000 and i // 1000 in (24, 25, 26, 27, 28, 31, 32, 33)]
    assert ids == list(range(1, len(raw_things) + 1))
    for instance_id in ids:  # one thing class per instance, the one of its raw id
        classes = np.unique(semantic[instance == instance_id])
        assert len(classes) == 1 and classes[0] in THING_TRAIN_IDS
    assert np.array_equal(instance == 255, np.isin(raw, (24, 25, 26, 27, 28, 31, 32, 33)))


def test_cityscapes_full_frames_train_ids_and_instances():
    root = shared_fixture("cityscapes")
    dataset = CityscapesSegmentation(root, "val", with_instances=True)
    assert dataset.class_names == TRAIN_CLASS_NAMES and dataset.num_classes == 19
    assert dataset.ids == sorted((root / "splits" / "val.txt").read_text().split())
    for sample in dataset:
        city, stem = sample["name"].split("/")
        assert sample["image"].shape == (1024, 2048, 3)
        shipped = read_label(root / "gtEval" / "val" / city / f"{stem}_gtFine_labelTrainIds.png")
        assert_train_ids_match(sample["semantic"], shipped)
        assert_instances_consistent(sample, read_instance_ids(dataset.instance_path(sample["name"])))


def test_cityscapes_split_list_file():
    root = shared_fixture("cityscapes")
    dataset = CityscapesSegmentation(root, str(root / "splits" / "val.txt"))
    assert dataset.ids[0] == "frankfurt/frankfurt_000001_055062" and len(dataset) == 3
    assert dataset.image_path(dataset.ids[0]).is_file()


def test_cityscapes_small_frame_and_train_id_fallback(tmp_path):
    root = shared_fixture("cityscapes_small")
    dataset = CityscapesSegmentation(root, "val", with_instances=True)
    assert dataset.ids == ["frankfurt/frankfurt_000000_000294"]
    sample = dataset[0]
    assert sample["image"].shape == (128, 256, 3)
    folder = root / "gtFine" / "val" / "frankfurt"
    shipped = read_label(folder / "frankfurt_000000_000294_gtFine_labelTrainIds.png")
    assert_train_ids_match(sample["semantic"], shipped)
    assert_instances_consistent(sample, read_instance_ids(folder / "frankfurt_000000_000294_gtFine_instanceIds.png"))
    # a root with only *_labelTrainIds.png reads those as they are
    copy = tmp_path / "cs"
    shutil.copytree(root, copy)
    (copy / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png").unlink()
    assert np.array_equal(CityscapesSegmentation(copy, "val")[0]["semantic"], shipped)


def test_cityscapes_instance_numbering_skips_void_value():
    raw = np.full((2, 300), 7, dtype=np.int64)
    raw[0] = 26000 + np.arange(300)  # 300 cars
    raw[1, :5] = 24  # a person group region
    instance = instance_ids_to_instance_map(raw)
    assert instance[0].tolist() == list(range(1, 255)) + list(range(256, 302))
    assert instance[1, :5].tolist() == [255] * 5 and np.all(instance[1, 5:] == 0)


def test_cityscapes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no leftImg8bit/ folder"):
        CityscapesSegmentation(tmp_path, "val")
    root = shared_fixture("cityscapes_small")
    with pytest.raises(FileNotFoundError, match=r"train does not exist; splits found .*\['val'\]"):
        CityscapesSegmentation(root, "train")


# ---------------------------------------------------------------------------------------------- PASCAL-Context


def make_context(tmp_path, labels: dict[str, np.ndarray], raw: bool = False, lists: str = "SegmentationContext"):
    """A VOC2010 tree: JPEGImages + SegmentationClassContext PNGs (or trainval/*.mat) + split lists."""
    root = tmp_path / "VOCdevkit" / "VOC2010"
    (root / "JPEGImages").mkdir(parents=True)
    for name, label in labels.items():
        Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        if raw:
            (root / "trainval").mkdir(exist_ok=True)
            scipy.io.savemat(root / "trainval" / f"{name}.mat", {"LabelMap": label.astype(np.uint16)})
        else:
            write_label(root / "SegmentationClassContext" / f"{name}.png", label)
    names = list(labels)
    write_lists(root, {f"ImageSets/{lists}/train.txt": names[:1], f"ImageSets/{lists}/val.txt": names[1:]})
    return root


def test_context_class_lists():
    assert len(CONTEXT59_CLASSES) == 59 == len(set(CONTEXT59_CLASSES)) == len(CONTEXT59_LABEL_IDS)
    assert CONTEXT60_CLASSES[0] == "background" and CONTEXT60_CLASSES[1:] == CONTEXT59_CLASSES
    assert list(CONTEXT59_CLASSES) == sorted(CONTEXT59_CLASSES)  # the order of their labels.txt ids
    assert list(CONTEXT59_LABEL_IDS) == sorted(CONTEXT59_LABEL_IDS)


def test_context_png_labels_60_and_59_classes(tmp_path):
    label = np.array([[0, 1, 59], [15, 255, 0]])
    root = make_context(tmp_path, {"2008_000002": label, "2008_000003": np.zeros((2, 3), int)})
    sixty = PascalContext(root, "train")
    assert sixty.num_classes == 60 and sixty.class_names == CONTEXT60_CLASSES and sixty.ids == ["2008_000002"]
    assert np.array_equal(sixty[0]["semantic"], label)
    fifty_nine = PascalContext(tmp_path / "VOCdevkit", "train", num_classes=59)  # the VOCdevkit folder works too
    assert fifty_nine.num_classes == 59 and fifty_nine.class_names[0] == "aeroplane"
    assert np.array_equal(fifty_nine[0]["semantic"], [[255, 0, 58], [14, 255, 255]])
    assert PascalContext(root, "val", num_classes=59)[0]["semantic"].tolist() == [[255] * 3] * 2


def test_context_label_out_of_range_is_named(tmp_path):
    root = make_context(tmp_path, {"a": np.array([[60, 0]]), "b": np.array([[0, 0]])})
    with pytest.raises(ValueError, match=r"a.png has value 60, but there are only 60 classes"):
        PascalContext(root, "train")[0]


def test_context_raw_mat_with_and_without_labels_txt(tmp_path):
    full = np.array([[0, 2, 458], [397, 1, 459]], dtype=np.uint16)  # unlabelled, aeroplane, wood, table, accordion, x
    root = make_context(tmp_path, {"a": full, "b": full}, raw=True, lists="Main")
    dataset = PascalContext(root, "train")
    assert dataset.semantic_path("a") == root / "trainval" / "a.mat"
    table = CONTEXT60_CLASSES.index("table")
    assert dataset[0]["semantic"].tolist() == [[0, 1, 59], [table, 0, 0]]
    # a labels.txt decides the ids by name
    names = [f"other{i}" for i in range(1, 460)]
    names[0], names[4] = "aeroplane", "wood"  # aeroplane = id 1, wood = id 5 in this (fake) list
    others = iter(range(10, 460))
    for name in CONTEXT59_CLASSES:
        if name not in ("aeroplane", "wood"):
            names[next(others) - 1] = name
    (root / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(names, start=1)))
    lookup = full_to_context60_lookup(root / "labels.txt")
    assert lookup[1] == 1 and lookup[5] == 59 and lookup[2] == 0
    assert PascalContext(root, "val", num_classes=59)[0]["semantic"][0].tolist() == [255, 255, 255]


def test_context_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no JPEGImages/ folder"):
        PascalContext(tmp_path, "train")
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match="neither SegmentationClassContext/ nor trainval/"):
        PascalContext(tmp_path, "train")
    (tmp_path / "SegmentationClassContext").mkdir()
    with pytest.raises(FileNotFoundError, match=r"SegmentationContext/train.txt does not exist \(nor .*Main/train.txt"):
        PascalContext(tmp_path, "train")
    with pytest.raises(ValueError, match="num_classes must be 60"):
        PascalContext(tmp_path, "train", num_classes=21)
    (tmp_path / "labels.txt").write_text("1: aeroplane\n")
    with pytest.raises(ValueError, match="lacks the classes"):
        full_to_context60_lookup(tmp_path / "labels.txt")


def test_sbd_reader_round_trip_of_generated_gtcls(tmp_path):
    label = np.arange(12).reshape(3, 4) % 21
    write_gtcls(tmp_path / "cls" / "x.mat", label)
    scipy.io.savemat(tmp_path / "inst.mat", {"GTinst": {"Segmentation": np.array([[0, 1], [2, 2]], np.uint8),
                                                        "Categories": np.array([[3], [7]], np.uint8)}})
    from bridgeseg.data.sbd import read_sbd_classes

    assert np.array_equal(read_sbd_classes(tmp_path / "cls" / "x.mat"), label)
    instance, categories = read_sbd_instances(tmp_path / "inst.mat")
    assert categories.tolist() == [3, 7] and instance.tolist() == [[0, 1], [2, 2]]
