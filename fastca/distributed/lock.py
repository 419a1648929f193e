"""The lock of a Zarr store: one run per store (a lock file with the owner's pid, host and start
time, created atomically; a dead run's lock broken only on request)."""

import contextlib
import json
import os
import socket
import threading
import time

from ..errors import InputError
from .rounds import _is_int

LOCK_NAME = "fastca.lock"  #: the lock file of a store (pid, host and start time of the run that holds it)
_HELD = {}  # real path of a store -> thread id of the run of this process that holds its lock
_HELD_GUARD = threading.Lock()


class StoreLocked(InputError):
    """The store is in use by another run (or its lock was left by a run that died)."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock_owner(text):
    """The lock file's {pid, host, started}, or None when it cannot be read as one."""
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(owner, dict) and _is_int(owner.get("pid")) and 1 <= owner["pid"] < 2**31
            and isinstance(owner.get("host"), str)):
        return None
    return owner


def _owner_state(owner):
    """"alive", "dead" (this host, the process is gone) or "unknown" (another host, or an unreadable lock)."""
    if owner is None or owner["host"] != socket.gethostname():
        return "unknown"
    if owner["pid"] == os.getpid():  # this process, but no run of it holds the lock (else it would not ask)
        return "dead"
    return "alive" if _pid_alive(owner["pid"]) else "dead"


def _lock_message(store, path, owner, state):
    if owner is None:
        return (f"{store} is locked ({path} cannot be read as a lock): if no run uses this store, pass --break-lock "
                f"(break_lock=True) to break the lock")
    who = f"pid {owner['pid']} on {owner['host']}, since {owner.get('started', '?')}"
    if state == "alive":
        return (f"{store} is in use by another run ({who}; lock file {path}): wait for it to end (if that "
                f"process is not a fastca run, its pid was reused after the run died: delete {path})")
    if state == "dead":
        return (f"{store} is locked by a run that is no longer running ({who}): pass --break-lock (break_lock=True) "
                f"to break the lock")
    return (f"{store} is in use by a run on another host ({who}; lock file {path}): if that run is dead, pass "
            f"--break-lock (break_lock=True) to break the lock")


def _create_exclusive(path, text):
    """Create ``path`` holding ``text`` unless it exists (atomically: a hard link of a complete file, or
    O_CREAT | O_EXCL where links are not supported). True when created."""
    tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _break(path, seen):
    """Remove the lock file if it still holds ``seen`` (breakers of one host take turns)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    fd = os.open(path + ".break", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                now = f.read()
        except FileNotFoundError:
            return
        if now == seen:
            os.remove(path)
    finally:
        os.close(fd)


def _acquire(store, key, break_lock):
    """Take the store's lock file or raise :class:`StoreLocked` naming its owner; returns the text written."""
    path = os.path.join(store, LOCK_NAME)
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})
    for _ in range(5):
        if _create_exclusive(path, text):
            return text
        try:
            with open(path) as f:
                seen = f.read()
        except FileNotFoundError:  # released meanwhile: try again
            continue
        owner = _lock_owner(seen)
        state = _owner_state(owner)
        if state == "alive" or not break_lock:
            raise StoreLocked(_lock_message(store, path, owner, state))
        _break(path, seen)
    raise StoreLocked(f"{store}: could not take the lock {path}: other runs keep taking it")


def _release(store, text):
    path = os.path.join(store, LOCK_NAME)
    try:
        with open(path) as f:
            if f.read() != text:  # broken and taken by another run: theirs now
                return
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def store_lock(store, break_lock=False):
    """Hold the lock of the Zarr folder ``store`` (created if missing) for the ``with`` block: a lock file
    ``fastca.lock`` with this run's pid, host and start time, created atomically, removed on exit (also
    on an exception). Another run of the store raises :class:`StoreLocked` (a ValueError) naming the
    owner. A lock left by a run that died is reported as such and broken only with ``break_lock=True``
    (also for a lock of another host, whose process cannot be checked; never for a live process of this
    host). The lock is reentrant within one thread (``zarr_run`` inside a ``store_lock`` block)."""
    os.makedirs(store, exist_ok=True)
    key = os.path.realpath(store)
    me = threading.get_ident()
    with _HELD_GUARD:
        holder = _HELD.get(key)
        if holder is not None and holder != me:
            raise StoreLocked(f"{store} is in use by another run of this process (pid {os.getpid()})")
        outer = holder is None
        if outer:
            text = _acquire(store, key, break_lock)
            _HELD[key] = me
    try:
        yield
    finally:
        if outer:
            with _HELD_GUARD:
                _HELD.pop(key, None)
                _release(store, text)
