"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A training checkpoint is a dict of plain data and tensors: ``model``, ``optimizer``, ``step``,
``elapsed`` (training seconds so far), ``config`` (the resolved config as a dict),
``class_names``, ``rng`` (torch RNG states), ``version`` and, with ``train.weight_average``,
``weight_average`` (the averaged state; ``final.pt``'s ``model`` is that average). It loads with
``torch.load(weights_only=True)``: a file that needs arbitrary classes is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .files import atomic_write

FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (``files.atomic_write``: a temporary file in the same
    folder, then a rename), with the user's usual file mode.

    A run killed while saving, or a full disk, leaves the previous checkpoint intact.

    Raises:
        OutputError: naming the file, when it cannot be written.
    """
    return atomic_write(path, lambda file: torch.save({"version": FORMAT_VERSION, **state}, file))


def _looks_like_torch_file(path: Path) -> bool:
    """Whether a file starts as ``torch.save`` output does: a zip archive, or (the legacy format) a pickle."""
    with path.open("rb") as file:
        head = file.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (training writes <out>/last.pt and <out>/final.pt)")
    if not _looks_like_torch_file(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle as torch.save "
                         "writes them); give a checkpoint written by bridgeseg training (<run>/last.pt or final.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise ValueError(f"refusing to load {path}: it holds Python objects that would have to be unpickled, "
                             "which can run arbitrary code. Only load checkpoints written by bridgeseg, or re-save "
                             "the weights as a plain state dict.") from error
        raise ValueError(f"checkpoint {path} is corrupt or not a PyTorch file ({error})") from error
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a bridgeseg checkpoint (no 'model' entry); "
                         "for backbone weights use model.init=<file> instead")
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

