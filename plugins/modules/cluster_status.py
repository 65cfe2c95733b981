#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cluster_status
short_description: One Erlang cluster at a glance, as rows and as a text table
version_added: 0.2.0
description:
  - Runs on the boot server. Calls the boot server's node once; it reads its own state, then every other boot
    server's and worker's with C(erpc:multicall/3) (one round trip for the whole cluster). If the boot server's node
    does not answer, each other node is called on its own.
  - For each node, returns its role, state (C(up), C(starting), C(failing) when an application of its release is
    not running, or C(down)), release name and version (C(init:script_id/0)), connected peers and the missing ones
    (every other node of O(workers), O(boot_servers) and the boot server), uptime, and the unavailability of its last restart read
    from the boot server's rollout log.
  - A node that does not answer is a row in state C(down) with the reason, not a failure.
  - Also returns the last O(rollouts) records of the rollout log (C(erlang_layout.rollout_log), one JSON object a
    line, written by the C(_common) role's C(record_rollout.yml)), and RV(table), the whole status as lines of text
    for a person to read.
  - Read-only. A wrong cookie or a missing C(erl_call) fails the module.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
  - skunkworks.erlang_ec2.erlang_node.read_only
options:
  workers:
    description:
      - The Erlang node names (C(name@ip)) of the cluster's workers, as the inventory's C(erlang_node) gives them.
      - O(node) is the boot server's node.
    type: list
    elements: str
    default: []
  boot_servers:
    description:
      - The node names of the cluster's other boot servers (O(node) may be among them; it is not listed twice).
        Each is a row of role C(boot_server), read in the same round trip as the workers, with the release its own
        C(current) link points at (O(current_link), the same path on every boot server), so a boot server that is
        not level with the others shows.
      - Every node's missing peers count them too.
    type: list
    elements: str
    default: []
    version_added: 1.1.0
  cluster:
    description: The cluster's name, for the table's heading.
    type: str
    required: true
  rollout_log:
    description:
      - The boot server's rollout log (C(erlang_layout.rollout_log)). A missing file means no rollout yet.
      - Not read when omitted.
    type: path
  current_link:
    description:
      - The boot server's C(current) release link (C(erlang_layout.current_link)). When given, the boot server's row
        shows the release it serves (its C(releases/<vsn>) directory and C(<rel>.rel) name); its own VM runs plain
        Erlang/OTP, which the row shows otherwise.
    type: path
  rollouts:
    description: How many of the most recent rollouts to return and print (0 for none).
    type: int
    default: 1
  node_timeout:
    description: Seconds to wait for each node's answer; a node slower than this is shown C(down).
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: Status of the cluster whose boot server this is
  skunkworks.erlang_ec2.cluster_status:
    node: "{{ erlang_node }}"
    cookie_file: "{{ erlang_layout.cookie_file }}"
    cluster: "{{ erlang_cluster }}"
    workers: "{{ groups[erlang_cluster | skunkworks.erlang_ec2.cluster_group] | map('extract', hostvars)
      | selectattr('erlang_role', 'eq', 'worker') | map(attribute='erlang_node') | select | list }}"
    rollout_log: "{{ erlang_layout.rollout_log }}"
    current_link: "{{ erlang_layout.current_link }}"
  register: status

- name: Print it
  ansible.builtin.debug:
    msg: "{{ status.table }}"
"""

RETURN = r"""
nodes:
  description:
    - One row per node, the boot server first, then the other boot servers in the order of O(boot_servers), then the
      workers in the order of O(workers).
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: The node name.
      type: str
    role:
      description: C(boot_server) or C(worker).
      type: str
    reachable:
      description: Whether the node answered.
      type: bool
    state:
      description: C(up), C(starting), C(stopping), C(failing) (an application of its release is not running) or C(down).
      type: str
    reason:
      description: Why the node is down (null when it answered).
      type: str
    release_name:
      description: The release the node booted (null when down); on the boot server, the release C(current) points at when O(current_link) is given.
      type: str
    release_version:
      description: Its version (null when down).
      type: str
    connected_nodes:
      description: The visible nodes it is connected to.
      type: list
      elements: str
    missing_nodes:
      description: The other nodes of the cluster it is not connected to.
      type: list
      elements: str
    uptime_ms:
      description: Milliseconds since its VM started (null when down).
      type: int
    applications_not_running:
      description: Applications of its release that are loaded but not running.
      type: list
      elements: str
    last_restart_unavailable_ms:
      description: How long the node was unavailable in the newest rollout of the whole log that restarted it, or null.
      type: int
    last_restart_at:
      description: When that rollout was recorded (UTC, ISO 8601), or null.
      type: str
  sample:
    - {"node": "boot@172.31.0.4", "role": "boot_server", "reachable": true, "state": "up", "reason": null,
       "release_name": "hello_cluster", "release_version": "1.0.1", "connected_nodes": ["worker@172.31.0.5"],
       "missing_nodes": [], "uptime_ms": 3600000, "applications_not_running": [],
       "last_restart_unavailable_ms": null, "last_restart_at": null}
rollouts:
  description: The last O(rollouts) records of the rollout log, oldest first, as written by C(record_rollout.yml).
  returned: always
  type: list
  elements: dict
  sample:
    - {"kind": "rolling_restart", "release_name": "hello_cluster", "release_version": "1.0.1", "result": "ok",
       "message": "", "recorded_at": "2026-11-30T09:40:00Z",
       "nodes": [{"node": "worker@172.31.0.5", "action": "restarted", "unavailable_ms": 1210, "modules": [], "message": ""}]}
table:
  description: The status as lines of text (a table of the nodes, then each rollout's per-node summary).
  returned: always
  type: list
  elements: str
  sample:
    - "Cluster demo: 2 node(s), 2 up, 0 not up"
    - "NODE               ROLE         STATE  RELEASE              PEERS  UPTIME  LAST RESTART DOWNTIME"
up:
  description: Whether every node is up and sees every other node.
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster_status
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    ErlangNode,
    ErlangNodeError,
    module_runner,
    validate_node,
)


def read_log(module):
    """Every record of the rollout log, oldest first ([] without one)."""
    path = module.params["rollout_log"]
    if not path:
        return []
    try:
        records, bad = cluster_status.read_rollout_log(path)
    except (IOError, OSError) as exc:
        module.warn("cannot read the rollout log %s: %s" % (path, exc))
        return []
    if bad:
        module.warn("the rollout log %s has %d line(s) that are not JSON objects; skipped" % (path, bad))
    return records


def main():
    module = ErlangNodeModule(
        argument_spec=dict(
            workers=dict(type="list", elements="str", default=[]),
            boot_servers=dict(type="list", elements="str", default=[]),
            cluster=dict(type="str", required=True),
            rollout_log=dict(type="path"),
            current_link=dict(type="path"),
            rollouts=dict(type="int", default=1),
            node_timeout=dict(type="int", default=5),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["rollouts"] < 0 or params["node_timeout"] < 1:
        module.fail_json(msg="rollouts must be >= 0 and node_timeout >= 1")
    via = module.node
    workers = [worker for worker in params["workers"] if worker != via.node]
    boot_servers = [node for node in params["boot_servers"] if node != via.node and node not in workers]
    for option, names in (("workers", workers), ("boot_servers", boot_servers)):
        try:
            for name in names:
                validate_node(name)
        except ErlangNodeError as exc:
            module.fail_json_node(exc, msg="%s: %s" % (option, exc.message))

    def direct(name):
        return ErlangNode(name, module_runner(module), cookie=params["cookie"], cookie_file=params["cookie_file"],
                          timeout=params["node_timeout"], erl_call=params["erl_call"],
                          distribution=params["distribution"], ssl_dist_optfile=params["ssl_dist_optfile"])

    try:
        nodes = cluster_status.gather_cluster(via, via.node, boot_servers + workers, params["node_timeout"], direct,
                                              params["current_link"])
    except ErlangNodeError as exc:
        module.fail_json_node(exc)
    for node in [via.node] + boot_servers:
        nodes[node] = cluster_status.with_served_release(nodes[node], cluster_status.served_release(nodes[node]))
    records = read_log(module)
    shown = records[-params["rollouts"]:] if params["rollouts"] else []
    rows = cluster_status.status_rows(via.node, "boot_server", workers, nodes, records, boot_servers)
    up = all(row["state"] == "up" and not row["missing_nodes"] for row in rows)
    module.exit_json(changed=False, nodes=rows, rollouts=shown, up=up,
                     table=cluster_status.render(params["cluster"], rows, shown))


if __name__ == "__main__":
    main()
