"""The Growing NCA (Mordvintsev, Randazzo, Niklasson, Levin, Distill 2020): target, recipe, training, evaluation.

Semantics: :data:`fastca.model.GROWING` (16 channels, RGBA premultiplied + 12 hidden;
depthwise identity + Sobel x/y perception, 48 -> 128 relu -> 16, residual on all channels,
fire rate 0.5, alive = 3x3 max-pool of alpha > 0.1 before and after the update, dead cells
zeroed). The seed is one cell in the middle of the grid with channels 3.. set to 1.

Recipe (the article's "regenerating" experiment, ../shared/REFERENCE.md): a 40x40 RGBA
target (premultiplied) padded by 16 to 72x72; a pool of 1024 states, all seeds at first.
Each iteration samples a batch of 8, sorts it by loss (worst first), replaces the worst by
the seed and damages the 3 best with random discs (centre uniform in [-0.5, 0.5]^2, radius
uniform in [0.1, 0.4], in coordinates where the grid spans [-1, 1]), runs 64..95 steps,
and minimises the mean over cells and RGBA of ``(rgba - target)**2`` (mean over the
batch). Gradients are normalised per parameter (``g / (||g|| + 1e-8)``); Adam, learning
rate 2e-3, times 0.1 after 2000 iterations. The batch goes back into the pool.

On the CPU each step is :func:`sparse_step`: the same function as
:meth:`fastca.torch_model.DescribedNCA.forward` (tested equal in values and gradients),
with the MLP evaluated only at the firing cells next to living ones (the others' updates
are zeroed by the alive rule). All randomness comes from one numpy and one torch
generator saved in every checkpoint, so a resumed run continues exactly. A checkpoint is
written only when the losses since the last one are finite, the weights finite and at most
:data:`MAX_WEIGHT` in magnitude and the pool finite: a diverging run keeps its last sane
checkpoint and stops with ``FloatingPointError``.

On a GPU (``GrowingConfig(device="cuda")``, ``fastca train --recipe growing --device cuda``)
each step is the dense :meth:`DescribedNCA.forward`, and net, pool, seed and target live on
the device. An iteration's step count varies (64..95), so one CUDA graph is captured of the
longest rollout (``steps_max - 1`` steps) in which step ``k``'s result is kept only when
``k < n``, ``n`` being a device tensor written before each replay: ``x = where(k < n,
step(x, fire_k), x)`` gives the n-step rollout's state, loss and gradients (tested against it)
at about 19% more arithmetic than n steps, with one graph and one memory pool. The graph
holds rollout, loss, backward and per-parameter gradient normalisation; Adam's step stays
eager (:meth:`GrowingTrainer._masked_body` is the captured code, run eagerly in the tests).
The fire masks of an iteration, ``steps_max - 1`` of them, are drawn by one call on a device
generator seeded from ``config.seed`` (the same draws with or without the graph:
``cuda_graph=False``, ``--no-graph``, runs the plain n-step rollout eagerly). That generator's
state is checkpointed, but a GPU run is not bit-reproducible across a resume (nor against the
CPU run): cuDNN and atomics may sum in another order. Checkpoints hold CPU tensors and load
on any machine; a resume may change the device (``--resume --device cpu``): the mask
generator is then reseeded from the seed and the iteration, and the continuation is
statistically, not bitwise, the same run.

Evaluation (:func:`evaluate`) measures the article's metric, the mean squared error per
RGBA value against the padded target, with any :class:`fastca.Simulation` backend.
Command line: ``python -m fastca.growing evaluate MODEL`` and ``python -m fastca.growing
render CHAR OUT.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

from .model import GROWING
from .errors import InputError, NonFiniteError

#: the target's size and its padding (the grid is 72x72)
TARGET_SIZE = 40
TARGET_PAD = 16
#: the emoji of the article's main example (U+1F98E LIZARD) and the asset rendered from it
GECKO = "\U0001F98E"
GECKO_PNG = "growing_gecko_target.png"
#: Debian's fonts-noto-color-emoji (a colour bitmap font whose only strike is 109 px)
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_FONT_SIZE = 109
CHECKPOINT_FORMAT = "fastca-growing-checkpoint"
CHECKPOINT_VERSION = 1
RUN_FILES = ("checkpoint.pt", "model.npz")
#: largest weight magnitude a sane run holds (see fastca.train.MAX_WEIGHT)
MAX_WEIGHT = 1e3
#: run options a resume may change (the rest is the recipe; ``lr`` may only go down)
RUN_OPTIONS = ("iterations", "checkpoint_every", "sparse", "device", "cuda_graph")


# -- target -----------------------------------------------------------------------------------------

def render_emoji(char, size=TARGET_SIZE, font_path=None):
    """(size, size, 4) float32 premultiplied RGBA of one emoji drawn with a colour bitmap font.

    The glyph is drawn at the font's native size (109 px: a 136x128 cell), its central 128x128
    square kept (as in the 128 px PNGs of Google's noto-emoji, which the article's notebook
    loads) and downscaled with premultiplied colours, so that transparent pixels lend no
    colour to their neighbours. FileNotFoundError when the font is not installed.
    """
    from PIL import Image, ImageDraw, ImageFont

    font_path = EMOJI_FONT if font_path is None else font_path
    if not os.path.exists(font_path):
        raise FileNotFoundError(f"{font_path}: the emoji font is not installed (Debian: apt-get install "
                                "fonts-noto-color-emoji); or pass a picture with --target")
    font = ImageFont.truetype(font_path, EMOJI_FONT_SIZE)
    left, top, right, bottom = font.getbbox(char)
    w, h = right - left, bottom - top
    if w <= 0 or h <= 0:
        raise InputError(f"the font draws nothing for {char!r}")
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), char, font=font, embedded_color=True)
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    canvas = canvas.crop((x0, y0, x0 + side, y0 + side))
    if canvas.getbbox() is None:
        raise InputError(f"the font draws nothing for {char!r}")
    return _downscale(np.asarray(canvas, np.float32) / 255, size)


def _downscale(straight, size):
    """Straight-alpha (H, W, 4) floats in [0, 1] -> (size, size, 4) premultiplied, area-correct."""
    from PIL import Image

    prem = straight.copy()
    prem[..., :3] *= prem[..., 3:]
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(prem[..., c]), "F")
                        .resize((size, size), Image.Resampling.LANCZOS)) for c in range(4)]
    out = np.clip(np.stack(chans, -1), 0, 1).astype(np.float32)
    out[..., :3] = np.minimum(out[..., :3], out[..., 3:])  # premultiplied: colour <= alpha
    return out


def save_target(target, path):
    """Write a premultiplied (H, W, 4) target as an ordinary (straight-alpha) RGBA PNG."""
    from PIL import Image

    t = np.asarray(target, np.float32)
    a = t[..., 3:]
    straight = np.where(a > 0, t[..., :3] / np.maximum(a, 1e-12), 0)
    rgba = np.concatenate([straight, a], -1)
    Image.fromarray(np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8), "RGBA").save(path)


def load_target(path, size=TARGET_SIZE):
    """A picture as a (size, size, 4) float32 premultiplied RGBA target (resized when it is not that size)."""
    from PIL import Image

    with Image.open(path) as im:
        straight = np.asarray(im.convert("RGBA"), np.float32) / 255
    if straight.shape[:2] == (size, size):
        out = straight.copy()
        out[..., :3] *= out[..., 3:]
        return out.astype(np.float32)
    h, w = straight.shape[:2]
    side = max(h, w)  # pad to a square (transparent), centred
    square = np.zeros((side, side, 4), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = straight
    return _downscale(square, size)


def gecko_target():
    """The shipped gecko target (40x40 premultiplied RGBA), read from the package: no font needed."""
    from importlib import resources

    with resources.as_file(resources.files("fastca").joinpath("assets", GECKO_PNG)) as path:
        return load_target(path)


def target_for(emoji=None, image=None):
    """The target of ``--emoji CHAR`` (the shipped PNG for the gecko when the font is missing) or ``--target IMAGE``."""
    if image is not None:
        return load_target(image)
    if emoji == GECKO and not os.path.exists(EMOJI_FONT):
        return gecko_target()
    return render_emoji(emoji)


def pad_target(target, pad=TARGET_PAD):
    """The target padded with transparent cells: (40, 40, 4) -> (72, 72, 4)."""
    return np.pad(np.asarray(target, np.float32), ((pad, pad), (pad, pad), (0, 0)))


def seed_cell(description=GROWING):
    """(C,) float32: the seed, one cell with the channels :func:`fastca.seeds.seed_channels` names set to 1
    (:data:`GROWING`: alpha and the 12 hidden channels; its colour stays 0)."""
    from .seeds import seed_channels

    cell = np.zeros(description.channels, np.float32)
    cell[seed_channels(description)] = 1
    return cell


def seed_state(n, h, w, description=GROWING):
    """(n, h, w, C) float32 zeros with the middle cell the seed (:func:`seed_cell`)."""
    x = np.zeros((n, h, w, description.channels), np.float32)
    x[:, h // 2, w // 2] = seed_cell(description)
    return x


def disc_masks(rng, n, h, w, centre=(-0.5, 0.5), radius=(0.1, 0.4)):
    """(n, h, w) bool discs (True inside) as in the notebook's ``make_circle_masks``: the grid spans
    [-1, 1] on both axes, centre uniform in ``centre``^2, radius uniform in ``radius``."""
    x = np.linspace(-1, 1, w)[None, None, :]
    y = np.linspace(-1, 1, h)[None, :, None]
    c = rng.uniform(centre[0], centre[1], (2, n, 1, 1))
    r = rng.uniform(radius[0], radius[1], (n, 1, 1))
    xx, yy = (x - c[0]) / r, (y - c[1]) / r
    return xx * xx + yy * yy < 1.0


def mse(states, target):
    """Per-sample mean over cells and RGBA of ``(rgba - target)**2``: (B, H, W, C), (H, W, 4) -> (B,).

    Works on numpy arrays (float64 result) and torch tensors (differentiable)."""
    if hasattr(states, "detach"):
        return ((states[..., :4] - target) ** 2).mean(dim=(1, 2, 3))
    d = np.asarray(states[..., :4], np.float64) - np.asarray(target, np.float64)
    return (d * d).mean(axis=(1, 2, 3))


def initial_arrays(seed=0):
    """Initial weights of the recipe: ``w1`` Glorot-uniform (Keras' default), zero ``b1``, zero last layer."""
    rng = np.random.default_rng(seed)
    shapes = GROWING.weight_shapes()
    fan_in, fan_out = shapes["w1"]
    limit = math.sqrt(6 / (fan_in + fan_out))
    arrays = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    arrays["w1"] = rng.uniform(-limit, limit, shapes["w1"]).astype(np.float32)
    return arrays


# -- the differentiable step ----------------------------------------------------------------------------

def sparse_step(net, state, fire_mask):
    """One step of :data:`GROWING` equal to ``net(state, fire_mask)`` (:class:`DescribedNCA`), computed sparsely.

    The MLP runs only at firing cells within one cell of a living one (a cell farther away is
    neither alive now nor next to one, so its update is zeroed and cannot make a living cell's
    neighbourhood alive). Differentiable; the perception is gathered from the 3x3 taps of those cells.
    """
    import torch
    from torch import nn

    d, p = net.description, net.params
    pre = net.alive(state)
    near = nn.functional.max_pool2d(pre[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    b, y, x = torch.nonzero(fire_mask & near, as_tuple=True)
    n, hh, ww, c = state.shape
    padded = nn.functional.pad(state, (0, 0, 1, 1, 1, 1)).reshape(-1, c)  # zero padding of H and W
    offsets = torch.tensor([i * (ww + 2) + j for i in range(3) for j in range(3)], device=state.device)
    rows = (b * (hh + 2) + y) * (ww + 2) + x  # the padded row of tap (0, 0)
    taps = padded[rows[:, None] + offsets]  # (N, 9, C): one gather (one scatter backward)
    kern = net.filters[:len(d.perception.filters), 0].reshape(-1, 9).T  # (9, F): filter f at tap 3i + j
    f = torch.einsum("ntc,tf->ncf", taps, kern).reshape(len(b), c * kern.shape[1])  # channel-major: c * F + f
    h = torch.relu(f @ p["w1"] + p["b1"])
    ds = h @ p["w2"] + p["b2"]
    out = state + torch.zeros_like(state).index_put((b, y, x), ds)
    return out * (pre & net.alive(out))[..., None].to(out.dtype)


# -- training -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class GrowingConfig:
    """Options of :func:`train` (defaults: the article's regenerating experiment)."""

    iterations: int = 8000
    batch: int = 8
    pool: int = 1024
    steps_min: int = 64
    steps_max: int = 96  #: exclusive: 64..95 steps, as the notebook's ``uniform([], 64, 96, int32)``
    lr: float = 2e-3
    decay_at: tuple = (2000,)
    decay: float = 0.1
    damage: int = 3
    seed: int = 0
    checkpoint_every: int = 100
    #: sparse_step (the same function, less work) or DescribedNCA.forward; None: sparse on the CPU only
    sparse: bool | None = None
    #: "cpu", or "cuda" ("cuda:N"): dense steps, by default in a CUDA graph
    device: str = "cpu"
    #: capture the GPU iteration into a CUDA graph (ignored on the CPU and for sparse steps)
    cuda_graph: bool = True

    def __post_init__(self):
        if self.batch < 2 or self.damage < 0 or self.damage > self.batch - 1:
            raise InputError(f"batch must be >= 2 and damage in 0..batch-1, got {self.batch} and {self.damage}")
        if self.pool < self.batch:
            raise InputError(f"pool ({self.pool}) must be at least the batch ({self.batch})")
        if self.iterations < 0 or self.checkpoint_every < 1 or not 1 <= self.steps_min < self.steps_max:
            raise InputError("iterations must be >= 0, checkpoint_every >= 1, 1 <= steps_min < steps_max")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.decay) and self.decay > 0):
            raise InputError(f"lr and decay must be finite and > 0, got {self.lr} and {self.decay}")
        self.decay_at = tuple(int(x) for x in self.decay_at)
        from .train import check_device

        check_device(self.device)

    @property
    def use_sparse(self):
        """Whether steps are :func:`sparse_step` (default: on the CPU) rather than ``DescribedNCA.forward``."""
        return self.sparse if self.sparse is not None else not str(self.device).startswith("cuda")

    @property
    def use_graph(self):
        """Whether iterations replay a captured CUDA graph (on a GPU with dense steps, unless ``cuda_graph=False``)."""
        return bool(self.cuda_graph) and str(self.device).startswith("cuda") and not self.use_sparse


def _to_cpu(obj):
    """A state dict (nested dicts and lists) with every tensor on the CPU, for a checkpoint."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def lr_at(config, iteration):
    """Learning rate at an iteration: lr times decay for each milestone passed."""
    return config.lr * config.decay ** sum(iteration >= m for m in config.decay_at)


class GrowingTrainer:
    """Model, optimiser, pool and generators of a growing run; :meth:`train_step`, :meth:`run`, :meth:`save`.

    Net, pool, seed, target and the fire-mask generator live on ``config.device``; the numpy
    generator (batches, damage, step counts) and the target's numpy copy on the CPU.
    """

    def __init__(self, target, config: GrowingConfig, arrays=None):
        import torch

        from .torch_model import DescribedNCA

        target = np.asarray(target, np.float32)
        if target.ndim != 3 or target.shape[-1] != 4 or not np.all(np.isfinite(target)):
            raise InputError(f"the target must be finite (H, W, 4) RGBA, got shape {target.shape}")
        self.config = config
        self.device = torch.device(config.device)
        self.target_np = target
        self.target = torch.from_numpy(pad_target(target)).to(self.device)
        self.h, self.w = self.target.shape[:2]
        self.np_rng = np.random.default_rng(config.seed)
        #: the fire masks' generator (on the device: one draw of steps_max - 1 masks per iteration)
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.net = DescribedNCA(GROWING, initial_arrays(config.seed) if arrays is None else arrays).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.seed = torch.from_numpy(seed_state(1, self.h, self.w)).to(self.device)
        self.pool = self.seed.repeat(config.pool, 1, 1, 1)
        self.iteration = 0
        self.losses = []
        self.steps = []
        self._graph = None

    def step(self, x, fire):
        return sparse_step(self.net, x, fire) if self.config.use_sparse else self.net(x, fire)

    def _batch(self):
        """Pool indices and the batch, worst first: the worst replaced by the seed, the best damaged."""
        import torch

        c = self.config
        idx = self.np_rng.choice(c.pool, c.batch, replace=False)
        x = self.pool[torch.from_numpy(idx).to(self.device)]
        order = np.argsort(-mse(x.cpu().numpy(), pad_target(self.target_np)), kind="stable")  # worst first
        idx, x = idx[order], x[torch.from_numpy(order).to(self.device)].clone()
        x[0] = self.seed[0]
        if c.damage:
            keep = ~disc_masks(self.np_rng, c.damage, self.h, self.w)
            x[-c.damage:] *= torch.from_numpy(keep)[..., None].to(device=x.device, dtype=x.dtype)
        return idx, x

    def _fires(self, shape, n):
        """(n, B, H, W) bool fire masks for a batch of ``shape`` (B, H, W). On the CPU one draw per step (as
        ever: a resumed run continues exactly); on a GPU one draw of ``steps_max - 1`` masks, the first ``n``
        returned, so that the graph (which takes them all) and the eager path consume the generator alike."""
        import torch

        if self.device.type == "cpu":
            return torch.stack([torch.rand(shape, generator=self.gen) <= GROWING.fire_rate for _ in range(n)])
        draw = torch.rand((self.config.steps_max - 1, *shape), generator=self.gen, device=self.device)
        return (draw <= GROWING.fire_rate)[:n]

    def _rollout_loss(self, x, fires):
        """The plain rollout, one step per mask in ``fires``; returns (final state, loss). Differentiable."""
        for fire in fires:
            x = self.step(x, fire)
        return x, mse(x, self.target).mean()

    def _normalise_grads(self):
        from .train import normalise_grads

        normalise_grads(self.net.parameters())

    def _masked_body(self, x, fires, n):
        """What the CUDA graph holds: ``len(fires)`` steps of which step ``k`` is kept only when ``k < n``, the loss,
        backward and gradient normalisation; returns (final state, loss), detached. ``n``: a 0-d integer tensor
        (the graph's static input). The same state, loss and gradients as :meth:`_rollout_loss` over
        ``fires[:n]`` (a skipped step's update gets a zero gradient). Run eagerly, it is the tests' check of that."""
        import torch

        for k in range(len(fires)):
            x = torch.where(k < n, self.step(x, fires[k]), x)
        loss = mse(x, self.target).mean()
        loss.backward()
        self._normalise_grads()
        return x.detach(), loss.detach()

    def train_step(self):
        """One iteration; returns the loss (float)."""
        import torch

        c = self.config
        idx, x = self._batch()
        n_steps = int(self.np_rng.integers(c.steps_min, c.steps_max))
        for g in self.opt.param_groups:
            g["lr"] = lr_at(c, self.iteration)
        if c.use_graph:
            x, loss = self._replay(x, self._fires(x.shape[:3], c.steps_max - 1), n_steps)
        else:
            x, loss = self._rollout_loss(x, self._fires(x.shape[:3], n_steps))
            self.opt.zero_grad()
            loss.backward()
            self._normalise_grads()
        self.opt.step()
        self.pool[torch.from_numpy(idx).to(self.device)] = x.detach()
        self.iteration += 1
        value = float(loss.detach())
        self.losses.append(value)
        self.steps.append(n_steps)
        return value

    def _static_inputs(self, shape):
        """The graph's inputs, written before each replay: the batch, ``steps_max - 1`` fire masks, the step count."""
        import torch

        return (torch.zeros(shape, device=self.device),
                torch.zeros((self.config.steps_max - 1, *shape[:3]), dtype=torch.bool, device=self.device),
                torch.zeros((), dtype=torch.long, device=self.device))

    def _replay(self, x, fires, n_steps):
        """The graph path: copy batch, masks and step count into the captured inputs and replay; the normalised
        gradients are left in ``p.grad`` for the (eager) optimiser step. Returns the graph's (state, loss)."""
        if self._graph is None:
            self._capture(x.shape)
        static_x, static_fires, static_n = self._graph_in
        static_x.copy_(x)
        static_fires.copy_(fires)
        static_n.fill_(n_steps)
        self._graph.replay()
        return self._graph_out

    def _capture(self, shape):
        """Captures :meth:`_masked_body` (rollout, loss, backward, gradient normalisation) into one CUDA graph
        (:func:`fastca.train.capture_iteration`, as MNIST training does)."""
        from .train import capture_iteration

        self._graph_in = self._static_inputs(shape)
        self._graph, self._graph_out = capture_iteration(lambda: self._masked_body(*self._graph_in), self.opt,
                                                         self.device)

    def nca(self, name="growing"):
        """The current model as a :class:`fastca.NCA`."""
        from .nca import NCA

        return NCA(GROWING, self.net.arrays(), name)

    def divergence(self):
        """Why the current state must not be checkpointed, or None."""
        import torch

        recent = np.asarray(self.losses[-self.config.checkpoint_every:], np.float64)
        if not np.all(np.isfinite(recent)):
            return "a non-finite loss"
        for k, v in self.net.arrays().items():
            biggest = float(np.abs(v).max())
            if not biggest <= MAX_WEIGHT:
                return f"weight {k} reaches {biggest:.3g} in magnitude (the limit is {MAX_WEIGHT:g})"
        if not bool(torch.isfinite(self.pool).all()):
            return "a non-finite state in the pool"
        return None

    def _diverged(self, problem, path):
        kept = (f"the last good checkpoint {path} is kept" if path and os.path.exists(path)
                else "no checkpoint was saved")
        return (f"training diverged: {problem} at iteration {self.iteration} (resume with a lower --lr, "
                f"or start again with one); {kept}")

    def save(self, path):
        """Write a checkpoint atomically; a diverged state is refused (FloatingPointError, the old one stays)."""
        import torch

        problem = self.divergence()
        if problem:
            raise NonFiniteError(self._diverged(problem, path))
        ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "iteration": self.iteration,
                "config": dataclasses.asdict(self.config), "model": {k: torch.from_numpy(v.copy()) for k, v in
                                                                     self.net.arrays().items()},
                "optimizer": _to_cpu(self.opt.state_dict()), "pool": self.pool.cpu(),
                "target": torch.from_numpy(self.target_np),
                "torch_rng": self.gen.get_state(), "numpy_rng": self.np_rng.bit_generator.state,
                "losses": list(self.losses), "steps": list(self.steps)}
        tmp = path + ".tmp"
        torch.save(ckpt, tmp)
        os.replace(tmp, path)

    @classmethod
    def resume(cls, path, target=None, lr=None, **options):
        """Continue the run of a checkpoint; ``options``: :data:`RUN_OPTIONS` to change; ``lr`` may only go down.
        ``target``, when given, must be the checkpoint's."""
        ckpt = load_checkpoint(path)
        saved = dict(ckpt["config"])  # its device may be one this machine lacks: checked with the changes
        unknown = set(options) - set(RUN_OPTIONS)
        if unknown:
            raise InputError(f"a resume may change only {', '.join(RUN_OPTIONS)} and lower lr; got {sorted(unknown)}")
        changes = {k: v for k, v in options.items() if v is not None}
        if lr is not None:
            if lr > saved["lr"]:
                raise InputError(f"{path}: a resume may only lower the learning rate ({lr:g} > {saved['lr']:g})")
            changes["lr"] = lr
        config = GrowingConfig(**{**saved, **changes})
        ckpt_target = ckpt["target"].numpy()
        if target is not None and not np.array_equal(np.asarray(target, np.float32), ckpt_target):
            raise InputError(f"{path}: the checkpoint was trained on another target; resume with the same one")
        trainer = cls(ckpt_target, config, {k: v.numpy() for k, v in ckpt["model"].items()})
        trainer.opt.load_state_dict(ckpt["optimizer"])  # moves the moments to the parameters' device
        for group in trainer.opt.param_groups:  # plain Adam options wherever the checkpoint came from
            group.update(lr=float(group["lr"]), capturable=False, fused=None, foreach=None)
        trainer.pool = ckpt["pool"].to(trainer.device)
        state = ckpt["torch_rng"]
        if state.numel() == trainer.gen.get_state().numel():
            trainer.gen.set_state(state)
        else:  # another device's generator: continue with a fresh stream, keyed by seed and iteration
            trainer.gen.manual_seed(config.seed * 1_000_003 + ckpt["iteration"])
        trainer.np_rng.bit_generator.state = ckpt["numpy_rng"]
        trainer.iteration = ckpt["iteration"]
        trainer.losses = list(ckpt["losses"])
        trainer.steps = list(ckpt["steps"])
        return trainer

    def run(self, out_dir=None, progress=False, time_limit=None, log=None):
        """Train up to ``config.iterations``, checkpointing into ``out_dir`` every ``checkpoint_every``
        iterations and at the end (also when ``time_limit`` seconds have passed). ``log``: a text
        file object that gets one line per iteration (iteration, loss, steps, lr, seconds).
        Returns the seconds spent."""
        total = self.config.iterations
        ckpt = out_dir and os.path.join(out_dir, "checkpoint.pt")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.iteration, desc=f"train growing ({self.device.type})", unit="it",
                       mininterval=1.0)
        t0 = time.perf_counter()
        try:
            while self.iteration < total:
                t_it = time.perf_counter()
                loss = self.train_step()
                if not np.isfinite(loss):
                    raise NonFiniteError(self._diverged(f"loss {loss}", ckpt))
                if log is not None:
                    log.write(f"{self.iteration} {loss:.6g} {self.steps[-1]} {lr_at(self.config, self.iteration - 1):.3g}"
                              f" {time.perf_counter() - t_it:.3f}\n")
                    log.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    bar.update(1)
                out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
                if ckpt and (self.iteration % self.config.checkpoint_every == 0 or self.iteration == total
                             or out_of_time):
                    self.save(ckpt)
                    self.nca(f"growing iteration {self.iteration}").save(
                        os.path.join(out_dir, f"model_{self.iteration:06d}.npz"))
                if out_of_time:
                    break
        finally:
            if bar is not None:
                bar.close()
        return time.perf_counter() - t0


_CHECKPOINT_TYPES = {"format": str, "version": int, "iteration": int, "config": dict, "model": dict,
                     "optimizer": dict, "pool": "tensor", "target": "tensor", "torch_rng": "tensor",
                     "numpy_rng": dict, "losses": list, "steps": list}


def load_checkpoint(path):
    """A growing checkpoint, read with ``weights_only=True`` (no code runs) and checked entry by entry:
    one-line ValueError naming the file and the entry."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable fastca checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a fastca growing checkpoint")

    def bad(entry, why):
        return InputError(f"{path}: checkpoint entry {entry!r} {why}")

    if set(ckpt) != set(_CHECKPOINT_TYPES):
        raise InputError(f"{path}: checkpoint entries are {sorted(map(str, ckpt))}, not {sorted(_CHECKPOINT_TYPES)}")
    for key, kind in _CHECKPOINT_TYPES.items():
        kind = torch.Tensor if kind == "tensor" else kind
        if not isinstance(ckpt[key], kind) or (kind is int and isinstance(ckpt[key], bool)):
            raise bad(key, f"is not a {kind.__name__}")
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise bad("version", f"is {ckpt['version']}, this fastca reads {CHECKPOINT_VERSION}")
    try:  # the device is checked by name only: a checkpoint written on a GPU loads anywhere
        from .train import check_device

        check_device(ckpt["config"].get("device", "cpu"), available=False)
        config = GrowingConfig(**{**ckpt["config"], "device": "cpu"})
    except (TypeError, ValueError) as exc:
        raise bad("config", f"is not a growing recipe ({exc})") from None
    it = ckpt["iteration"]
    if not (it >= 0 and len(ckpt["losses"]) == it and len(ckpt["steps"]) == it):
        raise bad("iteration", f"is {it}, but the checkpoint holds {len(ckpt['losses'])} losses")
    if not all(isinstance(v, float) and math.isfinite(v) for v in ckpt["losses"]):
        raise bad("losses", "holds a value that is not a finite number")
    shapes = GROWING.weight_shapes()
    model = ckpt["model"]
    if set(model) != set(shapes):
        raise bad("model", f"has weights {sorted(map(str, model))}, not {sorted(shapes)}")
    for k, s in shapes.items():
        t = model[k]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != s:
            raise bad("model", f"weight {k} is not a float32 tensor of shape {s}")
        if not bool(torch.isfinite(t).all()) or float(t.abs().max()) > MAX_WEIGHT:
            raise bad("model", f"weight {k} is not finite or beyond {MAX_WEIGHT:g}: a diverged run")
    target = ckpt["target"]
    if target.dtype != torch.float32 or target.dim() != 3 or target.shape[-1] != 4:
        raise bad("target", f"is not a float32 (H, W, 4) tensor: {tuple(target.shape)}")
    h, w = target.shape[0] + 2 * TARGET_PAD, target.shape[1] + 2 * TARGET_PAD
    pool = ckpt["pool"]
    if pool.dtype != torch.float32 or tuple(pool.shape) != (config.pool, h, w, GROWING.channels):
        raise bad("pool", f"has shape {tuple(pool.shape)} / {pool.dtype}, not ({config.pool}, {h}, {w}, "
                          f"{GROWING.channels}) float32")
    if not bool(torch.isfinite(pool).all()):
        raise bad("pool", "holds NaN or inf")
    rng = ckpt["torch_rng"]
    if rng.dtype != torch.uint8 or rng.dim() != 1:
        raise bad("torch_rng", f"is not a generator state ({rng.dtype}, shape {tuple(rng.shape)})")
    cpu = torch.Generator()
    if rng.numel() == cpu.get_state().numel():  # a CPU generator's state (a CUDA one is checked on resume)
        try:
            cpu.set_state(rng)
        except (RuntimeError, TypeError) as exc:
            raise bad("torch_rng", f"is not a generator state ({exc})") from None
    try:
        np.random.PCG64().state = ckpt["numpy_rng"]
    except Exception as exc:
        raise bad("numpy_rng", f"is not a PCG64 state ({type(exc).__name__}: {exc})") from None
    return ckpt


def check_run_folder(out_dir, resume=False, overwrite=False):
    """Before any work: a new run must not overwrite another (FileExistsError unless ``overwrite``);
    a resume needs its checkpoint (FileNotFoundError). The MNIST recipe's check: the same run files."""
    from .train import check_run_folder as check

    check(out_dir, resume, overwrite)


def train(target, config=None, out_dir=None, resume=False, overwrite=False, progress=False, time_limit=None,
          log_path=None, lr=None, **options):
    """Train a growing model; returns (NCA, GrowingTrainer).

    A new run refuses a folder holding one unless ``overwrite``; ``resume`` continues the
    checkpoint in ``out_dir`` (``options``: :data:`RUN_OPTIONS`; ``lr`` may only go down).
    ``log_path``: a file that gets one line per iteration (appended to). The final weights
    go to ``out_dir/model.npz``.
    """
    check_run_folder(out_dir, resume, overwrite)
    if not resume:  # before the folder is made: a device this machine lacks is refused first
        config = config or GrowingConfig(**({"lr": lr} if lr is not None else {}), **options)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    if resume:
        trainer = GrowingTrainer.resume(os.path.join(out_dir, "checkpoint.pt"), target, lr=lr, **options)
    else:
        trainer = GrowingTrainer(target, config)
        for name in RUN_FILES if out_dir and overwrite else ():
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    log = open(log_path, "a") if log_path else None
    try:
        trainer.run(out_dir, progress=progress, time_limit=time_limit, log=log)
    finally:
        if log is not None:
            log.close()
    nca = trainer.nca(f"growing iteration {trainer.iteration}")
    if out_dir:
        nca.save(os.path.join(out_dir, "model.npz"))
    return nca, trainer


# -- evaluation -----------------------------------------------------------------------------------------

#: the issue's targets for the published metric (mean squared error per RGBA value)
GOALS = {"grown": 0.005, "persistent": 0.01, "regenerated": 0.01}


def cut_discs(rng, n, target, radius=(0.2, 0.35)):
    """(n, H, W) bool discs (True inside) for the regeneration test on the padded grid of ``target``:
    centre uniform over the target's opaque cells (alpha > 0.1), radius uniform in ``radius`` times
    the target's side (40 cells: 8 to 14 cells)."""
    padded = pad_target(target)
    ys, xs = np.nonzero(padded[..., 3] > 0.1)
    pick = rng.integers(0, len(ys), n)
    r = rng.uniform(radius[0], radius[1], n) * np.asarray(target).shape[0]
    yy, xx = np.mgrid[:padded.shape[0], :padded.shape[1]]
    return (yy[None] - ys[pick, None, None]) ** 2 + (xx[None] - xs[pick, None, None]) ** 2 <= (r ** 2)[:, None, None]


def _simulation(nca, state, backend, seed, start_step, threads):
    from .simulation import Simulation

    # a diverging model is measured, not stopped (one warning): its MSE says so
    return Simulation(nca, state, backend=backend, seed=seed, input="state", start_step=start_step,
                      threads=threads, on_nonfinite="warn")


def evaluate(nca, target=None, n=64, backend="auto", seed=0, persist_steps=2000, regen_at=200, regen_steps=150,
             long_steps=10_000, long_n=8, threads=None, progress=None):
    """The article's metric on ``n`` seeds: a dict of numbers (JSON-ready).

    - ``grown``: MSE per RGBA value against the padded target at steps 72..96 (``grown_mean``:
      over those steps and the samples; ``grown_max_sample``: the worst sample's mean);
    - ``persistent``: the MSE every 100th step through ``persist_steps`` (mean and worst);
    - ``regenerated``: at step ``regen_at`` a disc (:func:`cut_discs`) is zeroed in every sample;
      the MSE right after, ``regen_steps`` steps later, and the share of samples back to
      <= 0.01 within them; of the samples the cut took above 0.01, the mean and largest number of
      steps until they are back;
    - ``long``: ``long_n`` seeds run to ``long_steps``: finite?, largest |state|, MSE at the end,
      living cells against the target's.

    Every run is a :class:`fastca.Simulation` (``backend``; "auto": numba-cpu on a CPU machine) with the shared
    generator's keys (``seed``). ``progress``: a callable taking a message, or None.
    """
    say = progress or (lambda msg: None)
    target = gecko_target() if target is None else np.asarray(target, np.float32)
    padded = pad_target(target)
    h, w = padded.shape[:2]
    rng = np.random.default_rng(seed)
    out = {"seeds": int(n), "backend": backend, "seed": int(seed)}
    t0 = time.perf_counter()

    sim = _simulation(nca, seed_state(n, h, w), backend, seed, 0, threads)
    curve = {}  # step -> (n,) MSE
    grown = []

    def record(step, state):
        if 72 <= step <= 96:
            grown.append(mse(state, padded))
        if step % 100 == 0:
            curve[step] = mse(state, padded)

    for step in range(1, max(persist_steps, regen_at, 96) + 1):
        sim.run(1)
        if (72 <= step <= 96) or step % 100 == 0 or step == regen_at:
            state = sim.state()
            record(step, state)
            if step == regen_at:
                cut = state * ~cut_discs(rng, n, target)[..., None]
                regen = [mse(cut, padded)]
                rsim = _simulation(nca, cut, backend, seed + 1, 0, threads)
                for _ in range(regen_steps):
                    rsim.run(1)
                    regen.append(mse(rsim.state(), padded))
                regen = np.stack(regen)  # (regen_steps + 1, n)
                say(f"regenerated: {regen[-1].mean():.5f} after {regen_steps} steps")
        if step == 96:
            say(f"grown: {np.mean(grown):.5f}")
    grown = np.stack(grown)  # (25, n)
    persistent = np.stack([curve[s] for s in sorted(curve) if s <= persist_steps])
    back = regen <= GOALS["regenerated"]
    first = np.where(back.any(0), back.argmax(0), -1)
    hurt = regen[0] > GOALS["regenerated"]  # the samples the cut took above the goal
    first = first[hurt]
    out.update(
        grown_mean=float(grown.mean()), grown_max_sample=float(grown.mean(0).max()),
        grown_at_96=float(grown[-1].mean()),
        persistent_mean=float(persistent.mean()), persistent_max=float(persistent.mean(1).max()),
        persistent_curve={int(s): float(curve[s].mean()) for s in sorted(curve) if s <= persist_steps},
        regen_cut_mse=float(regen[0].mean()), regenerated_mean=float(regen[-1].mean()),
        regenerated_best=float(regen.mean(1).min()),
        regenerated_share_back=float(back.any(0).mean()),
        regen_cut_share_above_goal=float(hurt.mean()),
        regenerated_first_step_mean=float(first[first >= 0].mean()) if (first >= 0).any() else None,
        regenerated_first_step_max=int(first.max()) if len(first) and (first >= 0).all() else None,
        regen_curve={int(k): float(regen[k].mean()) for k in (0, 1, 5, 10, 25, 50, 100, regen_steps)
                     if k <= regen_steps},
        seconds_short=round(time.perf_counter() - t0, 1))
    say(f"persistent: mean {out['persistent_mean']:.5f}, worst step {out['persistent_max']:.5f}")
    if long_steps and long_n:
        t1 = time.perf_counter()
        lsim = _simulation(nca, seed_state(long_n, h, w), backend, seed + 2, 0, threads)
        marks = {}
        done = 0
        for mark in sorted({min(1000 * k, long_steps) for k in range(1, long_steps // 1000 + 2)}):
            lsim.run(mark - done)
            done = mark
            s = lsim.state()
            marks[mark] = {"finite": bool(np.isfinite(s).all()), "max_abs": float(np.abs(s).max()),
                           "mse": float(mse(np.nan_to_num(s), padded).mean()),
                           "alive_cells": float((s[..., 3] > 0.1).sum((1, 2)).mean())}
            say(f"long run: step {mark}: {marks[mark]}")
        last = marks[max(marks)]
        out.update(long_steps=int(long_steps), long_seeds=int(long_n), long_finite=last["finite"],
                   long_max_abs=last["max_abs"], long_mse=last["mse"], long_alive_cells=last["alive_cells"],
                   target_alive_cells=float((padded[..., 3] > 0.1).sum()), long_curve=marks,
                   seconds_long=round(time.perf_counter() - t1, 1))
    out["goals"] = dict(GOALS)
    out["met"] = {"grown": out["grown_mean"] <= GOALS["grown"],
                  "persistent": out["persistent_max"] <= GOALS["persistent"],
                  "regenerated": out["regenerated_share_back"] == 1.0}
    return out


# -- pictures and the demo ------------------------------------------------------------------------------

def to_rgb(state):
    """(..., H, W, C) state -> (..., H, W, 3) uint8 as the article shows it: ``1 - a + rgb`` on white."""
    s = np.nan_to_num(np.asarray(state[..., :4], np.float32))
    a = np.clip(s[..., 3:4], 0, 1)
    return np.round(np.clip(1 - a + s[..., :3], 0, 1) * 255).astype(np.uint8)


def demo(nca, out, steps=400, cut_at=None, backend="auto", seed=0, scale=4, fps=15, frame_every=2, target=None,
         progress=None):
    """Grow one creature from a seed on the 72x72 grid, cut a disc out of it at ``cut_at`` (default
    ``steps // 2``), let it regrow; write ``animation.gif``, ``strip.png`` (frames side by side),
    ``curve.png`` (the MSE against the target per step) and ``metrics.json`` into ``out``.
    Returns (paths written, per-step MSE (steps + 1,))."""
    from . import viz

    say = progress or (lambda msg: None)
    target = gecko_target() if target is None else np.asarray(target, np.float32)
    padded = pad_target(target)
    h, w = padded.shape[:2]
    cut_at = steps // 2 if cut_at is None else int(cut_at)
    if not 1 <= cut_at < steps:
        raise InputError(f"the cut must come after step 0 and before the last step ({steps}), got {cut_at}")
    os.makedirs(out, exist_ok=True)
    # the cut: a disc of radius 0.3 of the pattern's side, centred on the pattern (right of its middle)
    ys, xs = np.nonzero(padded[..., 3] > 0.1)
    cy, cx = float(ys.mean()), float(xs.mean() + 0.25 * target.shape[1])
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.3 * target.shape[0]) ** 2
    strip_at = sorted({0, 10, 25, 50, 100, cut_at, cut_at + 10, cut_at + 25, cut_at + 50, cut_at + 100, steps}
                      & set(range(steps + 1)))
    strip, curve = {}, [float(mse(seed_state(1, h, w), padded)[0])]
    sim = _simulation(nca, seed_state(1, h, w), backend, seed, 0, None)
    gif = os.path.join(out, "animation.gif")
    t0 = time.perf_counter()
    with viz.AnimationWriter(gif, fps=fps, scale=scale) as writer:
        writer.add(to_rgb(sim.state()[0]))
        strip[0] = to_rgb(sim.state()[0])
        for step in range(1, steps + 1):
            sim.run(1)
            state = sim.state()
            if step == cut_at:
                strip[-cut_at] = to_rgb(state[0])  # just before the cut
                state = state * ~disc[None, ..., None]
                sim = _simulation(nca, state, backend, seed, step, None)
                say(f"step {step}: cut a disc of radius {0.3 * target.shape[0]:.0f} cells")
            curve.append(float(mse(state, padded)[0]))
            frame = to_rgb(state[0])
            if step % frame_every == 0 or step == cut_at:
                writer.add(frame)
            if step in strip_at:
                strip[step] = frame
    elapsed = time.perf_counter() - t0
    order = [0] + [k for k in strip_at if 0 < k < cut_at] + [-cut_at] + [k for k in strip_at if k >= cut_at]
    pics = [viz.upscale(strip[k], scale) for k in order]
    gap = np.full((pics[0].shape[0], 2 * scale, 3), 255, np.uint8)
    row = np.concatenate([x for p in pics for x in (p, gap)][:-1], 1)
    strip_path = os.path.join(out, "strip.png")
    viz.save_png(row, strip_path)
    curve_path = os.path.join(out, "curve.png")
    _plot_curve(curve, cut_at, curve_path)
    regrown = curve[cut_at + 1:]
    back = next((i + 1 for i, v in enumerate(regrown) if v <= GOALS["regenerated"]), None)
    metrics = {"model": getattr(nca, "name", ""), "steps": steps, "cut_at": cut_at, "backend": backend, "seed": seed,
               "mse_grown_72_96": float(np.mean(curve[72:97])) if steps >= 96 else None,
               "mse_before_cut": curve[cut_at - 1], "mse_after_cut": curve[cut_at], "mse_end": curve[-1],
               "steps_back_to_0.01": back, "strip_steps": [abs(k) for k in order], "seconds": round(elapsed, 1)}
    metrics_path = os.path.join(out, "metrics.json")
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=1)
    return [gif, strip_path, curve_path, metrics_path], np.asarray(curve), metrics


def _plot_curve(curve, cut_at, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .viz import _atomic

    fig, ax = plt.subplots(figsize=(6, 3.4), constrained_layout=True)
    ax.semilogy(np.arange(len(curve)), np.maximum(curve, 1e-6), lw=1.5)
    ax.axvline(cut_at, color="gray", ls="--", lw=1)
    ax.axhline(GOALS["regenerated"], color="tab:red", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("MSE per RGBA value")
    ax.set_title("growth from one cell, a cut, regrowth")
    ax.grid(alpha=0.3)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv=None):
    """``python -m fastca.growing evaluate MODEL [options]`` or ``render CHAR OUT.png``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fastca.growing", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="the published metric of a growing model (JSON on stdout)")
    ev.add_argument("model", help="a model .npz (fastca.NCA) or an embedded name (growing-gecko)")
    ev.add_argument("--target", default=None, help="the target picture (default: the shipped gecko)")
    ev.add_argument("--seeds", type=int, default=64)
    ev.add_argument("--persist-steps", type=int, default=2000)
    ev.add_argument("--long-steps", type=int, default=10_000)
    ev.add_argument("--long-seeds", type=int, default=8)
    ev.add_argument("--backend", default="auto")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--out", default=None, help="also write the JSON here")
    rd = sub.add_parser("render", help="render an emoji to a 40x40 RGBA PNG target (needs fonts-noto-color-emoji)")
    rd.add_argument("char")
    rd.add_argument("out")
    args = ap.parse_args(argv)
    if args.command == "render":
        save_target(render_emoji(args.char), args.out)
        print(f"wrote {args.out}")
        return 0
    from .nca import NCA

    if os.path.exists(args.model):
        nca = NCA.load(args.model)
    else:
        import fastca

        nca = fastca.pretrained(args.model)
    target = load_target(args.target) if args.target else None
    result = evaluate(nca, target, n=args.seeds, backend=args.backend, seed=args.seed,
                      persist_steps=args.persist_steps, long_steps=args.long_steps, long_n=args.long_seeds,
                      threads=args.threads, progress=lambda m: print(m, file=sys.stderr, flush=True))
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
