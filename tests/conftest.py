"""Shared test fixtures: the real dataset files in ../shared/fixtures and a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

torch.set_num_threads(2)


def shared_fixture(*parts: str) -> Path:
    """A path under ../shared/fixtures, or skip the test when a user's clone has none."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data fixture {path} is not available (it lives beside the repository in ../shared)")
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic VOC-layout dataset (8 train / 4 val scenes of 64 px)."""
    from bridgeseg.data.synthetic import SceneSpec, generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(root, num_train=8, num_val=4, seed=1,
                            spec=SceneSpec(image_size=64, min_size=12, max_size=26))
