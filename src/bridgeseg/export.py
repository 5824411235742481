"""ONNX export of a trained network (the network part only: no multi-view, no grouping).

The exported graph takes a normalised image batch ``image`` (N, 3, H, W) (``(pixel / 255 - mean) /
std`` with the checkpoint's ``data.mean`` / ``data.std``) and returns ``semantic`` logits
(N, C, h, w) and, for models with a localization head, ``localization`` transforms
(N, 4 (C - 1), h, w), both at the output stride (h = ceil(H / s), position i on pixel i * s).
Softmax, upsampling and instance grouping stay in Python (``bridgeseg.predictor``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.augment import normalize, to_tensors
from .files import check_output_file, writing
from .models.build import load_trained_model
from .predictor import load_image

OUTPUT_NAMES = ("semantic", "localization")


class _TupleOutputs(nn.Module):
    """Wraps a bridgeseg model so that it returns a tuple of its maps in ``names`` order (ONNX outputs)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(image)
        return tuple(outputs[name] for name in self.names)


def _require(package: str) -> None:
    try:
        __import__(package)
    except ImportError:
        raise ImportError(f"{package} is not installed; ONNX export/checking needs it: pip install onnx onnxruntime") \
            from None


def _load(checkpoint: str | Path) -> tuple[nn.Module, tuple[str, ...], object]:
    """(model on the CPU in eval mode, output names present, the checkpoint's config)."""
    trained = load_trained_model(checkpoint)
    model, config = trained.model, trained.config
    return model, tuple(name for name in OUTPUT_NAMES if name in model.heads), config


def export_onnx(checkpoint: str | Path, path: str | Path, image_size: tuple[int, int] = (512, 512),
                opset: int = 17, dynamic: bool = True) -> Path:
    """Export a checkpoint's network to ONNX.

    Args:
        checkpoint: a bridgeseg training checkpoint.
        path: the ``.onnx`` file to write (folders are created).
        image_size: (H, W) of the example input used for tracing (with ``dynamic``, any size runs).
        opset: ONNX opset version.
        dynamic: batch, height and width axes are dynamic; False fixes them to (1, 3, H, W).

    Returns:
        ``path``. Input ``image`` (N, 3, H, W) normalised; outputs ``semantic`` (N, C, h, w) logits
        and, if the model has one, ``localization`` (N, 4 (C - 1), h, w).
    """
    _require("onnx")
    path = check_output_file(path)
    model, names, _ = _load(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, *image_size)
    axes = None
    if dynamic:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 2: "grid_height", 3: "grid_width"} for name in names})
    with warnings.catch_warnings(), writing(path):
        # the TorchScript exporter: the torch.export-based one needs the onnxscript package and
        # cannot express ceil(H / stride) grids with dynamic shapes as simply
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_TupleOutputs(model, names), (example,), str(path), input_names=["image"],
                          output_names=list(names), dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    return path


def onnx_outputs(path: str | Path, image: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Run an exported model with onnxruntime on the CPU: normalised (N, 3, H, W) -> {name: array}."""
    _require("onnxruntime")
    import onnxruntime

    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; write it with export_onnx / bridgeseg export")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    values = session.run(None, {"image": array.astype(np.float32)})
    return {output.name: value for output, value in zip(session.get_outputs(), values)}


def _check_input(image, config) -> torch.Tensor:
    """The (N, 3, H, W) float input of ``check_onnx``."""
    if image is None:
        return torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(0))
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu()
    if isinstance(image, np.ndarray) and not (image.ndim == 3 and image.dtype == np.uint8):
        return torch.from_numpy(image).float()  # already normalised
    return normalize(to_tensors({"image": load_image(image)})["image"].unsqueeze(0), config.data.mean, config.data.std)


def check_onnx(checkpoint: str | Path, path: str | Path, image: torch.Tensor | np.ndarray | None = None) -> float:
    """Largest absolute difference between the ONNX model and PyTorch over all outputs.

    Args:
        checkpoint: the checkpoint that was exported.
        path: the ``.onnx`` file.
        image: a normalised (N, 3, H, W) tensor/array, an image file, a PIL image or an
            (H, W, 3) uint8 array (normalised with the checkpoint's mean/std); None uses a seeded
            random (1, 3, 97, 131) input (not a multiple of the stride: exercises dynamic axes).

    Returns:
        max |onnx - torch| over every element of every output.
    """
    _require("onnxruntime")
    model, names, config = _load(checkpoint)
    tensor = _check_input(image, config)
    with torch.no_grad():
        expected = model(tensor)
    found = onnx_outputs(path, tensor)
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"ONNX file {path} has no output {missing}; was it exported from {checkpoint}?")
    return max(float(np.abs(found[name] - expected[name].numpy()).max()) for name in names)
