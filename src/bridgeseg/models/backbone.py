"""Dilated ResNet backbones (the "hole algorithm" of paper section 2.3).

A torchvision ResNet with its final pooling and fc removed. The strides of the last stages are
replaced by dilation so that the output stride is 8, 16 or 32. The conversion is exact: the
strided convolution keeps its own dilation and every convolution after the removed stride has its
dilation multiplied by that stride, so a dilated network in eval mode computes, at every
``output_stride``-th position, what it would compute at stride 32 (see ``tests/test_models.py``).
Basic blocks (ResNet-18/34) are converted the same way, which torchvision itself does not support.

``width`` (default 64, torchvision's) sets the channels of the stem and of the first stage; each
later stage doubles them. Narrower networks (e.g. 16: a 16th of the compute) are for CPU-scale
work from random initialisation; ImageNet weights exist only for width 64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import resnet

DEPTHS = (18, 34, 50, 101, 152)
OUTPUT_STRIDES = (8, 16, 32)

_BUILDERS = {
    18: (torchvision.models.resnet18, resnet.ResNet18_Weights.IMAGENET1K_V1),
    34: (torchvision.models.resnet34, resnet.ResNet34_Weights.IMAGENET1K_V1),
    50: (torchvision.models.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
    101: (torchvision.models.resnet101, resnet.ResNet101_Weights.IMAGENET1K_V1),
    152: (torchvision.models.resnet152, resnet.ResNet152_Weights.IMAGENET1K_V1),
}

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")

_BLOCKS = {18: (resnet.BasicBlock, (2, 2, 2, 2)), 34: (resnet.BasicBlock, (3, 4, 6, 3)),
           50: (resnet.Bottleneck, (3, 4, 6, 3)), 101: (resnet.Bottleneck, (3, 4, 23, 3)),
           152: (resnet.Bottleneck, (3, 8, 36, 3))}


def _resnet_of_width(depth: int, width: int) -> nn.Module:
    """A ResNet-``depth`` whose stages have width, 2 width, 4 width, 8 width channels (times the
    block expansion), with torchvision's blocks and module names and zero-initialised residual
    branches. Width 64 is torchvision's own network."""
    if width == 64:
        return _BUILDERS[depth][0](weights=None, zero_init_residual=True)
    block, counts = _BLOCKS[depth]
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    channels = width
    for index, count in enumerate(counts):
        planes, stride = width * 2 ** index, 1 if index == 0 else 2
        downsample = None
        if stride != 1 or channels != planes * block.expansion:
            downsample = nn.Sequential(resnet.conv1x1(channels, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(channels, planes, stride, downsample)]
        channels = planes * block.expansion
        blocks += [block(channels, planes) for _ in range(count - 1)]
        setattr(net, f"layer{index + 1}", nn.Sequential(*blocks))
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in net.modules():  # each residual branch ends in a zero-scaled BN: blocks start as identities
        if isinstance(module, resnet.Bottleneck):
            nn.init.zeros_(module.bn3.weight)
        elif isinstance(module, resnet.BasicBlock):
            nn.init.zeros_(module.bn2.weight)
    return net


class SubsampledPointwiseConv(nn.Conv2d):
    """A 1x1 convolution whose stride is taken by subsampling its input first: (N, C, H, W) ->
    (N, C', ceil(H / s), ceil(W / s)), the same values and gradients as ``nn.Conv2d`` with stride s
    (a 1x1 kernel without padding reads only every s-th pixel), and the same parameters and names.

    Why: oneDNN's bfloat16 weight gradient of a strided 1x1 convolution with fewer than 16 input
    channels (the first downsample of a ResNet of width 8) corrupts the heap when a CPU step's
    batch is smaller than its threads (torch 2.14, channels_last; "free(): invalid next size").
    The unstrided 1x1 convolution does not.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C', ceil(H / s), ceil(W / s))."""
        step_h, step_w = self.stride  # (1, 1) once a dilated stage has taken its stride away: a plain view
        return nn.functional.conv2d(x[:, :, ::step_h, ::step_w], self.weight, self.bias, 1, 0, 1, self.groups)


def _subsample_strided_pointwise(net: nn.Module) -> None:
    """Replace every stage's strided 1x1 downsample convolution by a ``SubsampledPointwiseConv``
    holding the same parameters (built without initialising its own, so that the random number
    stream, and with it every later module's initial weights, stays what it was)."""
    for name in ("layer1", "layer2", "layer3", "layer4"):
        downsample = getattr(net, name)[0].downsample
        if downsample is None:
            continue
        conv = downsample[0]
        if conv.kernel_size != (1, 1) or conv.padding != (0, 0) or conv.stride == (1, 1):
            continue
        replacement = torch.nn.utils.skip_init(SubsampledPointwiseConv, conv.in_channels, conv.out_channels, 1,
                                               stride=conv.stride, bias=conv.bias is not None)
        replacement.weight, replacement.bias = conv.weight, conv.bias
        downsample[0] = replacement


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride (relative to the input) of one named backbone stage."""

    name: str
    channels: int
    stride: int


class DilatedResNet(nn.Module):
    """ResNet feature extractor with a configurable output stride.

    Args:
        depth: 18, 34, 50, 101 or 152.
        output_stride: 8, 16 or 32.
        dropout: dropout probability applied to the output of the last ``dropout_blocks``
            residual blocks (the paper's "dropout in some residual blocks"); 0 disables it.
        dropout_blocks: how many of the last residual blocks (counted back from the end of
            ``layer4``, possibly into ``layer3``) get dropout.

    ``forward(x)`` takes ``x`` of shape (N, 3, H, W) and returns a dict with one tensor per stage
    in ``STAGES``; ``feature_info`` lists their channels and strides. The last stage has
    ``ceil(H / output_stride)`` rows (one output row per ``output_stride`` input rows, the first
    centred on input row 0).
    """

    def __init__(self, depth: int = 101, output_stride: int = 8, dropout: float = 0.0,
                 dropout_blocks: int = 0, width: int = 64) -> None:
        super().__init__()
        if depth not in _BUILDERS:
            raise ValueError(f"ResNet depth {depth} is not supported; choose one of {DEPTHS}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride {output_stride} is not supported; choose one of {OUTPUT_STRIDES}")
        if width < 8 or width % 8:
            raise ValueError(f"ResNet width {width} is not supported; use a multiple of 8 (64 = torchvision's)")
        self.depth = depth
        self.width = width
        self.output_stride = output_stride
        # residual branches start at zero (each block the identity): trains faster from random
        # initialisation; loaded weights replace it
        net = _resnet_of_width(depth, width)
        _subsample_strided_pointwise(net)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

        stride, dilation = 4, 1
        strides = {"stem": 4, "layer1": 4}
        for name in ("layer2", "layer3", "layer4"):
            layer = getattr(self, name)
            if stride * 2 <= output_stride:
                stride *= 2
            else:
                _dilate_stage(layer, previous_dilation=dilation, dilation=dilation * 2)
                dilation *= 2
            strides[name] = stride
        last_channels = {name: _stage_channels(getattr(self, name)) for name in STAGES[1:]}
        last_channels["stem"] = width
        self.feature_info = [FeatureInfo(name, last_channels[name], strides[name]) for name in STAGES]
        if dropout > 0 and dropout_blocks > 0:
            _add_dropout(self, dropout, dropout_blocks)

    @property
    def out_channels(self) -> int:
        return self.feature_info[-1].channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            features[name] = x
        return features

    def load_imagenet_weights(self) -> None:
        """Load torchvision's ImageNet weights (downloads once into the torch hub cache)."""
        _, weights = _BUILDERS[self.depth]
        try:
            state = weights.get_state_dict(progress=True)
        except Exception as error:  # no network, proxy, disk full: all end here
            raise RuntimeError(
                f"could not obtain torchvision's ImageNet weights for ResNet-{self.depth} from "
                f"{weights.url} ({error}). Without a network, download that file on another machine "
                f"and set model.init to its path (e.g. --set model.init=/path/to/{Path(weights.url).name})."
            ) from error
        self.load_torchvision_state_dict(state, source=weights.url)

    def load_weights_file(self, path: str | Path) -> None:
        """Load a local torchvision-style ResNet state dict (``.pth``; fc weights are ignored)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist (set model.init to "
                                    "'random', 'imagenet' or an existing .pth file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"could not read backbone weights from {path}: {error}") from error
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
        self.load_torchvision_state_dict(state, source=str(path))

    def load_torchvision_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a state dict keyed like ``torchvision.models.resnetXX`` (conv1.*, layer1.*, fc.*)."""
        if self.width != 64:
            raise ValueError(f"{source}: pretrained ResNet weights have width 64 but model.width is {self.width}; "
                             "use model.init=random with a narrow network, or model.width=64")
        renamed = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key.startswith("fc."):
                continue
            for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
                if key.startswith(old):
                    key = new + key[len(old):]
            renamed[_with_dropout_names(self, key)] = value
        expected = self.state_dict()
        missing = [key for key in expected if key not in renamed]
        unexpected = [key for key in renamed if key not in expected]
        mismatched = [key for key in renamed if key in expected and renamed[key].shape != expected[key].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"{source} does not hold ResNet-{self.depth} weights: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} of another shape "
                f"(e.g. {mismatched[:3]}). Is model.depth right?")
        self.load_state_dict(renamed)


def _stage_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    conv = block.conv3 if hasattr(block, "conv3") else block.conv2
    return conv.out_channels


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2


def _dilate_stage(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Replace the stride-2 of a ResNet stage by dilation, in place.

    The strided convolution becomes stride 1 with the previous dilation; every 3x3 convolution
    that follows it (in this block and the next ones) gets the new dilation.
    """
    first = layer[0]
    strided = first.conv2 if hasattr(first, "conv3") else first.conv1  # Bottleneck v1.5 / BasicBlock
    strided.stride = (1, 1)
    _set_dilation(strided, previous_dilation)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    after_stride = False
    for block in layer:
        for conv in (block.conv1, block.conv2, getattr(block, "conv3", None)):
            if conv is None:
                continue
            if conv is strided:
                after_stride = True
                continue
            if after_stride and conv.kernel_size[0] > 1:
                _set_dilation(conv, dilation)


class _BlockWithDropout(nn.Sequential):
    """A residual block followed by dropout; ``block`` keeps the block's own parameter names."""

    def __init__(self, block: nn.Module, p: float) -> None:
        super().__init__()
        self.block = block
        self.dropout = nn.Dropout(p)


def _add_dropout(net: DilatedResNet, p: float, count: int) -> None:
    blocks = [(layer, i) for name in ("layer1", "layer2", "layer3", "layer4")
              for layer in [getattr(net, name)] for i in range(len(layer))]
    for layer, i in blocks[-count:]:
        layer[i] = _BlockWithDropout(layer[i], p)


def _with_dropout_names(net: DilatedResNet, key: str) -> str:
    """Map a plain torchvision key (layer4.2.conv1.weight) to its name under dropout wrappers."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] in STAGES and parts[1].isdigit() and int(parts[1]) < len(getattr(net, parts[0])):
        if isinstance(getattr(net, parts[0])[int(parts[1])], _BlockWithDropout):
            return ".".join(parts[:2] + ["block"] + parts[2:])
    return key
