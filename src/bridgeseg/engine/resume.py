"""Resuming a run whose command changed: which settings a checkpoint can take new values of.

``OUT/last.pt`` holds the config the run was trained with. Before anything in ``OUT`` is written,
``resume_changes`` compares it with the config of the command that resumes:

- **fixed** are the settings that the weights, the optimizer state or the order and augmentation
  of the training samples depend on: the network (``model.*``, except ``model.init``, which a
  resumed run does not read, and ``model.channels_last``, a memory layout), the training data
  (``data.*``, except where the files lie, the validation split, ``workers``, ``cache_mb`` and
  ``skip_bad``), ``train.optimizer``, ``train.batch_size`` and ``train.seed``; and the classes
  (``check_classes``). A change is refused, listing each key with both values and the two ways
  out: another ``--out``, or ``--no-resume``.
- **taken** is everything else: a longer schedule, the learning rate, the loss, evaluation and
  grouping settings, logging, device, mixed precision. Training prints the changes and records
  them in ``metrics.jsonl`` at the step where they start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint, restore_rng_state
from ..config import Config, ConfigError, config_from_dict

FIXED_SECTIONS = ("model", "data")
CHANGEABLE = ("model.init", "model.channels_last", "data.root", "data.sbd_root", "data.val_split", "data.workers",
              "data.cache_mb", "data.skip_bad")
FIXED = ("train.optimizer", "train.batch_size", "train.seed")
WAYS_OUT = ("train into another folder (--out OTHER) to keep this run, or start this one over with --no-resume "
            "(which replaces it)")


def is_fixed(dotted: str) -> bool:
    """Whether ``section.key`` cannot change when a run resumes."""
    return dotted in FIXED or (dotted.split(".")[0] in FIXED_SECTIONS and dotted not in CHANGEABLE)


def config_differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (old value, new value)}`` of every key whose value differs."""
    before, after = old.to_dict(), new.to_dict()
    return {f"{section}.{key}": (value, after[section][key])
            for section, values in before.items() for key, value in values.items() if after[section][key] != value}


def format_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """``"train.iterations 2 -> 3, eval.flip False -> True"``."""
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in differences.items())


def resume_changes(state: dict, config: Config, path: Path) -> dict[str, tuple[Any, Any]]:
    """The settings of ``config`` that differ from those the checkpoint ``state`` (read from
    ``path``) was trained with, all of which can change on resume.

    Raises:
        ConfigError: a fixed setting differs (the message lists each with both values, and the
            ways out).
    """
    stored = config_from_dict(state["config"], migrate=True)
    differences = config_differences(stored, config)
    fixed = {key: values for key, values in differences.items() if is_fixed(key)}
    if fixed:
        listed = ", ".join(f"{key} is {new!r} but {old!r} in the checkpoint" for key, (old, new) in fixed.items())
        raise ConfigError(f"cannot resume {path} (step {state['step']}) with this config: {listed}; "
                          f"{'this setting' if len(fixed) == 1 else 'these settings'} cannot change within a run: "
                          f"{WAYS_OUT}", *fixed)
    return differences


def check_classes(state: dict, class_names: tuple[str, ...], path: Path) -> None:
    """Refuse to resume the checkpoint ``state`` on a training set of other classes."""
    if tuple(state["class_names"]) != tuple(class_names):
        raise ValueError(f"cannot resume {path}: it was trained on the classes {list(state['class_names'])}, but the "
                         f"training data now has {list(class_names)}; {WAYS_OUT}")


def resumable_state(config: Config, path: Path) -> tuple[dict | None, dict[str, tuple[Any, Any]]]:
    """``(the checkpoint at path, the config changes it takes)``, or ``(None, {})`` without one.

    Raises:
        ConfigError: a fixed setting changed (``resume_changes``).
    """
    if not path.is_file():
        return None, {}
    state = load_checkpoint(path, map_location="cpu")
    return state, resume_changes(state, config, path)


def load_training_state(state: dict, model, optimizer, scaler) -> None:
    """The weights, optimizer state, AMP scaler and RNG state of the checkpoint ``state`` into a run
    built from the (possibly changed) config. The optimizer keeps the hyper-parameters it was built
    with (learning rates, momentum, weight decay from the config: a changed ``train.lr`` takes
    effect), where its state dict would bring back the checkpoint's."""
    model.load_state_dict(state["model"])
    saved = state["optimizer"]
    groups = [{**old, **{key: value for key, value in new.items() if key != "params"}}
              for old, new in zip(saved["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**saved, "param_groups": groups})
    if state.get("scaler") and scaler.is_enabled():  # empty when the run was saved without fp16
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
