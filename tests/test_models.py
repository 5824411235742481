"""FCRN shapes, strides, field of view, exact dilation, heads and backbone initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from bridgeseg.config import ModelConfig
from bridgeseg.geometry import resize_to_input
from bridgeseg.models import DilatedResNet, field_of_view
from bridgeseg.models.build import build_model
from bridgeseg.models.heads import LinearHead, NonLinearHead

CHANNELS = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_shapes_and_feature_info(depth, output_stride):
    backbone = DilatedResNet(depth, output_stride).eval()
    height, width = 35, 50
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    info = {f.name: f for f in backbone.feature_info}
    assert info["layer4"].channels == CHANNELS[depth]
    assert info["layer4"].stride == output_stride
    for name, feature in features.items():
        stride = info[name].stride
        assert feature.shape[1] == info[name].channels
        assert feature.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride)), name


@pytest.mark.parametrize("depth,width", [(18, 64), (50, 64), (18, 16), (50, 24)])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilation_is_exact_hole_algorithm(depth, width, output_stride):
    """Same weights, eval mode: the dilated net at every (32 / OS)-th position equals the OS-32 net."""
    torch.manual_seed(0)
    reference = DilatedResNet(depth, 32, width=width).eval()
    dilated = DilatedResNet(depth, output_stride, width=width).eval()
    for module in reference.modules():  # non-trivial BN (the residual branches start at zero otherwise)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    dilated.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        coarse = reference(x)["layer4"]
        dense = dilated(x)["layer4"]
    step = 32 // output_stride
    scale = coarse.abs().max().item()
    torch.testing.assert_close(dense[..., ::step, ::step], coarse, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("kernel,dilation,output_stride,expected", [
    (5, 12, 8, 392), (3, 6, 16, 208), (3, 6, 8, 104), (3, 12, 8, 200), (3, 18, 8, 296), (7, 6, 8, 296), (1, 1, 8, 8)])
def test_field_of_view_matches_paper_table1(kernel, dilation, output_stride, expected):
    assert field_of_view(kernel, dilation, output_stride) == expected
    model = build_model(ModelConfig(depth=18, output_stride=output_stride, kernel=kernel, dilation=dilation,
                                    init="random"), num_classes=3)
    assert model.field_of_view == {"semantic": expected}


@pytest.mark.parametrize("arch,keys", [("semantic", {"semantic"}), ("localization", {"localization"}),
                                        ("joint", {"semantic", "localization"}),
                                        ("separate", {"semantic", "localization"})])
@pytest.mark.parametrize("head", ["linear", "nonlinear"])
def test_model_outputs(arch, keys, head):
    model = build_model(ModelConfig(arch=arch, depth=18, output_stride=16, kernel=3, dilation=2, head=head,
                                    head_channels=32, init="random"), num_classes=5)
    outputs = model(torch.randn(2, 3, 33, 47))
    assert set(outputs) == keys
    if "semantic" in outputs:
        assert outputs["semantic"].shape == (2, 5, 3, 3)
    if "localization" in outputs:
        assert outputs["localization"].shape == (2, 16, 3, 3)  # 4 x (C - 1)


def test_joint_model_shares_one_backbone_and_separate_has_two():
    config = dict(depth=18, output_stride=16, kernel=3, dilation=2, init="random")
    joint = build_model(ModelConfig(arch="joint", **config), 3)
    separate = build_model(ModelConfig(arch="separate", **config), 3)
    backbone_params = sum(p.numel() for p in DilatedResNet(18, 16).parameters())
    joint_params = sum(p.numel() for p in joint.parameters())
    separate_params = sum(p.numel() for p in separate.parameters())
    assert backbone_params < joint_params < 1.01 * backbone_params
    assert separate_params > 1.99 * backbone_params


def test_dropout_blocks_wrap_the_last_blocks_and_keep_weight_names():
    plain = DilatedResNet(18, 8)
    with_dropout = DilatedResNet(18, 8, dropout=0.3, dropout_blocks=3)
    assert isinstance(with_dropout.layer4[1].dropout, torch.nn.Dropout)
    assert isinstance(with_dropout.layer4[0].dropout, torch.nn.Dropout)
    assert isinstance(with_dropout.layer3[1].dropout, torch.nn.Dropout)
    assert not hasattr(with_dropout.layer3[0], "dropout")
    # torchvision-style weights load into the wrapped blocks
    state = {k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1."): v for k, v in plain.state_dict().items()}
    with_dropout.load_torchvision_state_dict(state, source="test")
    torch.testing.assert_close(with_dropout.layer4[1].block.conv1.weight, plain.layer4[1].conv1.weight)
    with_dropout.eval()
    plain.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(with_dropout(x)["layer4"], plain(x)["layer4"])  # dropout is off in eval mode


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_subsampled_pointwise_conv_is_a_strided_1x1_conv_with_its_gradients(size):
    from bridgeseg.models.backbone import SubsampledPointwiseConv

    torch.manual_seed(0)
    strided = torch.nn.Conv2d(8, 16, 1, stride=2, bias=False)
    subsampled = SubsampledPointwiseConv(8, 16, 1, stride=2, bias=False)
    subsampled.load_state_dict(strided.state_dict())
    x = torch.randn(2, 8, *size, requires_grad=True)
    outputs = [conv(x) for conv in (strided, subsampled)]
    assert outputs[1].shape == (2, 16, math.ceil(size[0] / 2), math.ceil(size[1] / 2))
    grad = torch.randn_like(outputs[0])
    grads = [torch.autograd.grad(out, (x, conv.weight), grad) for out, conv in zip(outputs, (strided, subsampled))]
    torch.testing.assert_close(outputs[1], outputs[0])
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs)


def test_backbone_at_stride_32_computes_torchvision_resnet_on_its_weights():
    """Our module arrangement (the strided 1x1 downsample included) computes torchvision's ResNet."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = DilatedResNet(18, 32)
    ours.load_torchvision_state_dict(reference.state_dict(), source="test")
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        theirs = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        torch.testing.assert_close(ours.eval()(x)["layer4"], theirs)


def test_a_narrow_backbone_trains_in_bfloat16_at_batch_1_on_two_threads():
    """oneDNN's bf16 weight gradient of a strided 1x1 convolution with 8 input channels corrupted
    the heap at batch 1 on 2 threads (the process died: "free(): invalid next size"); run apart."""
    import subprocess
    import sys

    script = """
import torch
from bridgeseg.models import DilatedResNet
torch.set_num_threads(2)
net = DilatedResNet(18, 16, width=8).train().to(memory_format=torch.channels_last)
for _ in range(20):
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)["layer4"]
    out.float().sum().backward()
print("trained")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-500:]


def test_local_weights_file_round_trip(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(depth=18, output_stride=8, kernel=3, dilation=2, init=str(path)), 4)
    torch.testing.assert_close(model.backbone.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_weights_file_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.init"):
        build_model(ModelConfig(depth=18, init=str(tmp_path / "missing.pth")), 3)
    import torchvision

    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="model.depth"):
        build_model(ModelConfig(depth=18, init=str(path)), 3)


def test_imagenet_weights_without_network_fail_clearly(monkeypatch):
    from torchvision.models import resnet

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(resnet.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="model.init"):
        build_model(ModelConfig(depth=18, init="imagenet"), 3)


@pytest.mark.parametrize("depth", [18, 50])
def test_narrow_resnet_channels_and_pretrained_refusal(depth, tmp_path):
    narrow = DilatedResNet(depth, 8, width=16)
    full = DilatedResNet(depth, 8)
    assert narrow.out_channels * 4 == full.out_channels
    assert [f.channels * 4 for f in narrow.feature_info] == [f.channels for f in full.feature_info]
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in full.parameters()) / 10
    assert [name for name, _ in narrow.named_parameters()] == [name for name, _ in full.named_parameters()]
    with pytest.raises(ValueError, match="width"):
        narrow.load_torchvision_state_dict(full.state_dict(), source="weights.pth")
    with pytest.raises(ValueError, match="multiple of 8"):
        DilatedResNet(depth, 8, width=12)


def test_invalid_choices_raise():
    with pytest.raises(ValueError, match="depth"):
        DilatedResNet(20, 8)
    with pytest.raises(ValueError, match="output_stride"):
        DilatedResNet(18, 4)
    with pytest.raises(ValueError, match="kernel"):
        LinearHead(8, 2, kernel=4, dilation=1)


def test_heads_keep_spatial_size():
    x = torch.randn(2, 16, 9, 11)
    assert LinearHead(16, 3, 5, 4)(x).shape == (2, 3, 9, 11)
    assert NonLinearHead(16, 3, 7, 2, hidden_channels=8)(x).shape == (2, 3, 9, 11)


@pytest.mark.parametrize("size", [(33, 41), (32, 40), (1, 1)])
def test_resize_to_input_geometry(size):
    """Output position i sits on input pixel i * stride: a map that is linear in the grid index
    must come back as the same linear function of the input pixel."""
    stride = 8
    h, w = math.ceil(size[0] / stride), math.ceil(size[1] / stride)
    rows = torch.arange(h, dtype=torch.float).view(1, 1, h, 1).expand(1, 1, h, w) * stride
    up = resize_to_input(rows, size, stride)
    assert up.shape == (1, 1, *size)
    last_centre = (h - 1) * stride
    expected = torch.arange(size[0], dtype=torch.float).clamp(max=last_centre).view(-1, 1).expand(size)
    torch.testing.assert_close(up[0, 0], expected)
    cols = torch.arange(w, dtype=torch.float).view(1, 1, 1, w).expand(1, 1, h, w) * stride
    expected = torch.arange(size[1], dtype=torch.float).clamp(max=(w - 1) * stride).view(1, -1).expand(size)
    torch.testing.assert_close(resize_to_input(cols, size, stride)[0, 0], expected)


# ------------------------------------------------------------------------------------------------
# The skip decoder


@pytest.mark.parametrize("rows,cols,size", [(4, 5, (7, 9)), (4, 5, (8, 10)), (1, 3, (2, 5)), (3, 3, (6, 5))])
def test_upsample_aligned_puts_fine_position_j_at_coarse_position_j_over_2(rows, cols, size):
    """A map linear in the input pixel (row r of a stride-2s map sits on pixel 2 s r) must come back
    linear in the pixel at stride s, so fine row j holds the value of pixel s j; rows past the last
    coarse centre repeat it."""
    from bridgeseg.models.decoder import upsample_aligned

    stride = 8
    r = torch.arange(rows, dtype=torch.float64)[:, None] * 2 * stride
    c = torch.arange(cols, dtype=torch.float64)[None, :] * 2 * stride
    coarse = torch.stack([r + 0 * c, 0 * r + c, 3 * r - 2 * c])[None]  # (1, 3, rows, cols), pixel coordinates
    fine = upsample_aligned(coarse, size)
    assert fine.shape == (1, 3, *size)
    j = torch.arange(size[0], dtype=torch.float64).clamp(max=2 * (rows - 1))[:, None] * stride
    k = torch.arange(size[1], dtype=torch.float64).clamp(max=2 * (cols - 1))[None, :] * stride
    expected = torch.stack([j + 0 * k, 0 * j + k, 3 * j - 2 * k])[None]
    torch.testing.assert_close(fine, expected)
    with pytest.raises(ValueError, match="factor of two"):
        upsample_aligned(coarse, (2 * rows + 1, 2 * cols))


@pytest.mark.parametrize("size", [(7, 9), (8, 10), (8, 9)])
def test_upsample_aligned_repeats_the_last_row_like_replicate_padding_with_its_gradient(size):
    """Under torch.compile the last row / column is repeated by a gather: the same values and
    gradients as the eager replicate padding."""
    import torch.nn.functional as F

    from bridgeseg.models.decoder import repeat_last_by_gather

    up = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, *size, dtype=torch.float64)
    gathered = repeat_last_by_gather(up, size)
    (gathered * weights).sum().backward()
    gathered_grad = up.grad.clone()
    up.grad = None
    padded = F.pad(up, (0, size[1] - 9, 0, size[0] - 7), mode="replicate")
    (padded * weights).sum().backward()
    torch.testing.assert_close(gathered, padded)
    torch.testing.assert_close(gathered_grad, up.grad)


@pytest.mark.slow
def test_the_demo_recipe_trains_compiled(tmp_path):
    """``train.compile: true`` on the demo's model (channels-last, the skip decoder): two steps run
    and their losses are finite (torch.compile once failed in the decoder's replicate padding)."""
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.data.loading import training_loader
    from bridgeseg.data.synthetic import SceneSpec, generate_dataset
    from bridgeseg.engine.train import setup, train_step

    root = generate_dataset(tmp_path / "data", 8, 2, seed=0, spec=SceneSpec.for_size(64), workers=1)
    config = load_config(resolve_config_path("demo"), [f"data.root={root}", "train.compile=true", "train.amp=off",
                                                        "train.iterations=2", "data.crop_size=64"])
    run = setup(config, tmp_path / "run", resume=False)
    for batch in training_loader(config, run.train_set, start_step=0):
        loss, _ = train_step(run, batch, 1.0)
        assert torch.isfinite(loss)


@pytest.mark.parametrize("output_stride,decoder_stride,skips", [(16, 8, ["layer2"]), (8, 4, ["layer1"]),
                                                                 (16, 4, ["layer2", "layer1"]), (32, 16, ["layer3"])])
def test_decoder_brings_the_heads_to_its_stride_from_the_right_stages(output_stride, decoder_stride, skips):
    config = ModelConfig(arch="joint", depth=18, width=16, output_stride=output_stride, decoder_stride=decoder_stride,
                         decoder_channels=24, kernel=3, dilation=1, init="random")
    model = build_model(config, 4).eval()
    assert model.output_stride == decoder_stride == config.prediction_stride
    assert ModelConfig(output_stride=output_stride).prediction_stride == output_stride  # no decoder
    assert [fusion.skip_name for fusion in model.decoder.fusions] == skips
    height, width = 61, 90
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    grid = (math.ceil(height / decoder_stride), math.ceil(width / decoder_stride))
    assert out["semantic"].shape == (2, 4, *grid) and out["localization"].shape == (2, 12, *grid)
    assert model.heads["semantic"].conv.in_channels == 24


def test_decoder_changes_the_output_and_is_trained_as_a_new_layer():
    """The decoder's skip must reach the output (a change to the fine stage moves it), and the
    trainer treats it like a head: the head learning rate, and batch norms that learn under freeze_bn."""
    from bridgeseg.engine.train import parameter_groups, set_train_mode

    model = build_model(ModelConfig(arch="semantic", depth=18, width=16, output_stride=16, decoder_stride=8,
                                    decoder_channels=16, kernel=3, dilation=1, init="random", freeze_bn=True), 3)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)["semantic"]
        model.decoder.fusions[0].reduce[0].weight.mul_(2.0)
        changed = model(x)["semantic"]
    assert not torch.allclose(plain, changed)
    backbone_group, new_group = parameter_groups(model, lr=1.0, head_lr_mult=10.0)
    decoder_parameters = {id(p) for p in model.decoder.parameters()}
    assert decoder_parameters <= {id(p) for p in new_group["params"]} and new_group["lr"] == 10.0
    assert not decoder_parameters & {id(p) for p in backbone_group["params"]}
    set_train_mode(model, freeze_bn=True)
    decoder_bn = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert decoder_bn and all(m.training and m.weight.requires_grad for m in decoder_bn)
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_decoder_stride_must_be_below_the_output_stride():
    from bridgeseg.settings import ConfigError

    with pytest.raises(ConfigError, match="model.decoder_stride = 8 must be below model.output_stride = 8"):
        ModelConfig(output_stride=8, decoder_stride=8)
    with pytest.raises(ConfigError, match="decoder_stride"):
        ModelConfig(output_stride=16, decoder_stride=2)
