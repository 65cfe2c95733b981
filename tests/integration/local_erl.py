"""What the suites that run real erl nodes on this machine share (erlang_modules, erlang_tls)."""

import contextlib
import fcntl
import os
import secrets

# Suites that run a boot server here take this lock: UDP 4368 (the loader's discovery port) is one per machine.
BOOT_SERVER_LOCK = "/tmp/skunkworks-erlang_ec2-udp4368.lock"


def private_cookie_home(base):
    """A new random cookie in `base`/home/.erlang.cookie (0400; the home 0700), as erl_call reads it:
    (cookie, home, cookie file)."""
    cookie = "skw" + secrets.token_hex(16)
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    cookie_file = os.path.join(home, ".erlang.cookie")
    fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, cookie.encode())
    finally:
        os.close(fd)
    return cookie, home, cookie_file


@contextlib.contextmanager
def boot_server_lock():
    """Held while a boot server of this machine's suites runs."""
    with open(BOOT_SERVER_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
