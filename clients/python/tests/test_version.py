"""The client is versioned with keyward: its version is the workspace's."""

import tomllib
from importlib.metadata import version

import keyward
from conftest import REPO


def test_the_version_is_keywards() -> None:
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    pyproject = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())
    expected = cargo["workspace"]["package"]["version"]
    assert pyproject["project"]["version"] == expected
    assert version("keyward") == keyward.__version__ == expected
