"""node_info on real nodes, through Ansible."""


def test_facts_of_a_diskless_worker(nodes, boot_server, ansible, node_args):
    worker = nodes.start_worker("w1")
    nodes.wait_started(worker, 20)
    rc, result, output = ansible.run("node_info", node_args(worker))
    assert rc == 0, output
    assert result["changed"] is False
    assert result["reachable"] is True
    assert result["node"] == worker
    assert result["release_name"] == "hello_cluster"
    assert result["release_version"] == "1.0.0"
    assert result["loader"] == "inet"
    assert result["boot_hosts"] == ["127.0.0.1"]
    assert result["otp_release"] == "25"
    assert result["erts_version"] == nodes.call(boot_server, "list_to_binary(erlang:system_info(version))").decode()
    assert {"name": "hello_cluster", "version": "1.0.0"}.items() <= [a for a in result["applications"] if a["name"] == "hello_cluster"][0].items()
    assert boot_server in result["connected_nodes"]
    assert result["init_status"] == "started"
    assert result["uptime_ms"] > 0
    assert result["applications_not_running"] == []


def test_boot_server_runs_from_local_disk(nodes, boot_server, ansible, node_args):
    rc, result, output = ansible.run("node_info", node_args(boot_server), check=True)
    assert rc == 0, output
    assert result["loader"] == "efile"
    assert result["boot_hosts"] == []


def test_a_node_that_is_not_running_is_reported_not_failed(nodes, boot_server, ansible, node_args):
    rc, result, output = ansible.run("node_info", node_args("nobody@127.0.0.1"))
    assert rc == 0, output
    assert result["reachable"] is False
    assert result["reason_kind"] == "not_running"
    assert "is not running" in result["reason"]


def test_wrong_cookie_fails_and_says_so(nodes, boot_server, ansible, node_args):
    args = {"node": boot_server, "cookie": "not-the-cookie", "timeout": 5}
    rc, result, output = ansible.run("node_info", args)
    assert rc != 0
    assert "cookie does not match" in result["msg"]
    assert "not-the-cookie" not in output


def test_cookie_option_works_and_is_not_shown(env, nodes, boot_server, ansible):
    rc, result, output = ansible.run("node_info", {"node": boot_server, "cookie": "{{ cluster_cookie }}"},
                                     extra_vars={"cluster_cookie": env.cookie}, verbosity=3, callback="default")
    assert rc == 0, output
    assert '"reachable": true' in output
    assert env.cookie not in output


def test_quick_start_adhoc_form(env, nodes, boot_server, ansible):
    rc, output = ansible.adhoc("node_info", "node=%s cookie_file=%s" % (boot_server, env.cookie_file), verbosity=3)
    assert rc == 0, output
    assert '"reachable": true' in output
    assert env.cookie not in output


def test_missing_cookie_file_is_a_clear_error(env, nodes, boot_server, ansible):
    rc, result, output = ansible.run("node_info", {"node": boot_server, "cookie_file": env.base + "/no-such-cookie"})
    assert rc != 0
    assert "cannot read cookie file" in result["msg"]


def test_bad_arguments(nodes, ansible, node_args):
    rc, result, output = ansible.run("node_info", node_args("no-at-sign"))
    assert rc != 0 and "invalid node name" in result["msg"]
    rc, result, output = ansible.run("node_info", {"node": "a@127.0.0.1", "cookie": "some-cookie-value", "cookie_file": "/tmp/x"})
    assert rc != 0 and "mutually exclusive" in result["msg"]


def test_round_trip_figures(nodes, boot_server):
    """Prints the cost of one call through the module layer next to a bare erl_call run (figures, no timing assertion)."""
    import os
    import subprocess
    import time
    with nodes.client(boot_server) as client:
        start = time.monotonic()
        results = [client.call("%d + 1" % i) for i in range(30)]
        layer_ms = (time.monotonic() - start) * 1000 / 30
    assert results == [i + 1 for i in range(30)]
    environ = dict(os.environ, HOME=nodes.env.home)
    start = time.monotonic()
    for dummy in range(30):
        subprocess.run(["erl_call", "-R", "-name", boot_server, "-timeout", "5", "-e"], input=b"1.\n",
                       stdout=subprocess.DEVNULL, env=environ, check=True)
    bare_ms = (time.monotonic() - start) * 1000 / 30
    print("erl_call round trip: module layer %.1f ms, bare erl_call %.1f ms (ratio %.2f)" % (layer_ms, bare_ms, layer_ms / bare_ms))


def test_a_frozen_node_times_out_and_is_reported_unreachable(nodes, boot_server, ansible, node_args):
    """A stopped VM (SIGSTOP) still has its port open: erl_call's own -timeout must end the call."""
    import signal
    import time
    nodes.procs["boot"].send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        rc, result, output = ansible.run("node_info", node_args(boot_server, timeout=2))
        took = time.monotonic() - started
    finally:
        nodes.procs["boot"].send_signal(signal.SIGCONT)
    assert rc == 0, output
    assert result["reachable"] is False
    assert result["reason_kind"] == "timeout"
    assert "did not answer within 2s" in result["reason"]
    assert took < 30
