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

Safety: :func:`train` refuses to start a new run in a folder that holds one (``resume=True``
continues it, ``overwrite=True`` replaces it), before any work. A checkpoint is written
only when the losses since the last one are finite and the weights finite and at most
:data:`MAX_WEIGHT` in magnitude, so a diverging run keeps the last sane checkpoint; it can be
resumed with a lower learning rate (the only recipe change a resume accepts). Every field
of a checkpoint is checked on loading (keys, types, dtypes, shapes against its config,
finiteness, generator states), each failure a one-line ``ValueError`` naming the file and
the field.
"""

import dataclasses
import logging
import math
import os
import time

import numpy as np
import torch

from . import data, spec
from ._checks import first_line
from .simulate import initial_state
from .torch_model import TorchNCA
from .weights import NCAWeights, require_safe_torch_load
from .errors import InputError, NonFiniteError

CHECKPOINT_FORMAT = "fastca-train-checkpoint"
CHECKPOINT_VERSION = 2  #: 2 records the training digits (``data``); 1 is still read
#: the files of a training run in its folder (a new run refuses to overwrite them)
RUN_FILES = ("checkpoint.pt", "model.npz")
#: largest weight magnitude a checkpoint may hold. The published model's largest is 3.2, and Adam
#: moves a weight by about the learning rate per iteration at most, so the default recipe cannot
#: take one further than ~35 from its start (1e-3 x 30k + 1e-4 x 40k + 1e-5 x 30k); a weight
#: beyond 1e3 means the run has diverged (the automaton's states overflow soon after).
MAX_WEIGHT = 1e3
#: options a resume may change freely (the rest is the recipe; only ``lr`` may go down)
RUN_OPTIONS = ("iterations", "device", "sparse", "cuda_graph", "checkpoint_every")

log = logging.getLogger("fastca.train")


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
            raise InputError(f"batch must be a multiple of 4 (quarters are replaced/mutated), got {self.batch}")
        if self.pool < self.batch:
            raise InputError(f"pool ({self.pool}) must be at least the batch ({self.batch})")
        if self.iterations < 0 or self.steps < 1 or self.checkpoint_every < 1:
            raise InputError("iterations must be >= 0, steps and checkpoint_every >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.decay) and self.decay > 0):
            raise InputError(f"lr and decay must be finite and > 0, got {self.lr} and {self.decay}")
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


def check_device(device, available=True):
    """``device`` if either recipe can train there: "cpu" or "cuda" ("cuda:N"); else a one-line InputError.
    ``available=False`` checks the name only (a checkpoint written on a GPU loads on any machine)."""
    if device == "cpu":
        return device
    try:
        dev = torch.device(device) if isinstance(device, str) else None
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda (cuda:N), got {device!r}")
    if dev.type == "cuda" and available:
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                             "torch.cuda.is_available() is False); train on the CPU with --device cpu "
                             "(device='cpu'), or on a machine with an NVIDIA GPU and a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def normalise_grads(params):
    """Per-parameter gradient normalisation of both recipes, in place: ``g / (||g|| + 1e-8)``."""
    with torch.no_grad():
        for p in params:
            p.grad /= p.grad.norm() + 1e-8


def capture_iteration(body, opt, device, warmup=3):
    """(graph, body's result): ``body()`` (rollout, loss, backward, gradient normalisation) captured
    into one CUDA graph, after ``warmup`` passes on a side stream (cuDNN algorithm choice, autograd
    buffers), as capture requires; the passes do not touch the weights. The gradients are set to
    None before capture, so the graph allocates them and every replay writes the same ``p.grad``
    tensors that the (eager) optimiser step ``opt`` then reads; nothing may set them to None later.
    """
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = body()
    return graph, out


class Trainer:
    """Holds the model, optimiser, pool and generators; :meth:`run` trains, :meth:`save` checkpoints."""

    def __init__(self, images, labels, config: TrainConfig, model: NCAWeights | None = None):
        self.images = np.asarray(images)
        self.labels = np.asarray(labels)
        if self.images.ndim != 3 or self.images.dtype != np.uint8 or len(self.images) != len(self.labels):
            raise InputError("images must be uint8 (N, H, W) with one label each")
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
        self.data = data_record(self.images, self.labels)

    def _fresh(self, n):
        idx = self.np_rng.integers(0, len(self.images), n)
        return (torch.from_numpy(initial_state(self.images[idx])).to(self.device),
                torch.from_numpy(self.labels[idx].astype(np.int64)).to(self.device))

    def loss(self, state, labels):
        """L2 loss of a (B, H, W, 20) state against per-sample labels: mean over the batch."""
        alive = spec.is_alive(state[..., spec.GRAY], self.net.alive_threshold).float()
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
        spec.mutate(x[-q:], new_x[..., spec.GRAY], self.net.alive_threshold)  # in place: x is the batch's copy
        y[-q:] = new_y
        return idx, x, y

    def _rollout_loss(self, x, y, generator):
        """Runs the configured CA steps from ``x``; returns (final state, loss). Differentiable."""
        step = self.net.forward_sparse if self.config.use_sparse else self.net.forward
        for _ in range(self.config.steps):
            x = step(x, generator=generator)
        return x, self.loss(x, y)

    def _normalise_grads(self):
        normalise_grads(self.net.parameters())

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
        """Captures rollout + loss + backward + gradient normalisation into one CUDA graph
        (:func:`capture_iteration`)."""
        x = torch.zeros(shape, device=self.device)
        y = torch.zeros(shape[0], dtype=torch.long, device=self.device)
        self._graph_in = (x, y)

        def body():
            state, loss = self._rollout_loss(x, y, None)  # default CUDA generator: graph-safe
            loss.backward()
            self._normalise_grads()
            return state.detach(), loss.detach()

        self._graph, self._graph_out = capture_iteration(body, self.opt, self.device)

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
        try:
            while self.iteration < total:
                loss = self.train_step()
                if not np.isfinite(loss):
                    raise NonFiniteError(self._diverged(f"loss {loss}", out_dir and os.path.join(out_dir,
                                                                                                    "checkpoint.pt")))
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr_at(self.config, self.iteration - 1):.0e}",
                                    refresh=False)
                    bar.update(1)
                out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
                if out_dir and (self.iteration % self.config.checkpoint_every == 0 or self.iteration == total
                                or out_of_time):
                    self.save(os.path.join(out_dir, "checkpoint.pt"))
                if out_of_time:
                    break
        finally:
            if bar is not None:
                bar.close()
        return time.perf_counter() - t0

    def _diverged(self, problem, path):
        kept = (f"the last good checkpoint {path} is kept" if path and os.path.exists(path)
                else "no checkpoint was saved")
        return (f"training diverged: {problem} at iteration {self.iteration} (resume with a lower --lr, "
                f"or start again with one); {kept}")

    def divergence(self):
        """Why the current state must not be checkpointed, or None: a non-finite loss since the
        last checkpoint, a weight that is not finite or beyond :data:`MAX_WEIGHT`, a non-finite pool."""
        recent = np.asarray(self.losses[-self.config.checkpoint_every:], dtype=np.float64)
        if not np.all(np.isfinite(recent)):
            return "a non-finite loss"
        problem = _weights_problem(self.net.state_dict())
        if problem:
            return problem
        if not bool(torch.isfinite(self.pool).all()):
            return "a non-finite state in the pool"
        return None

    def weights(self, name="fastca-trained"):
        """The current model as :class:`NCAWeights`."""
        return self.net.to_weights(name=name)

    def save(self, path):
        """Write a checkpoint atomically (temp file + rename); a diverged state (see :meth:`divergence`)
        is not written: FloatingPointError, and the checkpoint already at ``path`` stays."""
        problem = self.divergence()
        if problem:
            raise NonFiniteError(self._diverged(problem, path))
        ckpt = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "iteration": self.iteration,
            "config": dataclasses.asdict(self.config), "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(), "pool": self.pool.cpu(), "pool_labels": self.pool_labels.cpu(),
            "torch_rng": self.gen.get_state(), "numpy_rng": self.np_rng.bit_generator.state,
            "losses": self.losses, "data": self.data,
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = os.fspath(path) + ".tmp"
        torch.save(ckpt, tmp)
        os.replace(tmp, path)

    @classmethod
    def resume(cls, path, images, labels, **overrides):
        """Rebuild a trainer from a checkpoint.

        ``overrides`` may change the run options (:data:`RUN_OPTIONS`: iterations, device, ...)
        and lower the learning rate (the schedule then continues from the new base; logged);
        any other change of the recipe is refused (ValueError), as is a higher learning rate.
        """
        ckpt = load_checkpoint(path)
        saved = TrainConfig(**ckpt["config"])
        config = dataclasses.replace(saved, **overrides)
        changed = [f.name for f in dataclasses.fields(TrainConfig)
                   if f.name not in RUN_OPTIONS and getattr(config, f.name) != getattr(saved, f.name)]
        if "lr" in changed and config.lr < saved.lr:
            changed.remove("lr")
            log.warning(f"{path}: learning rate lowered from {saved.lr:g} to {config.lr:g} on resume; the schedule "
                        f"continues from the new base (now {lr_at(config, ckpt['iteration']):g} at iteration "
                        f"{ckpt['iteration']}, x{config.decay:g} at {list(config.decay_at)})")
        if changed:
            raise InputError(f"{path}: a resume continues the checkpoint's recipe and may only lower the learning "
                             "rate; these differ: " + ", ".join(f"{n}={getattr(config, n)!r} (checkpoint: "
                                                                 f"{getattr(saved, n)!r})" for n in changed))
        trainer = cls(images, labels, config)
        if tuple(ckpt["pool"].shape[1:3]) != trainer.images.shape[1:]:
            h, w = ckpt["pool"].shape[1:3]
            raise InputError(f"{path}: checkpoint entry 'pool' holds {h}x{w} states; the training digits are "
                             f"{trainer.images.shape[1]}x{trainer.images.shape[2]}")
        if "data" in ckpt and ckpt["data"] != trainer.data:  # checkpoints of version 1 did not record it
            raise InputError(f"{path}: the checkpoint was trained on {ckpt['data']['digits']} digits (sha256 "
                             f"{ckpt['data']['sha256'][:12]}), these are {trainer.data['digits']} (sha256 "
                             f"{trainer.data['sha256'][:12]}): resume with the same data (--data, --limit)")
        trainer.net.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        for group in trainer.opt.param_groups:  # plain Adam options wherever the checkpoint came from
            group.update(lr=float(group["lr"]), capturable=False, fused=None, foreach=None)
        trainer.pool = ckpt["pool"].to(trainer.device)
        trainer.pool_labels = ckpt["pool_labels"].to(trainer.device)
        state = ckpt["torch_rng"]
        if state.numel() == trainer.gen.get_state().numel():
            try:
                trainer.gen.set_state(state)
            except RuntimeError as exc:
                raise InputError(f"{path}: checkpoint entry 'torch_rng' is not a generator state ({exc})") from None
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
    takes plain containers, numbers, strings and tensors only, so a crafted file runs no code;
    then every entry is checked (:func:`_check_checkpoint`)."""
    require_safe_torch_load(torch)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable fastca checkpoint ({first_line(exc, 200)})") from None
    _check_checkpoint(path, ckpt)
    return ckpt


def checkpoint_config(path):
    """The TrainConfig fields (a dict) saved in a checkpoint."""
    return load_checkpoint(path)["config"]


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _weights_problem(state_dict):
    """Why these model weights are not those of a sane run (non-finite, or beyond MAX_WEIGHT), or None."""
    for name, t in state_dict.items():
        biggest = float(t.detach().abs().max())
        if not biggest <= MAX_WEIGHT:
            return f"weight {name} reaches {biggest:.3g} in magnitude (the limit is {MAX_WEIGHT:g})"
    return None


_MODEL_SHAPES = {}


def _model_shapes():
    """Names and shapes of the model's state_dict, in parameter order."""
    if not _MODEL_SHAPES:
        net = TorchNCA.from_weights(NCAWeights.zeros_output())
        _MODEL_SHAPES.update((k, tuple(v.shape)) for k, v in net.state_dict().items())
    return _MODEL_SHAPES


def _config_value_ok(kind, value):
    if kind is int:
        return _is_int(value)
    if kind is float:
        return _is_number(value)
    if kind is tuple:
        return isinstance(value, (tuple, list)) and all(_is_int(x) for x in value)
    return isinstance(value, kind)  # str, bool, bool | None


class _Refused(Exception):
    """One entry of a checkpoint is wrong: (entry, what is wrong)."""


def _tensor(t, dtype, shape, entry, what="", why=""):
    """Check a tensor's type, dtype, shape (None: any size on that axis) and finiteness."""
    what, why = what and what + " ", why and " " + why
    if not isinstance(t, torch.Tensor):
        raise _Refused(entry, f"{what}is a {type(t).__name__}, not a tensor")
    if t.dtype != dtype or t.layout != torch.strided:
        raise _Refused(entry, f"{what}is {t.dtype}, not {dtype}")
    if t.dim() != len(shape) or any(n is not None and n != m for n, m in zip(shape, t.shape)):
        expected = "x".join("?" if n is None else str(n) for n in shape)
        raise _Refused(entry, f"{what}has shape {tuple(t.shape)}, not {expected}{why}")
    if dtype.is_floating_point and not bool(torch.isfinite(t).all()):
        raise _Refused(entry, f"{what}holds NaN or inf")


def _check_config(cfg):
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(cfg) - set(fields)
    if unknown:
        raise _Refused("config", f"has unknown fields {sorted(map(str, unknown))}")
    for name, value in cfg.items():
        if not _config_value_ok(fields[name].type, value):
            kind = getattr(fields[name].type, "__name__", fields[name].type)
            raise _Refused("config", f"field {name!r} is {value!r}, not a valid {kind}")
    try:
        return TrainConfig(**cfg)
    except ValueError as exc:
        raise _Refused("config", str(exc)) from None


def _check_optimizer(opt, iteration):
    bad = lambda why: _Refused("optimizer", why)  # noqa: E731
    shapes = list(_model_shapes().values())
    n = len(shapes)
    if set(opt) != {"state", "param_groups"}:
        raise bad(f"has entries {sorted(map(str, opt))}, not 'state' and 'param_groups'")
    groups, state = opt["param_groups"], opt["state"]
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)):
        raise bad("must hold one parameter group")
    g = groups[0]
    params = g.get("params")
    if not (isinstance(params, list) and all(_is_int(i) for i in params) and params == list(range(n))):
        raise bad(f"group 'params' is {params!r}, not {list(range(n))}")
    if not (_is_number(g.get("lr")) and g["lr"] > 0):
        raise bad(f"group 'lr' is {g.get('lr')!r}, not a number > 0")
    betas = g.get("betas")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise bad(f"group 'betas' is {betas!r}, not two numbers in [0, 1)")
    for key, low in (("eps", 0), ("weight_decay", 0)):
        if not (_is_number(g.get(key)) and g[key] >= low):
            raise bad(f"group {key!r} is {g.get(key)!r}, not a number >= {low}")
    for key, value in g.items():  # Adam's flags (bool, or None for foreach/fused); nothing but plain values
        if key in ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay", "foreach",
                   "fused"):
            ok = isinstance(value, bool) or (value is None and key in ("foreach", "fused"))
        else:
            ok = key in ("params", "lr", "betas", "eps", "weight_decay") or (
                isinstance(key, str) and (value is None or isinstance(value, (bool, int, float, str))))
        if not ok:
            raise bad(f"group entry {key!r} is {value!r}")
    if not isinstance(state, dict):
        raise bad(f"'state' is a {type(state).__name__}, not a dict")
    if set(state) != (set(range(n)) if iteration else set()):
        raise bad(f"'state' is for parameters {sorted(map(str, state))}, not for all {n} (none before iteration 1)")
    moments = {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if g.get("amsgrad") else set())
    for i, s in state.items():
        if not (isinstance(s, dict) and set(s) == moments | {"step"}):
            raise bad(f"state {i} must hold {sorted(moments | {'step'})}")
        step = s["step"]
        if isinstance(step, torch.Tensor) and step.numel() == 1 and step.dtype.is_floating_point:
            step = float(step)
        if not (_is_number(step) and step == iteration):
            raise bad(f"state {i} 'step' is {s['step']!r}, not the iteration {iteration}")
        for key in sorted(moments):
            _tensor(s[key], torch.float32, shapes[i], "optimizer", f"state {i} {key!r}")


def _check_checkpoint(path, ckpt):
    """Refuse anything but a fastca checkpoint whose every entry has the key, type, dtype, shape
    (against its config) and range a training run writes: a one-line ValueError naming the
    file and the entry."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a fastca training checkpoint")
    for key, kind in _CHECKPOINT_TYPES.items():
        if not isinstance(ckpt.get(key), kind) or (kind is int and isinstance(ckpt[key], bool)):
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            raise InputError(f"{path}: checkpoint entry {key!r} is missing or not {article} {kind.__name__}")
    record = ckpt.get("data", {"digits": 1, "sha256": "0" * 64})  # optional: written from version 2 on
    if not (isinstance(record, dict) and set(record) == {"digits", "sha256"} and _is_int(record["digits"])
            and record["digits"] >= 1 and isinstance(record["sha256"], str) and len(record["sha256"]) == 64):
        raise InputError(f"{path}: checkpoint entry 'data' is not a record of the training digits")
    unknown = set(ckpt) - set(_CHECKPOINT_TYPES) - {"data"}
    if unknown:
        raise InputError(f"{path}: unknown checkpoint entries {sorted(map(str, unknown))}")
    try:
        _check_entries(ckpt)
    except _Refused as exc:
        entry, why = exc.args
        raise InputError(f"{path}: checkpoint entry {entry!r} {why}") from None


def _check_entries(ckpt):
    if not 1 <= ckpt["version"] <= CHECKPOINT_VERSION:
        raise _Refused("version", f"is {ckpt['version']}; this fastca reads versions 1 to {CHECKPOINT_VERSION}")
    iteration, losses = ckpt["iteration"], ckpt["losses"]
    if iteration < 0 or len(losses) != iteration:
        raise _Refused("iteration", f"is {iteration}, but the checkpoint holds {len(losses)} losses")
    if not all(_is_number(x) for x in losses):
        raise _Refused("losses", "holds a value that is not a finite number")
    cfg = _check_config(ckpt["config"])
    model, shapes = ckpt["model"], _model_shapes()
    if set(model) != set(shapes):
        raise _Refused("model", f"has weights {sorted(map(str, model))}, not {sorted(shapes)}")
    for name, shape in shapes.items():
        _tensor(model[name], torch.float32, shape, "model", name)
    problem = _weights_problem(model)
    if problem:
        raise _Refused("model", problem + ": a diverged run")
    _check_optimizer(ckpt["optimizer"], iteration)
    _tensor(ckpt["pool"], torch.float32, (cfg.pool, None, None, spec.CHANNELS), "pool",
            why=f"(its config's pool is {cfg.pool})")
    if min(ckpt["pool"].shape[1:3]) < 1:
        raise _Refused("pool", f"has shape {tuple(ckpt['pool'].shape)}")
    labels = ckpt["pool_labels"]
    _tensor(labels, torch.int64, (cfg.pool,), "pool_labels", why=f"(its config's pool is {cfg.pool})")
    if not bool(((labels >= 0) & (labels < spec.N_CLASSES)).all()):
        raise _Refused("pool_labels", f"holds a label outside 0..{spec.N_CLASSES - 1}")
    rng = ckpt["torch_rng"]
    _tensor(rng, torch.uint8, (None,), "torch_rng")
    cpu = torch.Generator()
    if rng.numel() == cpu.get_state().numel():  # a CPU generator's state (a CUDA one is checked on resume)
        try:
            cpu.set_state(rng)
        except RuntimeError as exc:
            raise _Refused("torch_rng", f"is not a generator state ({exc})") from None
    try:
        np.random.PCG64().state = ckpt["numpy_rng"]
    except Exception as exc:
        raise _Refused("numpy_rng", f"is not a PCG64 state ({type(exc).__name__}: {exc})") from None


def data_record(images, labels):
    """What a checkpoint records of its training digits: their number and a SHA-256 of images and labels."""
    return {"digits": int(len(images)), "sha256": data.digits_hash(images, labels)}


def check_run_folder(out_dir, resume=False, overwrite=False):
    """Checks made before any work: a new run must not overwrite another one in ``out_dir``
    (FileExistsError, unless ``overwrite``); a resume needs its checkpoint."""
    if resume and overwrite:
        raise InputError("resume and overwrite exclude each other (--resume continues a run, --overwrite replaces it)")
    if resume:
        if not out_dir or not os.path.exists(os.path.join(out_dir, "checkpoint.pt")):
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir!r}")
    elif out_dir and not overwrite:
        existing = [name for name in RUN_FILES if os.path.exists(os.path.join(out_dir, name))]
        if existing:
            raise FileExistsError(f"{out_dir} already holds a training run ({', '.join(existing)}): continue it with "
                                  "--resume (resume=True), or replace it with --overwrite (overwrite=True)")


def train(images, labels, config=None, out_dir=None, resume=False, overwrite=False, progress=True, time_limit=None,
          **kwargs):
    """Train a model; returns (NCAWeights, Trainer). ``kwargs`` set :class:`TrainConfig` fields.

    A new run refuses a folder that already holds one (``checkpoint.pt`` or ``model.npz``:
    FileExistsError, before any work) unless ``overwrite=True``, which deletes them. With
    ``resume=True`` and a checkpoint in ``out_dir``, training continues from it (with this
    config's iterations, device, checkpoint interval, sparse and graph options, and the learning
    rate given (``config`` or ``lr=``), which may not be higher than the checkpoint's; without one
    the checkpoint's learning rate goes on; the rest of the recipe, the pool
    and the generators come from the checkpoint). ``time_limit`` (seconds) stops early with a
    checkpoint. The final weights are written to ``out_dir/model.npz`` when ``out_dir`` is given.
    """
    check_run_folder(out_dir, resume, overwrite)
    lr_given = config is not None or "lr" in kwargs  # a default config's lr would silently change a resumed run's
    config = config or TrainConfig(**kwargs)
    ckpt = os.path.join(out_dir, "checkpoint.pt") if out_dir else None
    if resume:
        options = {name: getattr(config, name) for name in RUN_OPTIONS}
        if lr_given:
            options["lr"] = config.lr  # Trainer.resume accepts it only if it is not higher
        trainer = Trainer.resume(ckpt, images, labels, **options)
    else:
        trainer = Trainer(images, labels, config)
        for name in RUN_FILES if out_dir and overwrite else ():
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    trainer.run(out_dir, progress=progress, time_limit=time_limit)
    weights = trainer.weights()
    if out_dir:
        weights.save(os.path.join(out_dir, "model.npz"))
    return weights, trainer
