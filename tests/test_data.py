"""VOC-layout loading (real fixture files), augmentation, deterministic sampling, the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bridgeseg.config import DataConfig
from bridgeseg.data.io import read_image, read_label, voc_palette, write_label
from bridgeseg.data.loading import SampleCache, StepSampler, TrainingSamples
from bridgeseg.data.synthetic import CLASS_NAMES, SceneSpec, render_scene
from bridgeseg.data.augment import TrainAugmentation, normalize, scaled_crop, scaled_size, to_tensors
from bridgeseg.data.voc import VOC_CLASSES, VOCSegmentation

from conftest import shared_fixture


def test_real_voc_image_with_class_and_object_pngs(tmp_path):
    root = shared_fixture("voc2012")
    split = tmp_path / "one.txt"
    split.write_text("2007_000063\n")
    dataset = VOCSegmentation(root, str(split), with_instances=True)
    assert dataset.class_names == VOC_CLASSES and len(dataset) == 1
    sample = dataset[0]
    assert sample["image"].shape == (375, 500, 3) and sample["image"].dtype == np.uint8
    assert set(np.unique(sample["semantic"])) == {0, 9, 12, 255}  # background, chair, dog, void border
    assert set(np.unique(sample["instance"])) == {0, 1, 2, 255}
    # every instance pixel carries a foreground class, and void agrees between the two maps
    assert np.all(sample["semantic"][(sample["instance"] > 0) & (sample["instance"] < 255)] > 0)
    assert np.array_equal(sample["semantic"] == 255, sample["instance"] == 255)


def test_rgb_colour_coded_labels_decode_through_the_palette():
    root = shared_fixture("voc_rgb_coded")
    assert Image.open(root / "SegmentationClass" / "2007_000001.png").mode == "RGB"
    label = read_label(root / "SegmentationClass" / "2007_000001.png")
    palette = voc_palette()
    rgb = np.asarray(Image.open(root / "SegmentationClass" / "2007_000001.png").convert("RGB"))
    assert np.array_equal(palette[label], rgb)


def test_label_round_trip_and_unknown_rgb_colour(tmp_path):
    label = np.random.default_rng(0).integers(0, 21, (7, 9))
    label[0, 0] = 255
    write_label(tmp_path / "a.png", label)
    assert Image.open(tmp_path / "a.png").mode == "P"
    assert np.array_equal(read_label(tmp_path / "a.png"), label)
    Image.fromarray(np.full((3, 3, 3), 7, np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb.png has colour \(7, 7, 7\)"):
        read_label(tmp_path / "rgb.png")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg is corrupt"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_label(tmp_path / "missing.png")


def make_root(tmp_path, label: np.ndarray, image_size=(6, 8), classes: str | None = None):
    root = tmp_path / "voc"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    write_label(root / "SegmentationClass" / "a.png", label)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    if classes:
        (root / "classes.txt").write_text(classes)
    return root


def test_custom_classes_and_label_range_check(tmp_path):
    root = make_root(tmp_path, np.full((6, 8), 3), classes="background\ncat\ndog\n")
    dataset = VOCSegmentation(root, "train")
    assert dataset.class_names == ("background", "cat", "dog")
    with pytest.raises(ValueError, match=r"a.png has value 3, but there are only 3 classes"):
        dataset[0]


def test_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    root = make_root(tmp_path, np.zeros((5, 8)))
    with pytest.raises(FileNotFoundError, match="split list .*val.txt does not exist; splits found .*'train'"):
        VOCSegmentation(root, "val")
    with pytest.raises(ValueError, match="a.png is 8x5 but its image is 8x6"):
        VOCSegmentation(root, "train")[0]
    with pytest.raises(FileNotFoundError, match="SegmentationObject"):
        VOCSegmentation(root, "train", with_instances=True)


def test_augmentation_pads_with_mean_and_void_and_keeps_pairs_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    semantic = (image[..., 0] > 128).astype(np.int64)  # labels are a function of the pixels
    augment = TrainAugmentation(crop_size=48, scale_min=0.5, scale_max=1.5, flip=True, mean=(0.5, 0.5, 0.5))
    for seed in range(10):
        out = augment({"image": image, "semantic": semantic, "instance": semantic.copy()}, np.random.default_rng(seed))
        assert out["image"].shape == (48, 48, 3) and out["semantic"].shape == (48, 48)
        padded = out["semantic"] == 255
        assert padded.any()  # 30 * 1.5 < 48: some padding always
        assert np.all(out["image"][padded] == 128)
        inside = ~padded
        # nearest-neighbour labels still match the (bilinearly resized) pixels away from edges
        agreement = ((out["image"][..., 0] > 128) == (out["semantic"] == 1))[inside].mean()
        assert agreement > 0.7
        assert np.array_equal(out["semantic"], out["instance"])


def test_to_tensors_keeps_pixels_and_normalize_normalises():
    sample = {"image": np.full((2, 3, 3), 255, np.uint8), "semantic": np.zeros((2, 3), np.int64)}
    sample["image"][0, 0] = (0, 51, 102)
    tensors = to_tensors(sample)
    assert tensors["image"].shape == (3, 2, 3) and tensors["image"].dtype == torch.uint8
    assert tensors["image"][:, 0, 0].tolist() == [0, 51, 102]
    assert tensors["semantic"].dtype == torch.long
    images = normalize(tensors["image"][None], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    expected = torch.full((1, 3, 2, 3), 2.0)  # (1 - 0.5) / 0.25
    expected[0, :, 0, 0] = torch.tensor([-2.0, (0.2 - 0.5) / 0.25, (0.4 - 0.5) / 0.25])
    torch.testing.assert_close(images, expected)


def test_cached_samples_are_the_samples_read_from_disk(synthetic_root):
    dataset = VOCSegmentation(synthetic_root, "train", with_instances=True)
    uncached = TrainingSamples(dataset, DataConfig(root=str(synthetic_root), crop_size=40, copy_paste=0.5, cache_mb=0),
                               seed=7)
    cached = TrainingSamples(dataset, DataConfig(root=str(synthetic_root), crop_size=40, copy_paste=0.5), seed=7)
    assert cached.config.cache_mb > 0
    keys = [(index, position) for position, index in enumerate([2, 5, 2, 2, 5, 7, 7])]
    for key in keys:  # the 2nd read of an image comes from the cache
        a, c = uncached[key], cached[key]
        for name in ("image", "semantic", "instance"):
            assert torch.equal(a[name], c[name]), (key, name)
        assert c["image"].dtype == torch.uint8
    assert 2 in cached.cache.samples and 5 in cached.cache.samples and not uncached.cache.samples
    stored = cached.cache.samples[2]
    assert stored["semantic"].dtype == np.uint8 and not stored["image"].flags.writeable
    assert cached.cache.get(2)["semantic"].dtype == np.uint8  # kept compact; to_tensors makes int64
    assert all(c[name].dtype == torch.int64 for name in ("semantic", "instance"))
    with pytest.raises(ValueError):  # the cache cannot be changed through a sample
        cached.cache.get(2)["image"][0, 0] = 0


def test_sample_cache_keeps_to_its_budget():
    cache = SampleCache(budget_mb=1)
    sample = {"image": np.zeros((300, 300, 3), np.uint8), "semantic": np.zeros((300, 300), np.int64), "name": "a"}
    for index in range(10):
        cache.put(index, sample)
    assert len(cache.samples) == 2  # 360,000 bytes each (labels as uint8): a third would pass 1,048,576
    assert cache.used <= 2**20
    big = {"image": np.zeros((10, 10, 3), np.uint8), "instance": np.full((10, 10), 70000, np.int64), "name": "b"}
    cache = SampleCache(budget_mb=1)
    cache.put(0, big)
    assert cache.samples[0]["instance"].dtype == np.int32 and cache.get(0)["instance"].max() == 70000


def test_step_sampler_is_a_function_of_seed_and_step():
    full = StepSampler(size=10, batch_size=4, seed=3, start_step=0, total_steps=6)
    batches = list(full)
    resumed = list(StepSampler(size=10, batch_size=4, seed=3, start_step=4, total_steps=6))
    assert resumed == batches[4:]
    positions = [p for batch in batches for _, p in batch]
    assert positions == list(range(24))
    first_epoch = [i for batch in batches for i, p in batch if p < 10]
    assert sorted(first_epoch) == list(range(10))  # each epoch is a permutation
    ranks = [list(StepSampler(10, 4, 3, 0, 6, rank=r, world_size=2)) for r in range(2)]
    for step in range(6):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batches[step])


def test_training_samples_are_reproducible(synthetic_root):
    dataset = VOCSegmentation(synthetic_root, "train", with_instances=True)
    samples = TrainingSamples(dataset, DataConfig(root=str(synthetic_root), crop_size=40), seed=7)
    a, b = samples[(2, 11)], samples[(2, 11)]
    torch.testing.assert_close(a["image"], b["image"])
    assert torch.equal(a["instance"], b["instance"])
    assert not torch.equal(samples[(2, 12)]["image"], a["image"])


def test_synthetic_scenes_have_what_the_demo_needs():
    rng = np.random.default_rng(0)
    spec = SceneSpec()
    touching = 0
    counts = np.zeros(len(CLASS_NAMES))
    pixels = np.zeros(len(CLASS_NAMES))
    for _ in range(100):
        image, semantic, instance = render_scene(rng, spec)
        assert image.shape == (128, 128, 3) and semantic.shape == instance.shape == (128, 128)
        assert np.array_equal(semantic == 255, instance == 255)  # one void band in both maps
        pixels += np.bincount(semantic.ravel(), minlength=256)[:len(CLASS_NAMES)]
        ids = [i for i in np.unique(instance) if i not in (0, 255)]
        for i in ids:
            classes = np.unique(semantic[instance == i])
            assert len(classes) == 1 and classes[0] > 0  # one class per instance
            counts[classes[0]] += 1
        # same-class instances that touch: a void pixel with two different ids of one class around it
        for a in ids:
            for b in ids:
                if a < b and semantic[instance == a][0] == semantic[instance == b][0]:
                    grown = np.zeros_like(instance, bool)
                    mask = instance == a
                    for dy in range(-3, 4):  # across the 2-pixel void band between touching instances
                        for dx in range(-3, 4):
                            grown |= np.roll(np.roll(mask, dy, 0), dx, 1)
                    touching += bool((grown & (instance == b)).any())
    assert touching >= 10  # instances of a class often touch or overlap
    assert counts[5] < counts[1:5].min()  # star is the rare class: in instances
    assert pixels[5] < 0.5 * pixels[1:5].min()  # and, more so, in pixels
    assert np.all(counts[1:] > 0)


def test_colour_does_not_tell_the_class():
    """A nearest-mean-colour classifier of instances does no better than always guessing the
    most frequent class: classes must be told apart by shape."""
    rng = np.random.default_rng(1)
    colours, labels = [], []
    for _ in range(150):
        image, semantic, instance = render_scene(rng)
        for i in np.unique(instance):
            if i not in (0, 255):
                colours.append(image[instance == i].mean(axis=0))
                labels.append(int(semantic[instance == i][0]))
    colours, labels = np.array(colours), np.array(labels)
    half = len(labels) // 2
    classes = np.unique(labels[:half])
    centres = np.array([colours[:half][labels[:half] == c].mean(axis=0) for c in classes])
    guesses = classes[np.argmin(((colours[half:, None] - centres[None]) ** 2).sum(-1), axis=1)]
    accuracy = (guesses == labels[half:]).mean()
    majority = np.bincount(labels[half:]).max() / len(labels[half:])
    assert accuracy <= majority + 0.05


def test_generated_dataset_is_the_same_with_any_number_of_workers(tmp_path):
    from bridgeseg.data.synthetic import generate_dataset

    spec = SceneSpec.for_size(48)
    one = generate_dataset(tmp_path / "one", 5, 3, seed=4, spec=spec, workers=1)
    two = generate_dataset(tmp_path / "two", 5, 3, seed=4, spec=spec, workers=2)
    more_train = generate_dataset(tmp_path / "more", 7, 3, seed=4, spec=spec, workers=2)
    files = sorted(path.relative_to(one) for path in one.rglob("*") if path.is_file())
    assert len(files) == 3 * 8 + 4  # 8 scenes x 3 files, 2 split lists, classes.txt, synthetic.json
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for name in ("val_00000", "val_00002"):  # validation scenes do not depend on the training count
        assert (one / "SegmentationClass" / f"{name}.png").read_bytes() == \
            (more_train / "SegmentationClass" / f"{name}.png").read_bytes()
    different = generate_dataset(tmp_path / "other", 5, 3, seed=5, spec=spec, workers=1)
    assert (one / "JPEGImages" / "train_00000.jpg").read_bytes() != (different / "JPEGImages" / "train_00000.jpg").read_bytes()


def _resized_padded_cropped(sample: dict, size: tuple[int, int], top: int, left: int, crop: int,
                            mean_color: tuple[int, int, int]) -> dict:
    """The reference for ``scaled_crop``: the whole image resized by PIL (bilinear; labels nearest, as
    int32 images), padded bottom/right, then cropped."""
    height, width = sample["image"].shape[:2]
    padded_h, padded_w = max(size[0], crop), max(size[1], crop)
    out = {}
    for key, value in sample.items():
        is_image = key == "image"
        if size == (height, width):
            resized = value
        elif is_image:
            resized = np.asarray(Image.fromarray(value).resize(size[::-1], Image.BILINEAR))
        else:
            resized = np.asarray(Image.fromarray(value.astype(np.int32)).resize(size[::-1], Image.NEAREST))
        padded = np.empty((padded_h, padded_w, 3) if is_image else (padded_h, padded_w), value.dtype)
        padded[...] = np.asarray(mean_color, np.uint8) if is_image else 255
        padded[:size[0], :size[1]] = resized
        out[key] = padded[top:top + crop, left:left + crop]
    return out


def test_scaled_crop_is_the_crop_of_the_whole_image_resized_and_padded():
    """Resizing only the crop's window gives the labels exactly (PIL's nearest pixels, in the label's
    own integer type, 255 in the padding) and the image within PIL's rounding of its filter weights."""
    rng = np.random.default_rng(0)
    differing = 0
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 120, 2))
        crop = int(rng.integers(4, 100))
        size = scaled_size(height, width, float(rng.uniform(0.3, 2.5)))
        top = int(rng.integers(0, max(size[0], crop) - crop + 1))
        left = int(rng.integers(0, max(size[1], crop) - crop + 1))
        sample = {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                  "semantic": rng.integers(0, 256, (height, width)).astype(np.uint8),
                  "instance": rng.integers(0, 70000, (height, width)).astype(np.int64)}  # Cityscapes-style ids
        got = scaled_crop(sample, size, top, left, crop, (10, 20, 30))
        want = _resized_padded_cropped(sample, size, top, left, crop, (10, 20, 30))
        for key in ("semantic", "instance"):
            assert got[key].dtype == sample[key].dtype and np.array_equal(got[key], want[key]), (height, width, size, key)
        difference = np.abs(got["image"].astype(int) - want["image"])
        assert got["image"].shape == (crop, crop, 3) and difference.max() <= 2, (height, width, size, top, left)
        differing += int(difference.any())
    assert differing < 300  # most crops agree to the bit


def test_scaled_crop_pads_with_the_mean_colour_and_void_in_the_label_type():
    sample = {"image": np.zeros((2, 3, 3), np.uint8), "semantic": np.ones((2, 3), np.uint8),
              "instance": np.full((2, 3), 300, np.int32)}
    out = scaled_crop(sample, (2, 3), 0, 0, 4, (10, 20, 30))
    assert out["semantic"].dtype == np.uint8 and out["instance"].dtype == np.int32
    assert (out["semantic"][2:] == 255).all() and (out["instance"][:, 3] == 255).all()
    assert (out["instance"][:2, :3] == 300).all() and (out["image"][3, 3] == (10, 20, 30)).all()
