#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: node_info
short_description: Facts about a running Erlang node
version_added: 0.1.0
description:
  - Calls an Erlang node with C(erl_call) and returns its OTP release, ERTS version, running release,
    applications, connected nodes, code loader and boot hosts.
  - A node that cannot be reached is not a failure; the module returns RV(reachable=false) and a RV(reason).
    A wrong cookie, a bad argument or a missing C(erl_call) are failures.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
  - skunkworks.erlang_ec2.erlang_node.read_only
"""

EXAMPLES = r"""
- name: Facts of a worker (cookie from ~/.erlang.cookie of the user running the module)
  skunkworks.erlang_ec2.node_info:
    node: worker@172.31.0.5
  register: worker

- name: Show what runs there
  ansible.builtin.debug:
    msg: "{{ worker.release_name }} {{ worker.release_version }} on OTP {{ worker.otp_release }}"
  when: worker.reachable

- name: Facts of the boot server with the service user's cookie (from the host layout)
  skunkworks.erlang_ec2.node_info:
    node: "{{ erlang_boot_node }}"
    cookie_file: "{{ lookup('skunkworks.erlang_ec2.host_layout').cookie_file }}"
    timeout: 5
"""

RETURN = r"""
reachable:
  description: Whether the node answered.
  returned: always
  type: bool
  sample: true
reason:
  description: Why the node did not answer (not running, host unreachable, timeout).
  returned: when RV(reachable=false)
  type: str
  sample: "node worker@172.31.0.5 is not running: epmd on 172.31.0.5 has no node named 'worker'"
reason_kind:
  description: The cause as a keyword, one of C(not_running), C(unreachable), C(timeout), C(connection_lost).
  returned: when RV(reachable=false)
  type: str
  sample: not_running
node:
  description: The node's own name.
  returned: when reachable
  type: str
  sample: worker@172.31.0.5
otp_release:
  description: The OTP release (C(erlang:system_info(otp_release))).
  returned: when reachable
  type: str
  sample: "25"
erts_version:
  description: The ERTS version; a boot server serves only workers with exactly the same one.
  returned: when reachable
  type: str
  sample: 13.1.5
release_name:
  description: Name of the release the node runs (pushed, else booted; see RV(release_version)).
  returned: when reachable
  type: str
  sample: hello_cluster
release_version:
  description:
    - Version of the release the node runs. After a hot code push (the code_push module) the pushed release's,
      until the node restarts; otherwise the one it booted (C(init:script_id/0)).
  returned: when reachable
  type: str
  sample: 1.0.0
booted_release_version:
  description: Version of the release the node booted (C(init:script_id/0)), whatever was pushed since.
  returned: when reachable
  type: str
  sample: 1.0.0
applications:
  description: Running applications (C(application:which_applications/0)).
  returned: when reachable
  type: list
  elements: dict
  contains:
    name:
      description: Application name.
      type: str
    description:
      description: Application description.
      type: str
    version:
      description: Application version.
      type: str
  sample: [{"name": "hello_cluster", "description": "Example application", "version": "1.0.0"}]
connected_nodes:
  description: Visible nodes the node is connected to (C(nodes/0)), sorted.
  returned: when reachable
  type: list
  elements: str
  sample: ["boot@172.31.0.4"]
loader:
  description: The code loader, C(inet) for a diskless node served by a boot server, C(efile) otherwise.
  returned: when reachable
  type: str
  sample: inet
boot_hosts:
  description: The boot server addresses the node was started with (C(-hosts)).
  returned: when reachable
  type: list
  elements: str
  sample: ["172.31.0.4"]
uptime_ms:
  description: Milliseconds since the VM started (not reset by C(init:restart/0)).
  returned: when reachable
  type: int
  sample: 123456
init_status:
  description: The init process's status, C(started), C(starting) or C(stopping).
  returned: when reachable
  type: str
  sample: started
applications_not_running:
  description:
    - Loaded applications that are not running, included applications aside.
    - In embedded mode this names an application of the release that failed to start (empty on a healthy node).
  returned: when reachable
  type: list
  elements: str
  sample: []
incarnation:
  description: Identity of the node's current boot (the application controller's pid); it changes with every C(init:restart/0).
  returned: when reachable
  type: str
  sample: "<worker@172.31.0.5.44.0>"
"""

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import gather
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import UNAVAILABLE_KINDS, ErlangNodeError


def main():
    module = ErlangNodeModule(supports_check_mode=True)
    try:
        facts = gather(module.node)
    except ErlangNodeError as exc:
        if exc.kind in UNAVAILABLE_KINDS:
            module.exit_json(changed=False, reachable=False, reason=exc.message, reason_kind=exc.kind)
        module.fail_json_node(exc)
    module.exit_json(changed=False, reachable=True, **facts)


if __name__ == "__main__":
    main()
