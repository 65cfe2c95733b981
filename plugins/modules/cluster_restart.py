#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cluster_restart
short_description: Restart the nodes of a cluster a batch at a time, with health gates, stopping at the first failure
version_added: 0.2.0
description:
  - "Drives a rolling restart from one host (the rolling_restart playbook runs it on the boot server's host, which
    holds the cookie and reaches every node): the nodes of O(nodes), in order, O(serial) at a time."
  - "Before a running node goes down: it has finished starting, sees every other node of O(nodes) that answers (the
    cluster is healthy) and, with O(check_local_files), has the release's local files (as
    M(skunkworks.erlang_ec2.node_restart) checks them). Otherwise the module fails with that node untouched."
  - "Each node of a batch is restarted with C(init:restart/0) (or, with C(new_vm), stopped with C(init:stop/1)
    with status 1 so that systemd's C(Restart=on-failure) starts a new VM that reads the release's C(vm.args)). A
    node that does not answer at the start is not called: it is waited for, first, on its own (systemd starts it
    on the current release)."
  - After the batch is back (a new boot, applications started, re-joined, on O(expected_version)), the health gates
    run on each node of it, HTTP (the node's C(health_url)) then Erlang (O(health_mfa)). Then O(pause) seconds of bake
    time before the next batch.
  - The first failure (a node not back in time, on another version, or failing a gate) stops the run; the module
    fails with the per-node report. Switching C(current) back and restarting the touched nodes onto it is the
    playbook's part (this module again, with O(rollback)).
author:
  - Skunkworks developers (@skunkworks)
options:
  nodes:
    description:
      - The nodes to restart, in order. Each is also a peer that the others must see.
      - An empty list only validates the other options (nothing is called).
    type: list
    elements: dict
    required: true
    suboptions:
      node:
        description: The node, C(name@host).
        type: str
        required: true
      health_url:
        description:
          - URL fetched from the host the module runs on after the node is back; it must answer O(health_status)
            (and a body matching O(health_body)).
        type: str
      new_vm:
        description: Restart the node's VM (C(init:stop/1) with status 1, systemd starts it again) instead of C(init:restart/0).
        type: bool
        default: false
  expected_version:
    description: Release version every node must run once back; a node back on another version fails at once.
    type: str
  serial:
    description: How many nodes are restarted at once (a batch).
    type: int
    default: 1
  pause:
    description: Seconds to wait between two batches (bake time), after the gates of the first passed.
    type: int
    default: 0
  restart_timeout:
    description: Seconds a batch may take, from the restart until every node of it is back as expected.
    type: int
    default: 120
  rollback:
    description:
      - Restart nodes back after a failed rollout; the cluster is known not to be healthy, so a node is not required
        to see every other before it goes down. The report's action is C(rolled_back) instead of C(restarted).
    type: bool
    default: false
  only_stale:
    description:
      - "Restart only the running nodes whose release version differs from O(expected_version) (required with it):
        a node already on it is reported C(up_to_date) and not touched. Used to resume a rollout that another host
        started and could not finish (the rolling_restart playbook's failover to the next boot server), so that the
        nodes already restarted onto the new release are not restarted again."
      - "As without it, nodes that do not answer, or answer but have not finished starting (a node the interrupted
        run was restarting), are waited for first, one at a time, before any other node goes down."
    type: bool
    default: false
  health_status:
    description: HTTP status code the C(health_url) of a node must answer.
    type: int
    default: 200
  health_body:
    description: Regular expression (Python C(re.search)) the C(health_url) body must match.
    type: str
  health_mfa:
    description:
      - "C(Module:Function(Args...)) evaluated on each node once back; it must return C(true). Evaluated inside a
        C(catch): an exception fails the gate with its reason."
    type: dict
    suboptions:
      module:
        description: The module, an Erlang atom name.
        type: str
        required: true
      function:
        description: The function, an Erlang atom name.
        type: str
        required: true
      args:
        description: The arguments, each one Erlang term in text form, for example C(hello_cluster) or C("<<\"x\">>").
        type: list
        elements: str
        default: []
  health_retries:
    description: How many times each gate is tried before it fails.
    type: int
    default: 10
  health_delay:
    description: Seconds between two tries of a gate.
    type: int
    default: 1
  health_timeout:
    description: Seconds each try may take (the HTTP request, or the call on the node).
    type: int
    default: 5
  check_local_files:
    description: Before restarting a running node, check its local files (see M(skunkworks.erlang_ec2.node_restart)).
    type: bool
    default: true
  plan:
    description:
      - Only read, change nothing (also in check mode). Returns RV(plan) (per node of O(nodes), whether it runs, the
        local files of the release it would boot that it lacks, whether that release's C(vm.args) needs a new VM),
        and with O(current_link) RV(release_name) and RV(release_version).
    type: bool
    default: false
  current_link:
    description: With O(plan), the boot server's C(current) link (on the host the module runs on) to read the release from.
    type: path
  record:
    description:
      - After a run where every node passed (not in check mode), append the rollout to the boot server's rollout
        log (on the host the module runs on) with the writer of M(skunkworks.erlang_ec2.rollout_record) - C(result)
        C(ok) and the touched nodes' report - so that no task is needed for it. A failed run is not recorded here
        (the caller records it after its rollback).
    type: dict
    suboptions:
      path:
        description: The rollout log (C(erlang_layout.rollout_log)).
        type: path
        required: true
      group:
        description: Group of the log when it is written.
        type: str
      kind:
        description: The record's C(kind).
        type: str
        default: rolling_restart
      release_name:
        description: The record's C(release_name).
        type: str
      release_version:
        description: The record's C(release_version) (default O(expected_version)).
        type: str
  poll_interval_ms:
    description: Milliseconds between two probes while waiting; also the resolution of each node's C(unavailable_ms).
    type: int
    default: 75
  cookie:
    description:
      - The cluster's Erlang cookie; written to a private temporary file, never on a command line or in the result.
      - Mutually exclusive with O(cookie_file).
    type: str
  cookie_file:
    description: A file holding the cookie, read on the host the module runs on (default C(~/.erlang.cookie)).
    type: path
  timeout:
    description: Seconds allowed for each call to a node (C(erl_call -timeout)).
    type: int
    default: 10
  erl_call:
    description: Path of the C(erl_call) program (default the one on E(PATH)).
    type: path
  distribution:
    description:
      - The cluster's distribution protocol; V(tls) calls the nodes through a short-lived hidden C(erl) node with
        O(ssl_dist_optfile) instead of C(erl_call) (docs/tls.md).
    type: str
    choices: [tcp, tls]
    default: tcp
  ssl_dist_optfile:
    description: With O(distribution=tls), the optfile to present (default C(/etc/erlang-ec2/tls/ssl_dist.conf), the node's own).
    type: path
attributes:
  check_mode:
    support: full
    description: Validates the options and says which nodes it would restart, in which batches; nothing is called.
  diff_mode:
    support: none
    description: No diff.
notes:
  - The module calls every node with C(erl_call) from the host it runs on, which must reach their epmd and
    distribution ports (and the health URLs).
requirements:
  - "C(erl_call) (Erlang/OTP C(erl_interface); Debian package C(erlang-base))."
"""

EXAMPLES = r"""
- name: Restart three workers one at a time, each must serve /status before the next
  skunkworks.erlang_ec2.cluster_restart:
    nodes:
      - {node: worker@172.31.0.5, health_url: "http://172.31.0.5:8080/status"}
      - {node: worker@172.31.0.6, health_url: "http://172.31.0.6:8080/status"}
      - {node: worker@172.31.0.7, health_url: "http://172.31.0.7:8080/status"}
    expected_version: 2.0.0
    health_body: '"version":"2\.0\.0"'
    health_mfa: {module: hello_cluster, function: http_port, args: []}
    pause: 10
    cookie_file: /var/lib/erlang-ec2/.erlang.cookie
  register: rollout

- name: Resume that rollout from another host, restarting only the workers not yet on 2.0.0
  skunkworks.erlang_ec2.cluster_restart:
    nodes:
      - {node: worker@172.31.0.5}
      - {node: worker@172.31.0.6}
      - {node: worker@172.31.0.7}
    expected_version: 2.0.0
    only_stale: true
    cookie_file: /var/lib/erlang-ec2/.erlang.cookie
"""

RETURN = r"""
nodes:
  description: One entry per node of O(nodes), in order.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: The node.
      type: str
    action:
      description:
        - C(restarted) (or C(rolled_back) with O(rollback)), C(failed), or C(not_reached) (the run stopped before it).
        - C(up_to_date) with O(only_stale), for a running node already on O(expected_version) (not touched).
      type: str
    touched:
      description: Whether the node was restarted (or, being down, waited for).
      type: bool
    unavailable_ms:
      description: How long the node did not answer (last answer of the old boot to first of the new one).
      type: int
    elapsed_ms:
      description: Milliseconds from its batch's restart until it was back (or the run gave up).
      type: int
    before_version:
      description: The release version it ran before (none when it was down).
      type: str
    after_version:
      description: The release version it runs once back.
      type: str
    message:
      description: Why it failed.
      type: str
  sample: [{"node": "worker@172.31.0.5", "action": "restarted", "touched": true, "unavailable_ms": 880, "elapsed_ms": 2010,
            "before_version": "1.0.0", "after_version": "2.0.0", "message": ""}]
plan:
  description: With O(plan), one entry per node.
  returned: with O(plan)
  type: list
  elements: dict
  sample: [{"node": "worker@172.31.0.5", "running": true, "missing_local_files": [], "new_vm": false, "message": ""}]
release_name:
  description: With O(plan) and O(current_link), the name of the release C(current) points at (none without one).
  returned: with O(plan)
  type: str
  sample: hello_cluster
release_version:
  description: With O(plan) and O(current_link), its version.
  returned: with O(plan)
  type: str
  sample: 2.0.0
failed_node:
  description: The node the run stopped at.
  returned: failure
  type: str
  sample: worker@172.31.0.6
batches:
  description: The batches, in order (nodes that were down first, one each).
  returned: always
  type: list
  elements: list
  sample: [["worker@172.31.0.5"], ["worker@172.31.0.6"]]
recorded:
  description: With O(record), the rollout log's line appended (none without O(record)).
  returned: success, not in check mode
  type: str
  sample: '{"kind": "rolling_restart", "message": "3 worker(s) restarted onto 2.0.0", "nodes": [], "recorded_at": "2026-11-30T10:00:00Z"}'
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster_status import append_rollout

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    MUTUALLY_EXCLUSIVE,
    ErlangNodeError,
    argument_spec as node_argument_spec,
    module_runner,
    node_from_params,
    validate_node,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_rollout import Rollout, check_gates, current_release


def argument_spec():
    spec = dict((key, value) for key, value in node_argument_spec().items() if key != "node")
    spec.update(
        nodes=dict(type="list", elements="dict", required=True, options=dict(
            node=dict(type="str", required=True), health_url=dict(type="str"), new_vm=dict(type="bool", default=False))),
        expected_version=dict(type="str"),
        serial=dict(type="int", default=1),
        pause=dict(type="int", default=0),
        restart_timeout=dict(type="int", default=120),
        rollback=dict(type="bool", default=False),
        only_stale=dict(type="bool", default=False),
        health_status=dict(type="int", default=200),
        health_body=dict(type="str"),
        health_mfa=dict(type="dict", options=dict(
            module=dict(type="str", required=True), function=dict(type="str", required=True),
            args=dict(type="list", elements="str", default=[]))),
        health_retries=dict(type="int", default=10),
        health_delay=dict(type="int", default=1),
        health_timeout=dict(type="int", default=5),
        check_local_files=dict(type="bool", default=True),
        poll_interval_ms=dict(type="int", default=75),
        plan=dict(type="bool", default=False),
        current_link=dict(type="path"),
        record=dict(type="dict", options=dict(
            path=dict(type="path", required=True), group=dict(type="str"), kind=dict(type="str", default="rolling_restart"),
            release_name=dict(type="str"), release_version=dict(type="str"))),
    )
    return spec


def check_params(module):
    params = module.params
    errors = check_gates(params)
    if params["restart_timeout"] < 1:
        errors.append("restart_timeout must be at least 1 second")
    if params["only_stale"] and not params["expected_version"]:
        errors.append("only_stale needs expected_version (the release the nodes must end on)")
    if not 10 <= params["poll_interval_ms"] <= 5000:
        errors.append("poll_interval_ms must be between 10 and 5000")
    names = [entry["node"] for entry in params["nodes"]]
    if len(set(names)) != len(names):
        errors.append("nodes: a node is listed twice")
    for name in names:
        try:
            validate_node(name)
        except ErlangNodeError as exc:
            errors.append("nodes: %s" % exc.message)
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)


def plan(module):
    """Read-only: the current release and what each node needs before its restart."""
    params = module.params
    name, version = current_release(params["current_link"]) if params["current_link"] else (None, None)
    rollout = Rollout(params, lambda node: node_from_params(dict(params, node=node), module_runner(module)))
    try:
        nodes = rollout.plan()
    finally:
        rollout.close()
    module.exit_json(changed=False, release_name=name, release_version=version, plan=nodes)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    check_params(module)
    params = module.params
    names = [entry["node"] for entry in params["nodes"]]
    if params["plan"]:
        plan(module)
    if not names or module.check_mode:
        size = params["serial"]
        module.exit_json(changed=bool(names), nodes=[dict(node=name, action="not_reached", touched=False) for name in names],
                         batches=[names[i:i + size] for i in range(0, len(names), size)],
                         msg="would restart %d node(s), %d at a time" % (len(names), size) if names else "options are valid")
    runner = module_runner(module)
    rollout = Rollout(params, lambda name: node_from_params(dict(params, node=name), runner), log=module.log)
    try:
        report, failure = rollout.run()
    except ErlangNodeError as exc:
        rollout.close()
        module.fail_json(msg="rolling restart stopped: %s" % exc.message, nodes=rollout.report, error=exc.to_dict(),
                         changed=any(entry["touched"] for entry in rollout.report))
    rollout.close()
    changed = any(entry["touched"] for entry in report)
    if failure:
        failed = [entry["node"] for entry in report if entry["action"] == "failed"]
        module.fail_json(msg=failure, nodes=report, failed_node=failed[0] if failed else None, changed=changed,
                         batches=rollout.done_batches)
    module.exit_json(changed=changed, nodes=report, batches=rollout.done_batches, recorded=record(module, report))


def record(module, report):
    """With the record option: the rollout log's line appended for this successful run (else None)."""
    options, version = module.params["record"], module.params["expected_version"]
    if not options:
        return None
    version = options["release_version"] or version
    touched = [node for node in report if node["touched"]]
    entry = dict(kind=options["kind"], release_name=options["release_name"], release_version=version, result="ok",
                 message="%d worker(s) restarted onto %s" % (len(touched), version), nodes=touched)
    try:
        return append_rollout(options["path"], entry, options["group"])
    except (OSError, IOError, KeyError) as exc:
        module.fail_json(msg="the nodes were restarted, but the rollout log %s could not be written: %s" % (options["path"], exc),
                         nodes=report, changed=True)


if __name__ == "__main__":
    main()
