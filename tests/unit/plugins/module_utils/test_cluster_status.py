# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cluster_status: gathering through the boot node (and without it), the rollout log, rows and the printed table."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster_status as cs
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError

BOOT, W1, W2 = "boot@10.0.0.4", "worker@10.0.0.5", "worker@10.0.0.6"


def facts(node, peers, version=b"1.0.0", status="started", failed=()):
    return {Atom("node"): Atom(node), Atom("release_name"): b"hello_cluster", Atom("release_version"): version,
            Atom("connected_nodes"): [Atom(p) for p in peers], Atom("uptime_ms"): 3723000,
            Atom("init_status"): Atom(status), Atom("applications_not_running"): [Atom(a) for a in failed]}


class FakeNode(object):
    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.calls, self.closed = answer, error, [], False

    def call(self, expression, timeout=None):
        self.calls.append((expression, timeout))
        if self.error:
            raise self.error
        return self.answer

    def close(self):
        self.closed = True


def test_one_call_through_the_boot_node_gives_every_node():
    answer = {Atom("self"): facts(BOOT, [W1]),
              Atom("others"): [{Atom("node"): Atom(W1), Atom("facts"): facts(W1, [BOOT])},
                               {Atom("node"): Atom(W2), Atom("class"): Atom("error"), Atom("reason"): b"{erpc,timeout}"}]}
    via = FakeNode(answer)
    nodes = cs.gather_cluster(via, BOOT, [W1, W2], 5, direct=lambda name: pytest.fail("no direct call expected"))
    assert len(via.calls) == 1
    expression, timeout = via.calls[0]
    assert "SkwOthers = ['worker@10.0.0.5', 'worker@10.0.0.6']" in expression and "SkwTimeout = 5000" in expression
    assert timeout > 5
    assert nodes[BOOT]["release_version"] == "1.0.0" and nodes[W1]["connected_nodes"] == [BOOT]
    assert nodes[W2] == {"down": "node %s did not answer in time" % W2}


def test_without_the_boot_node_each_worker_is_called_directly():
    via = FakeNode(error=ErlangNodeError("not_running", "node boot is not running"))
    direct = {W1: FakeNode(facts(W1, [])), W2: FakeNode(error=ErlangNodeError("unreachable", "w2 unreachable"))}
    nodes = cs.gather_cluster(via, BOOT, [W1, W2], 5, direct=direct.get)
    assert nodes[BOOT] == {"down": "node boot is not running"}
    assert nodes[W1]["release_name"] == "hello_cluster" and nodes[W2] == {"down": "w2 unreachable"}
    assert direct[W1].closed and direct[W2].closed


def test_a_wrong_cookie_is_an_error_not_a_down_row():
    via = FakeNode(error=ErlangNodeError("auth", "refused"))
    with pytest.raises(ErlangNodeError):
        cs.gather_cluster(via, BOOT, [W1], 5, direct=lambda name: FakeNode())


def test_rollout_log(tmp_path):
    log = tmp_path / "rollouts.jsonl"
    assert cs.read_rollout_log(str(log)) == ([], 0)
    log.write_text(u'{"kind": "push", "nodes": []}\nnot json\n\n[1]\n{"kind": "rolling_restart", "nodes": []}\n')
    records, bad = cs.read_rollout_log(str(log))
    assert [r["kind"] for r in records] == ["push", "rolling_restart"] and bad == 2


def test_append_rollout_writes_one_line_the_reader_reads(tmp_path):
    log = tmp_path / "rollouts.jsonl"
    line = cs.append_rollout(str(log), {"kind": "rolling_restart", "nodes": [], "result": "ok"})
    assert log.read_text() == line + "\n" and oct(log.stat().st_mode & 0o777) == "0o640"
    record = json.loads(line)
    assert sorted(record) == ["kind", "nodes", "recorded_at", "result"] and record["recorded_at"].endswith("Z")
    # A last line without its newline is ended, not joined to the next record.
    log.write_text(u'{"kind": "push", "nodes": []}')
    cs.append_rollout(str(log), {"kind": "rollback", "nodes": []})
    records, bad = cs.read_rollout_log(str(log))
    assert [r["kind"] for r in records] == ["push", "rollback"] and bad == 0
    assert cs.rollout_line({"b": 1, "a": 2}, "T") == '{"a": 2, "b": 1, "recorded_at": "T"}'


ROLLING = {"kind": "rolling_restart", "release_name": "hello_cluster", "release_version": "2.0.0", "result": "ok", "message": "",
           "recorded_at": "2026-11-30T09:00:00Z",
           "nodes": [{"node": W1, "action": "restarted", "unavailable_ms": 1210, "modules": [], "message": ""}]}
PUSH = {"kind": "push", "release_name": "hello_cluster", "release_version": "2.0.1", "result": "failed", "message": "load refused",
        "recorded_at": "2026-11-30T10:00:00Z",
        "nodes": [{"node": W1, "action": "reverted", "unavailable_ms": 0, "modules": ["hello_handler"], "message": "no"}]}


def test_last_restart_is_the_newest_record_that_restarted_the_node():
    assert cs.last_restart(W1, [ROLLING, PUSH]) == (1210, "2026-11-30T09:00:00Z", "rolling_restart")
    assert cs.last_restart(W2, [ROLLING, PUSH]) is None


def rows(nodes, records=()):
    return cs.status_rows(BOOT, "boot_server", [W1, W2], nodes, list(records))


def test_rows_up_missing_failing_and_down():
    nodes = {BOOT: cs.to_text(facts(BOOT, [W1, W2])), W1: cs.to_text(facts(W1, [BOOT], failed=["hello_cluster"])),
             W2: {"down": "node worker@10.0.0.6 is not running"}}
    boot, w1, w2 = rows(nodes, [ROLLING])
    assert boot["state"] == "up" and boot["missing_nodes"] == [] and boot["role"] == "boot_server"
    assert w1["state"] == "failing" and w1["missing_nodes"] == [W2] and w1["last_restart_unavailable_ms"] == 1210
    assert w2["state"] == "down" and not w2["reachable"] and w2["release_version"] is None and w2["reason"].startswith("node worker")


def test_render_prints_a_table_and_the_rollouts():
    nodes = {BOOT: cs.to_text(facts(BOOT, [W1])), W1: cs.to_text(facts(W1, [BOOT])), W2: {"down": "node %s is not running" % W2}}
    lines = cs.render("demo", rows(nodes, [ROLLING, PUSH]), [ROLLING, PUSH])
    text = "\n".join(lines)
    assert lines[0] == "Cluster demo: 3 node(s), 2 up, 1 not up"
    header = lines[1]
    assert header.split()[:4] == ["NODE", "ROLE", "STATE", "RELEASE"]
    boot_line = [line for line in lines if line.startswith(BOOT)][0]
    assert "boot server" in boot_line and "hello_cluster 1.0.0" in boot_line and "MISSING " + W2 in boot_line and "1h02m" in boot_line
    w1_line = [line for line in lines if line.startswith(W1)][0]
    assert "1.21 s (2026-11-30T09:00:00Z)" in w1_line
    # Columns line up: every row's RELEASE cell starts where the header's does.
    assert boot_line.index("hello_cluster") == header.index("RELEASE") == w1_line.index("hello_cluster")
    assert [line for line in lines if line.startswith(W2)][0].split()[1:3] == ["worker", "DOWN"]
    assert "  %s: node %s is not running" % (W2, W2) in lines
    assert "Rollout 2026-11-30T10:00:00Z: push hello_cluster 2.0.1 -> FAILED (load refused)" in lines
    assert any(line.split()[:4] == [W1, "reverted", "0.00", "s"] and "hello_handler" in line for line in lines), text


def test_render_without_rollouts():
    healthy = {BOOT: cs.to_text(facts(BOOT, [W1, W2])), W1: cs.to_text(facts(W1, [BOOT, W2])), W2: cs.to_text(facts(W2, [BOOT, W1]))}
    lines = cs.render("demo", rows(healthy), [])
    assert lines[0] == "Cluster demo: 3 node(s), 3 up, 0 not up"
    assert lines[-1] == "No rollout recorded on the boot server yet."
    assert all("all 2" in line for line in lines[2:5])


@pytest.mark.parametrize("ms, text", [(None, "-"), (0, "0.00 s"), (1234, "1.23 s"), (245000, "4m05s"), (3723000, "1h02m"), (183600000, "2d03h")])
def test_duration(ms, text):
    assert cs.duration(ms) == text


def test_the_module_returns_json_friendly_rows():
    nodes = {BOOT: cs.to_text(facts(BOOT, [W1, W2])), W1: {"down": "x"}, W2: {"down": "y"}}
    json.dumps(rows(nodes, [ROLLING]))


def test_served_release_is_what_the_node_read_from_its_current_link():
    served = dict(cs.to_text(facts(BOOT, [])), served={"version": "2.0.0", "names": ["hello_cluster"]})
    assert cs.served_release(cs.to_text(facts(BOOT, []))) is None
    assert cs.served_release(served) == ("hello_cluster", "2.0.0")
    boot = cs.with_served_release(served, cs.served_release(served))
    assert (boot["release_name"], boot["release_version"]) == ("hello_cluster", "2.0.0")
    assert cs.with_served_release({"down": "x"}, ("hello_cluster", "2.0.0")) == {"down": "x"}


def test_other_boot_servers_are_rows_with_the_release_they_serve_and_count_as_peers():
    boot2 = "boot@10.0.0.7"
    served = dict(cs.to_text(facts(boot2, [BOOT, W1, W2])), served={"version": "2.0.0", "names": ["hello_cluster"]})
    nodes = {BOOT: cs.to_text(facts(BOOT, [W1, W2])), W1: cs.to_text(facts(W1, [BOOT, W2])),
             W2: cs.to_text(facts(W2, [BOOT, W1, boot2])),
             boot2: cs.with_served_release(served, cs.served_release(served))}
    table = cs.status_rows(BOOT, "boot_server", [W1, W2], nodes, [], boot_servers=[BOOT, boot2])
    assert [(r["node"], r["role"]) for r in table] == [(BOOT, "boot_server"), (boot2, "boot_server"), (W1, "worker"), (W2, "worker")]
    second = table[1]
    assert (second["release_name"], second["release_version"], second["missing_nodes"]) == ("hello_cluster", "2.0.0", [])
    # The acting boot server and W1 do not see boot2: it is missing from their peers.
    assert table[0]["missing_nodes"] == [boot2] and table[2]["missing_nodes"] == [boot2]


def test_served_release_without_a_link_is_none():
    assert cs.served_release({"served": None}) is None
    assert cs.served_release({"served": {"version": "1.0.0", "names": []}}) == (None, "1.0.0")


def test_the_expression_binds_the_current_link_for_every_node():
    expression = cs.cluster_expression([W1], 5, "/srv/erlang-ec2/current")
    assert 'SkwCurrentLink = unicode:characters_to_list(<<"/srv/erlang-ec2/current"/utf8>>)' in expression
    assert "served => SkwServed()" in expression
    assert 'SkwCurrentLink = unicode:characters_to_list(<<""/utf8>>)' in cs.node_expression()
