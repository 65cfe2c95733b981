"""node_restart on real diskless workers: v1 -> v2, boot server down, crashing release."""

import json
import time
import urllib.request


def status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5) as response:
        return json.loads(response.read().decode())


def incarnation(nodes, node):
    return nodes.call(node, "whereis(application_controller)")


def test_restart_moves_a_worker_from_v1_to_v2(env, nodes, boot_server, ansible, node_args):
    w1 = nodes.start_worker("w1", http_port=18181)
    w2 = nodes.start_worker("w2", http_port=18182)
    nodes.wait_started(w1, 20)
    nodes.wait_started(w2, 20)
    assert status(18181)["version"] == "1.0.0"
    env.switch_current("2.0.0")
    rc, result, output = ansible.run("node_restart", node_args(w1, expected_version="2.0.0", restart_timeout=30))
    assert rc == 0, output
    assert result["changed"] is True
    assert result["before"]["release_version"] == "1.0.0"
    assert result["after"]["release_version"] == "2.0.0"
    assert sorted(result["expected_nodes"]) == sorted([boot_server, w2])
    assert set(result["expected_nodes"]) <= set(result["after"]["connected_nodes"])
    assert 0 < result["downtime_ms"] <= result["elapsed_ms"]
    print("v1->v2 downtime_ms=%d elapsed_ms=%d" % (result["downtime_ms"], result["elapsed_ms"]))
    body = status(18181)
    assert body["version"] == "2.0.0" and body["release"] == "hello_cluster" and body["node"] == w1
    assert status(18182)["version"] == "1.0.0", "only the restarted worker moved"


def test_check_mode_does_not_restart(env, nodes, boot_server, ansible, node_args):
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    before = incarnation(nodes, w1)
    rc, result, output = ansible.run("node_restart", node_args(w1), check=True)
    assert rc == 0, output
    assert result["changed"] is True
    assert "would restart %s" % w1 in result["msg"]
    assert "after" not in result
    time.sleep(1)
    assert incarnation(nodes, w1) == before


def test_wrong_version_after_restart_fails_at_once(env, nodes, boot_server, ansible, node_args):
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    rc, result, output = ansible.run("node_restart", node_args(w1, expected_version="9.9.9", restart_timeout=60))
    assert rc != 0
    assert "came back running release hello_cluster 1.0.0, expected version 9.9.9" in result["msg"]
    assert result["elapsed_ms"] < 30000


def test_boot_server_down_is_refused_with_the_node_untouched(env, nodes, boot_server, ansible, node_args):
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    before = incarnation(nodes, w1)
    nodes.kill("boot")
    rc, result, output = ansible.run("node_restart", node_args(w1, restart_timeout=6))
    assert rc != 0
    assert "refusing to restart %s: its boot server (127.0.0.1) does not answer its loader" % w1 in result["msg"], result["msg"]
    assert incarnation(nodes, w1) == before, "the node must be untouched (still serving)"


def test_boot_server_down_fails_within_timeout_and_says_why(env, nodes, boot_server, ansible, node_args):
    """Without the local-files check (check_local_files: false) the restart goes ahead and hangs in the loader."""
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    nodes.kill("boot")
    started = time.monotonic()
    rc, result, output = ansible.run("node_restart", node_args(w1, restart_timeout=6, check_local_files=False))
    took = time.monotonic() - started
    assert rc != 0
    assert "did not answer again within 6s" in result["msg"]
    assert "boot server 127.0.0.1 is unreachable hangs in the loader" in result["msg"]
    assert result["state"]["answered_again"] is False
    assert result["state"]["last_error"]
    assert took < 6 + 15, "the module must give up near its restart_timeout"
    # The VM did not exit: it is stuck in the loader (teardown SIGKILLs it).
    assert nodes.procs["w1"].poll() is None


def test_release_that_crashes_at_start_fails_clearly(env, nodes, boot_server, ansible, node_args):
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    env.switch_current("3.0.0")
    rc, result, output = ansible.run("node_restart", node_args(w1, expected_version="3.0.0", restart_timeout=8))
    assert rc != 0
    # Whether a probe catches the moment between boot and the VM's exit, and whether the exit breaks a call in
    # flight, is a matter of timing: each of erlang_restart's three messages names the cause.
    assert ("did not answer again within 8s" in result["msg"]
            or "but then stopped answering" in result["msg"]
            or "but then its VM exited" in result["msg"]), result["msg"]
    assert "fail to start makes the VM exit" in result["msg"]
    deadline = time.monotonic() + 10
    while nodes.procs["w1"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert nodes.procs["w1"].poll() is not None, "the crashing release should end the VM"
    assert "crash_build" in nodes.logs_text()


def test_restart_of_a_node_that_is_not_running(nodes, boot_server, ansible, node_args):
    rc, result, output = ansible.run("node_restart", node_args("nobody@127.0.0.1"))
    assert rc != 0
    assert "cannot restart nobody@127.0.0.1" in result["msg"] and "is not running" in result["msg"]
