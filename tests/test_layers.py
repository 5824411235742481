"""The layering contract covers the whole package, and the contract itself holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bridgeseg"
CONTAINERS = {"bridgeseg", "bridgeseg.data", "bridgeseg.models"}  # package __init__s outside every layer


def _layer_modules() -> list[str]:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")]


def _package_modules() -> list[str]:
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(names)


def test_every_module_is_in_a_layer():
    layers = _layer_modules()
    assert len(layers) == len(set(layers)), "a module is listed in two layers"
    outside = [name for name in _package_modules() if name not in CONTAINERS
               and not any(name == layer or name.startswith(layer + ".") for layer in layers)]
    assert not outside, f"modules in no layer of the import-linter contract (pyproject.toml): {outside}"
    missing = [layer for layer in layers if layer not in _package_modules()]
    assert not missing, f"the contract lists modules that do not exist: {missing}"


def test_config_imports_first_without_a_cycle():
    """config reads option lists from models, data and grouping; none of their packages may import
    config back (e.g. ``models/__init__`` importing ``models.build``): a fresh interpreter that
    imports config first would fail."""
    result = subprocess.run([sys.executable, "-c", "import bridgeseg.config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed (it is in the test extras: pip install -e '.[test]')")
def test_import_linter_contract_is_kept():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
