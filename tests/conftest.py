"""Shared fixtures (helpers, tolerances and paths live in helpers.py)."""

import pytest

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
