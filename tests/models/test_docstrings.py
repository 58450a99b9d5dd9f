"""The Examples in the models docstrings run and print what they show."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["augengine.models.resnet", "augengine.models.features",
                                    "augengine.models.weights",
                                    "augengine.models.superres", "augengine.models.segnet"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
