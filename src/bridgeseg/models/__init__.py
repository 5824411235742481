"""The networks: dilated ResNet backbones, classifier heads, the FCRN that puts them together.

These take plain arguments. ``bridgeseg.models.build`` makes them from a ``model:`` config
section (``build_model``) or from a training checkpoint (``load_trained_model``).
"""

from __future__ import annotations

from .backbone import DilatedResNet, FeatureInfo
from .fcrn import ARCHITECTURES, FCRN, SeparateNetworks
from .heads import LinearHead, NonLinearHead, build_head, field_of_view

__all__ = ["ARCHITECTURES", "DilatedResNet", "FeatureInfo", "FCRN", "SeparateNetworks", "LinearHead",
           "NonLinearHead", "build_head", "field_of_view"]
