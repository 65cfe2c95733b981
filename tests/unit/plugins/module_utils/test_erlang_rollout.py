# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cluster_restart's driver: option checks, the health gates (a real HTTP server), batches, stop and rollback."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_restart, erlang_rollout
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError


def params(**overrides):
    base = dict(nodes=[], expected_version="2.0.0", serial=1, pause=0, restart_timeout=5, rollback=False, health_status=200,
                health_body=None, health_mfa=None, health_retries=2, health_delay=0, health_timeout=2, check_local_files=False,
                poll_interval_ms=10, timeout=5, current_link=None)
    base.update(overrides)
    return base


def test_good_gate_options_pass():
    assert erlang_rollout.check_gates(params(
        nodes=[{"node": "w@10.0.0.5", "health_url": "http://10.0.0.5:8080/status"}], health_body=r'"version": "2\.0"',
        health_mfa={"module": "hello_cluster", "function": "healthy", "args": ["ok", "<<\"x\">>", "[1, {a, 2}]"]})) == []


@pytest.mark.parametrize("overrides, words", [
    (dict(nodes=[{"node": "w@10.0.0.5", "health_url": "ftp://10.0.0.5/"}]), "must be an http:// or https:// URL"),
    (dict(health_status=99), "health_status must be an HTTP status code"),
    (dict(health_body="("), "health_body is not a valid regular expression"),
    (dict(health_retries=0), "health_retries must be at least 1"),
    (dict(serial=0), "serial must be at least 1"),
    (dict(pause=-1), "pause must be 0 or more seconds"),
    (dict(health_mfa={"module": "Hello", "function": "ok", "args": []}), "health_mfa.module must be an Erlang atom name"),
    (dict(health_mfa={"module": "m", "function": "f", "args": ["X"]}), "is not one Erlang term"),
    (dict(health_mfa={"module": "m", "function": "f", "args": ["a. b"]}), "is not one Erlang term"),
])
def test_bad_gate_options_are_named(overrides, words):
    errors = erlang_rollout.check_gates(params(**overrides))
    assert len(errors) == 1 and words in errors[0], errors


class Handler(BaseHTTPRequestHandler):
    answers = {"/ok": (200, b'{"version": "2.0.0"}'), "/old": (200, b'{"version": "1.0.0"}'), "/down": (503, b"no")}

    def do_GET(self):  # noqa: N802 (http.server's name)
        status, body = self.answers.get(self.path, (404, b""))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def test_http_gate(server):
    assert erlang_rollout.http_gate(server + "/ok", params(health_body=r'"version": "2\.')) is None
    assert "does not match" in erlang_rollout.http_gate(server + "/old", params(health_body=r'"version": "2\.'))
    assert "answered 503, expected 200" in erlang_rollout.http_gate(server + "/down", params())
    assert erlang_rollout.http_gate(server + "/down", params(health_status=503)) is None
    assert "failed after 2 attempts: GET http://127.0.0.1:1/ failed" in erlang_rollout.http_gate("http://127.0.0.1:1/", params())


class FakeNode(object):
    """A node whose calls are scripted: `answers` maps an expression's start to a result (or an exception)."""

    def __init__(self, name, answers=None):
        self.node = name
        self.calls = []
        self.answers = answers or {}

    def call(self, expression, timeout=None):
        self.calls.append(expression.strip())
        for start, answer in self.answers.items():
            if start in expression:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return "ok"

    def close(self):
        pass


def test_mfa_gate():
    mfa = {"module": "hello_cluster", "function": "healthy", "args": ["ok"]}
    node = FakeNode("w@10.0.0.5", {"'hello_cluster':'healthy'(ok)": True})
    assert erlang_rollout.mfa_gate(node, params(health_mfa=mfa)) is None
    node = FakeNode("w@10.0.0.5", {"'hello_cluster':'healthy'(ok)": b"{error,starting}"})
    failure = erlang_rollout.mfa_gate(node, params(health_mfa=mfa))
    assert "hello_cluster:healthy(ok) returned {error,starting} on w@10.0.0.5, not true" in failure
    assert len(node.calls) == 2
    node = FakeNode("w@10.0.0.5", {"healthy": ErlangNodeError("not_running", "gone")})
    assert "could not be called on w@10.0.0.5: gone" in erlang_rollout.mfa_gate(node, params(health_mfa=mfa))


class Cluster(object):
    """Nodes that restart at once: each init:restart() gives a new incarnation; `broken` nodes come back on 3.0.0."""

    def __init__(self, monkeypatch, names, broken=(), down=()):
        self.nodes = dict((name, FakeNode(name, {"init:restart()": RuntimeError})) for name in names)
        self.incarnation = dict((name, 0) for name in names)
        self.down = set(down)
        self.broken = set(broken)
        for node in self.nodes.values():
            node.answers = {}
            node.call = self.caller(node)
        monkeypatch.setattr(erlang_rollout, "probe", self.facts)
        monkeypatch.setattr(erlang_restart, "probe", self.facts)
        monkeypatch.setattr(erlang_rollout, "node_alive", lambda name: name not in self.down)
        monkeypatch.setattr(erlang_restart, "node_alive", lambda name: True)

    def caller(self, node):
        original = FakeNode.call.__get__(node)

        def call(expression, timeout=None):
            if expression.strip() == "init:restart()":
                self.incarnation[node.node] += 1
            return original(expression, timeout)
        return call

    def facts(self, node, timeout=None):
        name = node.node
        if name in self.down:
            raise ErlangNodeError("not_running", "down")
        version = "3.0.0" if name in self.broken and self.incarnation[name] else ("2.0.0" if self.incarnation[name] else "1.0.0")
        return {"node": name, "incarnation": self.incarnation[name], "init_status": "started", "release_version": version,
                "connected_nodes": [other for other in self.nodes if other != name], "applications_not_running": []}


def rollout(cluster, **overrides):
    entries = [{"node": name, "health_url": "", "new_vm": False} for name in cluster.nodes]
    return erlang_rollout.Rollout(params(nodes=entries, **overrides), lambda name: cluster.nodes[name])


NAMES = ["w@10.0.0.5", "w@10.0.0.6", "w@10.0.0.7"]


def test_batches_are_serial_sized_and_down_nodes_come_first(monkeypatch):
    cluster = Cluster(monkeypatch, NAMES, down=["w@10.0.0.7"])
    assert rollout(cluster, serial=2).batches() == [["w@10.0.0.7"], ["w@10.0.0.5", "w@10.0.0.6"]]


def test_every_node_restarted_in_order(monkeypatch):
    cluster = Cluster(monkeypatch, NAMES)
    report, failure = rollout(cluster).run()
    assert failure is None
    assert [(e["node"], e["action"], e["before_version"], e["after_version"], e["touched"]) for e in report] == [
        (name, "restarted", "1.0.0", "2.0.0", True) for name in NAMES]
    assert all(isinstance(e["unavailable_ms"], int) for e in report)


def test_the_first_failure_stops_the_run(monkeypatch):
    cluster = Cluster(monkeypatch, NAMES, broken=["w@10.0.0.6"])
    report, failure = rollout(cluster).run()
    assert "came back running release" in failure and "expected version 2.0.0" in failure
    assert [(e["action"], e["touched"]) for e in report] == [("restarted", True), ("failed", True), ("not_reached", False)]


def test_a_failing_gate_stops_the_run_but_not_a_rollback(monkeypatch):
    mfa = {"module": "erlang", "function": "is_atom", "args": ["42"]}
    cluster = Cluster(monkeypatch, NAMES)
    report, failure = rollout(cluster, health_mfa=mfa).run()
    assert "erlang:is_atom(42) returned ok on w@10.0.0.5, not true" in failure
    assert [e["action"] for e in report] == ["failed", "not_reached", "not_reached"]
    cluster = Cluster(monkeypatch, NAMES)
    report, failure = rollout(cluster, health_mfa=mfa, rollback=True).run()
    assert [e["action"] for e in report] == ["rolled_back"] * 3
    assert all("returned ok" in e["message"] for e in report)


def test_an_unhealthy_cluster_is_not_touched(monkeypatch):
    cluster = Cluster(monkeypatch, NAMES)
    original = cluster.facts

    def lonely(node, timeout=None):
        facts = original(node, timeout)
        facts["connected_nodes"] = []
        return facts
    monkeypatch.setattr(erlang_rollout, "probe", lonely)
    report, failure = rollout(cluster).run()
    assert "the cluster is not healthy: w@10.0.0.5 does not see w@10.0.0.6, w@10.0.0.7" in failure
    assert not any(e["touched"] for e in report)
    assert "init:restart()" not in cluster.nodes["w@10.0.0.5"].calls


def test_plan_reads_every_node_without_changing_anything(monkeypatch):
    cluster = Cluster(monkeypatch, NAMES, down=["w@10.0.0.7"])
    cluster.nodes["w@10.0.0.5"].answers = {"local_files": {"missing": [b"/srv/x/priv/a.so"], "new_vm": False}}
    cluster.nodes["w@10.0.0.6"].answers = {"local_files": {"missing": [], "new_vm": True}}
    plan = rollout(cluster, current_link="/srv/erlang-ec2/current").plan()
    assert [(e["node"], e["running"], e["missing_local_files"], e["new_vm"]) for e in plan] == [
        ("w@10.0.0.5", True, ["/srv/x/priv/a.so"], False), ("w@10.0.0.6", True, [], True), ("w@10.0.0.7", False, [], False)]
    assert not any(call in ("init:restart()", "init:stop(1)") for node in cluster.nodes.values() for call in node.calls)
    assert '<<"/srv/erlang-ec2/current/vm.args"/utf8>>' in cluster.nodes["w@10.0.0.6"].calls[0]


def test_only_stale_leaves_nodes_on_the_expected_release_alone(monkeypatch):
    """A resumed rollout: the first node is on 2.0.0 already, the others are restarted; the first is not touched."""
    cluster = Cluster(monkeypatch, NAMES)
    cluster.incarnation["w@10.0.0.5"] = 1  # restarted onto 2.0.0 by the interrupted run
    run = rollout(cluster, only_stale=True)
    report, failure = run.run()
    assert failure is None
    assert run.done_batches == [["w@10.0.0.6"], ["w@10.0.0.7"]]
    assert [(e["node"], e["action"], e["touched"], e["after_version"]) for e in report] == [
        ("w@10.0.0.5", "up_to_date", False, "2.0.0"), ("w@10.0.0.6", "restarted", True, "2.0.0"), ("w@10.0.0.7", "restarted", True, "2.0.0")]
    assert "init:restart()" not in cluster.nodes["w@10.0.0.5"].calls
    # Without only_stale every node is restarted, the one on 2.0.0 too (a rolling restart of the same release).
    cluster = Cluster(monkeypatch, NAMES)
    cluster.incarnation["w@10.0.0.5"] = 1
    report, failure = rollout(cluster).run()
    assert failure is None and [e["action"] for e in report] == ["restarted"] * 3


def test_only_stale_waits_for_a_node_mid_restart_before_touching_another(monkeypatch):
    """The interrupted run left w@10.0.0.6 restarting (answers epmd, not started): it is waited for, alone, first;
    only once it is back does the next stale node go down (never two down at once)."""
    cluster = Cluster(monkeypatch, NAMES)
    cluster.incarnation["w@10.0.0.5"] = 1
    original = cluster.facts
    polls = {"count": 0}

    def facts(node, timeout=None):
        seen = original(node, timeout)
        if node.node == "w@10.0.0.6" and polls["count"] < 3:
            polls["count"] += 1
            seen["init_status"] = "starting"
        elif node.node == "w@10.0.0.6":
            seen.update(release_version="2.0.0", incarnation=7)
        return seen
    monkeypatch.setattr(erlang_rollout, "probe", facts)
    monkeypatch.setattr(erlang_restart, "probe", facts)
    run = rollout(cluster, only_stale=True)
    report, failure = run.run()
    assert failure is None, failure
    assert run.done_batches == [["w@10.0.0.6"], ["w@10.0.0.7"]]
    assert "init:restart()" not in cluster.nodes["w@10.0.0.6"].calls
    assert [(e["action"], e["touched"]) for e in report] == [("up_to_date", False), ("restarted", True), ("restarted", True)]
    # w@10.0.0.7 was restarted only after w@10.0.0.6 had started again (the batches run in order, each waited for).
    assert cluster.incarnation["w@10.0.0.7"] == 1


def test_only_stale_needs_the_expected_version(monkeypatch):
    from ansible_collections.skunkworks.erlang_ec2.plugins.modules import cluster_restart

    failed = {}

    class Module(object):
        params = dict(params(nodes=[], only_stale=True, expected_version=None), health_url=None)

        def fail_json(self, **kwargs):
            failed.update(kwargs)
            raise SystemExit(1)
    with pytest.raises(SystemExit):
        cluster_restart.check_params(Module())
    assert "only_stale needs expected_version" in failed["msg"]
