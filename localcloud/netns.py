"""Network namespaces: enter one (this thread only), make a socket or a connection inside it.

A socket stays in the namespace it was made in, whichever thread uses it later: the daemon makes the IMDS
listener and the sshd probes of a region's network that way, and `python -m localcloud proxy` its connection.
"""

import contextlib
import ctypes
import os
import socket
import threading

from localcloud.errors import LocalcloudError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"  # where `ip netns add` puts named namespaces


def path(name):
    """A named namespace's path; a path (podman's SandboxKey of a container) stays as it is."""
    return name if os.path.isabs(name) else os.path.join(NETNS_DIR, name)


def exists(name):
    return os.path.exists(path(name))


def _setns(fd):
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(name):
    """Run the body in network namespace `name` (None: stay where we are). Only the calling thread moves."""
    if name is None:
        yield
        return
    try:
        target = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LocalcloudError("no network namespace %s (no instance was launched in that network?)" % name) from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def create_connection(name, address, timeout=None):
    """socket.create_connection, from inside namespace `name`."""
    with entered(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


class ServedSocket:
    """A server made by `make()` inside namespace `name` (None: this one), served by a daemon thread; the base of
    the listeners the daemon puts in each network (IMDS, the API for hosts)."""

    def __init__(self, name, make, thread_name):
        with entered(name):  # the socket lives in that namespace
            self.server = make()
        self.thread = threading.Thread(target=self.server.serve_forever, name=thread_name, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
