"""Training (tiny runs): the loss goes down, resume is exact, bad checkpoints are refused; evaluation."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import DISTILL_JSON, MNIST_DIR, needs_mnist

import fastca
from fastca.evaluate import evaluate
from fastca.train import TrainConfig, Trainer, lr_at, train

TINY = dict(batch=4, pool=8, steps=6, checkpoint_every=5)


@pytest.fixture(scope="module")
def train_digits(digits):
    return digits[0][:200], digits[1][:200]


def test_short_training_lowers_the_loss(digits):
    images, labels = digits
    trainer = Trainer(images[:200], labels[:200], TrainConfig(iterations=60, seed=1, batch=8, pool=32, steps=10))
    held_out = images[200:256], labels[200:256]
    before = trainer.eval_loss(*held_out)
    trainer.run(progress=False)
    after = trainer.eval_loss(*held_out)
    assert after < 0.97 * before, (before, after)  # about 6% lower after 60 iterations
    assert np.any(trainer.weights().w3 != 0)


def test_resume_gives_the_same_weights(tmp_path, train_digits):
    config = TrainConfig(iterations=10, seed=3, **TINY)
    whole, _ = train(*train_digits, config, progress=False)
    part = Trainer(*train_digits, config)
    part.run(tmp_path, progress=False, stop_at=5)  # "interrupted" after the checkpoint at 5
    resumed, trainer = train(*train_digits, config, out_dir=tmp_path, resume=True, progress=False)
    assert trainer.iteration == 10
    for k, v in whole.arrays().items():
        np.testing.assert_array_equal(getattr(resumed, k), v, err_msg=k)
    assert fastca.NCAWeights.load(tmp_path / "model.npz").w1.tobytes() == resumed.w1.tobytes()


def test_bad_checkpoints_are_refused(tmp_path, train_digits):
    config = TrainConfig(iterations=2, seed=0, **TINY)
    trainer = Trainer(*train_digits, config)
    trainer.run(tmp_path, progress=False)
    raw = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="not a readable fastca checkpoint"):
        Trainer.resume(tmp_path / "cut.pt", *train_digits)
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a fastca training checkpoint"):
        Trainer.resume(tmp_path / "foreign.pt", *train_digits)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["pool"] = [1, 2, 3]
    torch.save(ckpt, tmp_path / "wrong-type.pt")
    with pytest.raises(ValueError, match="entry 'pool' is missing or not a Tensor"):
        Trainer.resume(tmp_path / "wrong-type.pt", *train_digits)


class _Payload:
    """Unpickling this object creates a file: what a crafted checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_checkpoint_runs_no_code(tmp_path, train_digits):
    marker = tmp_path / "pwned"
    torch.save({"format": "fastca-train-checkpoint", "config": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: not a readable fastca checkpoint"):
        Trainer.resume(tmp_path / "evil.pt", *train_digits)
    assert not marker.exists()


def test_diverging_training_stops_and_keeps_the_good_checkpoint(tmp_path, train_digits):
    config = TrainConfig(iterations=4, seed=0, **{**TINY, "checkpoint_every": 2})
    trainer = Trainer(*train_digits, config)
    trainer.run(tmp_path, progress=False, stop_at=2)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        for p in trainer.net.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="training diverged"):
        trainer.run(tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_config_checks_and_schedule():
    with pytest.raises(ValueError, match="multiple of 4"):
        TrainConfig(batch=6)
    c = TrainConfig()
    assert lr_at(c, 0) == 1e-3 and lr_at(c, 30_000) == pytest.approx(1e-4) and lr_at(c, 70_000) == pytest.approx(1e-5)


def test_evaluate_protocol_backends_agree(model, digits, tmp_path):
    images, labels = digits[0][:40], digits[1][:40]
    a = evaluate(model, images, labels, half=30, backend="numba-cpu", seed=2, batch=16)
    b = evaluate(model, images, labels, half=30, backend="torch", seed=2, batch=16)  # same keys per sample
    assert a.accuracy.shape == (60,) and np.nanmax(np.abs(a.accuracy - b.accuracy)) < 0.5
    assert a.accuracy[29] > 80 and a.accuracy[30] < a.accuracy[29]  # mutation at step 30
    row = a.row()
    assert 1 <= row["top_accuracy_step"] <= 30 and row["accuracy_at_half"] == a.accuracy[29]
    paths = a.save(tmp_path)
    assert all(p.endswith((".csv", ".json", ".png")) for p in paths)


@needs_mnist
def test_eval_cli(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastca", "eval", "--data", str(MNIST_DIR), "--digits", "20",
                        "--half", "10", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "accuracy@10" in p.stdout and (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("shape", [(2, 28, 28), (1, 5, 9), (3, 1, 1)])
def test_sparse_step_equals_dense_in_values_and_gradients(shape):
    from helpers import random_state

    from fastca.torch_model import TorchNCA

    net = TorchNCA.from_weights(fastca.NCAWeights.random(seed=2, scale=0.1))
    state0 = torch.from_numpy(random_state(shape, seed=1))
    gen = torch.Generator().manual_seed(0)
    masks = [torch.rand(shape, generator=gen) <= 0.5 for _ in range(3)]
    noises = [0.02 * torch.randn(shape + (19,), generator=gen) for _ in range(3)]
    results = []
    for step in (net.forward, net.forward_sparse):
        net.zero_grad()
        x = state0
        for m, z in zip(masks, noises):
            x = step(x, fire_mask=m, noise=z)
        (x[..., 10:] ** 2).sum().backward()
        results.append((x.detach(), [p.grad.clone() for p in net.parameters()]))
    (dense, g_dense), (sparse, g_sparse) = results
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    assert torch.any(dense != state0)
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_checkpoint_from_another_device_resumes(tmp_path, train_digits):
    """A GPU checkpoint (its generator state is CUDA's 16 bytes) continues on the CPU with a fresh stream."""
    config = TrainConfig(iterations=4, seed=5, **TINY)
    trainer = Trainer(*train_digits, config)
    trainer.run(tmp_path, progress=False, stop_at=2)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    ckpt["torch_rng"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator state
    ckpt["config"]["device"] = "cuda"
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    t = Trainer.resume(tmp_path / "checkpoint.pt", *train_digits, device="cpu")
    assert t.iteration == 2 and t.config.device == "cpu" and t.config.use_sparse and not t.config.use_graph
    assert torch.equal(t.pool, ckpt["pool"]) and all(g["capturable"] is False for g in t.opt.param_groups)
    t.run(progress=False)
    assert t.iteration == 4 and np.all(np.isfinite(t.weights().w1))
    assert not np.array_equal(t.weights().w3, trainer.weights().w3)


def test_time_limit_stops_with_a_checkpoint(tmp_path, train_digits):
    config = TrainConfig(iterations=1000, seed=0, **TINY)
    _, trainer = train(*train_digits, config, out_dir=tmp_path, progress=False, time_limit=0.0)
    assert trainer.iteration == 1  # the limit is checked after each iteration
    assert Trainer.resume(tmp_path / "checkpoint.pt", *train_digits).iteration == 1


@needs_mnist
def test_train_cli_two_iterations_then_resume_and_conflicts(tmp_path):
    """fastca train for 2 iterations, --resume to 3; a different recipe on --resume is refused."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fastca", "train", "--data", str(MNIST_DIR), "--limit", "64",
                               "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=600)

    p = cli("--iterations", "2", "--checkpoint-every", "1")
    assert p.returncode == 0, p.stderr
    p = cli("--iterations", "3", "--resume")
    assert p.returncode == 0 and "iteration 3" in p.stdout, p.stderr
    p = cli("--iterations", "4", "--resume", "--lr", "0.5", "--seed", "3")
    assert p.returncode == 2 and "--lr 0.5 (checkpoint: 0.001)" in p.stderr and "--seed 3" in p.stderr, p.stderr
    p = cli("--iterations", "4", "--resume", "--lr", "0.001")  # the same value is no conflict
    assert p.returncode == 0, p.stderr


@needs_mnist
def test_eval_cli_models_and_float16(tmp_path):
    """eval --model with a .json, an .npz and a missing file; --storage float16."""
    json_path = DISTILL_JSON if DISTILL_JSON.exists() else None
    npz = tmp_path / "m.npz"
    fastca.pretrained().save(npz)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fastca", "eval", "--data", str(MNIST_DIR), "--digits", "8",
                               "--half", "3", "--out", str(tmp_path / "o"), *args],
                              capture_output=True, text=True, timeout=600)

    for model in [m for m in (json_path, npz) if m is not None]:
        p = cli("--model", str(model))
        assert p.returncode == 0 and "accuracy@3" in p.stdout, p.stderr
    p = cli("--model", str(tmp_path / "missing.npz"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "missing.npz" in p.stderr, p.stderr
    p = cli("--storage", "float16")
    assert p.returncode == 0 and "storage float16" in p.stdout, p.stderr
