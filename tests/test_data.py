"""MNIST loading (md5-checked IDX files), the embedded sample and MNIST worlds."""

import shutil

import numpy as np
import pytest
from helpers import MNIST_DIR, needs_mnist

import fastca
from fastca import data


@needs_mnist
def test_load_mnist_test_split():
    images, labels = data.load_mnist("test", MNIST_DIR)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and list(labels[:5]) == [7, 2, 1, 0, 4]
    sample_images, sample_labels = data.sample_digits()
    np.testing.assert_array_equal(sample_images, images[: len(sample_images)])
    np.testing.assert_array_equal(sample_labels, labels[: len(sample_labels)])


@needs_mnist
def test_load_mnist_env_var(monkeypatch):
    monkeypatch.setenv("FASTCA_MNIST_DIR", str(MNIST_DIR))
    assert data.load_mnist("test")[0].shape[0] == 10000


@needs_mnist
def test_md5_mismatch_is_refused(tmp_path):
    for name in data.FILES["test"]:
        shutil.copy(MNIST_DIR / name, tmp_path / name)
    path = tmp_path / data.FILES["test"][1]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="md5"):
        data.load_mnist("test", tmp_path)


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTCA_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="FASTCA_MNIST_DIR"):
        data.load_mnist("test")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        data.load_mnist("test", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        data.load_mnist("validation", tmp_path)


def test_mnist_world_layout(digits):
    images, labels = digits
    gray, targets, index = data.mnist_world(images[:10], labels[:10], 70, 100)
    assert gray.shape == targets.shape == (70, 100) and gray.dtype == np.uint8
    assert index.shape == (3, 4)
    np.testing.assert_array_equal(gray[:28, :28], images[0])
    np.testing.assert_array_equal(gray[28:56, 28:56], images[index[1, 1]])
    np.testing.assert_array_equal(gray[56:70, 84:100], images[index[2, 3]][:14, :16])  # cropped tile
    assert targets[30, 90] == labels[index[1, 3]]
    g2, _, i2 = data.mnist_world(images, labels, 56, 56, seed=3)
    np.testing.assert_array_equal(g2, data.mnist_world(images, labels, 56, 56, seed=3)[0])
    with pytest.raises(ValueError, match="images must be uint8"):
        data.mnist_world(images.astype(float), labels, 10, 10)


def test_world_simulation_per_cell_targets(model, digits):
    images, labels = digits
    gray, targets, _ = data.mnist_world(images[:20], labels[:20], 84, 140)
    r = fastca.simulate(model, gray, 60, labels=targets, seed=0)
    assert r.state.shape == (84, 140, 20)
    assert r.accuracy[-1] > 70
