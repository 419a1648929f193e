"""The Growing recipe's GPU path (fastca.growing): the masked fixed-length rollout that the CUDA graph holds against
the plain n-step rollout (state, loss and gradients, on the CPU), the graph branch of an iteration with a stand-in
graph, the device options, checkpoints across devices and the command line; with CUDA, graph against eager
iterations and a checkpoint round trip between the devices."""

import numpy as np
import pytest
import torch

from fastca import growing
from fastca.errors import InputError
from fastca.model import GROWING
from fastca.torch_model import DescribedNCA
from test_growing import TINY, tiny_target, weights64

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are small: one CPU thread is faster (on a busy 2-core machine, 8x) and the timing steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def growing_trainer(sparse, dtype, batch=2):
    """A trainer on the 72x72 grid (a 40x40 target) with weights that grow, its net and target in ``dtype``."""
    cfg = growing.GrowingConfig(batch=batch, pool=batch, damage=0, steps_min=1, steps_max=8, sparse=sparse)
    tr = growing.GrowingTrainer(tiny_target(40), cfg)
    tr.net = DescribedNCA(GROWING, weights64(seed=2, scale=0.3, alpha_bias=0.05), dtype=dtype)
    tr.target = tr.target.to(dtype)
    return tr


@pytest.mark.parametrize("sparse, dtype", [(False, torch.float32), (True, torch.float64)],
                         ids=["dense-float32", "sparse-float64"])
def test_masked_rollout_equals_the_n_step_rollout(sparse, dtype):
    """The graph's body (7 steps, step k kept only when k < n) gives the n-step rollout's final state, loss and
    normalised gradients, for n below the maximum (the steps past n must be skipped) and at it. Dense float32:
    what the graph runs (equal to rounding: the kept steps are the same arithmetic); sparse float64: the same
    body eagerly (dense float64 convolutions are slow on the CPU)."""
    tr = growing_trainer(sparse, dtype)
    h = tr.h
    assert h == 72
    fires = torch.from_numpy(np.random.default_rng(1).random((7, 2, h, h)) <= 0.5)
    x0 = torch.from_numpy(growing.seed_state(2, h, h)).to(dtype)
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-8)

    def grads():
        return {k: p.grad.clone() for k, p in tr.net.params.items()}

    def plain(n):
        tr.net.zero_grad(set_to_none=True)
        x, loss = tr._rollout_loss(x0, fires[:n])
        loss.backward()
        tr._normalise_grads()
        return x.detach(), float(loss.detach()), grads()

    def masked(n):
        tr.net.zero_grad(set_to_none=True)
        x, loss = tr._masked_body(x0, fires, torch.tensor(n))
        return x, float(loss), grads()

    want = {n: plain(n) for n in (5, 1, 7)}
    for n, (x_want, l_want, g_want) in want.items():
        x_got, l_got, g_got = masked(n)
        np.testing.assert_allclose(x_got.numpy(), x_want.numpy(), **tol, err_msg=f"n={n}")
        assert l_got == pytest.approx(l_want, rel=tol["rtol"]), n
        for k in g_want:
            np.testing.assert_allclose(g_got[k].numpy(), g_want[k].numpy(), **tol, err_msg=f"n={n} {k}")
    # the comparison can see a step too many: steps 6 and 7 change the state, the loss and every gradient
    (x5, l5, g5), (x7, l7, g7) = want[5], want[7]
    assert (x5[..., 3] > 0.1).sum() > 20  # it grew
    assert np.abs(x7.numpy() - x5.numpy()).max() > 1e-2 and abs(l7 - l5) > 1e-6 * l5
    for k in g5:
        assert np.abs(g7[k].numpy() - g5[k].numpy()).max() > 1e-3, k


class _GraphConfig(growing.GrowingConfig):
    use_graph = True  # the graph branch on the CPU (the stand-in graph below replays eagerly)


class _StandInGraph:
    """Replays the captured body eagerly on the static inputs, as torch.cuda.CUDAGraph.replay runs it on the GPU
    (there every replay overwrites the gradients allocated at capture; here they are reset first)."""

    def __init__(self, trainer):
        self.trainer, self.replays = trainer, 0

    def replay(self):
        tr = self.trainer
        tr.opt.zero_grad(set_to_none=True)
        tr._graph_out = tr._masked_body(*tr._graph_in)
        self.replays += 1


def _stand_in_capture(trainer, shape):
    trainer._graph_in = trainer._static_inputs(shape)
    trainer._graph = _StandInGraph(trainer)


def test_graph_iteration_with_a_stand_in_graph_equals_the_eager_one():
    """train_step's graph branch on the CPU: masks for steps_max - 1 steps, the batch, masks and step count
    written into the static inputs before each replay, the replay's state and loss used. The first iteration
    equals the eager one (both draw the same first n masks); later ones reuse the one capture."""
    t = tiny_target()
    cfg = dict(seed=5, **{**TINY, "steps_min": 2, "steps_max": 7})
    eager = growing.GrowingTrainer(t, growing.GrowingConfig(**cfg))
    graphed = growing.GrowingTrainer(t, _GraphConfig(**cfg))
    graphed._capture = lambda shape: _stand_in_capture(graphed, shape)
    for tr in (eager, graphed):
        tr.net.params["w2"].data.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))  # growth from step 1
    loss_e, loss_g = eager.train_step(), graphed.train_step()
    n = eager.steps[-1]
    assert graphed.steps == [n] and n < cfg["steps_max"] - 1  # a step count the graph must mask
    assert loss_g == pytest.approx(loss_e, rel=1e-6)
    for k, v in eager.net.arrays().items():
        np.testing.assert_allclose(graphed.net.arrays()[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(graphed.pool.numpy(), eager.pool.numpy(), rtol=1e-5, atol=1e-6)
    x, fires, n_in = graphed._graph_in
    assert int(n_in) == n and fires.shape == (cfg["steps_max"] - 1, 4, *x.shape[1:3]) and fires.any()
    for _ in range(2):
        graphed.train_step()
    assert graphed._graph.replays == 3 and int(n_in) == graphed.steps[-1] and np.isfinite(graphed.losses).all()


def test_device_options(monkeypatch):
    cpu = growing.GrowingConfig()
    assert cpu.device == "cpu" and cpu.cuda_graph and cpu.use_sparse and not cpu.use_graph
    assert not growing.GrowingConfig(sparse=False).use_graph  # the graph is for the GPU only
    assert {"device", "cuda_graph"} <= set(growing.RUN_OPTIONS)
    with pytest.raises(InputError, match="device must be cpu or cuda"):
        growing.GrowingConfig(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"device 'cuda': CUDA is not available here .*--device cpu"):
        growing.GrowingConfig(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = growing.GrowingConfig(device="cuda")
    assert gpu.use_graph and not gpu.use_sparse
    assert not growing.GrowingConfig(device="cuda", cuda_graph=False).use_graph
    sparse = growing.GrowingConfig(device="cuda:0", sparse=True)  # allowed eagerly, never in the graph
    assert sparse.use_sparse and not sparse.use_graph
    with pytest.raises(InputError, match="1 CUDA device"):
        growing.GrowingConfig(device="cuda:1")


def test_a_gpu_checkpoint_loads_and_resumes_on_the_cpu(tmp_path, monkeypatch):
    """A checkpoint whose run was on a GPU (its config's device, a CUDA generator state) loads on a machine without
    CUDA; resuming it there needs device="cpu" (a one-line refusal otherwise) and reseeds the mask generator."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tr = growing.GrowingTrainer(tiny_target(), growing.GrowingConfig(iterations=2, seed=3, **TINY))
    tr.run(str(tmp_path))
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["device"] = "cuda"
    ckpt["torch_rng"] = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    torch.save(ckpt, path)
    assert growing.load_checkpoint(path)["config"]["device"] == "cuda"
    with pytest.raises(InputError, match="CUDA is not available here"):
        growing.GrowingTrainer.resume(str(path))
    resumed = growing.GrowingTrainer.resume(str(path), device="cpu", cuda_graph=False, iterations=3)
    assert resumed.config.device == "cpu" and not resumed.config.cuda_graph and resumed.iteration == 2
    assert resumed.pool.device.type == "cpu" and torch.equal(resumed.pool, tr.pool)
    assert torch.equal(resumed.gen.get_state(), torch.Generator().manual_seed(3 * 1_000_003 + 2).get_state())
    resumed.run(str(tmp_path))
    assert growing.load_checkpoint(path)["iteration"] == 3
    ckpt["config"]["device"] = "tpu"
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'config' is not a growing recipe.*device must be cpu or cuda"):
        growing.load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("recipe", ["growing", "mnist"])
def test_cli_device_cuda_without_cuda_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, recipe):
    from fastca.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    growing.save_target(tiny_target(), tmp_path / "t.png")
    out = tmp_path / "run"
    args = ["--target", str(tmp_path / "t.png")] if recipe == "growing" else ["--data", str(tmp_path / "none")]
    code = main(["train", "--recipe", recipe, *args, "--out", str(out), "--device", "cuda", "--iterations", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA is not available here" in err and "--device cpu" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out.exists()


def test_cli_growing_takes_no_graph_and_names_the_device(tmp_path, capsys):
    from fastca.cli import main

    growing.save_target(tiny_target(), tmp_path / "t.png")
    out = tmp_path / "run"
    code = main(["train", "--recipe", "growing", "--target", str(tmp_path / "t.png"), "--out", str(out),
                 "--iterations", "1", "--no-graph"])
    io = capsys.readouterr()
    assert code == 0 and "device cpu" in io.out and "trained to iteration 1" in io.out, io.err
    config = growing.load_checkpoint(out / "checkpoint.pt")["config"]
    assert config["device"] == "cpu" and config["cuda_graph"] is False


# -- on a GPU -------------------------------------------------------------------------------------------------

@needs_cuda
def test_gpu_graph_iterations_match_eager_ones_and_checkpoints_cross_devices(tmp_path):
    """Three iterations replaying the CUDA graph against three eager ones from the same start (same batches, step
    counts and masks: the difference is the masked fixed-length rollout and the graph), loosely; then a checkpoint
    of the GPU run resumes on the CPU and the CPU's on the GPU."""
    t = tiny_target(40)  # the recipe's 72x72 grid
    cfg = dict(seed=11, batch=4, pool=8, steps_min=4, steps_max=12, damage=1, device="cuda", iterations=3)
    runs = {}
    for graph in (True, False):
        tr = growing.GrowingTrainer(t, growing.GrowingConfig(cuda_graph=graph, **cfg))
        assert tr.config.use_graph == graph and not tr.config.use_sparse
        with torch.no_grad():
            tr.net.params["w2"].normal_(0, 0.05, generator=torch.Generator(device="cuda").manual_seed(0))
        tr.run(str(tmp_path / f"graph{graph}"))
        assert (tr._graph is not None) == graph and tr.pool.device.type == "cuda"
        runs[graph] = tr
    g, e = runs[True], runs[False]
    assert g.steps == e.steps and min(g.steps) < cfg["steps_max"] - 1  # at least one masked iteration
    np.testing.assert_allclose(g.losses, e.losses, rtol=1e-3)
    np.testing.assert_allclose(g.pool.cpu().numpy(), e.pool.cpu().numpy(), atol=2e-2)
    for k, v in e.net.arrays().items():
        diff = np.abs(g.net.arrays()[k] - v)
        assert diff.max() <= 3 * 2 * 2e-3 and (diff > 1e-4).mean() < 0.01, k  # Adam: <= ~lr per step

    # GPU -> CPU: the checkpoint holds CPU tensors and resumes on the CPU
    folder = tmp_path / "graphTrue"
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)  # no map_location: CPU tensors already
    assert ckpt["pool"].device.type == "cpu" and all(
        s.device.type == "cpu" for st in ckpt["optimizer"]["state"].values() for s in st.values()
        if isinstance(s, torch.Tensor))
    cpu = growing.GrowingTrainer.resume(str(folder / "checkpoint.pt"), device="cpu", iterations=4)
    assert cpu.config.use_sparse and not cpu.config.use_graph and cpu.pool.device.type == "cpu"
    for k, v in g.net.arrays().items():
        np.testing.assert_array_equal(cpu.net.arrays()[k], v, err_msg=k)
    cpu.run(str(folder))
    # CPU -> GPU
    back = growing.GrowingTrainer.resume(str(folder / "checkpoint.pt"), device="cuda", iterations=5)
    assert back.config.use_graph and back.pool.device.type == "cuda" and back.iteration == 4
    np.testing.assert_array_equal(back.pool.cpu().numpy(), cpu.pool.numpy())
    back.run(str(folder))
    assert back.iteration == 5 and np.isfinite(back.losses).all() and back._graph is not None
    assert growing.load_checkpoint(folder / "checkpoint.pt")["iteration"] == 5
