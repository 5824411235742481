"""Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) ``.mat`` label files.

``cls/<id>.mat`` holds struct ``GTcls`` whose ``Segmentation`` is an (H, W) map of classes 0..20;
``inst/<id>.mat`` holds struct ``GTinst`` whose ``Segmentation`` is an (H, W) map of instance ids
0..N and ``Categories`` the class (1..20) of each instance. SBD has no void pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _load_struct(path: str | Path, name: str):
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBD label file {path} does not exist")
    try:
        content = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as error:
        raise ValueError(f"SBD label file {path} is corrupt or not a MATLAB file ({error})") from error
    if name not in content:
        raise ValueError(f"SBD label file {path} has no struct {name!r} (found {sorted(k for k in content if not k.startswith('__'))}); "
                         f"cls/*.mat files hold GTcls, inst/*.mat files hold GTinst")
    return content[name]


def read_sbd_classes(path: str | Path) -> np.ndarray:
    """``cls/<id>.mat`` -> (H, W) int64 class map."""
    return np.asarray(_load_struct(path, "GTcls").Segmentation, dtype=np.int64)


def read_sbd_instances(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``inst/<id>.mat`` -> ``(instance map (H, W) int64 with ids 0..N, categories (N,) int64)``.

    The class of instance ``i`` is ``categories[i - 1]``.
    """
    struct = _load_struct(path, "GTinst")
    instance_map = np.asarray(struct.Segmentation, dtype=np.int64)
    categories = np.atleast_1d(np.asarray(struct.Categories, dtype=np.int64)).reshape(-1)
    if instance_map.max(initial=0) > len(categories):
        raise ValueError(f"SBD label file {path} has instance id {instance_map.max()} but only {len(categories)} "
                         "categories")
    return instance_map, categories


def sbd_semantic_from_instances(instance_map: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """The class map implied by an instance map and its categories (0 where no instance)."""
    lookup = np.concatenate([[0], categories])
    return lookup[instance_map]
