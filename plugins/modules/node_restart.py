#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: node_restart
short_description: Restart an Erlang node with init:restart/0 and wait until it is back
version_added: 0.1.0
description:
  - Calls C(init:restart/0) on O(node); the node stops its applications and boots again in the same VM.
    A diskless node (C(-loader inet)) fetches the boot file and all code again from its boot server,
    so this is how a worker moves to the release the boot server now serves.
  - Then polls the node (every O(poll_interval_ms)) until it answers again from a new boot, has started
    every application it loaded (applications that were only loaded before the restart aside), has
    re-joined the cluster (is connected to O(expected_nodes)) and, if O(expected_version) is set,
    runs that release version.
  - Fails within O(restart_timeout) seconds with what was and was not true if the node does not come back.
    A diskless node whose boot server is unreachable never exits; it hangs in the loader and stops answering.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
options:
  restart_timeout:
    description:
      - Overall seconds allowed from the restart call until the node is back as expected.
      - O(timeout) still bounds each single call to the node.
    type: int
    default: 60
  expected_nodes:
    description:
      - Nodes the restarted node must be connected to again.
      - Default is the nodes it was connected to before the restart, keeping only those still running
        (registered with epmd on their host) while waiting.
      - Use an empty list to not wait for any connection.
    type: list
    elements: str
  expected_version:
    description:
      - Release version (from C(init:script_id/0)) the node must run after the restart.
      - A node that comes back with another version fails at once.
    type: str
  check_local_files:
    description:
      - Before the restart, check that the files the node reads from its own disk (priv trees, C(vm.args)) of
        the release it would boot are in place, against the manifest C(<boot file>.local_files) that its boot
        server serves (built by M(skunkworks.erlang_ec2.boot_script)). A file that is missing or differs fails
        the module with the node untouched. The C(erlang-ec2-local-files) command on the worker copies them
        (the rolling_restart playbook runs it first).
      - The check is skipped when the boot server serves no manifest for the node's boot file.
    type: bool
    default: true
  poll_interval_ms:
    description:
      - Milliseconds between two probes while waiting; also the resolution of RV(downtime_ms).
    type: int
    default: 75
attributes:
  check_mode:
    support: full
    description: Reads the node's facts and reports what it would do; nothing is restarted.
  diff_mode:
    support: none
    description: No diff.
notes:
  - The node keeps answering while it shuts down (bounded by its C(-shutdown_time)), so the module
    waits for a new boot (the application controller's pid changes), not just for an answer.
  - Re-joining relies on the node itself, for example kernel C(sync_nodes_optional) in its C(sys.config);
    the module only observes it.
"""

EXAMPLES = r"""
- name: Move a worker to the release the boot server now serves
  skunkworks.erlang_ec2.node_restart:
    node: worker@172.31.0.5
    expected_version: 2.0.0
    restart_timeout: 60
  register: restarted

- name: Report the measured downtime
  ansible.builtin.debug:
    msg: "{{ restarted.after.release_version }} after {{ restarted.downtime_ms }} ms unavailable"

- name: Rolling restart, one worker at a time
  skunkworks.erlang_ec2.node_restart:
    node: "{{ erlang_node }}"
    expected_version: "{{ release_version }}"
  throttle: 1
"""

RETURN = r"""
before:
  description: Facts before the restart (as returned by M(skunkworks.erlang_ec2.node_info)).
  returned: always
  type: dict
  sample: {"release_version": "1.0.0", "connected_nodes": ["boot@172.31.0.4"], "loader": "inet"}
after:
  description: Facts once the node is back.
  returned: success, not in check mode
  type: dict
  sample: {"release_version": "2.0.0", "connected_nodes": ["boot@172.31.0.4"], "loader": "inet"}
missing_local_files:
  description: With O(check_local_files), the local files that were missing or different (the module failed).
  returned: failure
  type: list
  elements: str
  sample: ["/srv/erlang-ec2/releases/2.0.0/lib/hello_rebar3-2.0.0/priv/hello_rebar3_nif.so"]
downtime_ms:
  description: Measured unavailability, from the last successful answer before the node stopped
    answering to its first answer from the new boot (resolution O(poll_interval_ms)).
    0 if no probe ever failed.
  returned: success, not in check mode
  type: int
  sample: 880
elapsed_ms:
  description: Milliseconds from the restart call until the node was back as expected (or the module gave up).
  returned: always, except in check mode
  type: int
  sample: 1950
expected_nodes:
  description: The nodes waited for.
  returned: always
  type: list
  elements: str
  sample: ["boot@172.31.0.4"]
state:
  description: On failure, what was true when the module gave up.
  returned: failure after the restart
  type: dict
  contains:
    answered_again:
      description: Whether the node answered from a new boot.
      type: bool
    init_status:
      description: Last init status seen (C(started), C(starting), C(stopping)).
      type: str
    release_version:
      description: Last release version seen.
      type: str
    missing_nodes:
      description: Expected nodes not connected at the last probe.
      type: list
      elements: str
    applications_not_running:
      description: Applications of the new boot that were not running at the last answer.
      type: list
      elements: str
    last_error:
      description: The last probe error (none if the last probe was answered).
      type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    KIND_BAD_ARGUMENT,
    KIND_NO_COOKIE,
    KIND_SYNTAX,
    MUTUALLY_EXCLUSIVE,
    UNAVAILABLE_KINDS,
    ErlangNodeError,
    argument_spec,
    epmd_lookup,
    module_node,
    to_text,
    validate_node,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import gather, probe
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT

# init:restart/0 replies ok before the node goes down; a call cut by the restart is fine too.
RESTART = "init:restart()"

# The files of the release the node would boot (its -boot path, on its boot server) that are
# missing or differ on its own disk; `none` when the boot server has no manifest for it;
# `boot_server_unreachable` when the node's loader gets no answer in time (the boot server is down:
# a restart now would hang in the loader).
LOCAL_FILES_CHECK = r"""
SkwForms = fun SkwF(SkwText, SkwAcc) ->
    case erl_scan:tokens([], SkwText, 1) of
        {done, {ok, SkwT, _}, SkwRest} -> {ok, SkwTerm} = erl_parse:parse_term(SkwT), SkwF(SkwRest, [SkwTerm | SkwAcc]);
        _ -> lists:reverse(SkwAcc)
    end
end,
SkwHex = fun(SkwB) -> lists:flatten([io_lib:format("~2.16.0b", [X]) || <<X>> <= erlang:md5(SkwB)]) end,
SkwBad = fun({file, SkwP, SkwSize, _Mode, SkwMd5}) ->
             case file:read_file(SkwP) of
                 {ok, SkwB} -> byte_size(SkwB) =/= SkwSize orelse SkwHex(SkwB) =/= SkwMd5;
                 _ -> true
             end;
            (_) -> false
         end,
SkwSelf = self(),
SkwAsk = fun(SkwBoot) ->
    SkwPid = spawn(fun() -> SkwSelf ! {self(), erl_prim_loader:get_file(SkwBoot ++ ".local_files")} end),
    receive {SkwPid, SkwGot} -> SkwGot after %(wait_ms)d -> unreachable end
end,
case init:get_argument(boot) of
    {ok, [[SkwBoot | _] | _]} ->
        case SkwAsk(SkwBoot) of
            {ok, SkwBin, _} ->
                [unicode:characters_to_binary(element(2, E)) || E <- SkwForms(binary_to_list(SkwBin), []), SkwBad(E)];
            error -> none;
            unreachable -> boot_server_unreachable
        end;
    _ -> none
end
"""


def now_ms():
    return int(time.monotonic() * 1000)


def node_alive(name):
    """A node counts as running while epmd on its host knows its name."""
    short, host = name.split("@", 1)
    try:
        return epmd_lookup(host, short, timeout=1.0)
    except (OSError, IOError):
        return False


class Waiter(object):
    """Polls a restarting node and keeps what was seen, for the result or the failure message."""

    def __init__(self, node, incarnation, expected_nodes, expected_version, poll_ms, loaded_only=()):
        self.node = node
        self.incarnation = incarnation
        self.expected_nodes = list(expected_nodes)
        self.expected_version = expected_version
        self.poll_ms = poll_ms
        self.last_ok_ms = now_ms()
        self.back_ms = None
        self.last = None
        self.last_error = None
        self.missing = list(expected_nodes)
        self.dead_nodes = []
        self._next_liveness_ms = 0
        # Applications already loaded-but-not-running before the restart (e.g. {runtime_tools, load}).
        self.loaded_only = set(loaded_only)

    def answered_again(self):
        return self.back_ms is not None

    def step(self):
        """One probe: True when done, raises ValueError for a definitive wrong outcome."""
        try:
            seen = probe(self.node, timeout=1)
        except ErlangNodeError as exc:
            # While it restarts anything can fail for a moment (epmd may even list a node that refuses
            # connections, which looks like a cookie problem); only our own mistakes end the wait.
            if exc.kind in (KIND_BAD_ARGUMENT, KIND_NO_COOKIE, KIND_SYNTAX):
                raise
            self.last_error = exc.message
            return False
        moment = now_ms()
        self.last = seen
        self.last_error = None
        if seen.get("incarnation") == self.incarnation or seen.get("init_status") != "started":
            # Still the old boot shutting down, or the new one starting.
            if self.back_ms is None and seen.get("incarnation") == self.incarnation:
                self.last_ok_ms = moment
            elif self.back_ms is None:
                self.back_ms = moment
            return False
        if self.back_ms is None:
            self.back_ms = moment
        if self.expected_version and seen.get("release_version") != self.expected_version:
            raise ValueError(
                "node %s came back running release %s %s, expected version %s"
                % (self.node.node, seen.get("release_name"), seen.get("release_version"), self.expected_version)
            )
        seen["applications_not_running"] = [a for a in seen.get("applications_not_running") or [] if a not in self.loaded_only]
        if seen["applications_not_running"]:
            return False
        connected = set(seen.get("connected_nodes") or [])
        self.missing = [n for n in self.expected_nodes if n not in connected]
        if self.missing and moment >= self._next_liveness_ms:
            # Only wait for nodes that still run (checked at most once a second).
            self._next_liveness_ms = moment + 1000
            gone = [n for n in self.missing if not node_alive(n)]
            self.dead_nodes.extend(gone)
            self.expected_nodes = [n for n in self.expected_nodes if n not in gone]
            self.missing = [n for n in self.missing if n not in gone]
        return not self.missing

    def downtime_ms(self):
        if self.back_ms is None:
            return None
        return self.back_ms - self.last_ok_ms

    def state(self):
        last = self.last or {}
        return dict(
            answered_again=self.answered_again(),
            init_status=last.get("init_status") if self.answered_again() else None,
            release_version=last.get("release_version") if self.answered_again() else None,
            applications_not_running=last.get("applications_not_running") if self.answered_again() else None,
            missing_nodes=self.missing,
            last_error=self.last_error,
        )


def hang_hint(before):
    if before.get("loader") == "inet":
        hosts = ", ".join(before.get("boot_hosts") or []) or "?"
        return (
            "; a diskless node whose boot server %s is unreachable hangs in the loader (its VM never exits and "
            "ignores SIGTERM: stop it with SIGKILL), and a release whose applications fail to start makes the VM exit" % hosts
        )
    return "; a release whose applications fail to start makes the VM exit"


def main():
    spec = argument_spec()
    spec.update(
        restart_timeout=dict(type="int", default=60),
        expected_nodes=dict(type="list", elements="str"),
        expected_version=dict(type="str"),
        poll_interval_ms=dict(type="int", default=75),
        check_local_files=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    params = module.params
    if params["restart_timeout"] < 1:
        module.fail_json(msg="restart_timeout must be at least 1 second")
    if not 10 <= params["poll_interval_ms"] <= 5000:
        module.fail_json(msg="poll_interval_ms must be between 10 and 5000")
    for name in params["expected_nodes"] or []:
        try:
            validate_node(name)
        except ErlangNodeError as exc:
            module.fail_json(msg="expected_nodes: %s" % exc.message)
    node = module_node(module)
    try:
        run(module, node)
    finally:
        node.close()


def refuse_missing_local_files(module, node, before):
    """Fail, with the node untouched, when the release it would boot lacks files on its disk."""
    wait_ms = max(1000, (module.params["timeout"] - 2) * 1000)
    try:
        missing = to_text(node.call(LOCAL_FILES_CHECK % dict(wait_ms=wait_ms)))
    except ErlangNodeError as exc:
        module.fail_json(msg="cannot check the local files of %s: %s; it was not restarted" % (node.node, exc.message),
                         before=before, error=exc.to_dict())
    if missing == "boot_server_unreachable":
        module.fail_json(
            msg="refusing to restart %s: its boot server (%s) does not answer its loader within %d ms (the release's "
                "local-files manifest could not be read), so a restart now would hang in the loader. The node was not "
                "restarted." % (node.node, ", ".join(before.get("boot_hosts") or []) or "?", wait_ms),
            before=before, missing_local_files=[])
    if missing != "none" and missing:
        module.fail_json(
            msg="refusing to restart %s: the release it would boot needs these files on its own disk, missing or "
                "different there: %s. Copy them first (on the host: %s <boot server ip> <release> "
                "sync; the rolling_restart playbook does it). The node was not restarted."
            % (node.node, ", ".join(missing), DEFAULT_LAYOUT["local_files_script"]),
            before=before, missing_local_files=missing)


def run(module, node):
    params = module.params
    try:
        before = gather(node)
    except ErlangNodeError as exc:
        module.fail_json(msg="cannot restart %s: %s" % (node.node, exc.message), error=exc.to_dict())
    if params["check_local_files"]:
        refuse_missing_local_files(module, node, before)
    if params["expected_nodes"] is None:
        expected = list(before.get("connected_nodes") or [])
    else:
        expected = list(params["expected_nodes"])
    if module.check_mode:
        module.exit_json(
            changed=True, before=before, expected_nodes=expected,
            msg="would restart %s (running %s %s) with init:restart/0 and wait up to %ds for it to answer again%s%s"
            % (node.node, before.get("release_name"), before.get("release_version"), params["restart_timeout"],
               ", connected to %s" % ", ".join(expected) if expected else "",
               ", running version %s" % params["expected_version"] if params["expected_version"] else ""),
        )
    started = now_ms()
    deadline = started + params["restart_timeout"] * 1000
    waiter = Waiter(node, before.get("incarnation"), expected, params["expected_version"], params["poll_interval_ms"],
                    loaded_only=before.get("applications_not_running") or [])
    try:
        node.call(RESTART)
    except ErlangNodeError as exc:
        if exc.kind not in UNAVAILABLE_KINDS:
            module.fail_json(msg="init:restart/0 failed on %s: %s" % (node.node, exc.message), before=before, error=exc.to_dict())
    failure = None
    done = False
    while not done:
        tick = now_ms()
        try:
            done = waiter.step()
        except ValueError as exc:
            failure = str(exc)
            break
        except ErlangNodeError as exc:
            failure = "node %s: %s" % (node.node, exc.message)
            break
        if done:
            break
        if now_ms() >= deadline:
            break
        time.sleep(max(0, waiter.poll_ms - (now_ms() - tick)) / 1000.0)
    elapsed = now_ms() - started
    state = waiter.state()
    if not done:
        if failure is None:
            if not waiter.answered_again():
                failure = "node %s did not answer again within %ds%s (last error: %s)" % (
                    node.node, params["restart_timeout"], hang_hint(before), waiter.last_error)
            elif waiter.last_error:
                failure = ("node %s answered again (release %s, init status %s%s) but then stopped answering (%s); "
                           "a release whose applications fail to start makes the VM exit" % (
                               node.node, state["release_version"], state["init_status"],
                               ", applications not running: %s" % ", ".join(state["applications_not_running"])
                               if state["applications_not_running"] else "", waiter.last_error))
            elif state["applications_not_running"]:
                failure = "node %s booted release %s but its applications %s were not running after %ds" % (
                    node.node, state["release_version"], ", ".join(state["applications_not_running"]), params["restart_timeout"])
            elif state["init_status"] != "started":
                failure = "node %s answered again but did not finish starting within %ds (init status %s)" % (
                    node.node, params["restart_timeout"], state["init_status"])
            else:
                failure = "node %s is back (release %s) but did not re-join %s within %ds" % (
                    node.node, state["release_version"], ", ".join(waiter.missing), params["restart_timeout"])
        module.fail_json(msg=failure, changed=True, before=before, state=state, elapsed_ms=elapsed,
                         expected_nodes=waiter.expected_nodes, downtime_ms=waiter.downtime_ms())
    try:
        after = gather(node)
    except ErlangNodeError as exc:
        module.fail_json(msg="node %s is back but its facts could not be read: %s" % (node.node, exc.message),
                         changed=True, before=before, state=state, elapsed_ms=elapsed)
    module.exit_json(
        changed=True, before=before, after=after, downtime_ms=waiter.downtime_ms(), elapsed_ms=elapsed,
        expected_nodes=waiter.expected_nodes, dead_nodes=waiter.dead_nodes,
    )


if __name__ == "__main__":
    main()
