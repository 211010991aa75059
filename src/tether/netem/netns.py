"""Network namespaces: create and delete them with ``ip``, and run Python code inside one on a thread of its own.

A thread's network namespace is its own (``setns(2)`` changes only the calling thread), and threads it starts
inherit it; so ``call_in_namespace`` runs a function, with every socket it opens, inside a namespace while the rest
of the process stays where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


class NamespaceError(RuntimeError):
    """A namespace could not be created, entered or configured."""


def ip(argv: Sequence[str], *, timeout: float = 30.0) -> str:
    """Run ``ip ARGV`` and return its output.

    Raises:
        NamespaceError: If ``ip`` is missing, times out or fails (with its error message).
    """
    try:
        result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NamespaceError(f"ip {' '.join(argv)}: {exc}") from exc
    if result.returncode != 0:
        raise NamespaceError(f"ip {' '.join(argv)}: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result.stdout


def namespaces() -> set[str]:
    """The names of the network namespaces ``ip netns`` knows."""
    return {line.split()[0] for line in ip(["netns", "list"]).splitlines() if line.strip()}


def create_namespace(name: str) -> None:
    """Create the namespace ``name`` with its loopback up."""
    ip(["netns", "add", name])
    try:
        ip(["-n", name, "link", "set", "lo", "up"])
    except NamespaceError:
        delete_namespace(name)
        raise


def delete_namespace(name: str) -> bool:
    """Delete the namespace ``name`` (and every device still in it); returns whether it existed."""
    try:
        ip(["netns", "delete", name])
    except NamespaceError:
        return False
    return True


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into namespace ``name`` for the ``with`` block, then back.

    Raises:
        NamespaceError: If the namespace does not exist or ``setns`` fails (not root, no CAP_SYS_ADMIN).
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
        except OSError as exc:
            raise NamespaceError(f"no network namespace {name!r}: {exc}") from exc
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def call_in_namespace(name: str, function: Callable[[], T], *, timeout: float | None = None) -> T:
    """Run ``function`` on a new thread inside namespace ``name`` and return its result (or raise its error)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with entered(name):
                outcome.append(function())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the call in namespace {name!r} did not finish in {timeout} s")
    if failure:
        raise failure[0]
    return outcome[0]


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        try:
            setns(fd, CLONE_NEWNET)
        except OSError as exc:
            raise NamespaceError(f"setns: {exc}") from exc
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(f"setns: {os.strerror(errno)}")
