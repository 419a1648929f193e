"""PyTorch reference of the automaton step: differentiable, used for training and as a backend.

:class:`TorchNCA` is the self-classifying MNIST model (:mod:`fastca.spec`), state
``(B, H, W, 20)``; :class:`DescribedNCA` runs any :class:`fastca.model.ModelSpec`, state
``(B, H, W, C)``. States are channels last; convolutions run on an NCHW view of them with
channels_last strides, so no copy is made. :func:`shared_randomness` and
:func:`described_randomness` give each the shared generator's fire mask and noise.
"""

import dataclasses

import numpy as np
import torch
from torch import nn

from . import spec
from .weights import NCAWeights


class TorchNCA(nn.Module):
    """The step of :mod:`fastca.spec` as an ``nn.Module``.

    Parameters live in torch layout (``perceive``: Conv2d 20->80 3x3 zero padding,
    ``dense``: Conv2d 80->80 1x1, ``out``: Conv2d 80->19 1x1, zero-initialised).
    Convert with :meth:`from_weights` and :meth:`to_weights`.
    """

    def __init__(self, fire_rate=spec.FIRE_RATE, alive_threshold=spec.ALIVE_THRESHOLD, noise_std=spec.NOISE_STD):
        super().__init__()
        self.perceive = nn.Conv2d(spec.CHANNELS, spec.HIDDEN, spec.KERNEL, padding=1)
        self.dense = nn.Conv2d(spec.HIDDEN, spec.HIDDEN, 1)
        self.out = nn.Conv2d(spec.HIDDEN, spec.MUTABLE, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.fire_rate = float(fire_rate)
        self.alive_threshold = float(alive_threshold)
        self.noise_std = float(noise_std)

    @classmethod
    def from_weights(cls, weights: NCAWeights):
        """Build the module from canonical weights (HWIO / (in, out) layouts)."""
        model = cls(weights.fire_rate, weights.alive_threshold, weights.noise_std)
        with torch.no_grad():
            model.perceive.weight.copy_(torch.from_numpy(weights.w1.transpose(3, 2, 0, 1).copy()))
            model.perceive.bias.copy_(torch.tensor(weights.b1))
            model.dense.weight.copy_(torch.from_numpy(weights.w2.T.copy())[:, :, None, None])
            model.dense.bias.copy_(torch.tensor(weights.b2))
            model.out.weight.copy_(torch.from_numpy(weights.w3.T.copy())[:, :, None, None])
            model.out.bias.copy_(torch.tensor(weights.b3))
        return model

    def to_weights(self, name="trained") -> NCAWeights:
        """Export the parameters as canonical :class:`NCAWeights`."""

        def np_(t):
            return t.detach().cpu().float().numpy()

        return NCAWeights(
            w1=np_(self.perceive.weight).transpose(2, 3, 1, 0),
            b1=np_(self.perceive.bias),
            w2=np_(self.dense.weight)[:, :, 0, 0].T,
            b2=np_(self.dense.bias),
            w3=np_(self.out.weight)[:, :, 0, 0].T,
            b3=np_(self.out.bias),
            fire_rate=self.fire_rate,
            alive_threshold=self.alive_threshold,
            noise_std=self.noise_std,
            name=name,
        )

    def delta(self, state):
        """The update before noise and mask: (B, H, W, 20) -> (B, H, W, 19)."""
        x = state.permute(0, 3, 1, 2)  # NCHW view with channels_last strides
        h = torch.relu(self.perceive(x))
        h = torch.relu(self.dense(h))
        return self.out(h).permute(0, 2, 3, 1)

    def forward_sparse(self, state, fire_mask=None, noise=None, generator=None):
        """The same step as :meth:`forward`, computed only for the cells that update.

        Gathers the 3x3 neighbourhoods of the alive and firing cells (zero padding), runs
        the perception and MLP on those rows alone and adds the updates back with
        ``index_put``: mathematically the same function as the dense step (tested equal in
        values and gradients), and about ten times less work on MNIST digits, where most
        cells are dead or resting. ``noise``: optional (B, H, W, 19) tensor (its values at
        the updated cells are used); drawn with ``torch.randn`` for those cells when None.
        """
        if fire_mask is None:
            u = torch.rand(state.shape[:-1], generator=generator, device=state.device)
            fire_mask = u <= self.fire_rate
        b, y, x = torch.nonzero(fire_mask & self.alive(state), as_tuple=True)
        padded = nn.functional.pad(state, (0, 0, 1, 1, 1, 1))  # zero padding of H and W
        taps = [padded[b, y + i, x + j] for i in range(spec.KERNEL) for j in range(spec.KERNEL)]
        p = torch.cat(taps, dim=-1)  # (N, 180) in (kernel row, kernel column, channel) order
        w1 = self.perceive.weight.permute(2, 3, 1, 0).reshape(spec.PERCEPTION_IN, spec.HIDDEN)
        h = torch.relu(p @ w1 + self.perceive.bias)
        h = torch.relu(h @ self.dense.weight[:, :, 0, 0].T + self.dense.bias)
        ds = h @ self.out.weight[:, :, 0, 0].T + self.out.bias
        if noise is not None:
            ds = ds + noise[b, y, x]
        elif self.noise_std > 0:
            ds = ds + self.noise_std * torch.randn(ds.shape, generator=generator, device=ds.device, dtype=ds.dtype)
        update = torch.zeros_like(state[..., 1:]).index_put((b, y, x), ds)
        return torch.cat([state[..., :1], state[..., 1:] + update], dim=-1)

    def alive(self, state):
        """(B, H, W) bool: gray > alive threshold."""
        return spec.is_alive(state[..., spec.GRAY], self.alive_threshold)

    def forward(self, state, fire_mask=None, noise=None, generator=None):
        """One synchronous step: (B, H, W, 20) float32 -> (B, H, W, 20).

        fire_mask: optional (B, H, W) bool of cells that fire this step (before the
            alive rule); drawn from ``torch.rand(..., generator=generator)`` when None.
        noise: optional (B, H, W, 19) float tensor added to the update; when None and
            ``noise_std > 0`` it is drawn from ``torch.randn``. Pass zeros for no noise.
        """
        ds = self.delta(state)
        if noise is not None:
            ds = ds + noise
        elif self.noise_std > 0:
            ds = ds + self.noise_std * torch.randn(ds.shape, generator=generator, device=ds.device, dtype=ds.dtype)
        if fire_mask is None:
            u = torch.rand(state.shape[:-1], generator=generator, device=state.device)
            fire_mask = u <= self.fire_rate
        mask = (fire_mask & self.alive(state)).unsqueeze(-1).to(ds.dtype)
        return torch.cat([state[..., :1], state[..., 1:] + ds * mask], dim=-1)


def shared_randomness(seed, step, state_np, fire_rate, noise_std, alive_threshold, origin=(0, 0, 0)):
    """Fire mask and noise from the shared generator, as torch tensors for :meth:`TorchNCA.forward`.

    state_np: (B, H, W, 20) float32 numpy; origin: global (sample, row, column) of its
    first cell. Noise is drawn only where the mask is set (elsewhere it is multiplied by
    zero anyway). Returns (mask (B, H, W) bool, noise (B, H, W, 19) float32 or None).
    """
    from . import rng

    alive = spec.is_alive(state_np[..., spec.GRAY], np.float32(alive_threshold))
    mask = rng.fire_mask(seed, step, alive, fire_rate, origin)
    noise = None
    if noise_std > 0:
        b, y, x = np.nonzero(mask)
        dense = np.zeros(mask.shape + (spec.MUTABLE,), np.float32)
        ob, oy, ox = (int(v) for v in origin)
        dense[b, y, x] = rng.noise_at(seed, step, b + ob, y + oy, x + ox, noise_std, spec.MUTABLE)
        noise = torch.from_numpy(dense)
    return torch.from_numpy(mask), noise


def described_randomness(description, seed, step, state_np, fire_rate, noise_std, threshold, origin=(0, 0, 0)):
    """Fire mask and noise from the shared generator for one step of any description, as torch tensors
    for :meth:`DescribedNCA.forward`.

    state_np: (B, H, W, C) float32 numpy, channels last; origin: global (sample, row, column)
    of its first cell; ``fire_rate``, ``noise_std`` and ``threshold`` are the run's (they
    override the description's). Returns

    - mask: (B, H, W) bool tensor, the cells that update: ``u <= fire_rate``, and-ed with the
      alive mask under the "static" rule only (under "maxpool" every firing cell updates and
      the rule zeroes cells afterwards; under "none" every firing cell updates);
    - noise: (B, H, W, n_updated) float32 tensor of standard normals (channel ``k`` of the
      draw for state channel ``residual[0] + k``), drawn only at the cells of ``mask`` (zero
      elsewhere, where it is multiplied by zero anyway), or None when ``noise_std == 0``.
    """
    from . import rng
    from .model import alive_mask

    rule = description.alive.rule
    if rule == "static":
        # the threshold of the run, not of the description (a static rule has no neighbourhood,
        # so only the threshold matters)
        d = dataclasses.replace(description, alive=dataclasses.replace(description.alive, threshold=threshold))
        lets = alive_mask(d, state_np)
    else:
        lets = np.ones(state_np.shape[:3], bool)
    mask = rng.fire_mask(seed, step, lets, fire_rate, origin)
    noise = None
    if noise_std > 0:
        n = description.n_updated
        b, y, x = np.nonzero(mask)
        dense = np.zeros(mask.shape + (n,), np.float32)
        ob, oy, ox = (int(v) for v in origin)
        # std 1.0: the draws are z exactly; forward multiplies by std in float32
        dense[b, y, x] = rng.noise_at(seed, step, b + ob, y + oy, x + ox, 1.0, n)
        noise = torch.from_numpy(dense)
    return torch.from_numpy(mask), noise


class DescribedNCA(nn.Module):
    """The step of any :class:`fastca.model.ModelSpec` as a trainable ``nn.Module``.

    Parameters are kept in the description's layout (:meth:`ModelSpec.weight_shapes`: HWIO
    perception, ``(in, out)`` dense layers) under the same names, so :meth:`arrays` and the
    constructor round-trip (and :meth:`fastca.NCA.from_torch` reads them). States are
    ``(B, H, W, C)`` channels last in any float dtype (float64 for checks against
    :func:`fastca.model.step_float64`).
    """

    def __init__(self, description, arrays=None, dtype=torch.float32):
        super().__init__()
        from .model import Depthwise

        self.description = description
        arrays = description.check_weights(arrays) if arrays is not None else description.random_weights()
        self.params = nn.ParameterDict({k: nn.Parameter(torch.tensor(np.asarray(v), dtype=dtype))
                                        for k, v in arrays.items()})
        if isinstance(description.perception, Depthwise):
            kern = torch.tensor(description.perception.kernel(), dtype=dtype).permute(2, 0, 1)  # (F, 3, 3)
            # groups=C: output channel c*F + f is filter f on channel c (the channel-major order)
            self.register_buffer("filters", kern.repeat(description.channels, 1, 1)[:, None])

    def arrays(self):
        """The parameters as float32 NumPy arrays, by name."""
        return {k: v.detach().cpu().float().numpy() for k, v in self.params.items()}

    def _pad(self, x, fill=0.0):
        if self.description.boundary == "wrap":
            return nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
        return nn.functional.pad(x, (1, 1, 1, 1), value=fill)

    def alive(self, state):
        """(B, H, W) bool: the description's alive rule on ``state``."""
        rule = self.description.alive
        if rule.rule == "none":
            return torch.ones(state.shape[:3], dtype=torch.bool, device=state.device)
        ch = state[..., rule.channel].float()
        if rule.rule == "maxpool":  # cells outside the grid are ignored: pad with -inf (or wrap)
            ch = nn.functional.max_pool2d(self._pad(ch[:, None], -float("inf")), 3, stride=1)[:, 0]
        return ch > np.float32(rule.threshold)

    def delta(self, state):
        """The update before noise and masks: (B, H, W, C) -> (B, H, W, n_updated)."""
        from .model import Conv3x3

        d, p = self.description, self.params
        x = self._pad(state.permute(0, 3, 1, 2))
        if isinstance(d.perception, Conv3x3):
            x = nn.functional.conv2d(x, p["w1"].permute(3, 2, 0, 1), p.get("b1"))
            if d.perception.activation == "relu":
                x = torch.relu(x)
            k = 2
        else:
            x = nn.functional.conv2d(x, self.filters, groups=d.channels)
            k = 1
        x = x.permute(0, 2, 3, 1)
        for i, layer in enumerate(d.layers):
            x = x @ p[f"w{k + i}"]
            if layer.bias:
                x = x + p[f"b{k + i}"]
            if layer.activation == "relu":
                x = torch.relu(x)
        return x

    def forward(self, state, fire_mask, noise=None):
        """One synchronous step: (B, H, W, C) -> (B, H, W, C), in the state's dtype.

        ``fire_mask``: (B, H, W) bool, the cells whose fire draw ``u <= fire_rate`` (the alive
        rule is applied here: and-ed with the alive mask under "static", not under "maxpool",
        whose rule zeroes cells afterwards); ``noise``: (B, H, W, n_updated) standard normals
        (channel ``k`` goes to state channel ``residual[0] + k``; only its values at updated
        cells matter) or None for no noise.
        """
        d = self.description
        ds = self.delta(state)
        if noise is not None and d.noise_std > 0:
            # ds + std * z with std rounded to the state's dtype first: in float32 this is the
            # product the shared generator forms (rng.noise_at(..., std, ...) == std * z bit for
            # bit), so every backend adds the same noise values
            std = torch.tensor(d.noise_std, dtype=ds.dtype, device=ds.device)
            ds = ds + std * noise.to(ds.dtype)
        pre = self.alive(state)
        update = fire_mask if d.alive.rule == "maxpool" else fire_mask & pre
        r0, r1 = d.residual
        out = torch.cat([state[..., :r0], state[..., r0:r1] + ds * update[..., None].to(ds.dtype),
                         state[..., r1:]], dim=-1)
        if d.alive.rule == "maxpool":
            out = out * (pre & self.alive(out))[..., None].to(out.dtype)
        return out
