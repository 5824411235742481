"""A light skip decoder: the backbone's last features brought to a finer stride.

A dilated backbone at output stride 8 spends most of its compute on its last two stages at 1/8 of
the input. At output stride 16 those stages cost a quarter as much; this decoder then brings their
features back to stride 8 (or 4) with the backbone's own finer features, in the manner of
DeepLabv3+ and U-Net: per factor of two, the coarse features are upsampled and concatenated with
a 1x1-reduced copy of the backbone stage of that stride, then fused by a 3x3 convolution.

Upsampling keeps the grids aligned exactly: position ``i`` of a stride-``s`` map is centred on
input pixel ``i * s`` (``bridgeseg.geometry``), so the stride-``s / 2`` value at ``j`` is the
bilinear interpolation at ``j / 2`` (``align_corners=True`` onto ``2h - 1`` rows, the last row
repeated when the finer map has ``2h``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FeatureInfo

DECODER_STRIDES = (0, 4, 8, 16)  # 0: no decoder, the heads run at the backbone's output stride
MAX_SKIP_CHANNELS = 48  # DeepLabv3+'s reduction of the skip features


def upsample_aligned(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) at stride s -> (N, C, H', W') at stride s / 2, ``H'`` in {2h - 1, 2h}.

    Output ``j`` is the bilinear value at input ``j / 2``; a last row or column beyond ``h - 1``
    repeats row ``h - 1``.
    """
    h, w = x.shape[-2:]
    if not torch.jit.is_tracing() and not (2 * h - 1 <= size[0] <= 2 * h and 2 * w - 1 <= size[1] <= 2 * w):
        raise ValueError(f"cannot bring a {h} x {w} map to {size[0]} x {size[1]} by a factor of two")
    up = F.interpolate(x, size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=True)
    if torch.compiler.is_compiling():  # torch.compile's replication_pad2d_backward fails on these strides
        return repeat_last_by_gather(up, size)
    # eager, the padding is faster than the gather (the demo model's forward and backward 1.15x)
    return F.pad(up, (0, size[1] - up.shape[-1], 0, size[0] - up.shape[-2]), mode="replicate")


def repeat_last_by_gather(up: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h', w') -> (N, C, size) with the last row and column repeated: replicate padding's values
    and gradients, as a gather."""
    rows = torch.arange(size[0], device=up.device).clamp(max=up.shape[-2] - 1)
    cols = torch.arange(size[1], device=up.device).clamp(max=up.shape[-1] - 1)
    return up.index_select(-2, rows).index_select(-1, cols)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _Fusion(nn.Module):
    """One factor of two: upsample the coarse features, concatenate the reduced skip, fuse."""

    def __init__(self, coarse_channels: int, skip: FeatureInfo, channels: int) -> None:
        super().__init__()
        self.skip_name = skip.name
        reduced = min(skip.channels, MAX_SKIP_CHANNELS)
        self.reduce = _conv_bn_relu(skip.channels, reduced, 1)
        self.fuse = _conv_bn_relu(coarse_channels + reduced, channels, 3)

    def forward(self, coarse: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        skip = features[self.skip_name]
        up = upsample_aligned(coarse, tuple(skip.shape[-2:]))
        return self.fuse(torch.cat([up, self.reduce(skip)], dim=1))


class SkipDecoder(nn.Module):
    """Backbone features at output stride S -> (N, ``channels``, ceil(H / stride), ceil(W / stride)).

    Args:
        feature_info: the backbone's stages (``DilatedResNet.feature_info``).
        stride: the decoder's output stride, a power of two below the backbone's and at least 4.
        channels: channels of every fused map (and of the output).

    For each stride S / 2, S / 4, ..., ``stride`` the skip is the last backbone stage of that stride
    (e.g. ``layer2`` for 8 and ``layer1`` for 4 on a ResNet at output stride 16).
    """

    def __init__(self, feature_info: list[FeatureInfo], stride: int, channels: int) -> None:
        super().__init__()
        deepest = feature_info[-1]
        if stride >= deepest.stride or stride < 4 or stride & (stride - 1):
            raise ValueError(f"decoder stride {stride} must be a power of two from 4 to below the backbone's "
                             f"output stride {deepest.stride}")
        self.stride = stride
        self.out_channels = channels
        fusions, coarse, current = [], deepest.channels, deepest.stride
        while current > stride:
            current //= 2
            skip = [info for info in feature_info if info.stride == current][-1]
            fusions.append(_Fusion(coarse, skip, channels))
            coarse = channels
        self.fusions = nn.ModuleList(fusions)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features["layer4"]
        for fusion in self.fusions:
            x = fusion(x, features)
        return x
