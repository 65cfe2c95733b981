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
  require_peers:
    description:
      - Before the restart, the node must have finished starting and be connected to every node of O(expected_nodes)
        (the cluster is healthy); otherwise the module fails with the node untouched (RV(unseen_nodes)).
    type: bool
    default: false
    version_added: 0.2.0
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
unseen_nodes:
  description: With O(require_peers), the expected nodes the node did not see (the module failed, nothing restarted).
  returned: failure
  type: list
  elements: str
  sample: ["worker@172.31.0.7"]
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

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import gather
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    UNAVAILABLE_KINDS,
    ErlangNodeError,
    validate_node,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_restart import (
    RESTART,
    Waiter,
    local_files_problem,
    not_back,
    now_ms,
    poll,
    unseen_peers,
)


def main():
    module = ErlangNodeModule(
        argument_spec=dict(
            restart_timeout=dict(type="int", default=60),
            expected_nodes=dict(type="list", elements="str"),
            expected_version=dict(type="str"),
            poll_interval_ms=dict(type="int", default=75),
            check_local_files=dict(type="bool", default=True),
            require_peers=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    check_params(module)
    run(module, module.node)


def check_params(module):
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


def refuse_missing_local_files(module, node, before):
    """Fail, with the node untouched, when the release it would boot lacks files on its disk."""
    try:
        problem = local_files_problem(node, module.params["timeout"], before)
    except ErlangNodeError as exc:
        module.fail_json_node(exc, msg="cannot check the local files of %s: %s; it was not restarted" % (node.node, exc.message),
                              before=before)
    if problem:
        module.fail_json(msg=problem[0], before=before, missing_local_files=problem[1])


def refuse_unhealthy(module, node, before, expected):
    """With require_peers: fail, with the node untouched, when it does not see every expected node."""
    if before.get("init_status") != "started":
        module.fail_json(msg="refusing to restart %s: it has not finished starting (init status %s); it was not restarted"
                         % (node.node, before.get("init_status")), before=before)
    unseen = unseen_peers(before, expected)
    if unseen:
        module.fail_json(msg="the cluster is not healthy: %s does not see %s; it was not restarted" % (node.node, ", ".join(unseen)),
                         before=before, unseen_nodes=unseen)


def run(module, node):
    """Refuse (facts, local files) -> restart and wait -> report."""
    params = module.params
    try:
        before = gather(node)
    except ErlangNodeError as exc:
        module.fail_json_node(exc, msg="cannot restart %s: %s" % (node.node, exc.message))
    if params["check_local_files"]:
        refuse_missing_local_files(module, node, before)
    if params["expected_nodes"] is None:
        expected = list(before.get("connected_nodes") or [])
    else:
        expected = list(params["expected_nodes"])
    if params["require_peers"]:
        refuse_unhealthy(module, node, before, expected)
    if module.check_mode:
        module.exit_json(
            changed=True, before=before, expected_nodes=expected,
            msg="would restart %s (running %s %s) with init:restart/0 and wait up to %ds for it to answer again%s%s"
            % (node.node, before.get("release_name"), before.get("release_version"), params["restart_timeout"],
               ", connected to %s" % ", ".join(expected) if expected else "",
               ", running version %s" % params["expected_version"] if params["expected_version"] else ""),
        )
    waiter, failure, elapsed = restart_and_wait(module, node, before, expected)
    if failure:
        module.fail_json(msg=failure, changed=True, before=before, state=waiter.state(), elapsed_ms=elapsed,
                         expected_nodes=waiter.expected_nodes, downtime_ms=waiter.downtime_ms())
    try:
        after = gather(node)
    except ErlangNodeError as exc:
        module.fail_json(msg="node %s is back but its facts could not be read: %s" % (node.node, exc.message),
                         changed=True, before=before, state=waiter.state(), elapsed_ms=elapsed)
    module.exit_json(
        changed=True, before=before, after=after, downtime_ms=waiter.downtime_ms(), elapsed_ms=elapsed,
        expected_nodes=waiter.expected_nodes, dead_nodes=waiter.dead_nodes,
    )


def restart_and_wait(module, node, before, expected):
    """init:restart/0, then poll until back as expected: (waiter, failure message or None, elapsed ms)."""
    params = module.params
    started = now_ms()
    waiter = Waiter(node, before.get("incarnation"), expected, params["expected_version"], params["poll_interval_ms"],
                    loaded_only=before.get("applications_not_running") or [])
    try:
        node.call(RESTART)
    except ErlangNodeError as exc:
        if exc.kind not in UNAVAILABLE_KINDS:
            module.fail_json_node(exc, msg="init:restart/0 failed on %s: %s" % (node.node, exc.message), before=before)
    done, failure = poll(waiter, started + params["restart_timeout"] * 1000)
    elapsed = now_ms() - started
    if not done and failure is None:
        failure = not_back(node.node, params["restart_timeout"], waiter, before)
    return waiter, failure, elapsed


if __name__ == "__main__":
    main()
