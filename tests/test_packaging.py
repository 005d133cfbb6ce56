"""pyproject.toml: the licence in SPDX form with its file, and package data that ships every data file (the
attributions of the shipped weights included) and names nothing that does not exist."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DATA: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]


def _data_files(package: str) -> list[str]:
    """Non-Python files under a package, relative to it (what package-data has to cover)."""
    base = ROOT / package
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc"))


def test_license_is_spdx_with_the_apache_text() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"  # PEP 639: a string, not the deprecated {text = ...} table
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    requires = PYPROJECT["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads PEP 639 license fields


@pytest.mark.parametrize("package", sorted(PACKAGE_DATA))
def test_every_package_data_pattern_matches_a_file(package: str) -> None:
    files = _data_files(package)
    for pattern in PACKAGE_DATA[package]:
        assert fnmatch.filter(files, pattern), f"{package}: {pattern!r} matches no file"


@pytest.mark.parametrize("package", ["models", "engines", "realtime", "apps"])
def test_every_data_file_ships(package: str) -> None:
    patterns = PACKAGE_DATA.get(package, [])
    missing = [f for f in _data_files(package) if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not missing, f"{package} files left out of the wheel: {missing}"


def test_shipped_models_ship_their_attribution() -> None:
    models = sorted(p for p in (ROOT / "models" / "pretrained").iterdir() if p.is_dir())
    assert models
    for m in models:
        rel = str((m / "ATTRIBUTION.md").relative_to(ROOT / "models"))
        assert (m / "ATTRIBUTION.md").is_file() and any(fnmatch.fnmatch(rel, p) for p in PACKAGE_DATA["models"]), m
