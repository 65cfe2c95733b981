#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: code_push
short_description: Hot-load a release's changed modules into every running node, verified, reverted on failure
version_added: 0.2.0
description:
  - Runs on the boot server host and calls the boot server's node (O(node)), which reads the running release
    (O(old_dir)) and the new one (O(new_dir)) from its own disk and drives every node of O(nodes) over distribution.
  - Finds the modules that differ by MD5 (C(beam_lib:md5/1) of the new beams against C(erlang:get_module_info(M, md5))
    on each node). A node that runs the release takes each module it runs from the old release that the new one
    changes, and the modules new in the release; any other node (the boot server) only the modules it runs from the
    old release.
  - Refuses before any change, naming the node and module, when a node does not answer, runs another ERTS than the
    release names, runs a module from neither release, still runs old code of a changed module (unless O(purge=kill)),
    or rejects a new binary (C(code:prepare_loading/1)).
  - Refuses structural changes a hot load cannot do, unless O(allow_structural=true) (then it changes nothing
    and returns RV(fallback=rolling_restart)) - another release name, an application added or removed, a changed
    C(mod), C(applications), C(included_applications) or C(start_phases) in an C(.app), a removed module, a changed
    supervisor module, a changed C(sys.config) or C(vm.args), a changed file of the local-files manifest (C(priv) trees).
  - Then loads the new binaries on every node at once (C(code:atomic_load/1); modules with C(-on_load) through
    C(code:load_binary/3)), checks every node reports the new MD5s, and makes nodes running the release report it
    (C(application_controller:change_application_data/2) with the new C(.app) data, the application environment kept,
    code paths moved to the new release, and a kernel environment marker C(erlang_ec2_pushed_release) that
    C(init:restart/0) drops). The node_info module's RV(release_version) reads that marker.
  - On any failure every node that changed goes back to its previous binaries (read from the files it loaded them
    from) and application data, and the module fails with the per-node report.
  - It does not switch C(current); the push playbook does that after success.
author:
  - Skunkworks developers (@skunkworks)
extends_documentation_fragment:
  - skunkworks.erlang_ec2.erlang_node
options:
  new_dir:
    description: The new release's directory on the boot server (C(releases/<vsn>), with its C(.rel) and C(lib/)).
    type: path
    required: true
  old_dir:
    description: The running release's directory on the boot server (where C(current) points).
    type: path
    required: true
  nodes:
    description: Every node to push to (workers and the boot server), C(name@host).
    type: list
    elements: str
    required: true
  purge:
    description:
      - V(soft) refuses the push when a process still runs old code of a changed module (C(code:soft_purge/1)).
      - V(kill) kills such processes (C(code:purge/1)) before loading.
    type: str
    choices: [soft, kill]
    default: soft
  allow_structural:
    description: Do not fail on a structural change; return RV(fallback=rolling_restart) and change nothing.
    type: bool
    default: false
  call_timeout:
    description: Seconds each node may take for one step (the boot server's rpc to it).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description: Runs every read-only check (MD5s, old code, binaries' validity) and reports what would change.
  diff_mode:
    support: full
    description: Lists, per node, the modules that would change with their MD5 before and after.
"""

EXAMPLES = r"""
- name: Push the release installed beside the current one
  skunkworks.erlang_ec2.code_push:
    node: "{{ erlang_boot_node }}"
    cookie_file: "{{ erlang_layout.cookie_file }}"
    old_dir: /srv/erlang-ec2/releases/2.0.0
    new_dir: /srv/erlang-ec2/releases/2.0.1
    nodes: "{{ [erlang_boot_node] + groups['erlang_workers'] | map('extract', hostvars, 'erlang_node') | list }}"
  register: pushed
"""

RETURN = r"""
release_name:
  description: The new release's name.
  returned: always
  type: str
  sample: hello_cluster
release_version:
  description: The new release's version.
  returned: always
  type: str
  sample: 2.0.1
running_version:
  description: The version of the release in O(old_dir).
  returned: always
  type: str
  sample: 2.0.0
structural:
  description: Structural changes found (a hot load cannot do them).
  returned: always
  type: list
  elements: str
  sample: ["application hello_cluster: applications changes from [kernel,stdlib] to [kernel,stdlib,crypto]"]
fallback:
  description: V(rolling_restart) when RV(structural) is not empty and O(allow_structural=true), else V(none).
  returned: success
  type: str
  sample: none
refusals:
  description: Why the push was refused, one line per node and module.
  returned: when refused
  type: list
  elements: str
  sample: ["worker@172.31.0.5: processes still run old code of hello_loop (purge: kill would kill them): <0.93.0> ..."]
load_ms:
  description: Milliseconds from the start of the load to every node verified (the only time nodes run a mix of old and new code).
  returned: when something was loaded
  type: int
  sample: 180
nodes:
  description:
    - Per node, in the rollout log's shape. C(action) is C(pushed), C(skipped), C(reverted) or C(failed)
      (in check mode and on a refusal, C(push) or C(skip), what would happen).
  returned: always
  type: list
  elements: dict
  sample: [{"node": "worker@172.31.0.5", "action": "pushed", "modules": ["hello_cluster"], "unavailable_ms": 0, "message": ""}]
"""

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.code_push import PushError, push
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError, validate_node


def main():
    module = ErlangNodeModule(
        argument_spec=dict(
            new_dir=dict(type="path", required=True),
            old_dir=dict(type="path", required=True),
            nodes=dict(type="list", elements="str", required=True),
            purge=dict(type="str", choices=["soft", "kill"], default="soft"),
            allow_structural=dict(type="bool", default=False),
            call_timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        for name in params["nodes"]:
            validate_node(name)
    except ErlangNodeError as exc:
        module.fail_json_node(exc)
    if not params["nodes"] or params["call_timeout"] < 1:
        module.fail_json(msg="nodes must name at least one node and call_timeout be >= 1")
    try:
        result = push(module.node, params, module.check_mode)
    except PushError as exc:
        module.fail_json(msg=exc.message, **exc.result)
    except ErlangNodeError as exc:
        module.fail_json_node(exc, msg="push failed before loading anything or while talking to the boot server: %s" % exc.message)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
