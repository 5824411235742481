"""Tests for inference: multi-view testing and sliding window (tta), the Predictor, output files, RLE."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import bridgeseg.geometry as geometry
import bridgeseg.tta as tta
from bridgeseg.checkpoint import save_checkpoint
from bridgeseg.config import Config, ModelConfig
from bridgeseg.data.io import read_label
from bridgeseg.engine.predict import predict_files
from bridgeseg.geometry import resize_to_input, upsampled_argmax
from bridgeseg.grouping import Instances, group_instances
from bridgeseg.models.build import build_model
from bridgeseg.outputs import CocoResults, rle_compress, rle_decode, rle_encode, write_instance_map
from bridgeseg.predictor import Prediction, Predictor
from bridgeseg.targets import box_targets
from bridgeseg.tta import View, make_views, network_maps, predict_maps, predict_views, tile_origins, undo_view_transforms

CLASS_NAMES = ("background", "disc", "block", "bar")
MEAN, STD = Config().data.mean, Config().data.std


# ------------------------------------------------------------------------------------------------
# A fake network that reads the instances off the image
# ------------------------------------------------------------------------------------------------

# instance id -> (colour, class); id 0 is the black background
SCENE_COLOURS = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
SCENE_CLASSES = [0, 1, 1, 2, 3, 2]


class ColourNet(nn.Module):
    """FCRN interface without learning: each pixel's instance is the nearest scene colour.

    Returns one-hot class logits x 10 and the ground-truth transforms (``targets.box_targets`` of
    the decoded instance map) sampled on the output grid, so its predictions move with the image
    exactly as a perfectly equivariant network's would.
    """

    def __init__(self, output_stride: int = 8, heads: tuple[str, ...] = ("semantic", "localization")) -> None:
        super().__init__()
        self.output_stride = output_stride
        self.heads = heads
        self.register_buffer("colours", torch.tensor(SCENE_COLOURS, dtype=torch.float).view(1, -1, 3, 1, 1))
        self.register_buffer("classes", torch.tensor(SCENE_CLASSES))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = (x * self.std + self.mean) * 255
        ids = ((rgb.unsqueeze(1) - self.colours) ** 2).sum(2).argmin(1)  # (N, H, W)
        semantic = self.classes[ids]
        s, num_classes = self.output_stride, len(CLASS_NAMES)
        outputs = {}
        if "semantic" in self.heads:
            outputs["semantic"] = F.one_hot(semantic[:, ::s, ::s], num_classes).permute(0, 3, 1, 2).float() * 10
        if "localization" in self.heads:
            targets = box_targets(ids, semantic, num_classes, stride=s)
            n, _, h, w = targets.transforms.shape
            maps = torch.zeros(n, num_classes - 1, 4, h, w)
            index = (targets.classes - 1).clamp(min=0).view(n, 1, 1, h, w).expand(n, 1, 4, h, w)
            maps.scatter_(1, index, targets.transforms.unsqueeze(1))
            keep = (targets.classes > 0).view(n, 1, 1, h, w)
            outputs["localization"] = (maps * keep).view(n, 4 * (num_classes - 1), h, w)
        return outputs


def scene(height: int = 192, width: int = 256, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image of 5 separated shapes on black, and its (H, W) instance ids.

    The shapes are laid out for 192 x 256 pixels and magnified by ``zoom``.
    """
    ys, xs = np.mgrid[0:height, 0:width] / zoom
    ids = np.zeros((height, width), dtype=np.int64)
    ids[(ys - 50) ** 2 / 38 ** 2 + (xs - 55) ** 2 / 42 ** 2 <= 1] = 1  # disc
    ids[(ys - 140) ** 2 + (xs - 60) ** 2 <= 36 ** 2] = 2  # disc
    ids[(ys >= 20) & (ys < 90) & (xs >= 118) & (xs < 180)] = 3  # block
    ids[(ys >= 110) & (ys < 175) & (xs >= 122) & (xs < 240)] = 4  # bar
    ids[(ys >= 15) & (ys < 95) & (xs >= 195) & (xs < 245)] = 5  # block
    return np.asarray(SCENE_COLOURS, dtype=np.uint8)[ids], ids


def colour_predictor(**kwargs) -> Predictor:
    return Predictor(ColourNet(), CLASS_NAMES, Config(), "cpu", **kwargs)


def match_instances(a: Instances, b: Instances, iou: float = 0.9, box_iou: float | None = None) -> None:
    """Every instance of ``a`` has a distinct same-class instance of ``b`` with mask IoU > ``iou``."""
    assert len(a) == len(b), f"{len(a)} vs {len(b)} instances"
    free = list(range(len(b)))
    for mask, label, box in zip(a.masks, a.labels.tolist(), a.boxes):
        overlaps = [((mask & b.masks[j]).sum() / (mask | b.masks[j]).sum()).item() for j in free]
        best = int(np.argmax(overlaps))
        j = free[best]
        assert overlaps[best] > iou, f"class-{label} instance: best mask IoU {overlaps[best]:.3f}"
        assert int(b.labels[j]) == label
        if box_iou is not None:
            from torchvision.ops import box_iou as iou_of

            assert iou_of(box[None], b.boxes[j][None]).item() > box_iou, f"boxes {box.tolist()} vs {b.boxes[j].tolist()}"
        free.pop(best)


def view_instances(views, image: np.ndarray | None = None) -> Instances:
    image = scene()[0] if image is None else image
    predictor = colour_predictor()
    maps = predict_views(predictor.model, predictor.to_tensor(image), 8, views)[0]
    return group_instances(maps.probs, maps.transforms, maps.stride, image.shape[:2], predictor.instance_config)


def truth_instances(ids: np.ndarray) -> Instances:
    keys = [k for k in np.unique(ids) if k]
    masks = torch.from_numpy(np.stack([ids == k for k in keys]))
    rows = [np.nonzero(m.any(1))[0] for m in masks.numpy()]
    cols = [np.nonzero(m.any(0))[0] for m in masks.numpy()]
    boxes = torch.tensor([[c[0] - .5, r[0] - .5, c[-1] + .5, r[-1] + .5] for r, c in zip(rows, cols)])
    return Instances(masks, torch.tensor([SCENE_CLASSES[k] for k in keys]), torch.ones(len(keys)), boxes)


# ------------------------------------------------------------------------------------------------
# Multi-view equivariance
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_scene() -> tuple[np.ndarray, Instances]:
    """A 384 x 512 scene (objects of 100-240 px) and its single-view instances."""
    image, ids = scene(384, 512, zoom=2.0)
    single = view_instances([View()], image)
    match_instances(truth_instances(ids), single, iou=0.9, box_iou=0.95)  # the fake network works
    return image, single


# a half-size view alone predicts at twice the stride: its masks are coarser than the single view's
@pytest.mark.parametrize("views, mask_iou", [([View(1.0, True)], 0.9), ([View(2.0)], 0.9), ([View(0.5)], 0.8),
                                             ([View(0.5, True)], 0.8), (make_views((0.5, 1.0, 2.0), flip=True), 0.9)],
                         ids=["mirror", "scale2", "scale0.5", "scale0.5-mirror", "3-scales-x-flip"])
def test_views_give_the_single_view_instances(big_scene, views, mask_iou):
    image, single = big_scene
    match_instances(single, view_instances(views, image), iou=mask_iou, box_iou=0.95)


def _forgets_dx(transforms, scale_y, scale_x, flip):
    return undo_view_transforms(transforms, scale_y, scale_x, flip=False)


def _forgets_scale(transforms, scale_y, scale_x, flip):
    return undo_view_transforms(transforms, 1.0, 1.0, flip)


@pytest.mark.parametrize("wrong, views", [(_forgets_dx, [View(1.0, True)]), (_forgets_dx, make_views((1.0,), True)),
                                          (_forgets_scale, [View(2.0)]), (_forgets_scale, [View(0.5)])],
                         ids=["mirror-no-negation", "flip-average-no-negation", "scale2-no-log", "scale0.5-no-log"])
def test_a_wrong_detransformation_is_caught(big_scene, monkeypatch, wrong, views):
    image, single = big_scene
    match_instances(single, view_instances(views, image), iou=0.8, box_iou=0.95)  # right: passes
    monkeypatch.setattr(tta, "undo_view_transforms", wrong)
    with pytest.raises(AssertionError):
        match_instances(single, view_instances(views, image), iou=0.8, box_iou=0.95)


def _targets(ids: torch.Tensor) -> torch.Tensor:
    """(4, H, W) stride-1 ground-truth transforms of an (H, W) instance map (one class)."""
    return box_targets(ids[None], (ids > 0).long()[None], 2, stride=1).transforms


def _rectangle() -> torch.Tensor:
    ids = torch.zeros(40, 50, dtype=torch.long)
    ids[5:25, 10:41] = 1
    return ids


def test_undo_view_transforms_inverts_a_mirror_exactly():
    ids = _rectangle()
    mirrored = _targets(ids.flip(-1))
    restored = undo_view_transforms(mirrored, 1.0, 1.0, flip=True).flip(-1)
    torch.testing.assert_close(restored, _targets(ids), rtol=0, atol=1e-6)
    assert not torch.allclose(mirrored.flip(-1), _targets(ids), atol=1e-3)  # forgetting the negation is wrong


def test_undo_view_transforms_removes_the_scale_from_log_sizes():
    ids = _rectangle()
    resized = ids.repeat_interleave(2, 0).repeat_interleave(3, 1)  # a 2 x 3 (H x W) nearest resize
    restored = undo_view_transforms(_targets(resized), 2.0, 3.0, flip=False)[0]
    original = _targets(ids)[0]
    for channel, size in ((2, 20), (3, 31)):
        assert torch.allclose(original[channel][ids > 0], torch.tensor(math.log(size / 64)))
        assert torch.allclose(restored[channel][resized > 0], torch.tensor(math.log(size / 64)), atol=1e-6)
    # the offsets are relative to the box: within [-0.5, 0.5] and unchanged in range
    assert restored[:2][:, resized > 0].abs().max() <= 0.5


def test_views_and_sizes():
    assert make_views((0.5, 1.0), flip=True) == [View(0.5), View(0.5, True), View(1.0), View(1.0, True)]
    with pytest.raises(ValueError, match="> 0"):
        make_views((0.0,))
    assert tta.view_size((97, 131), 0.5) == (48, 66)


def test_semantic_only_model_gives_no_transforms():
    predictor = Predictor(ColourNet(heads=("semantic",)), CLASS_NAMES, Config(), "cpu", scales=(1.0, 2.0), flip=True)
    image, ids = scene(96, 128, 0.5)
    prediction = predictor(image)
    assert prediction.instances is None and prediction.semantic.shape == (96, 128)
    truth = np.asarray(SCENE_CLASSES)[ids]
    assert (prediction.semantic == truth).mean() > 0.85  # stride-8 class maps of 20-60 px shapes
    maps = predict_maps(ColourNet(heads=("localization",)), predictor.to_tensor(image), 8, (1.0, 2.0))
    assert maps.probs is None and maps.semantic is None and maps.transforms.shape == (12, 12, 16)


# ------------------------------------------------------------------------------------------------
# Image-resolution argmax and sliding window
# ------------------------------------------------------------------------------------------------

def test_chunked_argmax_matches_resize_to_input(monkeypatch):
    probs = torch.rand(5, 7, 9)
    expected = resize_to_input(probs[None], (50, 67), 8).argmax(1)[0]
    monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", 5 * 67 * 3)  # 3 rows per chunk
    assert torch.equal(upsampled_argmax(probs, 8, (50, 67)), expected)
    block = torch.cat([b for _, b in geometry.upsampled_rows(probs, 8, (50, 67))], dim=1)
    torch.testing.assert_close(block, resize_to_input(probs[None], (50, 67), 8)[0], rtol=0, atol=1e-6)


def test_tile_origins_are_aligned_and_cover():
    for length, tile, overlap in [(100, 48, 0.33), (1024, 512, 0.33), (2048, 500, 0.5), (47, 64, 0.3), (65, 64, 0.0)]:
        origins = tile_origins(length, tile, 16, overlap)
        assert origins[0] == 0 and all(o % 16 == 0 for o in origins)
        assert origins[-1] + tile >= length and origins[-1] < length
        assert all(b - a <= tile * (1 - overlap) + 1e-9 for a, b in zip(origins, origins[1:]))
    with pytest.raises(ValueError, match="output stride"):
        tile_origins(100, 8, 16, 0.3)


@pytest.fixture(scope="module")
def random_fcrn() -> nn.Module:
    """A random ResNet-18 FCRN (OS 16, joint heads) in eval mode with a receptive field of about 64 px.

    ``zero_init_residual`` makes every residual branch exactly 0 at initialisation; random BN
    scales in layer1 and layer2 turn those branches on (a dense 64 px receptive field: layer3 and
    layer4 alone would see hundreds of pixels and leave no tile interior in a small test image).
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="joint", depth=18, output_stride=16, kernel=3, dilation=1, init="random"),
                        len(CLASS_NAMES)).eval()
    with torch.no_grad():
        for stage in (model.backbone.layer1, model.backbone.layer2):
            for module in stage.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
        model.heads["semantic"].conv.weight.mul_(100)  # class scores that vary visibly
        model.heads["localization"].conv.weight.mul_(20)
    return model


def _interior(length: int, tile: int, overlap: float, margin: int, stride: int = 16) -> torch.Tensor:
    """(cells,) bool: grid positions at least ``margin`` cells from every covering tile's inner edges."""
    cells = -(-length // stride)
    ok = torch.ones(cells, dtype=torch.bool)
    for origin in tile_origins(length, tile, stride, overlap):
        first, end = origin // stride, -(-min(origin + tile, length) // stride)
        index = torch.arange(cells)
        covered = (index >= first) & (index < end)
        near = torch.zeros(cells, dtype=torch.bool)
        if origin > 0:
            near |= index < first + margin
        if origin + tile < length:
            near |= index >= end - margin
        ok &= ~(covered & near)
    return ok


def test_sliding_window_matches_the_whole_image(random_fcrn):
    image = torch.randn(1, 3, 480, 608, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the receptive field: an impulse changes outputs at most 64 px (4 cells) away
        base = random_fcrn(image)["semantic"]
        for y, x in [(240, 304), (248, 312), (200, 264)]:
            bumped = image.clone()
            bumped[..., y, x] += 100
            cells = ((random_fcrn(bumped)["semantic"] - base).abs().amax(1)[0] > 0).nonzero()
            assert len(cells) and (cells * 16 - torch.tensor([y, x])).abs().max() <= 64
    whole = predict_maps(random_fcrn, image, 16)
    tiled = predict_maps(random_fcrn, image, 16, tile_size=352, tile_overlap=0.5)
    # exact wherever every covering tile holds the position 5 cells (80 px) or more from its inner edges
    interior = _interior(480, 352, 0.5, 5)[:, None] & _interior(608, 352, 0.5, 5)[None, :]
    assert interior.float().mean() > 0.3
    torch.testing.assert_close(tiled.probs[:, interior], whole.probs[:, interior], rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled.transforms[:, interior], whole.transforms[:, interior], rtol=1e-4, atol=1e-4)
    assert (tiled.semantic == whole.semantic).float().mean() > 0.99
    assert not torch.allclose(tiled.probs, whole.probs, atol=1e-4)  # the inner tile edges do differ


def test_single_tile_is_the_whole_image(random_fcrn):
    image = torch.randn(1, 3, 64, 80)
    whole, tiled = network_maps(random_fcrn, image, 16), network_maps(random_fcrn, image, 16, tile_size=96)
    assert all(torch.equal(a, b) for a, b in zip(whole, tiled))


def test_sliding_window_with_views_and_batches(random_fcrn):
    images = torch.randn(2, 3, 80, 112, generator=torch.Generator().manual_seed(2))
    views = make_views((1.0, 1.5), flip=True)
    batch = predict_views(random_fcrn, images, 16, views, tile_size=96, tile_overlap=0.4)
    for index, maps in enumerate(batch):
        alone = predict_views(random_fcrn, images[index:index + 1], 16, views, tile_size=96, tile_overlap=0.4)[0]
        assert maps.probs.shape == (4, 5, 7) and maps.transforms.shape == (12, 5, 7) and maps.semantic.shape == (80, 112)
        torch.testing.assert_close(maps.probs, alone.probs, rtol=1e-4, atol=1e-5)  # batched convolutions round
        torch.testing.assert_close(maps.transforms, alone.transforms, rtol=1e-4, atol=5e-4)  # differently


# ------------------------------------------------------------------------------------------------
# Predictor
# ------------------------------------------------------------------------------------------------

def _save(model: nn.Module, path, **eval_settings):
    config = Config(model=ModelConfig(arch="joint", depth=18, output_stride=16, kernel=3, dilation=1, init="random"))
    if eval_settings:
        config = config.replace(**{f"eval.{key}": value for key, value in eval_settings.items()})
    return save_checkpoint({"model": model.state_dict(), "config": config.to_dict(), "class_names": list(CLASS_NAMES),
                            "step": 0}, path)


@pytest.fixture(scope="module")
def checkpoint(random_fcrn, tmp_path_factory):
    return _save(random_fcrn, tmp_path_factory.mktemp("ckpt") / "model.pt")


def _same(a: Prediction, b: Prediction) -> None:
    assert np.array_equal(a.semantic, b.semantic)
    assert len(a.instances) == len(b.instances)
    assert torch.equal(a.instances.masks, b.instances.masks) and torch.equal(a.instances.labels, b.instances.labels)
    torch.testing.assert_close(a.instances.scores, b.instances.scores)


def test_arrays_paths_and_pil_images_agree(checkpoint, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert predictor.class_names == CLASS_NAMES and predictor.device == torch.device("cpu")
    assert predictor.config.model.depth == 18 and predictor.views == [View()]
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    from_array = predictor(image, return_probs=True)
    _same(from_array, predictor(str(tmp_path / "image.png")))
    _same(from_array, predictor(tmp_path / "image.png"))
    _same(from_array, predictor(Image.open(tmp_path / "image.png")))
    assert from_array.semantic.dtype == np.int64 and from_array.semantic.shape == (70, 90)
    assert from_array.probs.shape == (4, 70, 90) and from_array.probs.dtype == np.float32
    assert np.array_equal(from_array.probs.argmax(0), from_array.semantic)
    assert from_array.instances.masks.device.type == "cpu"
    with pytest.raises(ValueError, match="uint8"):
        predictor(image.astype(np.float32))


def test_checkpoint_settings_are_the_defaults(random_fcrn, tmp_path):
    path = _save(random_fcrn, tmp_path / "m.pt", scales=[0.5, 1.0], flip=True, tile_size=64)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.views == make_views((0.5, 1.0), True) and predictor.tile_size == 64
    predictor = Predictor.from_checkpoint(path, device="cpu", scales=[1.0], flip=False, tile_size=0)
    assert predictor.views == [View()] and predictor.tile_size == 0


def test_batch_equals_one_by_one(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", scales=(1.0, 0.5), flip=True)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(64, 80, 3), (48, 64, 3), (64, 80, 3),
                                                                       (64, 80, 3)]]
    batched = predictor.predict_batch(images, batch_size=2)
    for image, prediction in zip(images, batched):
        alone = predictor(image)
        assert prediction.semantic.shape == image.shape[:2]
        assert (prediction.semantic == alone.semantic).mean() > 0.999
    # exact for a network whose outputs do not depend on the batch
    colour = colour_predictor(scales=(1.0, 0.5), flip=True)
    scenes = [scene(96, 128, 0.5)[0], scene(96, 128, 0.5)[0][:, ::-1].copy(), scene(64, 96, 0.5)[0]]
    for prediction, image in zip(colour.predict_batch(scenes, batch_size=2), scenes):
        _same(prediction, colour(image))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictions_match_cpu(checkpoint):
    image = np.random.default_rng(2).integers(0, 256, (96, 120, 3), dtype=np.uint8)
    settings = dict(scales=(0.75, 1.0), flip=True, tile_size=64)
    on_cpu = Predictor.from_checkpoint(checkpoint, device="cpu", **settings)(image, return_probs=True)
    on_gpu = Predictor.from_checkpoint(checkpoint, device="cuda", **settings)(image, return_probs=True)
    np.testing.assert_allclose(on_gpu.probs, on_cpu.probs, atol=1e-2)  # cuDNN may use TF32
    assert (on_gpu.semantic == on_cpu.semantic).mean() > 0.99
    assert on_gpu.instances.masks.device.type == "cpu"


# ------------------------------------------------------------------------------------------------
# JSON and RLE
# ------------------------------------------------------------------------------------------------

def test_rle_round_trip():
    rng = np.random.default_rng(0)
    masks = [rng.random((13, 17)) > 0.5, np.zeros((4, 5), bool), np.ones((4, 5), bool), np.eye(6, dtype=bool),
             np.zeros((0, 3), bool)]
    for mask in masks:
        rle = rle_encode(mask)
        assert rle["size"] == list(mask.shape) and sum(rle["counts"]) == mask.size
        assert np.array_equal(rle_decode(rle), mask)
    assert rle_encode(np.array([[0, 1], [1, 1]], bool))["counts"] == [1, 3]  # column-major, zeros first
    assert rle_encode(np.array([[1, 0], [1, 0]], bool))["counts"] == [0, 2, 2]
    assert rle_encode(torch.tensor([[True, False]]))["counts"] == [0, 1, 1]
    with pytest.raises(ValueError, match="pixels"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_rle_is_pycocotools_compatible():
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed")
    mask = np.random.default_rng(1).random((21, 34)) > 0.4
    ours = rle_encode(mask)
    compressed = mask_utils.frPyObjects(ours, *ours["size"])
    assert np.array_equal(mask_utils.decode(compressed).astype(bool), mask)
    theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert compressed["counts"] == theirs["counts"]  # the same canonical runs
    assert mask_utils.area(theirs) == mask.sum() and np.array_equal(mask_utils.decode(theirs).astype(bool), mask)


def test_compressed_rle_is_pycocotools_own_and_coco_reads_our_results(tmp_path):
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed")
    from pycocotools.coco import COCO

    rng = np.random.default_rng(2)
    masks = [rng.random((37, 23)) > 0.6, np.zeros((5, 4), bool), np.ones((5, 4), bool), rng.random((200, 300)) > 0.01]
    for mask in masks:
        theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle_compress(rle_encode(mask))["counts"] == theirs["counts"].decode("ascii")
    results = CocoResults()
    results.add("a", (37, 23), masks[:1], [2], [0.9])
    path = results.write(tmp_path, ("background", "x", "y"))
    ground_truth = COCO()
    ground_truth.dataset = {**json.loads((tmp_path / "images.json").read_text()), "annotations": []}
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(str(path))
    assert np.array_equal(loaded.annToMask(loaded.loadAnns(loaded.getAnnIds())[0]).astype(bool), masks[0])


def test_prediction_json_and_instance_map():
    image, ids = scene(96, 128, 0.5)
    prediction = colour_predictor()(image)
    record = prediction.to_json()
    assert record["image_size"] == [96, 128] and record["class_names"] == list(CLASS_NAMES)
    assert len(record["instances"]) == 5
    instance_map = prediction.instance_map()
    for item, mask in zip(record["instances"], prediction.instances.masks.numpy()):
        assert item["class_name"] == CLASS_NAMES[item["class_id"]] and 0 < item["score"] <= 1
        assert np.array_equal(rle_decode(item["mask"]), mask) and item["area"] == mask.sum()
        assert (instance_map[mask] == item["id"]).mean() > 0.95
        x0, y0, x1, y1 = item["box"]
        assert x0 < x1 and y0 < y1
    json.dumps(record)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def test_predict_files_writes_outputs_and_skips_a_corrupt_image(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    image, _ = scene(96, 128, 0.5)
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image[:80, :100]).save(folder / "b.jpg", quality=98)
    (folder / "c.jpg").write_bytes((folder / "b.jpg").read_bytes()[:300])  # truncated JPEG
    (folder / "notes.txt").write_text("not an image")
    extra = tmp_path / "more"
    extra.mkdir()
    Image.fromarray(image[:, ::-1]).save(extra / "d.bmp")
    out = tmp_path / "out"
    summary = predict_files(colour_predictor(), [str(folder), str(extra / "*.bmp")], out, progress=False)
    assert summary.images == 3 and len(summary.failed) == 1 and "c.jpg" in summary.failed[0][0]
    assert "c.jpg" in capsys.readouterr().err
    text = summary.format()
    assert "1 failed" in text and "c.jpg" in text and "disc" in text
    assert summary.instances_per_class["disc"] >= 4
    for stem, suffix, height, width in [("a", ".png", 96, 128), ("b", ".jpg", 80, 100), ("d", ".bmp", 96, 128)]:
        semantic = Image.open(out / f"{stem}_semantic.png")
        assert semantic.mode == "P" and semantic.size == (width, height)
        instances = read_label(out / f"{stem}_instances.png")
        assert instances.shape == (height, width) and instances.max() >= 3
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image_size"] == [height, width] and record["image"].endswith(stem + suffix)
        assert instances.max() == len(record["instances"])
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.width == width and overlay.height > height  # the legend strip below
    assert not (out / "c_semantic.png").exists()
    assert np.array_equal(read_label(out / "a_semantic.png"), colour_predictor()(image).semantic)


def test_inputs_that_match_nothing_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        predict_files(colour_predictor(), [str(tmp_path / "nothing_here" / "*.jpg")], tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        predict_files(colour_predictor(), [str(tmp_path / "empty")], tmp_path / "out", progress=False)


def test_many_instances_use_a_16_bit_png(tmp_path):
    ids = np.arange(20 * 20, dtype=np.int32).reshape(20, 20)
    write_instance_map(tmp_path / "ids.png", ids)
    assert Image.open(tmp_path / "ids.png").mode.startswith("I") and np.array_equal(read_label(tmp_path / "ids.png"), ids)
    write_instance_map(tmp_path / "few.png", ids % 200)
    assert Image.open(tmp_path / "few.png").mode == "L"
