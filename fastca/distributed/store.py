"""The record of a complete array in a Zarr store: what it holds (settings, world, step) and what was
written (each chunk file's size and CRC-32), its checks, and reading a store's latest complete state."""

import hashlib
import json
import os
import zlib

import numpy as np

from .rounds import _is_int
from ..errors import InputError

RECORD_FORMAT = 2  #: version of the record that a complete array carries in its attributes


def _model_hash(model):
    """What a run's bits depend on in the model: its arrays, and for an NCA its description too (the MNIST
    weights hash as they always did, so their stores resume)."""
    from ..nca import NCA

    h = hashlib.sha256()
    if isinstance(model, NCA):
        h.update(json.dumps(model.description.to_dict(), sort_keys=True).encode())
    for v in model.arrays().values():
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def _tiles_hash(tiles):
    """What a round's metrics depend on: the tile grid and each tile's label (None without tiles)."""
    if tiles is None:
        return None
    lab = np.asarray(tiles.labels)[np.asarray(tiles.index)].astype("<i8")
    return hashlib.sha256(repr(lab.shape).encode() + lab.tobytes()).hexdigest()[:16]


def _grid(shape, chunks):
    """(chunk coordinates, origin) of every chunk of a (B, H, W, C) array, in row-major order."""
    counts = [-(-shape[i] // chunks[i]) for i in range(3)]
    for ib in range(counts[0]):
        for iy in range(counts[1]):
            for ix in range(counts[2]):
                yield (ib, iy, ix, 0), (ib * chunks[0], iy * chunks[1], ix * chunks[2])


def _n_chunks(shape, chunks):
    return int(np.prod([-(-shape[i] // chunks[i]) for i in range(3)]))


def _chunk_file(array_path, arr, coords):
    """Key and file of one chunk of the array at ``array_path``."""
    key = arr.metadata.encode_chunk_key(coords)
    return key, os.path.join(array_path, *key.split("/"))


def _damaged(array_path, key, problem):
    return InputError(f"{array_path}: chunk {key} {problem}; the store is damaged (restore it, or start a new store)")


def _check_chunk(array_path, key, file, size, crc=None):
    """Raise unless the chunk file exists with the recorded size (and checksum, when ``crc`` is given)."""
    try:
        if crc is None:
            got = os.stat(file).st_size
        else:
            with open(file, "rb") as f:
                raw = f.read()
            got = len(raw)
    except FileNotFoundError:
        raise _damaged(array_path, key, f"is missing (the round that wrote it recorded {size} bytes)") from None
    if got != size:
        raise _damaged(array_path, key, f"is {got} bytes, {size} were written (truncated or overwritten)")
    if crc is not None and zlib.crc32(raw) != crc:
        raise _damaged(array_path, key, f"does not match its checksum (crc32 {zlib.crc32(raw)}, {crc} were written)")


def _verify_chunks(array_path, record):
    """Every chunk of a complete array exists with its recorded size: before a round reads it (a
    missing chunk would read as the fill value)."""
    import zarr

    arr = zarr.open_array(array_path, mode="r")
    for i, (coords, _) in enumerate(_grid(record["shape"], record["chunks"])):
        key, file = _chunk_file(array_path, arr, coords)
        _check_chunk(array_path, key, file, record["chunk_bytes"][i])


def _put_chunk(arr, array_path, coords, origin, block):
    """Write one chunk-aligned block; returns the (bytes, crc32) of the chunk file written."""
    b0, y0, x0 = origin
    arr[b0 : b0 + block.shape[0], y0 : y0 + block.shape[1], x0 : x0 + block.shape[2], :] = block
    key, file = _chunk_file(array_path, arr, coords)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _damaged(array_path, key, "was not written") from None
    return len(raw), zlib.crc32(raw)


def _open_new(path, shape, chunks, dtype):
    """A new array that counts as incomplete until sealed; a chunk never written reads as NaN, never as
    data, and every chunk is written, also one of fill values."""
    import zarr

    arr = zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=np.nan,
                          config={"write_empty_chunks": True})
    arr.attrs.update({"complete": False})
    return arr


def _digest(attrs):
    text = json.dumps({k: v for k, v in attrs.items() if k != "digest"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _seal(arr, record, written):
    """Mark the array complete: its record (settings, world, step) and the chunks written."""
    attrs = {**record, "format": RECORD_FORMAT, "shape": list(arr.shape), "chunks": list(arr.chunks),
             "chunk_bytes": [int(b) for b, _ in written], "chunk_crc32": [int(c) for _, c in written],
             "complete": True}
    attrs["digest"] = _digest(attrs)
    arr.attrs.update(attrs)
    return attrs


def _int_list(value, n):
    return isinstance(value, list) and len(value) == n and all(_is_int(v) and v >= 0 for v in value)


def _check_record(path, attrs, arr):
    """Raise unless the attributes of the complete array at ``path`` are a consistent record of it."""
    from ..backends.host import storage_types

    storages = storage_types()

    def bad(problem):
        return InputError(f"{path}: {problem}; the store's metadata is damaged or was edited (restore it, or start "
                          f"a new store)")

    if attrs.get("format") != RECORD_FORMAT:
        raise InputError(f"{path}: written by another version of fastca (record format {attrs.get('format')!r}, "
                         f"this one reads {RECORD_FORMAT}): start a new store")
    for k in ("step", "previous_step", "halo", "seed"):
        if not _is_int(attrs.get(k)) or attrs[k] < 0:
            raise bad(f"attribute {k!r} is {attrs.get(k)!r}, not an int >= 0")
    for k in ("storage", "model"):
        if not isinstance(attrs.get(k), str):
            raise bad(f"attribute {k!r} is {attrs.get(k)!r}, not a string")
    for k in ("fire_rate", "noise_std"):
        if k in attrs and (not isinstance(attrs[k], float) or not 0 <= attrs[k] < 1e30):
            raise bad(f"attribute {k!r} is {attrs[k]!r}, not a float in [0, 1e30)")
    if attrs["step"] != attrs["previous_step"] + attrs["halo"]:
        raise bad(f"step {attrs['step']} is not previous_step {attrs['previous_step']} + halo {attrs['halo']}")
    shape, chunks = attrs.get("shape"), attrs.get("chunks")
    if not (_int_list(shape, 4) and _int_list(chunks, 4) and min(chunks) >= 1):
        raise bad(f"attributes shape {shape!r} and chunks {chunks!r} are not 4 ints each")
    if list(arr.shape) != shape or list(arr.chunks) != chunks:
        raise bad(f"the array is {tuple(arr.shape)} in chunks {tuple(arr.chunks)}, its record says {tuple(shape)} "
                  f"in chunks {tuple(chunks)}")
    if chunks[3] != shape[3] or min(shape) < 1:
        raise bad(f"shape {tuple(shape)} and chunks {tuple(chunks)} are not a state's (B, H, W, C) with the channels "
                  "in one chunk")
    if attrs["storage"] not in storages or np.dtype(storages[attrs["storage"]]) != arr.dtype:
        raise bad(f"the array is {arr.dtype}, its record says storage {attrs['storage']!r}")
    n = _n_chunks(shape, chunks)
    for k in ("chunk_bytes", "chunk_crc32"):
        if not _int_list(attrs.get(k), n):
            raise bad(f"attribute {k!r} does not list the array's {n} chunks")
    world = attrs.get("world")
    if world is not None and not isinstance(world, dict):
        raise bad(f"attribute 'world' is {world!r}, not a dict")
    if world is not None and (world.get("height", shape[1]), world.get("width", shape[2])) != tuple(shape[1:3]):
        raise bad(f"the world is recorded as {world.get('height')}x{world.get('width')}, the array holds "
                  f"{shape[1]}x{shape[2]}")
    if attrs.get("tiles") is not None and not isinstance(attrs["tiles"], str):
        raise bad(f"attribute 'tiles' is {attrs['tiles']!r}, not a string")
    if attrs.get("digest") != _digest(attrs):
        raise bad("the attributes do not match their checksum")


def _read_record(path):
    """The checked record of the complete array at ``path``; None when there is none or it is being written."""
    import zarr

    if not os.path.isdir(path):
        return None
    try:
        arr = zarr.open_array(path, mode="r")
        attrs = dict(arr.attrs)
    except Exception:  # created or killed mid-write: never complete
        return None
    if attrs.get("complete") is not True:
        return None
    _check_record(path, attrs, arr)
    return attrs


def _latest_record(store):
    """(name, record) of the stored array with the highest complete step, or None."""
    best = None
    for name in ("a", "b"):
        record = _read_record(os.path.join(store, name))
        if record is not None and (best is None or record["step"] > best[1]["step"]):
            best = (name, record)
    return best


def _latest(store):
    """(name, step) of the stored array with the highest complete step, or None."""
    done = _latest_record(store)
    return None if done is None else (done[0], done[1]["step"])


def stored_record(store):
    """The checked record of the stored run's latest complete state (a dict: step, seed, storage, model
    hash, shape, chunks, world, ...), or None when the folder holds none. Raises ValueError on damaged
    metadata."""
    done = _latest_record(store)
    return None if done is None else done[1]


def stored_shape(store):
    """Shape (B, H, W, C) of the stored run's state, or None when the folder holds no complete one."""
    record = stored_record(store)
    return None if record is None else tuple(record["shape"])


def describe(store):
    """The stored run's record without its chunk list (JSON text), for the CLI and humans."""
    record = stored_record(store)
    if record is None:
        return "{}"
    keep = ("step", "seed", "storage", "model", "shape", "chunks", "world")
    return json.dumps({k: record.get(k) for k in keep})
