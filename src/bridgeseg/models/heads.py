"""Classifier heads on top of the backbone (paper section 2.3).

The head's first convolution sets the field of view: a kernel ``k`` with dilation ``d`` sees
``(k - 1) * d + 1`` feature positions, i.e. ``((k - 1) * d + 1) * output_stride`` input pixels.
"""

from __future__ import annotations

from torch import nn

KERNELS = (1, 3, 5, 7)
HEAD_TYPES = ("linear", "nonlinear")


def field_of_view(kernel: int, dilation: int, output_stride: int) -> int:
    """FoV in input pixels, ``((kernel - 1) * dilation + 1) * output_stride`` (paper Table 1)."""
    return ((kernel - 1) * dilation + 1) * output_stride


def _dilated_conv(in_channels: int, out_channels: int, kernel: int, dilation: int, bias: bool) -> nn.Conv2d:
    if kernel not in KERNELS:
        raise ValueError(f"classifier kernel {kernel} is not supported; choose one of {KERNELS}")
    if dilation < 1:
        raise ValueError(f"classifier dilation must be >= 1, got {dilation}")
    return nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel // 2) * dilation,
                     dilation=dilation, bias=bias)


class LinearHead(nn.Module):
    """One dilated convolution: features (N, C_in, h, w) -> outputs (N, C_out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.conv = _dilated_conv(in_channels, out_channels, kernel, dilation, bias=True)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return self.conv(x)


class NonLinearHead(nn.Module):
    """The paper's multi-layer non-linear classifier.

    dilated conv (kernel, dilation) -> BN -> ReLU -> dropout -> 1x1 conv; shapes as ``LinearHead``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int,
                 hidden_channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.conv = _dilated_conv(in_channels, hidden_channels, kernel, dilation, bias=False)
        self.bn = nn.BatchNorm2d(hidden_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(hidden_channels, out_channels, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.dropout(self.relu(self.bn(self.conv(x)))))


def build_head(kind: str, in_channels: int, out_channels: int, kernel: int, dilation: int,
               hidden_channels: int = 512, dropout: float = 0.1) -> nn.Module:
    """Build a ``linear`` or ``nonlinear`` head."""
    if kind == "linear":
        return LinearHead(in_channels, out_channels, kernel, dilation)
    if kind == "nonlinear":
        return NonLinearHead(in_channels, out_channels, kernel, dilation, hidden_channels, dropout)
    raise ValueError(f"unknown head type {kind!r}; choose one of {HEAD_TYPES}")
