"""The TLS control layer's client node (module_utils/erlang_tls_client.py): one hidden erl per module process,
kept across calls and shared by the ErlangNode objects with the same settings. Shows: many calls on one
client; a timeout, a killed or a wedged client, and a target node restarted between calls do not break the next
call; every failure kind and message as erl_call's; no erl left after close(), at exit, or when the module
process is killed."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import HOST, ROOT, name_of, node_info_play, node_of
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node, erlang_tls_client

ErlangNodeError = erlang_node.ErlangNodeError


def process_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def gone(pid):
    """Exited (a zombie not reaped yet has exited too)."""
    return process_state(pid) in (None, "Z")


def wait_gone(pids, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def family(pid):
    """pid and its descendants (the VM's erl_child_setup)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = [pid]
    for member in found:
        found.extend(child for child, parent in parents.items() if parent == member and child not in found)
    return found


def processes_with(text):
    """Live processes whose command line contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    if text.encode() in handle.read() and not gone(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def raises(client, body, timeout=None):
    with pytest.raises(ErlangNodeError) as raised:
        client.call(body, timeout=timeout)
    return raised.value


def call_in_thread(client, body, timeout):
    """Start client.call(body) in a thread: a function returning (result, error) once it is done."""
    outcome = {}

    def run():
        try:
            outcome["result"] = client.call(body, timeout=timeout)
        except ErlangNodeError as exc:
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join():
        thread.join(timeout + 15)
        assert not thread.is_alive()
        return outcome.get("result"), outcome.get("error")
    return join


def test_many_calls_on_one_object_start_one_client_node(nodes, issued):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.tls_client() is None          # started on first use
        assert client.call("node()") == a
        tls = client.tls_client()
        pid = tls.pid()
        started = time.monotonic()
        for n in range(200):
            assert client.call("{%d, lists:sum(lists:seq(1, %d))}" % (n, n)) == (n, n * (n + 1) // 2)
        elapsed = time.monotonic() - started
        # The framing carries UTF-8, an expression larger than a pipe's buffer, and skips what the code prints.
        assert client.call('<<"héllo €"/utf8>>') == "héllo €".encode("utf-8")
        assert client.call('byte_size(<<"%s">>)' % ("x" * 300000)) == 300000
        assert client.call('io:format("no newline"), io:format("~n~s 1 0 AA AA~n", ["skw-tls-fake"]), 42') == 42
        assert (tls.pid(), tls.starts) == (pid, 1)
    # A node per call took ~0.45 s; 200 calls on a running client take a few ms each.
    assert elapsed < 200 * 0.1, elapsed


def test_concurrent_calls_from_threads_each_get_their_answer(nodes, issued):
    """cluster_restart's plan calls all its nodes at once from a thread pool, one ErlangNode per node, sharing
    the client: each concurrent call goes to its own VM (spares), each answer to its caller; serial calls after
    that reuse them; close() stops every one."""
    a, b = nodes.start("a"), nodes.start("b")
    clients = [nodes.client(a if n % 2 == 0 else b, issued.optfile("b")) for n in range(4)]
    targets = [a if n % 2 == 0 else b for n in range(4)]
    try:
        for dummy in range(2):
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers = list(pool.map(lambda n: clients[n].call("timer:sleep(300), {node(), %d}" % n), range(4)))
            assert answers == [(targets[n], n) for n in range(4)]
        tls = clients[0].tls_client()
        assert all(client.tls_client() is tls for client in clients)
        vms = [tls] + tls.spares()
        assert 2 <= len(vms) <= 4 and all(vm.starts == 1 for vm in vms), [vm.starts for vm in vms]
        pids, tags = [vm.pid() for vm in vms], [vm.tag for vm in vms]
        members = [member for pid in pids for member in family(pid)]
        assert [clients[n].call("{node(), %d}" % n) for n in range(4)] == [(targets[n], n) for n in range(4)]
        assert [vm.pid() for vm in [tls] + tls.spares()] == pids
    finally:
        for client in clients:
            client.close()
    assert wait_gone(members) and [tag for tag in tags if processes_with(tag)] == []


def test_a_timeout_does_not_wedge_the_next_call(nodes, issued):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("ok") == "ok"
        pid = client.tls_client().pid()
        for dummy in range(2):
            started = time.monotonic()
            error = raises(client, "receive after 20000 -> ok end", timeout=1)
            assert (error.kind, error.message) == (erlang_node.KIND_TIMEOUT, "node %s did not answer within 1s" % a)
            assert time.monotonic() - started < 4
            started = time.monotonic()
            assert client.call("node()") == a
            assert time.monotonic() - started < 2
        assert (client.tls_client().pid(), client.tls_client().starts) == (pid, 1)


def test_a_client_killed_between_calls_is_started_again(nodes, issued):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("ok") == "ok"
        pid = client.tls_client().pid()
        old = family(pid)
        os.kill(pid, signal.SIGKILL)
        assert wait_gone([pid])
        assert client.call("node()") == a
        assert client.tls_client().pid() not in (None, pid) and client.tls_client().starts == 2
        assert wait_gone(old)


def test_a_client_killed_during_a_call_fails_that_call_only(nodes, issued):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("ok") == "ok"
        pid = client.tls_client().pid()
        join = call_in_thread(client, "receive after 5000 -> ok end", 10)
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        result, error = join()
        assert result is None and error.kind == erlang_node.KIND_ERL_CALL, (result, error)
        assert "the TLS client node (erl) exited during the call" in error.message
        assert client.call("node()") == a


def test_a_wedged_client_is_killed_and_replaced(nodes, issued, monkeypatch):
    monkeypatch.setattr(erlang_tls_client, "GRACE", 1)
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("ok") == "ok"
        pid = client.tls_client().pid()
        os.kill(pid, signal.SIGSTOP)        # answers nothing, reads nothing
        try:
            started = time.monotonic()
            error = raises(client, "ok", timeout=1)
            assert error.kind == erlang_node.KIND_TIMEOUT
            assert time.monotonic() - started < 1 + 1 + 3
            assert wait_gone([pid])
        finally:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        assert client.call("node()") == a and client.tls_client().starts == 2


def test_a_node_restarted_between_calls_answers_the_same_object(nodes, issued):
    """cluster_restart's case: one object per node, polled while the node stops and starts again."""
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        first = client.call("os:getpid()")
        join = call_in_thread(client, "receive after 5000 -> ok end", 10)
        time.sleep(1)
        nodes.procs["a"].send_signal(signal.SIGKILL)
        nodes.procs["a"].wait(10)
        result, error = join()
        assert result is None and (error.kind, error.message) == (
            erlang_node.KIND_CONNECTION_LOST, "the connection to node %s broke during the call (the node stopped or restarted)" % a)
        deadline = time.monotonic() + 10
        while erlang_node.epmd_lookup(HOST, name_of("a")) and time.monotonic() < deadline:
            time.sleep(0.1)
        error = raises(client, "ok")
        assert (error.kind, error.message) == (
            erlang_node.KIND_NOT_RUNNING, "node %s is not running: epmd on %s has no node named '%s'" % (a, HOST, name_of("a")))
        nodes.start("a")
        assert client.call("node()") == a and client.call("os:getpid()") != first
        assert client.tls_client().starts == 1


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def test_every_failure_kind_leaves_the_client_usable(nodes, issued, monkeypatch):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("ok") == "ok"
        tls = client.tls_client()
        error = raises(client, "erlang:error(boom)")
        assert (error.kind, error.message, error.details) == (erlang_node.KIND_BADRPC, "{badrpc, %s}: error:boom" % a, ("error", "boom"))
        error = raises(client, "1 +")
        assert error.kind == erlang_node.KIND_SYNTAX and error.message.startswith("the node could not parse the expression: syntax error")
        error = raises(client, "\"unterminated")
        assert error.kind == erlang_node.KIND_SYNTAX
        # Another object with the same settings shares the client node.
        with nodes.client(node_of("nobody"), issued.optfile("b")) as nobody:
            error = raises(nobody, "ok")
            assert (error.kind, error.message) == (
                erlang_node.KIND_NOT_RUNNING, "node %s is not running: epmd on %s has no node named '%s'" % (node_of("nobody"), HOST, name_of("nobody")))
            # epmd does not answer the diagnosis (the client node keeps the epmd it started with).
            monkeypatch.setenv("ERL_EPMD_PORT", str(free_port()))
            error = raises(nobody, "ok")
            monkeypatch.delenv("ERL_EPMD_PORT")
            assert error.kind == erlang_node.KIND_UNREACHABLE
            assert error.message.startswith("node %s is not reachable: epmd on %s does not answer" % (node_of("nobody"), HOST))
            assert nobody.tls_client() is tls
        # Another cookie or another CA: another client node, refused.
        for other in (erlang_node.ErlangNode(a, None, cookie="not-the-cookie", distribution="tls", ssl_dist_optfile=issued.optfile("b")),
                      nodes.client(a, issued.optfile("x"))):
            with other:
                error = raises(other, "ok")
                assert error.kind == erlang_node.KIND_AUTH and "certificate" in error.message
                assert other.tls_client() is not tls
        assert client.call("node()") == a
        assert (client.tls_client(), tls.starts) == (tls, 1)


def test_clients_are_shared_and_stop_with_their_last_user(nodes, issued):
    a, b = nodes.start("a"), nodes.start("b")
    one, two = nodes.client(a, issued.optfile("b")), nodes.client(b, issued.optfile("b"))
    assert (one.call("node()"), two.call("node()")) == (a, b)
    tls = one.tls_client()
    assert two.tls_client() is tls
    pid, home, tag = tls.pid(), tls.home, tls.tag
    assert processes_with(tag) == [pid]
    members = family(pid)
    one.close()
    assert not gone(pid) and two.call("node()") == b
    two.close()
    assert wait_gone(members) and processes_with(tag) == []
    assert not os.path.exists(home)       # the private HOME with the cookie copy
    # A new object after that starts a new client node.
    with nodes.client(a, issued.optfile("b")) as again:
        assert again.call("node()") == a and again.tls_client() is not tls


SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNode
node = ErlangNode(sys.argv[2], None, cookie_file=sys.argv[3], distribution="tls", ssl_dist_optfile=sys.argv[4])
assert node.call("node()") == sys.argv[2]
print(node.tls_client().pid(), flush=True)
sys.stdin.readline()
if sys.argv[5] == "exit":
    sys.exit(0)          # no close(): the atexit hook stops the client
time.sleep(120)          # killed with SIGKILL: the client reads EOF on its stdin and halts
"""


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_no_erl_left_when_the_module_process_ends(nodes, issued, end):
    a = nodes.start("a")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, os.path.join(ROOT, ".collections"), a, issued.cookie_file,
                             issued.optfile("b"), end], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "")
        pid = int(line)
        members = family(pid)
        assert len(members) >= 1 and not gone(pid)
        if end == "kill":
            proc.send_signal(signal.SIGKILL)
        else:
            proc.stdin.write(b"exit\n")
            proc.stdin.flush()
        assert proc.wait(20) == (0 if end == "exit" else -signal.SIGKILL)
        assert wait_gone(members), [(member, process_state(member)) for member in members]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_module_leaves_no_erl_behind(nodes, issued):
    """node_info through Ansible: its client node stops with the module (exit_json closes the node)."""
    a = nodes.start("a")
    optfile = os.path.join(issued.base, "module-run-%d.conf" % os.getpid())     # marks this run's client node
    shutil.copy(issued.optfile("b"), optfile)
    _proc, result = node_info_play(issued, a, optfile, "info-client")
    assert result["reachable"] is True and result["node"] == a, result
    assert processes_with(optfile) == []


def test_a_client_that_cannot_start_is_an_erl_call_failure(issued):
    """An optfile that is not Erlang terms: the client node stops at its start (as the per-call node did)."""
    bad = os.path.join(issued.base, "not-terms-%d.conf" % os.getpid())
    with open(bad, "w") as handle:
        handle.write("this is not [ erlang terms\n")
    with erlang_node.ErlangNode(node_of("a"), None, cookie_file=issued.cookie_file, distribution="tls", ssl_dist_optfile=bad) as client:
        for dummy in range(2):          # and again: each call tries a new client once, then fails
            started = time.monotonic()
            error = raises(client, "ok")
            assert error.kind == erlang_node.KIND_ERL_CALL and time.monotonic() - started < 10
            assert "exited before it read the call: erl_call: cannot start the TLS client node" in error.message
            assert "bad_ssl_dist_optfile" in error.message
            assert client.tls_client().home is None and not client.tls_client().alive()
    assert processes_with(bad) == []
