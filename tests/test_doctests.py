"""The examples in docstrings are run: a formula's doctest that stops holding fails here."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["benchmark.study", "benchmark.study_fronts", "benchmark.study_bootstrap", "benchmark.metrics.cleam", "benchmark.metrics.fid"])
def test_docstring_examples_hold(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
