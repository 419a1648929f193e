"""Read the published Distill model (TF.js graph-model JSON with inline weights)."""

import base64
import binascii
import json
import os

import numpy as np

from . import spec
from ._checks import first_line
from .weights import NCAWeights, open_regular_file
from .errors import InputError, InputTypeError

# Const node names in the published graph -> canonical weight names.
_NODES = {
    "sequential/conv2d/Conv2D/ReadVariableOp/resource": "w1",
    "sequential/conv2d/BiasAdd/ReadVariableOp/resource": "b1",
    "sequential_1/conv2d_1/Conv2D/ReadVariableOp/resource": "w2",
    "sequential_1/conv2d_1/BiasAdd/ReadVariableOp/resource": "b2",
    "sequential_1/conv2d_2/Conv2D/ReadVariableOp/resource": "w3",
    "sequential_1/conv2d_2/BiasAdd/ReadVariableOp/resource": "b3",
}


_MAX_JSON_BYTES = 16 << 20  #: the published model is 129 KB
_MAX_ELEMENTS = 1 << 20  #: more than any weight of the model (14,400)


def load_distill_model(path):
    """Load the published TF.js model JSON of the Distill article into :class:`NCAWeights`.

    The graph's 1x1 convolutions (1, 1, in, out) become dense (in, out) matrices; the
    alive threshold is read from the graph's ``Greater`` constant. The returned model
    uses fire rate 0.5 and noise std 0.02, as the published demo does. Anything wrong with
    the file (not a regular file, too large, malformed JSON, a value of the wrong type) is a
    one-line ValueError naming it.
    """
    path = os.fspath(path)
    try:
        with open_regular_file(path, _MAX_JSON_BYTES) as f:
            raw = f.read(_MAX_JSON_BYTES + 1)
        if len(raw) > _MAX_JSON_BYTES:
            raise InputError(f"{path}: more than {_MAX_JSON_BYTES} bytes")
        graph = json.loads(raw.decode("utf-8"))
        nodes = graph["modelTopology"]["node"]
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, RecursionError,
            MemoryError) as exc:
        raise InputError(f"{path}: not a TF.js graph-model JSON ({type(exc).__name__}: {first_line(exc)})") from None
    except ValueError as exc:
        msg = first_line(exc)
        raise InputError(msg if msg.startswith(path + ": ") else f"{path}: {msg}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(nodes, list):
        raise InputError(f"{path}: not a TF.js graph-model JSON (modelTopology.node is not a list)")
    found = {}
    seen = set()
    threshold = spec.ALIVE_THRESHOLD
    for node in nodes:
        if not isinstance(node, dict):
            raise InputError(f"{path}: not a TF.js graph-model JSON (a node is a {type(node).__name__})")
        name = node.get("name")
        if not isinstance(name, str) or (name not in _NODES and name != "Greater/y"):
            continue  # not a node this loader reads
        try:
            tensor = _field(node, ("attr", "value", "tensor"), dict)
            if _field(tensor, ("dtype",), str) != "DT_FLOAT":
                raise InputError(f"dtype {tensor['dtype'][:40]!r}, expected 'DT_FLOAT'")
            if name in seen:
                raise InputError("the node appears twice")
            seen.add(name)
            if name in _NODES:
                dims = tuple(_size(d) for d in _field(tensor, ("tensorShape", "dim"), list))
                count = int(np.prod(dims, dtype=np.int64)) if dims else 1
                if count > _MAX_ELEMENTS:
                    raise InputError(f"shape {dims} is larger than any weight of the model")
                content = base64.b64decode(_field(tensor, ("tensorContent",), str), validate=True)
                if len(content) != 4 * count:
                    raise InputError(f"holds {len(content) // 4} values, shape says {dims}")
                found[_NODES[name]] = np.frombuffer(content, dtype="<f4").reshape(dims)
            else:
                values = _field(tensor, ("floatVal",), list)
                if len(values) != 1 or isinstance(values[0], bool) or not isinstance(values[0], (int, float)):
                    raise InputError(f"floatVal must be a list of one number, got {str(values)[:60]}")
                threshold = float(np.float32(values[0]))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, OverflowError, binascii.Error) as exc:
            raise InputError(f"{path}: malformed node {str(name)[:100]!r} ({type(exc).__name__}: {first_line(exc)})") \
                from None
    missing = sorted(set(_NODES.values()) - set(found))
    if missing:
        raise InputError(f"{path}: missing weights {', '.join(missing)}; is this the self-classifying MNIST model?")
    try:
        found["w2"] = found["w2"].reshape(spec.HIDDEN, spec.HIDDEN)
        found["w3"] = found["w3"].reshape(spec.HIDDEN, spec.MUTABLE)
        return NCAWeights(**found, alive_threshold=threshold, name="distill-2020-published")
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: weights of the wrong shape or value ({first_line(exc)})") from None


def _field(obj, keys, kind):
    """obj[k0][k1]... of the type ``kind`` (JSON scalars are type-checked, never converted)."""
    for k in keys:
        if not isinstance(obj, dict):
            raise InputTypeError(f"{k!r} is inside a {type(obj).__name__}, not an object")
        obj = obj[k]
    if not isinstance(obj, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InputTypeError(f"{'.'.join(keys)} is a {type(obj).__name__}, expected {expected}")
    return obj


def _size(dim):
    """A TF.js dimension: {"size": "3"} (a decimal string, as TF.js writes it) or {"size": 3}."""
    size = _field(dim, ("size",), (str, int))
    if isinstance(size, bool) or (isinstance(size, str) and not (size.isascii() and size.isdigit() and len(size) < 10)):
        raise InputError(f"dimension size {str(size)[:20]!r} is not a non-negative integer")
    size = int(size)
    if size < 0:
        raise InputError(f"dimension size {size} is negative")
    return size


