"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A training checkpoint is a dict of plain data and tensors: ``model``, ``optimizer``, ``step``,
``elapsed`` (training seconds so far), ``config`` (the resolved config as a dict),
``class_names``, ``rng`` (torch RNG states) and ``version``. It loads with
``torch.load(weights_only=True)``: a file that needs arbitrary classes is refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A run killed while saving leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"version": FORMAT_VERSION, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (training writes <out>/last.pt and <out>/final.pt)")
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

