"""Training the self-classifying MNIST automaton with the torch reference (the article's recipe).

Recipe (../shared/REFERENCE.md, "3 mutating", L2 + noise): a pool of 160 states; each
iteration takes a batch of 16 from it, replaces the first quarter by fresh digits and
mutates the last quarter into fresh digits, runs 20 steps (fire rate 0.5, noise 0.02),
and minimises ``sum((onehot - state[..., 10:])**2) / 2`` per sample (one-hot on alive
cells, zero on dead ones), mean over the batch. Each gradient tensor is normalised
(``g / (||g|| + 1e-8)``); Adam with learning rate 1e-3, times 0.1 after 30k and 70k
iterations. The batch's final states go back into the pool.

All randomness comes from one torch and one numpy generator whose states are saved
in every checkpoint, so a resumed run continues exactly where it left off. On the CPU
each CA step is :meth:`TorchNCA.forward_sparse` by default: the same function as the
dense step (tested equal in values and gradients), computed only for the cells that
update. On a GPU the dense step is captured once into a CUDA graph (20 steps, loss,
backward and gradient normalisation) and replayed each iteration, because there the
cost is kernel launches, not arithmetic; its masks and noise come from torch's default
CUDA generator. A checkpoint moves between devices (``--resume --device cpu``); the
continuation is then statistically, not bitwise, the same run.
"""

import dataclasses
import os
import time

import numpy as np
import torch

from . import spec
from .simulate import initial_state
from .torch_model import TorchNCA
from .weights import NCAWeights

CHECKPOINT_FORMAT = "fastca-train-checkpoint"
CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class TrainConfig:
    """Options of :func:`train` (defaults: the article's recipe)."""

    iterations: int = 100_000
    batch: int = 16
    pool: int = 160
    steps: int = 20
    lr: float = 1e-3
    decay_at: tuple = (30_000, 70_000)
    decay: float = 0.1
    fire_rate: float = spec.FIRE_RATE
    noise_std: float = spec.NOISE_STD
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 1000
    #: TorchNCA.forward_sparse (same function, ~10x less work) or forward; None: sparse on the CPU only
    sparse: bool | None = None
    #: capture the CUDA iteration into a graph (ignored on the CPU and for sparse steps)
    cuda_graph: bool = True

    def __post_init__(self):
        if self.batch < 4 or self.batch % 4:
            raise ValueError(f"batch must be a multiple of 4 (quarters are replaced/mutated), got {self.batch}")
        if self.pool < self.batch:
            raise ValueError(f"pool ({self.pool}) must be at least the batch ({self.batch})")
        if self.iterations < 0 or self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError("iterations must be >= 0, steps and checkpoint_every >= 1")
        self.decay_at = tuple(int(x) for x in self.decay_at)

    @property
    def use_sparse(self):
        """Whether CA steps use :meth:`TorchNCA.forward_sparse` (default: on the CPU)."""
        return self.sparse if self.sparse is not None else not str(self.device).startswith("cuda")

    @property
    def use_graph(self):
        """Whether iterations replay a captured CUDA graph."""
        return self.cuda_graph and str(self.device).startswith("cuda") and not self.use_sparse


def lr_at(config, iteration):
    """Learning rate at an iteration: lr times decay for each milestone passed."""
    return config.lr * config.decay ** sum(iteration >= m for m in config.decay_at)


class Trainer:
    """Holds the model, optimiser, pool and generators; :meth:`run` trains, :meth:`save` checkpoints."""

    def __init__(self, images, labels, config: TrainConfig, model: NCAWeights | None = None):
        self.images = np.asarray(images)
        self.labels = np.asarray(labels)
        if self.images.ndim != 3 or self.images.dtype != np.uint8 or len(self.images) != len(self.labels):
            raise ValueError("images must be uint8 (N, H, W) with one label each")
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        init = model or NCAWeights.zeros_output(seed=config.seed, fire_rate=config.fire_rate,
                                                noise_std=config.noise_std)
        self.net = TorchNCA.from_weights(init).to(self.device)
        self.net.fire_rate, self.net.noise_std = config.fire_rate, config.noise_std
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        idx = self.np_rng.integers(0, len(self.images), config.pool)
        self.pool = torch.from_numpy(initial_state(self.images[idx])).to(self.device)
        self.pool_labels = torch.from_numpy(self.labels[idx].astype(np.int64)).to(self.device)
        self.iteration = 0
        self.losses = []
        self._graph = None

    def _fresh(self, n):
        idx = self.np_rng.integers(0, len(self.images), n)
        return (torch.from_numpy(initial_state(self.images[idx])).to(self.device),
                torch.from_numpy(self.labels[idx].astype(np.int64)).to(self.device))

    def loss(self, state, labels):
        """L2 loss of a (B, H, W, 20) state against per-sample labels: mean over the batch."""
        alive = (state[..., spec.GRAY] > self.net.alive_threshold).float()
        classes = torch.arange(spec.N_CLASSES, device=labels.device)
        onehot = (labels[:, None] == classes).float()  # not F.one_hot: that may sync, breaking graph capture
        target = onehot[:, None, None, :] * alive[..., None]
        return ((target - state[..., spec.CLASS_START:]) ** 2).sum(dim=(1, 2, 3)).mean() / 2

    def eval_loss(self, images, labels, steps=None, seed=0):
        """Mean loss of the current model on fresh digits after ``steps`` steps (fixed masks/noise)."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        x = torch.from_numpy(initial_state(np.asarray(images))).to(self.device)
        y = torch.from_numpy(np.asarray(labels).astype(np.int64)).to(self.device)
        with torch.no_grad():
            for _ in range(steps or self.config.steps):
                x = self.net(x, generator=gen)
            return float(self.loss(x, y))

    def _batch(self):
        """Pool indices and the batch: a quarter fresh digits, a quarter mutated to fresh digits."""
        c = self.config
        q = c.batch // 4
        idx = torch.from_numpy(self.np_rng.choice(c.pool, c.batch, replace=False)).to(self.device)
        x, y = self.pool[idx].clone(), self.pool_labels[idx].clone()
        x[:q], y[:q] = self._fresh(q)
        new_x, new_y = self._fresh(q)
        alive = (new_x[..., :1] > self.net.alive_threshold).float()
        x[-q:] = torch.cat([new_x[..., :1], x[-q:, ..., 1:] * alive], dim=-1)
        y[-q:] = new_y
        return idx, x, y

    def _rollout_loss(self, x, y, generator):
        """Runs the configured CA steps from ``x``; returns (final state, loss). Differentiable."""
        step = self.net.forward_sparse if self.config.use_sparse else self.net.forward
        for _ in range(self.config.steps):
            x = step(x, generator=generator)
        return x, self.loss(x, y)

    def _normalise_grads(self):
        with torch.no_grad():
            for p in self.net.parameters():
                p.grad /= p.grad.norm() + 1e-8

    def train_step(self):
        """One iteration; returns the loss (float)."""
        idx, x, y = self._batch()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.config, self.iteration)
        if self.config.use_graph:
            x, loss = self._replay(x, y)
        else:
            x, loss = self._rollout_loss(x, y, self.gen)
            self.opt.zero_grad()
            loss.backward()
            self._normalise_grads()
        self.opt.step()
        self.pool[idx] = x.detach()
        self.pool_labels[idx] = y
        self.iteration += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def _replay(self, x, y):
        """The graph path: copy the batch into the captured input, replay; grads are left in p.grad."""
        if self._graph is None:
            self._capture(x.shape)
        self._graph_in[0].copy_(x)
        self._graph_in[1].copy_(y)
        self._graph.replay()
        return self._graph_out

    def _capture(self, shape):
        """Captures rollout + loss + backward + gradient normalisation into one CUDA graph.

        Warm-up passes run first on a side stream (cuDNN algorithm choice, autograd
        buffers), as CUDA graph capture requires; they do not touch the weights. The
        gradients are allocated during capture, so every replay writes the same
        ``p.grad`` tensors that the (eager) optimiser step then reads.
        """
        x = torch.zeros(shape, device=self.device)
        y = torch.zeros(shape[0], dtype=torch.long, device=self.device)
        self._graph_in = (x, y)

        def body():
            state, loss = self._rollout_loss(x, y, None)  # default CUDA generator: graph-safe
            loss.backward()
            self._normalise_grads()
            return state.detach(), loss.detach()

        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._graph_out = body()

    def run(self, out_dir=None, progress=True, stop_at=None, time_limit=None):
        """Train up to ``config.iterations`` (or ``stop_at``), checkpointing into ``out_dir``.

        time_limit: seconds after which training stops early (with a checkpoint), so that a
        run can be continued later with ``resume``. Returns the seconds spent.
        """
        total = self.config.iterations if stop_at is None else min(stop_at, self.config.iterations)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.iteration, desc="train", unit="it", mininterval=1.0)
        t0 = time.perf_counter()
        while self.iteration < total:
            loss = self.train_step()
            if not np.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise FloatingPointError(
                    f"training diverged: loss {loss} at iteration {self.iteration} (lower --lr?); "
                    + (f"the last good checkpoint in {out_dir} is kept" if out_dir else "nothing was saved"))
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr_at(self.config, self.iteration - 1):.0e}", refresh=False)
                bar.update(1)
            out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
            if out_dir and (self.iteration % self.config.checkpoint_every == 0 or self.iteration == total
                            or out_of_time):
                self.save(os.path.join(out_dir, "checkpoint.pt"))
            if out_of_time:
                break
        if bar is not None:
            bar.close()
        return time.perf_counter() - t0

    def weights(self, name="fastca-trained"):
        """The current model as :class:`NCAWeights`."""
        return self.net.to_weights(name=name)

    def save(self, path):
        """Write a checkpoint atomically (temp file + rename)."""
        ckpt = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "iteration": self.iteration,
            "config": dataclasses.asdict(self.config), "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(), "pool": self.pool.cpu(), "pool_labels": self.pool_labels.cpu(),
            "torch_rng": self.gen.get_state(), "numpy_rng": self.np_rng.bit_generator.state,
            "losses": self.losses,
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        torch.save(ckpt, tmp)
        os.replace(tmp, path)

    @classmethod
    def resume(cls, path, images, labels, **overrides):
        """Rebuild a trainer from a checkpoint; ``overrides`` may change e.g. iterations or device."""
        ckpt = load_checkpoint(path)
        config = TrainConfig(**{**ckpt["config"], **overrides})
        trainer = cls(images, labels, config)
        trainer.net.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        for group in trainer.opt.param_groups:  # plain Adam options wherever the checkpoint came from
            group.update(lr=float(group["lr"]), capturable=False, fused=None, foreach=None)
        trainer.pool = ckpt["pool"].to(trainer.device)
        trainer.pool_labels = ckpt["pool_labels"].to(trainer.device)
        state = ckpt["torch_rng"]
        if state.numel() == trainer.gen.get_state().numel():
            trainer.gen.set_state(state)
        else:  # another device's generator: continue with a fresh stream, keyed by seed and iteration
            trainer.gen.manual_seed(config.seed * 1_000_003 + ckpt["iteration"])
        trainer.np_rng.bit_generator.state = ckpt["numpy_rng"]
        trainer.iteration = ckpt["iteration"]
        trainer.losses = list(ckpt["losses"])
        return trainer


_CHECKPOINT_TYPES = {"format": str, "version": int, "iteration": int, "config": dict, "model": dict, "optimizer": dict,
                     "pool": torch.Tensor, "pool_labels": torch.Tensor, "torch_rng": torch.Tensor,
                     "numpy_rng": dict, "losses": list}


def load_checkpoint(path):
    """A checkpoint's contents, read safely and checked: ``torch.load(..., weights_only=True)``
    takes plain containers, numbers, strings and tensors only, so a crafted file runs no code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable fastca checkpoint ({str(exc).splitlines()[0][:200]})") from None
    _check_checkpoint(path, ckpt)
    return ckpt


def checkpoint_config(path):
    """The TrainConfig fields (a dict) saved in a checkpoint."""
    return load_checkpoint(path)["config"]


def _check_checkpoint(path, ckpt):
    """Refuse anything but a fastca checkpoint with the expected keys and types, naming the file."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a fastca training checkpoint")
    for key, kind in _CHECKPOINT_TYPES.items():
        if not isinstance(ckpt.get(key), kind):
            raise ValueError(f"{path}: checkpoint entry {key!r} is missing or not a {kind.__name__}")
    if ckpt["version"] > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt['version']} is newer than this fastca supports")
    unknown = set(ckpt["config"]) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"{path}: checkpoint config has unknown fields {sorted(unknown)}")


def train(images, labels, config=None, out_dir=None, resume=False, progress=True, time_limit=None, **kwargs):
    """Train a model; returns (NCAWeights, Trainer). ``kwargs`` set :class:`TrainConfig` fields.

    With ``resume=True`` and a checkpoint in ``out_dir``, training continues from it
    (with this config's iterations, device, sparse and graph options; the recipe, pool and
    generators come from the checkpoint). ``time_limit`` (seconds) stops early with a
    checkpoint. The final weights are written to ``out_dir/model.npz`` when ``out_dir`` is given.
    """
    config = config or TrainConfig(**kwargs)
    ckpt = os.path.join(out_dir, "checkpoint.pt") if out_dir else None
    if resume:
        if not ckpt or not os.path.exists(ckpt):
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir!r}")
        trainer = Trainer.resume(ckpt, images, labels, iterations=config.iterations, device=config.device,
                                 sparse=config.sparse, cuda_graph=config.cuda_graph)
    else:
        trainer = Trainer(images, labels, config)
    trainer.run(out_dir, progress=progress, time_limit=time_limit)
    weights = trainer.weights()
    if out_dir:
        weights.save(os.path.join(out_dir, "model.npz"))
    return weights, trainer
