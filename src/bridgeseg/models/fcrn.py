"""FCRN: a dilated ResNet with one or more dense prediction heads (paper section 2.3).

The model computes maps at the output stride and nothing else: no loss, no resizing, no
post-processing. Output position ``i`` is centred on input pixel ``i * output_stride``
(``bridgeseg.geometry``). A model says which maps it produces: ``"localization" in model.heads``
is how every caller asks whether it can find instances.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import DilatedResNet
from .decoder import SkipDecoder
from .heads import field_of_view

HEAD_NAMES = ("semantic", "localization")
# model.arch -> (heads, one shared backbone?): the paper trains two separate networks
ARCHITECTURES = {"semantic": (("semantic",), True), "localization": (("localization",), True),
                 "joint": (HEAD_NAMES, True), "separate": (HEAD_NAMES, False)}


class FCRN(nn.Module):
    """Backbone + named heads.

    Args:
        backbone: a ``DilatedResNet``.
        heads: name -> head module, e.g. ``{"semantic": LinearHead(...)}`` or, for the joint
            model, ``{"semantic": ..., "localization": ...}`` sharing one backbone.
        decoder: optional ``SkipDecoder``; the heads then run on its finer features and the
            model's output stride is the decoder's.

    ``forward(x)`` with ``x`` (N, 3, H, W) returns ``{name: (N, C_name, h, w)}`` with
    ``h = ceil(H / output_stride)``. ``heads`` (a ``ModuleDict``) answers ``"semantic" in model.heads``.
    """

    def __init__(self, backbone: DilatedResNet, heads: dict[str, nn.Module],
                 decoder: SkipDecoder | None = None) -> None:
        super().__init__()
        if not heads:
            raise ValueError("an FCRN needs at least one head")
        self.backbone = backbone
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride if self.decoder is None else self.decoder.stride

    @property
    def field_of_view(self) -> dict[str, int]:
        """FoV in input pixels of each head (paper Table 1: OS 8, kernel 5, dilation 12 -> 392)."""
        return {name: field_of_view(head.kernel, head.dilation, self.output_stride)
                for name, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.backbone(x)
        features = stages["layer4"] if self.decoder is None else self.decoder(stages)
        return {name: head(features) for name, head in self.heads.items()}


class SeparateNetworks(nn.Module):
    """The paper's arrangement: independent FCRNs (e.g. semantic and localization), one input.

    ``forward(x)`` merges their output dicts; every network must have the same output stride.
    """

    def __init__(self, networks: dict[str, FCRN]) -> None:
        super().__init__()
        strides = {net.output_stride for net in networks.values()}
        if len(strides) != 1:
            raise ValueError(f"separate networks must share one output stride, got {sorted(strides)}")
        self.networks = nn.ModuleDict(networks)

    @property
    def output_stride(self) -> int:
        return next(iter(self.networks.values())).output_stride

    @property
    def heads(self) -> tuple[str, ...]:
        """The names of the maps the networks produce, e.g. ``("semantic", "localization")``."""
        return tuple(name for net in self.networks.values() for name in net.heads)

    @property
    def field_of_view(self) -> dict[str, int]:
        fov = {}
        for net in self.networks.values():
            fov.update(net.field_of_view)
        return fov

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for net in self.networks.values():
            outputs.update(net(x))
        return outputs

