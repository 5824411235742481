"""Class balance for small datasets: repeat factor sampling, class-weighted cross-entropy, and the
augmentations that keep a network from memorising a few hundred scenes (colour jitter, copy-paste)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridgeseg.config import DataConfig
from bridgeseg.data.augment import jitter_colors, paste_objects
from bridgeseg.data.balance import class_statistics, median_frequency_weights, repeat_factors
from bridgeseg.data.io import VOID
from bridgeseg.data.loading import StepSampler, TrainingSamples
from bridgeseg.data.voc import VOCSegmentation
from bridgeseg.losses import bootstrapped_cross_entropy


def test_repeat_factors_follow_lvis():
    # class 0 in every image, class 1 in half, class 2 in a tenth
    presence = np.zeros((10, 3), dtype=bool)
    presence[:, 0], presence[:5, 1], presence[0, 2] = True, True, True
    factors = repeat_factors(presence, threshold=0.4)
    assert factors[0] == pytest.approx(math.sqrt(0.4 / 0.1))  # the rarest class decides
    assert factors[1] == pytest.approx(1.0)  # sqrt(0.4 / 0.5) < 1
    assert factors[9] == pytest.approx(1.0)
    assert (repeat_factors(presence, 0.0) == 1.0).all()


def test_median_frequency_weights():
    weights = median_frequency_weights(np.array([700, 200, 100, 0]))
    assert weights.tolist() == pytest.approx([2 / 7, 1.0, 2.0, 1.0])
    assert median_frequency_weights(np.array([1000, 1]), limit=5.0)[1] == 5.0


def test_class_statistics_read_every_class_map(synthetic_root):
    dataset = VOCSegmentation(synthetic_root, "train")
    statistics = class_statistics(dataset)
    assert statistics.presence.shape == (len(dataset), dataset.num_classes)
    for index, name in enumerate(dataset.ids):
        label = dataset.read_semantic(name)
        assert set(np.flatnonzero(statistics.presence[index])) == set(np.unique(label[label != VOID]).tolist())
    assert statistics.pixels.sum() == sum(int((dataset.read_semantic(n) != VOID).sum()) for n in dataset.ids)


def test_weighted_sampler_draws_in_proportion_and_resumes_exactly():
    weights = torch.tensor([1.0, 1.0, 1.0, 7.0])
    batches = list(StepSampler(size=4, batch_size=4, seed=1, start_step=0, total_steps=500, weights=weights))
    counts = np.bincount([index for batch in batches for index, _ in batch], minlength=4)
    assert counts[3] / counts.sum() == pytest.approx(0.7, abs=0.03)
    resumed = list(StepSampler(size=4, batch_size=4, seed=1, start_step=300, total_steps=500, weights=weights))
    assert resumed == batches[300:]


def test_pasted_objects_come_from_images_drawn_by_the_sampling_weights(synthetic_root):
    dataset = VOCSegmentation(synthetic_root, "train", with_instances=True)
    config = DataConfig(root=str(synthetic_root), crop_size=40, copy_paste=1.0)
    weights = torch.ones(len(dataset))
    weights[3] = 3.0 * (len(dataset) - 1)  # image 3: three quarters of the draws
    samples = TrainingSamples(dataset, config, seed=0, weights=weights)
    draws = [samples._paste_source(np.random.default_rng(k)) for k in range(4000)]
    assert np.mean(np.array(draws) == 3) == pytest.approx(0.75, abs=0.03)
    assert set(draws) == set(range(len(dataset)))  # every image can still be a source
    uniform = TrainingSamples(dataset, config, seed=0)
    draws = [uniform._paste_source(np.random.default_rng(k)) for k in range(4000)]
    assert np.mean(np.array(draws) == 3) == pytest.approx(1 / len(dataset), abs=0.03)


def test_class_weights_weight_the_mean_over_kept_pixels():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64).T.reshape(1, 2, 1, 3)
    target = torch.tensor([1, 0, 1]).view(1, 1, 3)
    nll = [-math.log(math.exp(1) / (1 + math.exp(1))), -math.log(math.exp(2) / (1 + math.exp(2))), math.log(2)]
    weights = torch.tensor([1.0, 3.0], dtype=torch.float64)
    loss = bootstrapped_cross_entropy(logits, target, bootstrap=False, class_weights=weights)
    assert loss.item() == pytest.approx((3 * nll[0] + nll[1] + 3 * nll[2]) / 7)
    plain = bootstrapped_cross_entropy(logits, target, bootstrap=False)
    assert plain.item() == pytest.approx(sum(nll) / 3)


def test_colour_jitter_changes_colours_not_layout():
    rng = np.random.default_rng(0)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[2:6, 2:6] = (200, 40, 40)
    jittered = jitter_colors(image, rng, 0.4)
    assert jittered.shape == image.shape and jittered.dtype == np.uint8
    assert not np.array_equal(jittered, image)
    inside, outside = jittered[2:6, 2:6].reshape(-1, 3), jittered[0, 0]
    assert (inside == inside[0]).all() and (jittered[:2] == outside).all()  # flat regions stay flat
    assert np.array_equal(jitter_colors(image, rng, 0.0), image)


def test_colour_jitter_is_the_colour_transform_then_contrast_about_its_mean():
    """Against the two steps written out in float64: the pixels' colour transform (brightness,
    saturation, hue), then contrast about the mean of the transformed pixels; rounding only."""
    image = np.random.default_rng(1).integers(0, 256, (9, 7, 3)).astype(np.uint8)
    out = jitter_colors(image, np.random.default_rng(5), 0.4)
    rng = np.random.default_rng(5)
    brightness, contrast, saturation = rng.uniform(0.6, 1.4, 3)
    angle = rng.uniform(-0.4, 0.4) * np.pi / 2
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rotate = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    transformed = image.astype(np.float64) @ (np.linalg.inv(to_yiq) @ (rotate * [1, saturation, saturation])
                                              @ to_yiq).T * brightness
    expected = np.clip((transformed - transformed.mean()) * contrast + transformed.mean(), 0, 255)
    assert np.abs(out - expected).max() <= 0.51


def test_pasted_objects_keep_compact_labels_apart_from_the_void_value():
    """uint8 maps (the sample cache's) whose ids would reach 255 after the offset skip it."""
    target = {"image": np.zeros((4, 4, 3), np.uint8), "semantic": np.ones((4, 4), np.uint8),
              "instance": np.full((4, 4), 254, np.uint8)}
    source = {"image": np.ones((4, 4, 3), np.uint8), "semantic": np.zeros((4, 4), np.uint8),
              "instance": np.zeros((4, 4), np.uint8)}
    source["semantic"][:2], source["instance"][:2] = 2, 1
    out = paste_objects(target, source, np.random.default_rng(0), keep=1.0)
    assert (out["instance"][:2] == 256).all() and (out["instance"][2:] == 254).all()  # 254 + 1 = 255 is void
    assert (out["semantic"][:2] == 2).all() and (out["semantic"][2:] == 1).all()


def test_pasted_objects_take_new_ids_and_occlude():
    target = {"image": np.zeros((6, 6, 3), np.uint8), "semantic": np.zeros((6, 6), np.int64),
              "instance": np.zeros((6, 6), np.int64)}
    target["semantic"][0:3, 0:3], target["instance"][0:3, 0:3] = 1, 1
    source = {"image": np.full((6, 6, 3), 9, np.uint8), "semantic": np.zeros((6, 6), np.int64),
              "instance": np.zeros((6, 6), np.int64)}
    source["semantic"][2:5, 2:5], source["instance"][2:5, 2:5] = 2, 1
    source["semantic"][5, 2:5] = VOID  # the boundary band under the pasted object
    out = paste_objects(target, source, np.random.default_rng(0), keep=1.0)
    assert (out["semantic"][2:5, 2:5] == 2).all() and (out["instance"][2:5, 2:5] == 2).all()
    assert (out["image"][2:5, 2:5] == 9).all() and (out["image"][0, 0] == 0).all()
    assert out["instance"][0, 0] == 1 and out["instance"][2, 2] == 2  # the first object is occluded there
    assert (out["semantic"][5, 2:5] == VOID).all() and (out["semantic"][5, 0] == 0)


def test_augmented_samples_stay_reproducible(synthetic_root):
    dataset = VOCSegmentation(synthetic_root, "train", with_instances=True)
    config = DataConfig(root=str(synthetic_root), crop_size=40, color_jitter=0.3, copy_paste=1.0)
    samples = TrainingSamples(dataset, config, seed=7)
    a, b = samples[(2, 11)], samples[(2, 11)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["instance"], b["instance"])
    plain = TrainingSamples(dataset, DataConfig(root=str(synthetic_root), crop_size=40), seed=7)[(2, 11)]
    assert not torch.equal(plain["instance"], a["instance"])  # objects were pasted in
