"""Tests for bridgeseg.export: ONNX parity with PyTorch (skipped without onnx / onnxruntime)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bridgeseg.config import Config, ModelConfig
from bridgeseg.checkpoint import save_checkpoint
from bridgeseg.models.build import build_model

CLASS_NAMES = ["background", "cat", "dog"]


def _checkpoint(path, arch: str = "joint"):
    """A random ResNet-18 FCRN (OS 16) whose every block is active (random BN statistics)."""
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, depth=18, output_stride=16, kernel=3, dilation=1, init="random")
    model = build_model(config, len(CLASS_NAMES)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return save_checkpoint({"model": model.state_dict(), "config": Config(model=config).to_dict(),
                            "class_names": CLASS_NAMES, "step": 0}, path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnx onnxruntime)")
    from bridgeseg.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = _checkpoint(folder / "model.pt")
    return checkpoint, export_onnx(checkpoint, folder / "sub" / "model.onnx", image_size=(64, 96))


def test_onnx_matches_pytorch(exported):
    from bridgeseg.export import check_onnx

    checkpoint, path = exported
    assert path.is_file()
    assert check_onnx(checkpoint, path) < 1e-4  # default: a (1, 3, 97, 131) input, not the traced size
    image = torch.randn(2, 3, 80, 112, generator=torch.Generator().manual_seed(3))
    assert check_onnx(checkpoint, path, image) < 1e-4


def test_onnx_outputs_and_dynamic_axes(exported):
    from bridgeseg.export import onnx_outputs

    _, path = exported
    outputs = onnx_outputs(path, np.zeros((3, 3, 50, 77), dtype=np.float32))
    assert list(outputs) == ["semantic", "localization"]
    assert outputs["semantic"].shape == (3, 3, 4, 5) and outputs["localization"].shape == (3, 8, 4, 5)


def test_check_onnx_reads_image_files(exported, tmp_path):
    from bridgeseg.export import check_onnx

    checkpoint, path = exported
    pixels = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert check_onnx(checkpoint, path, tmp_path / "photo.png") < 1e-4  # normalised with the checkpoint's mean/std


def test_semantic_only_export_has_one_output(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnx onnxruntime)")
    from bridgeseg.export import check_onnx, export_onnx, onnx_outputs

    checkpoint = _checkpoint(tmp_path / "semantic.pt", arch="semantic")
    path = export_onnx(checkpoint, tmp_path / "semantic.onnx", image_size=(48, 48), dynamic=False)
    assert list(onnx_outputs(path, np.zeros((1, 3, 48, 48), np.float32))) == ["semantic"]
    assert check_onnx(checkpoint, path, torch.randn(1, 3, 48, 48)) < 1e-4


def test_missing_onnxruntime_names_the_package(monkeypatch, tmp_path):
    from bridgeseg import export

    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        export.check_onnx(tmp_path / "x.pt", tmp_path / "x.onnx")
