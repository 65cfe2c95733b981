"""The boot server serves only code (the role's erlang_ec2_loader_server), over the real loader protocol:
a loader client on an allowed address reads the release tree and OTP, never the cookie, /etc, a path
that escapes by `..` or a symlink; an address not on the allow-list gets nothing; malformed, oversized
and truncated requests and a flood of connections leave it serving."""

import os
import random
import socket
import struct
import subprocess
import time

from conftest import BOOT_NODE

FILE_PORT = 4368  # TCP, the role's default (boot_server_file_port)


def loader_client(env, paths, timeout=30):
    """A cookie-less VM booted from the boot server (-loader inet, no distribution): {path: ok | error} for
    erl_prim_loader:get_file/1, plus list_dir of /etc and read_file_info of the cookie."""
    checks = ", ".join('"%s"' % p for p in paths)
    program = ("R = fun(T) when is_tuple(T) -> element(1, T); (A) -> A end, "
               "[io:format(\"GET ~s ~s~n\", [F, R(erl_prim_loader:get_file(F))]) || F <- [%s]], "
               "io:format(\"LIST /etc ~s~n\", [R(erl_prim_loader:list_dir(\"/etc\"))]), "
               "io:format(\"INFO cookie ~s~n\", [R(erl_prim_loader:read_file_info(\"%s\"))]), halt()."
               % (checks, env.cookie_file))
    proc = subprocess.run(["timeout", "-s", "KILL", str(timeout), "erl", "-noshell", "-noinput", "-loader", "inet", "-hosts", "127.0.0.1",
                           "-eval", program], capture_output=True, text=True, cwd="/", env=dict(os.environ, HOME="/nonexistent"),
                          check=False)
    answers = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("GET", "LIST", "INFO"):
            answers[parts[1]] = parts[2]
    return proc, answers


def atom(name):
    data = name.encode()
    return bytes([118]) + struct.pack(">H", len(data)) + data


def etf(*elements):
    """term_to_binary of a small tuple of prebuilt element encodings."""
    return bytes([131, 104, len(elements)]) + b"".join(elements)


def string(text):
    data = text.encode()
    return bytes([107]) + struct.pack(">H", len(data)) + data


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def test_a_loader_client_reads_code_but_not_the_cookie(env, nodes, boot_server, tmp_path):
    escape = os.path.join(env.boot_root, "releases", "1.0.0", "escape-link")
    if os.path.lexists(escape):
        os.unlink(escape)
    os.symlink(env.cookie_file, escape)
    served = os.path.join(env.boot_root, "current", "hello_cluster.boot")
    dotdot = os.path.join(env.boot_root, "releases", "1.0.0", "..", "..", "..", "home", ".erlang.cookie")
    try:
        proc, answers = loader_client(env, [served, env.cookie_file, "/etc/passwd", dotdot, escape])
    finally:
        os.unlink(escape)
    assert answers.get(served) == "ok", (proc.stdout, proc.stderr)
    for path in (env.cookie_file, "/etc/passwd", dotdot, escape):
        assert answers.get(path) == "error", (path, proc.stdout)
    assert answers.get("/etc") == "error" and answers.get("cookie") == "error", proc.stdout
    assert env.cookie not in proc.stdout + proc.stderr
    assert "outside the served roots, refused" in nodes.logs_text()


def test_an_address_not_on_the_allow_list_gets_nothing(env, nodes):
    nodes.start_boot_server(allow=["10.9.9.9"])
    proc, answers = loader_client(env, ["/etc/hostname"], timeout=8)
    # The loader never got an answer: it keeps asking (the VM never reaches its -eval) until it is killed
    # (a VM stuck in the loader ignores SIGTERM).
    assert proc.returncode in (-9, 137) and answers == {}, (proc.returncode, proc.stdout)
    assert "no server found" in proc.stdout
    assert "discovery from 127.0.0.1 refused: not on the allow-list" in nodes.logs_text()


def test_malformed_requests_and_floods_leave_it_serving(env, nodes, boot_server):
    rng = random.Random(4368)

    def noise(size):
        return bytes(rng.getrandbits(8) for dummy in range(size))

    bad = [
        frame(noise(200)),                                                       # random bytes
        frame(etf(atom("get"), bytes([97, 7]))),                                 # {get, 7}
        frame(etf(atom("get"), string("relative/path"))),                        # not absolute
        frame(etf(atom("skw_no_such_atom_4368"), string("/etc/passwd"))),        # an unknown atom: [safe] refuses it
        frame(etf(atom("get"), string("/x" * 3000))),                            # over max_request (4096 bytes)
        struct.pack(">I", 50 * 1024 * 1024) + b"\x83" * 1000,                   # announces 50 MB
        struct.pack(">I", 100) + b"\x83h",                                       # truncated, then closed
    ]
    for payload in bad:
        with socket.create_connection(("127.0.0.1", FILE_PORT), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(2)
            try:
                sock.recv(65536)
            except OSError:
                pass
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for size in (1, 64, 1400, 60000):
        udp.sendto(noise(size), ("127.0.0.1", 4368))
    udp.close()
    flood = []
    for dummy in range(100):  # more than max_per_address (32): the extra ones are closed, the server stays up
        try:
            flood.append(socket.create_connection(("127.0.0.1", FILE_PORT), timeout=5))
        except OSError:
            break
    time.sleep(1)
    refused = 0
    for sock in flood:
        sock.settimeout(0.2)
        try:
            if sock.recv(1) == b"":
                refused += 1
        except OSError:
            pass
    for sock in flood:
        sock.close()
    assert refused >= len(flood) - 32, (refused, len(flood))
    time.sleep(0.5)
    assert nodes.call(BOOT_NODE, "is_pid(whereis(boot_server))") is True
    served = os.path.join(env.boot_root, "current", "hello_cluster.boot")
    proc, answers = loader_client(env, [served])
    assert answers.get(served) == "ok", (proc.stdout, proc.stderr)
    logs = nodes.logs_text()
    assert "bad request from 127.0.0.1" in logs and "too_many_connections_from_address" in logs, logs[-3000:]
