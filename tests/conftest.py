from functools import cache
from pathlib import Path

import pytest

from derive.checks import load_module

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"


@cache
def generated(kind_folder: str, name: str):
    """The committed generated module of a catalogue op."""
    return load_module(GENERATED / kind_folder / f"{name}.py")


@pytest.fixture
def repo():
    return REPO
