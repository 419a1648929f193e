"""Read the published Distill model (TF.js graph-model JSON with inline weights)."""

import base64
import binascii
import json
import os

import numpy as np

from . import spec
from .weights import NCAWeights

# Const node names in the published graph -> canonical weight names.
_NODES = {
    "sequential/conv2d/Conv2D/ReadVariableOp/resource": "w1",
    "sequential/conv2d/BiasAdd/ReadVariableOp/resource": "b1",
    "sequential_1/conv2d_1/Conv2D/ReadVariableOp/resource": "w2",
    "sequential_1/conv2d_1/BiasAdd/ReadVariableOp/resource": "b2",
    "sequential_1/conv2d_2/Conv2D/ReadVariableOp/resource": "w3",
    "sequential_1/conv2d_2/BiasAdd/ReadVariableOp/resource": "b3",
}


def load_distill_model(path):
    """Load the published TF.js model JSON of the Distill article into :class:`NCAWeights`.

    The graph's 1x1 convolutions (1, 1, in, out) become dense (in, out) matrices; the
    alive threshold is read from the graph's ``Greater`` constant. The returned model
    uses fire rate 0.5 and noise std 0.02, as the published demo does.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            graph = json.load(f)
        nodes = graph["modelTopology"]["node"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a TF.js graph-model JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(nodes, list):
        raise ValueError(f"{path}: not a TF.js graph-model JSON (modelTopology.node is not a list)")
    found = {}
    threshold = spec.ALIVE_THRESHOLD
    for node in nodes:
        if not isinstance(node, dict):
            raise ValueError(f"{path}: not a TF.js graph-model JSON (a node is a {type(node).__name__})")
        try:
            tensor = node.get("attr", {}).get("value", {}).get("tensor", {})
            if node.get("name") in _NODES:
                dims = tuple(int(d["size"]) for d in tensor["tensorShape"]["dim"])
                data = np.frombuffer(base64.b64decode(tensor["tensorContent"], validate=True), dtype="<f4")
                if data.size != np.prod(dims):
                    raise ValueError(f"node {node['name']} holds {data.size} values, shape says {dims}")
                found[_NODES[node["name"]]] = data.reshape(dims)
            elif node.get("name") == "Greater/y" and "floatVal" in tensor:
                threshold = float(np.float32(tensor["floatVal"][0]))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, binascii.Error) as exc:
            raise ValueError(f"{path}: malformed node {node.get('name')!r} ({type(exc).__name__}: {exc})") from None
    missing = sorted(set(_NODES.values()) - set(found))
    if missing:
        raise ValueError(f"{path}: missing weights {', '.join(missing)}; is this the self-classifying MNIST model?")
    try:
        found["w2"] = found["w2"].reshape(spec.HIDDEN, spec.HIDDEN)
        found["w3"] = found["w3"].reshape(spec.HIDDEN, spec.MUTABLE)
        return NCAWeights(**found, alive_threshold=threshold, name="distill-2020-published")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: weights of the wrong shape or value ({exc})") from None
