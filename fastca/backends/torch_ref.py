"""The torch backend: the PyTorch reference module fed the shared generator's masks and noise.

The self-classifying MNIST model runs :class:`fastca.torch_model.TorchNCA` (state
``(B, H, W, 20)``); any other description (:class:`fastca.NCA`) runs
:class:`fastca.torch_model.DescribedNCA` (state ``(B, H, W, C)``, C the description's
channels). Both are dense float32 on the CPU.
"""

import dataclasses
import importlib.util

from .base import BackendInfo, HostRunner, register
from ..errors import InputError


def _mnist_weights(weights):
    """The :class:`fastca.NCAWeights` to run ``weights`` with on the MNIST path, or None for the described path.

    ``NCAWeights`` as they are; an ``NCA`` whose description computes the MNIST step (the
    :data:`fastca.model.MNIST` description up to its name, fire rate, noise and threshold,
    which the run's parameters replace anyway) as NCAWeights with its arrays, so that the
    same model gives the same bits whichever object holds it.
    """
    from .. import model
    from ..weights import NCAWeights

    if isinstance(weights, NCAWeights):
        return weights
    d = weights.description
    m = model.MNIST
    same = dataclasses.replace(d, name=m.name, fire_rate=m.fire_rate, noise_std=m.noise_std,
                               alive=dataclasses.replace(d.alive, threshold=m.alive.threshold))
    return NCAWeights(**weights.arrays(), name=getattr(weights, "name", d.name)) if same == m else None


class Torch(HostRunner):
    """The PyTorch reference, dense, on the CPU: :class:`TorchNCA` for MNIST, :class:`DescribedNCA` otherwise.

    ``weights``: :class:`fastca.NCAWeights` or :class:`fastca.NCA`; ``state``: (B, H, W, C)
    float32 NumPy, channels last (C = 20 for MNIST); ``params``: the run's
    :class:`~fastca.backends.base.Params`, whose fire rate, noise and alive threshold
    replace the model's.
    """

    def __init__(self, weights, state, params):
        super().__init__(params)
        import torch

        from ..torch_model import DescribedNCA, TorchNCA

        self._torch = torch
        mnist = _mnist_weights(weights)
        if mnist is not None:
            # today's MNIST path, unchanged (its bits are pinned by the equivalence tests)
            self.description = None
            self.model = TorchNCA.from_weights(mnist).eval()
            self.model.fire_rate, self.model.noise_std = params.fire_rate, params.noise_std
            self.model.alive_threshold = params.alive_threshold
        else:
            d = weights.description
            self.description = dataclasses.replace(
                d, fire_rate=params.fire_rate, noise_std=params.noise_std,
                alive=dataclasses.replace(d.alive, threshold=params.alive_threshold))
            self.model = DescribedNCA(self.description, weights.arrays()).eval().requires_grad_(False)
        channels = 20 if self.description is None else self.description.channels
        if state.ndim != 4 or state.shape[-1] != channels:
            raise InputError(f"the state must be (B, H, W, {channels}) for this model, got shape {state.shape}")
        self.state = torch.from_numpy(state)

    def _randomness(self, t):
        """(fire mask (B, H, W) bool, noise or None) of step ``t`` from the shared generator."""
        from ..torch_model import described_randomness, shared_randomness

        p = self.params
        if self.description is None:
            return shared_randomness(p.seed, t, self.read(), p.fire_rate, p.noise_std, p.alive_threshold, p.origin)
        return described_randomness(self.description, p.seed, t, self.read(), p.fire_rate, p.noise_std,
                                    p.alive_threshold, p.origin)

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        p = self.params
        mask, noise = self._randomness(t)
        if noise is None and self.description is None:
            noise = self._torch.zeros(())  # TorchNCA would draw its own noise for None
        old = self._torch.get_num_threads()
        if p.threads is not None:
            self._torch.set_num_threads(p.threads)
        try:
            with self._torch.no_grad():
                self.state = self.model(self.state, fire_mask=mask, noise=noise).contiguous()
        finally:
            self._torch.set_num_threads(old)

    def read(self):
        """The current state as a numpy array (a view, no copy)."""
        return self.state.numpy()


def _probe():
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed", False
    return True, "CPU (the dense reference: slow)", True


INFO = register(BackendInfo(
    name="torch",
    load=lambda: Torch,
    probe=_probe,
    speed_rank=10,
    summary="the PyTorch reference, dense convolutions on a channels_last view (the test oracle, training)",
))
