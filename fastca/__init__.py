"""fastca: fast Neural Cellular Automata, starting with the self-classifying MNIST automaton.

Public API::

    import fastca
    model = fastca.pretrained()                       # embedded weights, offline
    images, labels = fastca.data.sample_digits()      # small embedded MNIST sample
    result = fastca.simulate(model, images[:8], 200, labels=labels[:8])
    result.labels, result.accuracy[-1], result.agreement[-1]
"""

from . import _numba_setup

_numba_setup.configure()  # before any kernel is compiled: cache folder, fork-safe threading layer (TBB or workqueue)

from . import data, model, rng, seeds, spec  # noqa: E402
from .backends import available_backends  # noqa: E402
from .distill import load_distill_model  # noqa: E402
from .errors import FastcaError, InputError, InputTypeError, NonFiniteError, RunError  # noqa: E402
from .metrics import label_map, step_metrics  # noqa: E402
from .run_options import RunOptions  # noqa: E402
from .simulate import SimResult, initial_state, mutate, simulate  # noqa: E402
from .simulation import Simulation  # noqa: E402
from .nca import NCA, load_model  # noqa: E402
from .weights import NCAWeights  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FastcaError",
    "InputError",
    "InputTypeError",
    "NCA",
    "NCAWeights",
    "NonFiniteError",
    "PRETRAINED",
    "PRETRAINED_NCA",
    "RunOptions",
    "SimResult",
    "Simulation",
    "available_backends",
    "data",
    "initial_state",
    "label_map",
    "load_distill_model",
    "load_model",
    "model",
    "mutate",
    "pretrained",
    "rng",
    "RunError",
    "seeds",
    "simulate",
    "spec",
    "step_metrics",
]


#: Embedded models: name -> file in fastca/assets. The first is the default.
PRETRAINED = {
    "fastca-mnist": "fastca_mnist.npz",  # trained by fastca itself (see assets/MODEL_CARD.md)
    "distill-2020": "distill_2020.npz",  # the published Distill model (CC-BY 4.0)
}
#: Embedded models of other descriptions (:class:`NCA`): name -> file in fastca/assets. Kept apart from
#: PRETRAINED, whose models the MNIST commands (play, the MNIST demo) take.
PRETRAINED_NCA = {
    "growing-gecko": "growing_gecko.npz",  # the Growing NCA trained by fastca (fastca.growing, MODEL_CARD.md)
}


def pretrained(name="fastca-mnist"):
    """An embedded model, offline.

    ``"fastca-mnist"`` (default): trained by ``fastca train`` with the article's recipe on
    the 60k MNIST training digits; recipe, training time and evaluation in
    ``fastca/assets/MODEL_CARD.md``. ``"distill-2020"``: the published Distill model
    (Randazzo et al., 2020, CC-BY 4.0), converted from its TF.js JSON by
    :func:`load_distill_model`. ``"growing-gecko"``: a Growing NCA (:data:`fastca.model.GROWING`,
    a :class:`NCA`) trained by ``fastca train --recipe growing`` to grow the gecko emoji from one
    cell and regrow it when cut (:mod:`fastca.growing`). ``.name`` of the result says which.
    """
    from importlib import resources

    files = {**PRETRAINED, **PRETRAINED_NCA}
    if name not in files:
        raise InputError(f"unknown pretrained model {name!r}; embedded: {', '.join(files)}")
    with resources.as_file(resources.files("fastca").joinpath("assets", files[name])) as path:
        return load_model(path)  # NCAWeights (MNIST) or NCA (any description), by the file's kind
