# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The push's decisions (plan -> refuse / load -> verify -> revert) against recorded node answers.

The Erlang steps themselves run on real nodes in tests/integration/push.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import code_push
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError

OLD, NEW = b"\x01" * 16, b"\x02" * 16
W1, W2, BOOT = "worker@10.0.0.5", "worker@10.0.0.6", "boot@10.0.0.4"
PARAMS = {"old_dir": "/srv/erlang-ec2/releases/2.0.0", "new_dir": "/srv/erlang-ec2/releases/2.0.1", "node": BOOT,
          "nodes": [BOOT, W1, W2], "call_timeout": 30, "purge": "soft", "allow_structural": False}


def node_plan(name, modules=("hello_cluster",), runs=True, erts=b"13.1.5", unknown=()):
    return {Atom("node"): Atom(name), Atom("runs_release"): runs, Atom("erts"): erts, Atom("unknown"): [Atom(m) for m in unknown],
            Atom("modules"): [{Atom("module"): Atom(m), Atom("old_md5"): OLD, Atom("new_md5"): NEW,
                               Atom("old_file"): ("/srv/erlang-ec2/releases/2.0.0/lib/hello_cluster-2.0.0/ebin/%s.beam" % m).encode()}
                              for m in modules]}


def plan(structural=(), blocked=None, nodes=None):
    nodes = nodes or [node_plan(BOOT, modules=(), runs=False), node_plan(W1), node_plan(W2)]
    checks = [(Atom(W1), {Atom("blocked"): list((blocked or {}).items()), Atom("invalid"): [], Atom("on_load"): []}),
              (Atom(W2), {Atom("blocked"): [], Atom("invalid"): [], Atom("on_load"): []})]
    return {Atom("release"): (b"hello_cluster", b"2.0.1"), Atom("running"): (b"hello_cluster", b"2.0.0"),
            Atom("release_erts"): b"13.1.5", Atom("structural"): list(structural), Atom("nodes"): nodes, Atom("checks"): checks}


class FakeBootNode(object):
    """Answers each step's program with the next recorded answer for that step; records the steps run."""

    def __init__(self, answers):
        self.answers = answers
        self.steps = []

    def call(self, body, timeout=None):
        step = next(name for name, text in (("plan", code_push.PLAN), ("load", code_push.LOAD), ("verify", code_push.VERIFY),
                                            ("revert", code_push.REVERT)) if body.endswith(text))
        self.steps.append(step)
        answer = self.answers[step]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_push_loads_verifies_and_reports_each_node():
    node = FakeBootNode({"plan": plan(), "load": [(Atom(W1), "ok"), (Atom(W2), "ok")],
                         "verify": [(Atom(BOOT), ("ok", "none")), (Atom(W1), ("ok", b"undo1")), (Atom(W2), ("ok", b"undo2"))]})
    result = code_push.push(node, PARAMS, False)
    assert node.steps == ["plan", "load", "verify"]
    assert result["changed"] and result["fallback"] == "none"
    assert {n["node"]: (n["action"], n["modules"]) for n in result["nodes"]} == {
        BOOT: ("skipped", []), W1: ("pushed", ["hello_cluster"]), W2: ("pushed", ["hello_cluster"])}
    assert result["diff"]["after"].splitlines()[0] == "%s hello_cluster %s" % (W1, "02" * 16)


def test_check_mode_runs_the_read_only_plan_only():
    node = FakeBootNode({"plan": plan()})
    result = code_push.push(node, PARAMS, True)
    assert node.steps == ["plan"] and result["changed"]
    assert [n["action"] for n in result["nodes"]] == ["skip", "push", "push"]


def test_old_code_in_use_refuses_before_any_change_naming_node_and_module():
    node = FakeBootNode({"plan": plan(blocked={Atom("push_loop"): [b"<0.93.0> [{current_function,{push_loop,loop,0}}]"]})})
    with pytest.raises(code_push.PushError) as raised:
        code_push.push(node, PARAMS, False)
    assert node.steps == ["plan"]
    assert "nothing was changed on any node" in raised.value.message
    assert "%s: processes still run old code of push_loop" % W1 in raised.value.message


def test_purge_kill_goes_ahead_despite_old_code():
    node = FakeBootNode({"plan": plan(blocked={Atom("push_loop"): [b"<0.93.0>"]}), "load": [(Atom(W1), "ok"), (Atom(W2), "ok")],
                         "verify": [(Atom(W1), ("ok", "none")), (Atom(W2), ("ok", "none"))]})
    code_push.push(node, dict(PARAMS, purge="kill"), False)
    assert node.steps == ["plan", "load", "verify"]


def test_a_node_refusing_the_load_reverts_every_node():
    node = FakeBootNode({"plan": plan(), "load": [(Atom(W1), "ok"), (Atom(W2), ("error", [(Atom("push_loop"), Atom("on_load_failure"))]))],
                         "revert": [(Atom(W1), [(Atom("hello_cluster"), (Atom("module"), Atom("hello_cluster")))]),
                                    (Atom(W2), [(Atom("hello_cluster"), Atom("unchanged"))])]})
    with pytest.raises(code_push.PushError) as raised:
        code_push.push(node, PARAMS, False)
    assert node.steps == ["plan", "load", "revert"]
    assert "failed on %s: push_loop: on_load_failure" % W2 in raised.value.message
    assert "every node is back on its previous code" in raised.value.message
    actions = {n["node"]: n["action"] for n in raised.value.result["nodes"]}
    assert actions == {BOOT: "skipped", W1: "reverted", W2: "failed"}


def test_a_failed_revert_is_said():
    node = FakeBootNode({"plan": plan(), "load": ErlangNodeError("timeout", "node boot did not answer within 100s"),
                         "revert": [(Atom(W1), [(Atom("hello_cluster"), ("error", Atom("badfile")))]), (Atom(W2), [])]})
    with pytest.raises(code_push.PushError) as raised:
        code_push.push(node, PARAMS, False)
    assert "the revert FAILED on %s" % W1 in raised.value.message


def test_structural_changes_are_refused_unless_allowed():
    change = [b"application hello_cluster: applications changes from [kernel,stdlib] to [kernel,stdlib,crypto]"]
    with pytest.raises(code_push.PushError) as raised:
        code_push.push(FakeBootNode({"plan": plan(structural=change)}), PARAMS, False)
    assert "a hot load cannot do it" in raised.value.message and "crypto" in raised.value.message
    node = FakeBootNode({"plan": plan(structural=change)})
    result = code_push.push(node, dict(PARAMS, allow_structural=True), False)
    assert node.steps == ["plan"] and result["fallback"] == "rolling_restart" and not result["changed"]


@pytest.mark.parametrize("entry,expected", [
    (node_plan(W1, erts=b"13.2"), "%s: runs ERTS 13.2, the release names ERTS 13.1.5" % W1),
    (node_plan(W1, unknown=("hello_cluster",)), "%s: runs a version of hello_cluster from neither release" % W1),
    ({Atom("node"): Atom(W1), Atom("unreachable"): b"{badrpc,nodedown}"}, "%s: did not answer" % W1),
])
def test_nodes_that_cannot_take_the_push_are_refused(entry, expected):
    with pytest.raises(code_push.PushError) as raised:
        code_push.push(FakeBootNode({"plan": plan(nodes=[entry])}), PARAMS, False)
    assert expected in raised.value.message


def test_the_same_release_again_changes_nothing():
    same = plan(nodes=[node_plan(W1, modules=())])
    same[Atom("release")] = (b"hello_cluster", b"2.0.0")
    node = FakeBootNode({"plan": same})
    assert code_push.push(node, PARAMS, False)["changed"] is False
    assert node.steps == ["plan"]


def test_the_program_quotes_its_inputs():
    text = code_push.program(dict(PARAMS, nodes=[W1]), "plan")
    assert "'%s'" % W1 in text and '<<"/srv/erlang-ec2/releases/2.0.1"/utf8>>' in text
    assert text.startswith(code_push.REMOTE_FUNS)
