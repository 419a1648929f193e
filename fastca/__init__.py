"""fastca: fast Neural Cellular Automata, starting with the self-classifying MNIST automaton.

Public API::

    import fastca
    model = fastca.pretrained()                       # embedded weights, offline
    images, labels = fastca.data.sample_digits()      # small embedded MNIST sample
    result = fastca.simulate(model, images[:8], 200, labels=labels[:8])
    result.labels, result.accuracy[-1], result.agreement[-1]
"""

from . import data, rng, spec
from .backends import available_backends
from .distill import load_distill_model
from .metrics import label_map, step_metrics
from .simulate import SimResult, initial_state, mutate, simulate
from .weights import NCAWeights

__version__ = "0.1.0"

__all__ = [
    "NCAWeights",
    "SimResult",
    "available_backends",
    "data",
    "initial_state",
    "label_map",
    "load_distill_model",
    "mutate",
    "pretrained",
    "rng",
    "simulate",
    "spec",
    "step_metrics",
]


def pretrained():
    """The embedded default model (offline).

    For now this is the published Distill model (Randazzo et al., 2020, CC-BY 4.0),
    converted from its TF.js JSON by :func:`load_distill_model`; ``.name`` says so.
    """
    from importlib import resources

    with resources.as_file(resources.files("fastca").joinpath("assets/distill_2020.npz")) as path:
        return NCAWeights.load(path)
