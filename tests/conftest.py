"""Shared fixtures (helpers, tolerances and paths live in helpers.py)."""

import os
import sys

import pytest

# the tests parametrize over benchmarks/registry.py: importable from the repository root, which
# `python -m pytest` puts on sys.path and the `pytest` script does not
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastca


@pytest.fixture(scope="session")
def random_weights():
    return fastca.NCAWeights.random(seed=1, scale=0.1)


@pytest.fixture(scope="session")
def model():
    return fastca.pretrained()


@pytest.fixture(scope="session")
def digits():
    return fastca.data.sample_digits()
