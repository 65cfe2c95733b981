"""boot_server_allow_list against a real boot server (erlang_ec2_boot_server, as the role runs it), through Ansible."""

import os
import time

from conftest import ALLOW_LIST_NAME, boot_server_ebin, udp_4368_free


def slaves(nodes, boot):
    """The allow-list as the boot server itself reports it (read independently of the module)."""
    entries = nodes.call(boot, "erl_boot_server:which_slaves()")
    return sorted(".".join(str(o) for o in ip) for mask, ip in entries)


def persisted(nodes):
    """The boot server's persisted allow-list file (conftest's start_boot_server), as read from disk."""
    with open(os.path.join(nodes.env.base, ALLOW_LIST_NAME)) as handle:
        return sorted(line.strip() for line in handle if line.strip() and not line.startswith("#"))


def test_add_is_idempotent_and_shows_a_diff(nodes, boot_server, ansible, node_args):
    args = node_args(boot_server, addresses=["10.0.0.7", "10.0.0.8"])
    rc, result, output = ansible.run("boot_server_allow_list", args, diff=True)
    assert rc == 0, output
    assert result["changed"] is True
    assert result["added"] == ["10.0.0.7", "10.0.0.8"]
    assert result["slaves"] == ["10.0.0.7", "10.0.0.8", "127.0.0.1"]
    assert result["allow_list"] == result["slaves"] and result["persisted"] is True
    assert result["diff"]["before"] == "127.0.0.1\n"
    assert result["diff"]["after"] == "10.0.0.7\n10.0.0.8\n127.0.0.1\n"
    assert slaves(nodes, boot_server) == ["10.0.0.7", "10.0.0.8", "127.0.0.1"]
    # Persisted by the boot server itself.
    assert persisted(nodes) == ["10.0.0.7", "10.0.0.8", "127.0.0.1"]

    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0, output
    assert result["changed"] is False
    assert result["added"] == [] and result["removed"] == []


def test_check_mode_reports_and_changes_nothing(nodes, boot_server, ansible, node_args):
    rc, result, output = ansible.run("boot_server_allow_list", node_args(boot_server, addresses=["10.0.0.9"]), check=True, diff=True)
    assert rc == 0, output
    assert result["changed"] is True
    assert result["added"] == ["10.0.0.9"]
    assert result["diff"]["after"] == "10.0.0.9\n127.0.0.1\n"
    assert slaves(nodes, boot_server) == ["127.0.0.1"]
    assert persisted(nodes) == ["127.0.0.1"]


def test_exclusive_removes_stale_addresses(nodes, boot_server, ansible, node_args):
    nodes.call(boot_server, "erl_boot_server:add_slave({10,0,0,1}), erl_boot_server:add_slave({10,0,0,2})")
    args = node_args(boot_server, addresses=["127.0.0.1", "10.0.0.3"], exclusive=True)
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0, output
    assert result["changed"] is True
    assert result["added"] == ["10.0.0.3"]
    assert result["removed"] == ["10.0.0.1", "10.0.0.2"]
    assert slaves(nodes, boot_server) == ["10.0.0.3", "127.0.0.1"]
    assert persisted(nodes) == ["10.0.0.3", "127.0.0.1"]
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0 and result["changed"] is False, output


def test_absent_removes_and_is_idempotent(nodes, boot_server, ansible, node_args):
    nodes.call(boot_server, "erlang_ec2_boot_server:add_slave({10,0,0,4})")
    assert persisted(nodes) == ["10.0.0.4", "127.0.0.1"]
    args = node_args(boot_server, addresses=["10.0.0.4"], state="absent")
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0 and result["changed"] is True and result["removed"] == ["10.0.0.4"], output
    assert slaves(nodes, boot_server) == ["127.0.0.1"]
    # Gone from the running list and from the file (a decommissioned worker).
    assert persisted(nodes) == ["127.0.0.1"]
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0 and result["changed"] is False, output


def test_hostnames_and_ipv6_are_refused_and_nothing_changes(nodes, boot_server, ansible, node_args):
    args = node_args(boot_server, addresses=["10.0.0.5", "worker.example", "::1", "10.0.0.256"])
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc != 0
    assert result["failed"] is True
    assert "dotted-quad IPv4" in result["msg"] and "'worker.example'" in result["msg"] and "Nothing was changed" in result["msg"]
    assert result["invalid_addresses"] == ["worker.example", "::1", "10.0.0.256"]
    assert slaves(nodes, boot_server) == ["127.0.0.1"]
    assert persisted(nodes) == ["127.0.0.1"]


def test_bad_node_name_is_refused(nodes, boot_server, ansible, node_args):
    rc, result, output = ansible.run("boot_server_allow_list", node_args("boot@127.0.0.1 -s init stop", addresses=["10.0.0.5"]))
    assert rc != 0
    assert "invalid node name" in result["msg"]
    assert slaves(nodes, boot_server) == ["127.0.0.1"]


def test_node_without_boot_server_fails_clearly(nodes, boot_server, ansible, node_args):
    nodes.start_worker("w1")
    nodes.wait_started("w1@127.0.0.1", 20)
    rc, result, output = ansible.run("boot_server_allow_list", node_args("w1@127.0.0.1", addresses=["10.0.0.5"]))
    assert rc != 0
    assert "no boot server runs on node w1@127.0.0.1" in result["msg"]


def test_worker_not_on_the_list_cannot_boot_until_added(nodes, ansible, node_args):
    nodes.start_boot_server(allow=[])
    worker = nodes.start_worker("w1")
    time.sleep(3)
    assert not nodes.answers(worker), "a worker whose address is not on the allow-list booted"
    assert nodes.procs["w1"].poll() is None, "the VM waits in the loader, it does not exit"
    rc, result, output = ansible.run("boot_server_allow_list", node_args("boot@127.0.0.1", addresses=["127.0.0.1"]))
    assert rc == 0 and result["added"] == ["127.0.0.1"], output
    # The loader retries after its 10 s back-off.
    nodes.wait_started(worker, 30)
    assert nodes.call(worker, "element(2, init:script_id())") == [ord(c) for c in "1.0.0"]


def test_the_old_name_still_works(nodes, boot_server, ansible, node_args):
    """boot_server_slave (OTP's word) is a deprecated redirect to boot_server_allow_list."""
    rc, result, output = ansible.run("boot_server_slave", node_args(boot_server, addresses=["10.0.0.6"]))
    assert rc == 0 and result["changed"] is True and result["added"] == ["10.0.0.6"], output
    assert result["allow_list"] == ["10.0.0.6", "127.0.0.1"] and result["persisted"] is True
    assert persisted(nodes) == ["10.0.0.6", "127.0.0.1"]
    assert "boot_server_allow_list" in output and "deprecat" in output.lower(), output[-2000:]


def test_a_restarted_boot_server_allows_exactly_what_the_module_left(nodes, boot_server, ansible, node_args):
    args = node_args(boot_server, addresses=["127.0.0.1", "10.0.1.1", "10.0.1.2"], exclusive=True)
    rc, result, output = ansible.run("boot_server_allow_list", args)
    assert rc == 0 and result["changed"] is True, output
    rc, result, output = ansible.run("boot_server_allow_list", node_args(boot_server, addresses=["10.0.1.2"], state="absent"))
    assert rc == 0 and result["changed"] is True, output
    nodes.kill("boot")
    deadline = time.monotonic() + 30
    while not udp_4368_free() and time.monotonic() < deadline:
        time.sleep(0.5)
    boot_file = os.path.join(nodes.env.base, ALLOW_LIST_NAME)
    argv = ["erl", "-name", boot_server, "-noshell", "-noinput", "-pa", boot_server_ebin(),
            "-erlang_ec2_root", nodes.env.boot_root, "-erlang_ec2_root", boot_server_ebin(),
            "-s", "erlang_ec2_boot_server", "start", boot_file]
    nodes._start("boot", argv)
    nodes.wait_for(boot_server, "is_pid(whereis(erlang_ec2_boot_server))", 30)
    assert slaves(nodes, boot_server) == ["10.0.1.1", "127.0.0.1"] == persisted(nodes)
