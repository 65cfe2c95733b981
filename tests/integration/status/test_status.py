"""The status playbook against a real cluster: the table lists every node with its release, a stopped worker
is a row that says so (not a failed play), and the last rollout recorded through record_rollout.yml is printed."""

import json
import os
import re

import playbook_runner
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT


def table(result):
    """The lines the status playbook printed (the debug task's msg list), without JSON quoting."""
    lines = []
    for raw in result.out.splitlines():
        m = re.match(r'^\s+"(.*)",?$', raw)
        if m:
            lines.append(json.loads('"%s"' % m.group(1)))
    return lines


def row(lines, node):
    found = [line for line in lines if line.startswith(node + " ")]
    assert len(found) == 1, "\n".join(lines)
    return found[0]


def boot_node(cluster):
    return "boot@%s" % cluster.boot_server_ip


def worker_nodes(cluster):
    return ["worker@%s" % ip for ip in sorted(cluster.workers.values())]


def test_every_node_is_listed_with_its_release_and_peers(cluster):
    result = cluster.playbook("status")
    lines = table(result)
    assert lines[0].startswith("Cluster %s: 3 node(s), 3 up, 0 not up" % cluster.name), result.tail()
    assert row(lines, boot_node(cluster)).split()[1:3] == ["boot", "server"]
    for node in [boot_node(cluster)] + worker_nodes(cluster):
        line = row(lines, node)
        assert " up " in line and "hello_cluster 1.0.0" in line and "all 2" in line, line
    assert result.changed == 0, result.recap


def test_check_mode_prints_the_same_and_changes_nothing(cluster):
    result = cluster.playbook("status", "--check")
    lines = table(result)
    for node in worker_nodes(cluster):
        assert "hello_cluster 1.0.0" in row(lines, node)
    assert result.changed == 0, result.recap


def record(cluster, rollout):
    """Append a rollout record through the interface rolling_restart and push use (_common record_rollout.yml)."""
    play = [{
        "name": "Record a rollout", "hosts": "erlang_boot_servers:&%s" % ("erlang_cluster_" + re.sub(r"[^A-Za-z0-9_]", "_", cluster.name)),
        "gather_facts": False, "become": True,
        "tasks": [{"name": "Record", "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2._common", "tasks_from": "record_rollout.yml"},
                   "vars": {"_common_rollout": rollout}}],
    }]
    path = playbook_runner.write_play(os.path.join(cluster.workdir, "record.json"), play)
    playbook_runner.run_playbook(path, inventory=os.path.join(playbook_runner.ROOT, "inventory"), env=cluster.env, check=True,
                                 log=os.path.join(cluster.workdir, "ansible.log"))


def test_the_last_rollout_and_each_nodes_last_restart_are_shown(cluster):
    first, second = worker_nodes(cluster)
    record(cluster, {"kind": "rolling_restart", "release_name": "hello_cluster", "release_version": "1.0.0", "result": "ok", "message": "",
                     "nodes": [{"node": first, "action": "restarted", "unavailable_ms": 1234, "modules": [], "message": ""},
                               {"node": second, "action": "restarted", "unavailable_ms": 2345, "modules": [], "message": ""}]})
    record(cluster, {"kind": "push", "release_name": "hello_cluster", "release_version": "1.0.1", "result": "ok", "message": "2 nodes",
                     "nodes": [{"node": first, "action": "pushed", "unavailable_ms": 0, "modules": ["hello_handler"], "message": ""},
                               {"node": second, "action": "reverted", "unavailable_ms": 0, "modules": ["hello_handler"], "message": "load refused"}]})
    result = cluster.playbook("status", extra={"status_rollouts": 2})
    lines = table(result)
    # The last restart's downtime comes from the newest rollout that restarted the node (the push did not).
    assert "1.23 s" in row(lines, first) and "2.35 s" in row(lines, second), "\n".join(lines)
    text = "\n".join(lines)
    assert re.search(r"^Rollout \S+Z: rolling_restart hello_cluster 1\.0\.0 -> ok$", text, re.M), text
    assert re.search(r"^Rollout \S+Z: push hello_cluster 1\.0\.1 -> ok \(2 nodes\)$", text, re.M), text
    pushed = [line for line in lines if line.strip().startswith(first) and "pushed" in line]
    assert pushed and "hello_handler" in pushed[0], text
    reverted = [line for line in lines if line.strip().startswith(second) and "reverted" in line]
    assert reverted and "load refused" in reverted[0], text
    # By default only the last rollout.
    lines = table(cluster.playbook("status"))
    assert [line for line in lines if line.startswith("Rollout ")] == [line for line in lines if line.startswith("Rollout ") and " push " in line]


def test_a_stopped_worker_is_a_down_row_and_its_peers_miss_it(cluster):
    ip = sorted(cluster.workers.values())[0]
    stopped = "worker@%s" % ip
    unit = LAYOUT["worker_unit"]
    out = cluster.ssh(ip, "sudo systemctl stop %s" % unit)
    assert out.returncode == 0, out.stderr
    try:
        result = cluster.playbook("status")
        assert result.rc == 0 and result.changed == 0
        lines = table(result)
        assert lines[0].startswith("Cluster %s: 3 node(s), 2 up, 1 not up" % cluster.name), "\n".join(lines)
        line = row(lines, stopped)
        assert " DOWN " in line and "hello_cluster" not in line, line
        assert any(stopped + ": node %s is not running" % stopped in text for text in lines), "\n".join(lines)
        for other in [boot_node(cluster)] + [node for node in worker_nodes(cluster) if node != stopped]:
            assert "MISSING " + stopped in row(lines, other)
    finally:
        assert cluster.ssh(ip, "sudo systemctl start %s" % unit).returncode == 0
    # Started again: the worker rejoins and the table shows it up.
    for _attempt in range(30):
        lines = table(cluster.playbook("status"))
        if " up " in row(lines, stopped) and "all 2" in row(lines, stopped):
            break
    else:
        raise AssertionError("\n".join(lines))


def test_bad_variables_are_refused_before_any_node_is_called(cluster):
    misspelled = cluster.playbook("status", check=False, extra={"status_rollout": 2})
    assert misspelled.rc != 0 and "status_rollout" in misspelled.out, misspelled.tail()
    zero = cluster.playbook("status", check=False, extra={"status_node_timeout": 0})
    assert zero.rc != 0 and "status_node_timeout" in zero.out, zero.tail()
    for result in (misspelled, zero):
        assert "Status | Read every node" not in result.out
