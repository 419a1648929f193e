"""The torch backend: the PyTorch reference module fed the shared generator's masks and noise."""

import importlib.util

from .base import BackendInfo, HostRunner, register


class Torch(HostRunner):
    """The PyTorch reference (:class:`fastca.torch_model.TorchNCA`), dense, on the CPU."""

    def __init__(self, weights, state, params):
        super().__init__(params)
        import torch

        from ..torch_model import TorchNCA

        self._torch = torch
        self.model = TorchNCA.from_weights(weights).eval()
        self.model.fire_rate, self.model.noise_std = params.fire_rate, params.noise_std
        self.model.alive_threshold = params.alive_threshold
        self.state = torch.from_numpy(state)

    def step(self, t):
        """Advance the state by one step whose random numbers are keyed by step index ``t``."""
        from ..torch_model import shared_randomness

        p = self.params
        mask, noise = shared_randomness(p.seed, t, self.read(), p.fire_rate, p.noise_std, p.alive_threshold, p.origin)
        if noise is None:
            noise = self._torch.zeros(())
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
