"""Training (tiny runs): the loss goes down, resume is exact, bad checkpoints are refused; evaluation."""

import re
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
    """fastca train for 2 iterations; a second run is refused without --overwrite; --resume to 3; a different
    recipe on --resume is refused, except a lower --lr."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fastca", "train", "--data", str(MNIST_DIR), "--limit", "64",
                               "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=600)

    p = cli("--iterations", "2", "--checkpoint-every", "1")
    assert p.returncode == 0, p.stderr
    p = cli("--iterations", "2", "--data", str(tmp_path / "no-mnist"))  # a second run: refused before any work
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "already holds a training run" in p.stderr and "--resume" in p.stderr and "--overwrite" in p.stderr
    p = cli("--iterations", "2", "--resume", "--overwrite")
    assert p.returncode == 2 and "exclude each other" in p.stderr, p.stderr
    p = cli("--iterations", "2", "--overwrite", "--checkpoint-every", "1")
    assert p.returncode == 0, p.stderr
    p = cli("--iterations", "3", "--resume")
    assert p.returncode == 0 and "iteration 3" in p.stdout, p.stderr
    p = cli("--iterations", "4", "--resume", "--lr", "0.5", "--seed", "3")
    assert p.returncode == 2 and "--lr 0.5 (checkpoint: 0.001)" in p.stderr and "--seed 3" in p.stderr, p.stderr
    p = cli("--iterations", "4", "--resume", "--lr", "0.001")  # the same value is no conflict
    assert p.returncode == 0, p.stderr
    p = cli("--iterations", "5", "--resume", "--lr", "0.0001")  # a lower learning rate is allowed, and said
    assert p.returncode == 0 and "learning rate lowered from 0.001 to 0.0001" in p.stdout + p.stderr, p.stderr
    p = cli("--iterations", "6", "--resume", "--lr", "0.001")  # and from then on it is the run's
    assert p.returncode == 2 and "--lr 0.001 (checkpoint: 0.0001)" in p.stderr, p.stderr


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


# ---- an existing run is not overwritten (issue 22, item 7) ----

def test_train_refuses_to_overwrite_a_run_before_any_work(tmp_path, train_digits):
    config = TrainConfig(iterations=2, seed=0, **TINY)
    train(*train_digits, config, out_dir=tmp_path, progress=False)
    before = {n: (tmp_path / n).read_bytes() for n in ("checkpoint.pt", "model.npz")}
    not_digits = np.zeros((3, 5))  # the trainer would refuse these: the folder check must come first
    with pytest.raises(FileExistsError, match="already holds a training run.*--resume.*--overwrite") as info:
        train(not_digits, train_digits[1][:3], config, out_dir=tmp_path, progress=False)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(FileExistsError):
        train(*train_digits, config, out_dir=tmp_path, progress=False)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    (tmp_path / "checkpoint.pt").unlink()  # a folder with only a finished model.npz is a run too
    with pytest.raises(FileExistsError, match="model.npz"):
        train(*train_digits, config, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        train(*train_digits, config, out_dir=tmp_path, resume=True, overwrite=True, progress=False)
    _, trainer = train(*train_digits, TrainConfig(iterations=1, seed=0, **TINY), out_dir=tmp_path, overwrite=True,
                       progress=False)
    assert trainer.iteration == 1 and Trainer.resume(tmp_path / "checkpoint.pt", *train_digits).iteration == 1
    assert (tmp_path / "model.npz").read_bytes() != before["model.npz"]


# ---- only sane checkpoints are written; the learning rate may be lowered on resume (item 8) ----

def _max_weight(path):
    return max(float(v.abs().max()) for v in torch.load(path, weights_only=True)["model"].values())


def test_diverging_run_keeps_the_last_sane_checkpoint_and_resumes_with_a_lower_lr(tmp_path, train_digits, caplog):
    config = TrainConfig(iterations=6, seed=0, **{**TINY, "checkpoint_every": 1})
    trainer = Trainer(*train_digits, config)
    trainer.run(tmp_path, progress=False, stop_at=2)
    trainer.config.lr = 1e20  # from now on each Adam step moves every weight by about 1e20
    with pytest.raises(FloatingPointError, match="training diverged") as info:
        trainer.run(tmp_path, progress=False)
    assert "\n" not in str(info.value)
    ckpt = tmp_path / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["iteration"] == 2 and _max_weight(ckpt) < 10
    with pytest.raises(FloatingPointError):  # nor does a direct save write the diverged state
        trainer.save(ckpt)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 2
    # the fix the message suggests: resume with a lower learning rate
    with caplog.at_level("WARNING", logger="fastca.train"):
        _, resumed = train(*train_digits, TrainConfig(iterations=4, lr=1e-4, seed=0, **TINY), out_dir=tmp_path,
                           resume=True, progress=False)
    assert resumed.iteration == 4 and resumed.config.lr == 1e-4 and np.all(np.isfinite(resumed.weights().w1))
    assert "learning rate lowered from 0.001 to 0.0001" in caplog.text
    assert torch.load(ckpt, weights_only=True)["config"]["lr"] == 1e-4  # the new base is the run's from now on
    assert lr_at(resumed.config, 30_000) == pytest.approx(1e-5)  # the schedule continues from the new base


def test_save_refuses_weights_beyond_the_limit_and_non_finite_losses(tmp_path, train_digits):
    from fastca.train import MAX_WEIGHT

    trainer = Trainer(*train_digits, TrainConfig(iterations=2, seed=0, **TINY))
    trainer.run(progress=False)
    path = tmp_path / "checkpoint.pt"
    bias = trainer.net.state_dict()["out.bias"]  # a view of the parameter
    for value, ok in ((MAX_WEIGHT / 2, True), (-2 * MAX_WEIGHT, False), (float("nan"), False), (0.0, True)):
        bias[0] = value
        if ok:
            trainer.save(path)
            assert Trainer.resume(path, *train_digits).net.state_dict()["out.bias"][0] == value
        else:
            with pytest.raises(FloatingPointError, match=re.escape(f"weight out.bias reaches {abs(value):.3g} in")):
                trainer.save(path)
    trainer.losses[-1] = float("inf")  # a non-finite loss since the last checkpoint: not saved either
    with pytest.raises(FloatingPointError, match="a non-finite loss"):
        trainer.save(tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()


def test_a_run_diverging_at_once_writes_nothing(tmp_path, train_digits):
    config = TrainConfig(iterations=4, seed=0, lr=1e20, **{**TINY, "checkpoint_every": 1})
    with pytest.raises(FloatingPointError, match=r"training diverged: weight .* reaches .*e\+(19|20) .*iteration 1"):
        train(*train_digits, config, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "model.npz").exists()


def test_resume_may_lower_the_lr_but_not_raise_it_or_change_the_recipe(tmp_path, train_digits):
    Trainer(*train_digits, TrainConfig(iterations=2, seed=0, **TINY)).run(tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    assert Trainer.resume(path, *train_digits, lr=1e-4).config.lr == 1e-4
    with pytest.raises(ValueError, match="may only lower the learning rate"):
        Trainer.resume(path, *train_digits, lr=1e-2)
    with pytest.raises(ValueError, match="pool=16 .checkpoint: 8."):
        Trainer.resume(path, *train_digits, pool=16)
    # train(resume=True) refuses a higher learning rate given with the config, as Trainer.resume does
    with pytest.raises(ValueError, match="may only lower the learning rate"):
        train(*train_digits, TrainConfig(iterations=3, lr=1e-2, seed=0, **TINY), out_dir=tmp_path, resume=True,
              progress=False)
    _, t = train(*train_digits, TrainConfig(iterations=3, lr=1e-3, seed=0, **TINY), out_dir=tmp_path, resume=True,
                 progress=False)
    assert t.config.lr == 1e-3 and t.iteration == 3


# ---- every field of a checkpoint is checked: one-line ValueError naming the file and field (item 15) ----

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, train_digits):
    folder = tmp_path_factory.mktemp("good")
    Trainer(*train_digits, TrainConfig(iterations=2, seed=0, **TINY)).run(folder, progress=False)
    return folder / "checkpoint.pt"


def _set(*keys, value):
    def edit(ckpt):
        d = ckpt
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value
    return edit


def _drop(key):
    return lambda ckpt: ckpt.pop(key)


def _nan_weight(ckpt):
    ckpt["model"]["out.bias"][3] = float("nan")


TAMPERED = {  # id: (edit of the loaded checkpoint, the field the error must name)
    "pool-of-2": (_set("pool", value=lambda t: t[:2]), "pool"),
    "pool-labels-of-2": (_set("pool_labels", value=lambda t: t[:2]), "pool_labels"),
    "pool-float64": (_set("pool", value=lambda t: t.double()), "pool"),
    "pool-nan": (_set("pool", value=lambda t: t * float("nan")), "pool"),
    "pool-channels": (_set("pool", value=lambda t: t[..., :10]), "pool"),
    "labels-out-of-range": (_set("pool_labels", value=lambda t: t + 10), "pool_labels"),
    "labels-float": (_set("pool_labels", value=lambda t: t.float()), "pool_labels"),
    "missing-key": (_drop("losses"), "losses"),
    "extra-key": (_set("surprise", value=1), "surprise"),
    "iteration-str": (_set("iteration", value="2"), "iteration"),
    "iteration-float": (_set("iteration", value=2.0), "iteration"),
    "iteration-bool": (_set("iteration", value=True), "iteration"),
    "iteration-negative": (_set("iteration", value=-1), "iteration"),
    "iteration-vs-losses": (_set("iteration", value=7), "iteration"),
    "losses-extra": (_set("losses", value=lambda v: v + [0.5]), "iteration"),  # one loss per iteration
    "version-str": (_set("version", value="1"), "version"),
    "version-0": (_set("version", value=0), "version"),
    "version-bool": (_set("version", value=True), "version"),  # True == 1: only the type check refuses it
    "losses-nan": (_set("losses", value=lambda v: [float("nan")] * len(v)), "losses"),
    "losses-str": (_set("losses", value=lambda v: ["x"] * len(v)), "losses"),
    "model-nan": (_nan_weight, "model"),
    "model-diverged": (_set("model", "out.bias", value=lambda t: t + 1e20), "model"),
    "model-shape": (_set("model", "dense.weight", value=lambda t: t[:40]), "model"),
    "model-missing": (lambda c: c["model"].pop("out.bias"), "model"),
    "model-float64": (_set("model", "out.bias", value=lambda t: t.double()), "model"),
    "config-pool": (_set("config", "pool", value=16), "pool"),
    "config-batch-6": (_set("config", "batch", value=6), "config"),
    "config-pool-str": (_set("config", "pool", value="8"), "config"),
    "config-lr-nan": (_set("config", "lr", value=float("nan")), "config"),
    "config-unknown": (_set("config", "colour", value="red"), "config"),
    "config-decay-at": (_set("config", "decay_at", value="30000"), "config"),
    "optimizer-shape": (_set("optimizer", "state", 0, "exp_avg", value=lambda t: t[:1]), "optimizer"),
    "optimizer-state-list": (_set("optimizer", "state", value=[]), "optimizer"),
    "optimizer-lr-str": (_set("optimizer", "param_groups", 0, "lr", value="fast"), "optimizer"),
    "optimizer-params": (_set("optimizer", "param_groups", 0, "params", value=[0, 1]), "optimizer"),
    "optimizer-betas": (_set("optimizer", "param_groups", 0, "betas", value=(0.9,)), "optimizer"),
    "optimizer-no-groups": (_set("optimizer", "param_groups", value=[]), "optimizer"),
    "optimizer-extra-state": (_set("optimizer", "state", 0, "momentum", value=torch.zeros(1)), "optimizer"),
    "optimizer-nan": (_set("optimizer", "state", 1, "exp_avg_sq", value=lambda t: t * float("nan")), "optimizer"),
    "torch-rng-float": (_set("torch_rng", value=lambda t: t.float()), "torch_rng"),
    "torch-rng-garbage": (_set("torch_rng", value=lambda t: torch.full_like(t, 7)), "torch_rng"),
    "numpy-rng-other": (_set("numpy_rng", value={"bit_generator": "MT19937"}), "numpy_rng"),
    "numpy-rng-state": (_set("numpy_rng", "state", value={"state": "x", "inc": 1}), "numpy_rng"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_checkpoint_is_refused_naming_file_and_field(case, good_checkpoint, train_digits, tmp_path):
    edit, field = TAMPERED[case]
    ckpt = torch.load(good_checkpoint, weights_only=True)
    edit(ckpt)
    path = tmp_path / "tampered.pt"
    torch.save(ckpt, path)
    try:
        Trainer.resume(path, *train_digits)
    except ValueError as exc:  # not IndexError, KeyError, TypeError, RuntimeError
        message = str(exc)
    else:
        pytest.fail(f"{case}: the tampered checkpoint was accepted")
    assert message.startswith(f"{path}: ") and f"'{field}'" in message and "\n" not in message, message


def test_checkpoint_for_other_digits_is_refused(good_checkpoint, train_digits):
    small = train_digits[0][:, ::2, ::2].copy(), train_digits[1]
    with pytest.raises(ValueError, match=r"checkpoint.pt: .*'pool' holds 28x28 states; the training digits are 14x14"):
        Trainer.resume(good_checkpoint, *small)


def test_untampered_checkpoint_passes_every_check(good_checkpoint, train_digits):
    from fastca.train import checkpoint_config

    assert checkpoint_config(good_checkpoint)["pool"] == 8
    t = Trainer.resume(good_checkpoint, *train_digits, iterations=3)
    t.run(progress=False)
    assert t.iteration == 3


def test_resume_with_other_training_digits_is_refused(good_checkpoint, train_digits):
    images, labels = train_digits
    with pytest.raises(ValueError, match=r"checkpoint.pt: the checkpoint was trained on 200 digits .* these are 8 "
                                         r".*--limit"):
        Trainer.resume(good_checkpoint, images[:8], labels[:8])
    swapped = labels.copy()
    swapped[[0, 1]] = swapped[[1, 0]] if swapped[0] != swapped[1] else (swapped[0] + 1) % 10
    with pytest.raises(ValueError, match="trained on 200 digits"):  # same count, other labels
        Trainer.resume(good_checkpoint, images, swapped)


def test_a_checkpoint_without_a_data_record_still_resumes(good_checkpoint, train_digits, tmp_path):
    ckpt = torch.load(good_checkpoint, weights_only=True)
    ckpt.pop("data")
    ckpt["version"] = 1
    torch.save(ckpt, tmp_path / "v1.pt")
    assert Trainer.resume(tmp_path / "v1.pt", *train_digits).iteration == ckpt["iteration"]
    for bad in ({"digits": "200", "sha256": "0" * 64}, {"digits": 0, "sha256": "0" * 64},
                {"digits": 200, "sha256": "x"}, {"digits": 200}, [200]):
        ckpt["data"] = bad
        torch.save(ckpt, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="bad.pt: checkpoint entry 'data' is not a record"):
            Trainer.resume(tmp_path / "bad.pt", *train_digits)


def test_checkpoints_are_not_read_with_an_unsafe_torch(good_checkpoint, monkeypatch):
    from fastca.train import load_checkpoint

    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(RuntimeError, match="2.5.1"):
        load_checkpoint(good_checkpoint)


def test_a_resume_without_a_learning_rate_keeps_the_checkpoints(tmp_path, train_digits):
    train(*train_digits, TrainConfig(iterations=1, lr=1e-2, seed=0, **TINY), out_dir=tmp_path, progress=False)
    _, trainer = train(*train_digits, out_dir=tmp_path, resume=True, progress=False, iterations=2, **TINY)
    assert trainer.config.lr == 1e-2 and trainer.opt.param_groups[0]["lr"] == 1e-2
    _, trainer = train(*train_digits, out_dir=tmp_path, resume=True, progress=False, iterations=3, lr=1e-3, **TINY)
    assert trainer.config.lr == 1e-3  # asked for: lowered
    with pytest.raises(ValueError, match="decay must be finite and > 0"):
        TrainConfig(decay=0.0)
