"""The one path from an image to its class map and instances.

``Predictor`` holds a network and its test-time settings (``eval:`` views and tiles,
``instance:`` grouping). ``predictor.maps(pixels)`` runs the network over the views
(``bridgeseg.tta``); ``find_instances(maps, image_size, settings)`` turns one image's maps into
instances; ``predictor(image)`` does both and returns a ``Prediction``. ``bridgeseg predict``,
``predict-dataset``, ``evaluate``, the evaluation during training and the demo all go through
these two steps, so they cannot drift apart.

Which settings: a ``Predictor`` made ``from_checkpoint`` uses the checkpoint's own ``eval`` and
``instance`` sections unless given others (``bridgeseg predict --set ...``); ``evaluate`` and
``predict-dataset`` give it those of the config they are run with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .components import connected_component_instances
from .config import Config, ConfigError, EvalConfig, InstanceConfig, parse_override
from .data.augment import normalize
from .data.io import image_to_rgb, read_image
from .distributed import resolve_device
from .geometry import upsampled_probs
from .grouping import Instances, group_instances
from .models.build import load_trained_models
from .outputs import prediction_record
from .tta import ImageMaps, make_views, predict_views


def find_instances(maps: ImageMaps, image_size: tuple[int, int], settings: InstanceConfig,
                   thing_classes: Sequence[int] | None = None) -> Instances | None:
    """One image's instances from its maps: the paper's grouping (section 2.1 steps 3-6), or with
    ``instance.method: connected_components`` the regions of its class map; None when the grouping
    has no transforms.

    Args:
        maps: probabilities (C, h, w) and transforms (4 (C - 1), h, w) on a grid of ``maps.stride``,
            the class map (H, W).
        image_size: (H, W) of the image.
        settings: the ``instance:`` config section.
        thing_classes: the classes that have instances (None: every foreground class).

    Returns:
        ``Instances`` on the maps' device, masks (K, H, W), by descending score.
    """
    if maps.probs is None:
        raise ValueError("finding instances needs class probabilities (a semantic head, or --oracle semantic)")
    confidences = maps.probs if maps.confidences is None else maps.confidences
    if settings.method == "connected_components":
        return connected_component_instances(maps.semantic, confidences, maps.stride, settings, thing_classes)
    if maps.transforms is None:
        return None
    return group_instances(maps.probs, maps.transforms, maps.stride, image_size, settings, class_map=maps.semantic,
                           confidences=confidences, classes=thing_classes)


def load_image(image) -> np.ndarray:
    """A path (str/Path), PIL image or (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 RGB array
    (files and PIL images of any kind ``data.io.image_to_rgb`` reads).

    Raises:
        FileNotFoundError / ValueError naming the file for a missing or corrupt file; ValueError
        for an array of another shape or dtype.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return image_to_rgb(image)  # as a file of that image is read: 16-bit scaled, EXIF applied, ...
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype "
                             f"{image.dtype}; convert with np.asarray(PIL.Image.open(path).convert('RGB'))")
        return image
    raise TypeError(f"cannot predict on a {type(image).__name__}; give a path, a PIL image or an (H, W, 3) "
                    "uint8 array")


@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        semantic: (H, W) int64 class per pixel.
        instances: ``Instances`` on the CPU (masks (K, H, W) bool, labels, scores, boxes), by
            descending score; None when the model has no localization head.
        class_names: C names, background first.
        probs: (C, H, W) float32 class probabilities, only when asked for (``return_probs``).
    """

    semantic: np.ndarray
    instances: Instances | None
    class_names: tuple[str, ...]
    probs: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.semantic.shape[0]), int(self.semantic.shape[1])

    def instance_map(self) -> np.ndarray:
        """(H, W) int32 instance ids 1..K (K = number of instances, in ``instances`` order), 0 elsewhere.

        Where masks overlap, the higher-scoring instance wins.
        """
        out = np.zeros(self.image_size, dtype=np.int32)
        if self.instances is None:
            return out
        masks = self.instances.masks.cpu().numpy()
        for index in range(len(masks) - 1, -1, -1):  # lowest score first; better ones paint over it
            out[masks[index]] = index + 1
        return out

    def to_json(self) -> dict:
        """The JSON record of ``bridgeseg predict`` (``outputs.prediction_record``)."""
        return prediction_record(self)


def _test_time_overrides(overrides: Sequence[str]) -> dict:
    """``{"section.key": value}`` of ``--set`` strings, refusing keys that are not test-time settings."""
    pairs = dict(parse_override(text) for text in overrides)
    other = [key for key in pairs if key.split(".")[0] not in ("eval", "instance")]
    if other:
        raise ConfigError(f"{other[0]} cannot be changed at prediction time (the network is the checkpoint's); "
                          "--set takes eval.* and instance.* keys here")
    return pairs


def _settings(config: Config, scales, flip, tile_size, tile_overlap) -> EvalConfig:
    """``config.eval`` with the given view and tile options replaced (None: keep), validated."""
    changes = {key: value for key, value in (("scales", None if scales is None else tuple(scales)), ("flip", flip),
                                             ("tile_size", tile_size), ("tile_overlap", tile_overlap))
               if value is not None}
    return dataclasses.replace(config.eval, **changes)


class Predictor:
    """A trained network plus its test-time settings: images in, ``Prediction`` out.

    Args:
        model: the network; it is moved to ``device`` and put in eval mode. ``model.heads`` says
            which maps it produces.
        class_names: C names, background first.
        config: the training config (normalisation from ``config.data``; test-time defaults from
            ``config.eval`` / ``config.instance``).
        device: where the network runs.
        scales, flip, tile_size, tile_overlap: override ``config.eval``'s (None: keep).
        instance_config: grouping settings (None: ``config.instance``).
        thing_classes: the classes that have instances (None: every foreground class).
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], config: Config,
                 device: str | torch.device = "cpu", scales: Sequence[float] | None = None,
                 flip: bool | None = None, tile_size: int | None = None, tile_overlap: float | None = None,
                 instance_config: InstanceConfig | None = None, thing_classes: Sequence[int] | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        self.config = config
        self.output_stride = int(model.output_stride)
        self.eval_config = _settings(config, scales, flip, tile_size, tile_overlap)
        self.views = make_views(self.eval_config.scales, self.eval_config.flip)
        self.tile_size, self.tile_overlap = self.eval_config.tile_size, self.eval_config.tile_overlap
        if self.tile_size and self.tile_size < self.output_stride:
            raise ValueError(f"tile size {self.tile_size} is smaller than the output stride {self.output_stride}; "
                             f"use 0 (whole images) or at least {self.output_stride}")
        self.instance_config = instance_config or config.instance
        self.thing_classes = tuple(range(1, len(self.class_names))) if thing_classes is None else tuple(thing_classes)

    @classmethod
    def from_checkpoint(cls, path: str | Path | Sequence[str | Path], device: str | torch.device = "auto",
                        scales: Sequence[float] | None = None, flip: bool | None = None,
                        tile_size: int | None = None, instance_config: InstanceConfig | None = None,
                        tile_overlap: float | None = None, eval_config: EvalConfig | None = None,
                        overrides: Sequence[str] = ()) -> "Predictor":
        """Load a training checkpoint (or a semantic and a localization one trained apart, see
        ``models.build.load_trained_models``) with its own test-time settings, changed by (in this
        order) ``overrides`` (``eval.*`` / ``instance.*`` ``key=value`` strings, as ``--set``), then
        ``eval_config`` / ``instance_config`` (whole sections), then the single options."""
        trained = load_trained_models(path)
        config = trained.config
        if overrides:
            config = config.replace(**_test_time_overrides(overrides))
        if eval_config is not None:
            config = dataclasses.replace(config, eval=eval_config)
        return cls(trained.model, trained.class_names, config, device, scales, flip, tile_size, tile_overlap,
                   instance_config, trained.thing_classes)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) normalised float on the device (``data.augment.normalize``,
        as training batches)."""
        return normalize(pixels.to(self.device).permute(0, 3, 1, 2), self.config.data.mean, self.config.data.std)

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB array -> (1, 3, H, W) normalised float on the device."""
        return self.normalise(torch.from_numpy(np.array(array, dtype=np.uint8))[None])  # a writable copy

    def maps(self, pixels: torch.Tensor) -> list[ImageMaps]:
        """Dense maps of a batch of same-size images, (N, H, W, 3) uint8, over the test views."""
        return predict_views(self.model, self.normalise(pixels), self.output_stride, self.views, self.tile_size,
                             self.tile_overlap)

    def instances(self, maps: ImageMaps, image_size: tuple[int, int]) -> Instances | None:
        """``find_instances`` with this predictor's grouping settings and thing classes."""
        return find_instances(maps, image_size, self.instance_config, self.thing_classes)

    def __call__(self, image, return_probs: bool = False) -> Prediction:
        """Predict one image: a path, a PIL image or an (H, W, 3) uint8 RGB array."""
        return self._predict_arrays([load_image(image)], return_probs)[0]

    def predict_batch(self, images: Sequence, batch_size: int = 4, return_probs: bool = False) -> list[Prediction]:
        """Predict several images; same-size images share network batches of up to ``batch_size``.

        Returns:
            One ``Prediction`` per input, in input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = [load_image(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            groups.setdefault(array.shape[:2], []).append(index)
        results: list[Prediction | None] = [None] * len(arrays)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                for index, prediction in zip(chunk, self._predict_arrays([arrays[i] for i in chunk], return_probs)):
                    results[index] = prediction
        return results

    def _predict_arrays(self, arrays: list[np.ndarray], return_probs: bool) -> list[Prediction]:
        """Same-size (H, W, 3) uint8 arrays -> predictions, one network batch."""
        if "semantic" not in self.model.heads:
            raise ValueError("this network has only a localization head; predicting images needs class scores: use "
                             "a joint or separate checkpoint (or a semantic one for class maps alone)")
        pixels = torch.from_numpy(np.stack([np.asarray(array, dtype=np.uint8) for array in arrays]))
        image_size = tuple(arrays[0].shape[:2])
        return [self._finish(maps, image_size, return_probs) for maps in self.maps(pixels)]

    def _finish(self, maps: ImageMaps, image_size: tuple[int, int], return_probs: bool) -> Prediction:
        """Instances and conversion to CPU of one image's maps."""
        instances = self.instances(maps, image_size)
        probs = upsampled_probs(maps.probs, maps.stride, image_size) if return_probs else None
        return Prediction(maps.semantic.cpu().numpy().astype(np.int64), None if instances is None else
                          instances.to("cpu"), self.class_names, probs)
