"""The runnable examples in the docstrings of the pipeline modules (numpydoc
``Examples`` sections) run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["processing.calibration", "processing.corrections", "processing.collimator",
           "processing.window", "processing.enhance", "processing.output",
           "processing.lut", "processing.pipeline", "processing.profiles"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
