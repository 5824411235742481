"""An exponential moving average of a model's weights (``train.weight_average``).

After each optimisation step every floating-point entry of the model's state (the parameters
and the BatchNorm running statistics) moves towards the model's own:

    average = d * average + (1 - d) * current,    d = min(decay, (1 + t) / (10 + t))

at step ``t`` (so the first steps, whose weights are far from anything useful, are forgotten
quickly). Integer entries (BatchNorm's batch counters) are copied. The average, not the last
weights, is what ``final.pt`` holds and what the final evaluation scores; ``last.pt`` holds both,
so a resumed run continues the same average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The running average of ``model``'s state; ``decay`` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie in (0, 1), not {decay}")
        self.decay = decay
        self.state = {key: value.detach().clone() for key, value in model.state_dict().items()}

    def rate(self, step: int) -> float:
        """The decay used after step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s state after optimisation step ``step`` (one fused
        ``lerp`` over all floating-point entries: this runs after every training step)."""
        averages, currents = [], []
        for key, value in model.state_dict().items():
            average = self.state[key]
            if average.is_floating_point():
                averages.append(average)
                currents.append(value.detach())
            else:
                average.copy_(value)
        torch._foreach_lerp_(averages, currents, 1.0 - self.rate(step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.state) ^ set(state)
        if missing:
            raise ValueError(f"the stored weight average does not fit the model (entries {sorted(missing)[:4]} ...)")
        for key, value in state.items():
            self.state[key].copy_(value)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the averaged weights for the duration of the block, its own after."""
        own = {key: value.detach().clone() for key, value in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(own)
