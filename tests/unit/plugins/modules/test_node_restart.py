# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_restart


class FakeNode(object):
    node = "w1@10.0.0.5"
    timeout = 5


def answer(incarnation, status="started", version="2.0.0", nodes=("boot@10.0.0.4",), not_running=()):
    return {"incarnation": incarnation, "init_status": status, "release_name": "hello_cluster", "release_version": version,
            "connected_nodes": list(nodes), "applications_not_running": list(not_running)}


def script(monkeypatch, steps, clock):
    """Feed the Waiter a sequence of probe outcomes, one per step, advancing a fake clock by 100 ms."""
    outcomes = iter(steps)

    def fake_probe(node, timeout=None):
        clock[0] += 100
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    monkeypatch.setattr(erlang_restart, "probe", fake_probe)
    monkeypatch.setattr(erlang_restart, "now_ms", lambda: clock[0])
    monkeypatch.setattr(erlang_restart, "node_alive", lambda name: name != "dead@10.0.0.9")


def run(waiter, count):
    return [waiter.step() for dummy in range(count)]


def test_waits_for_a_new_boot_and_measures_downtime(monkeypatch):
    clock = [0]
    down = ErlangNodeError("not_running", "node w1@10.0.0.5 is not running")
    script(monkeypatch, [answer("<old>", "stopping", "1.0.0"), down, down, answer("<new>", "starting"), answer("<new>")], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", ["boot@10.0.0.4"], "2.0.0", 75)
    assert run(waiter, 5) == [False, False, False, False, True]
    # last answer of the old boot at 100 ms, first answer of the new one at 400 ms
    assert waiter.downtime_ms() == 300
    assert waiter.state()["answered_again"] is True


def test_a_wrong_version_fails_at_once(monkeypatch):
    clock = [0]
    script(monkeypatch, [answer("<new>", version="1.0.0")], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", [], "2.0.0", 75)
    with pytest.raises(ValueError, match="came back running release hello_cluster 1.0.0, expected version 2.0.0"):
        waiter.step()


def test_waits_for_expected_nodes_and_drops_dead_ones(monkeypatch):
    clock = [0]
    script(monkeypatch, [answer("<new>", nodes=()), answer("<new>", nodes=("boot@10.0.0.4",))], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", ["boot@10.0.0.4", "dead@10.0.0.9"], None, 75)
    assert waiter.step() is False
    assert waiter.dead_nodes == ["dead@10.0.0.9"] and waiter.missing == ["boot@10.0.0.4"]
    assert waiter.step() is True


def test_applications_not_running_is_not_done(monkeypatch):
    clock = [0]
    script(monkeypatch, [answer("<new>", not_running=["hello_cluster"])], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75)
    assert waiter.step() is False
    assert waiter.state()["applications_not_running"] == ["hello_cluster"]


def test_refused_connections_while_restarting_are_transient_but_own_mistakes_are_not(monkeypatch):
    clock = [0]
    script(monkeypatch, [ErlangNodeError("auth", "refused"), ErlangNodeError("syntax", "bad expression")], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75)
    assert waiter.step() is False and waiter.last_error == "refused"
    with pytest.raises(ErlangNodeError):
        waiter.step()


def test_hang_hint_names_the_boot_hosts():
    hint = erlang_restart.hang_hint({"loader": "inet", "boot_hosts": ["10.0.0.4"]})
    assert "boot server 10.0.0.4 is unreachable hangs in the loader" in hint
    assert "loader" not in erlang_restart.hang_hint({"loader": "efile"})


def test_applications_only_loaded_before_the_restart_are_ignored(monkeypatch):
    clock = [0]
    script(monkeypatch, [answer("<new>", not_running=["runtime_tools"]), answer("<new>", not_running=["runtime_tools", "hello"])], clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75, loaded_only=["runtime_tools"])
    assert waiter.step() is True
    assert waiter.step() is False
    assert waiter.state()["applications_not_running"] == ["hello"]


def test_poll_stops_when_done_on_a_wrong_version_or_at_the_deadline(monkeypatch):
    clock = [0]
    monkeypatch.setattr(erlang_restart.time, "sleep", lambda seconds: None)
    script(monkeypatch, [answer("<old>"), answer("<new>")], clock)
    assert erlang_restart.poll(erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75), deadline=10000) == (True, None)
    script(monkeypatch, [answer("<new>", version="1.0.0")], clock)
    done, failure = erlang_restart.poll(erlang_restart.Waiter(FakeNode(), "<old>", [], "2.0.0", 75), deadline=10000)
    assert not done and "expected version 2.0.0" in failure
    script(monkeypatch, [answer("<old>")] * 3, clock)
    assert erlang_restart.poll(erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75), deadline=clock[0] + 250) == (False, None)
    script(monkeypatch, [ErlangNodeError("syntax", "bad expression")], clock)
    assert erlang_restart.poll(erlang_restart.Waiter(FakeNode(), "<old>", [], None, 75), deadline=10000) == (
        False, "node w1@10.0.0.5: bad expression")


@pytest.mark.parametrize("steps, words", [
    ([ErlangNodeError("not_running", "gone")], "did not answer again within 60s; a diskless node whose boot server 10.0.0.4"),
    ([answer("<new>", "starting"), ErlangNodeError("not_running", "gone")], "answered again (release 2.0.0, init status starting"),
    ([answer("<new>", not_running=["hello"])], "its applications hello were not running after 60s"),
    ([answer("<new>", "starting")], "did not finish starting within 60s (init status starting)"),
    ([answer("<new>", nodes=())], "did not re-join boot@10.0.0.4 within 60s"),
])
def test_not_back_says_what_was_missing(monkeypatch, steps, words):
    clock = [0]
    script(monkeypatch, steps, clock)
    waiter = erlang_restart.Waiter(FakeNode(), "<old>", ["boot@10.0.0.4"], None, 75)
    run(waiter, len(steps))
    assert words in erlang_restart.not_back("w1@10.0.0.5", 60, waiter, {"loader": "inet", "boot_hosts": ["10.0.0.4"]})
