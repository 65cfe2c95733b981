#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rollout_record
short_description: Append one rollout's outcome to the boot server's rollout log
version_added: 0.2.0
description:
  - Appends O(record) plus C(recorded_at) (UTC) as one JSON line of the rollout log (C(erlang_layout.rollout_log)),
    the log that M(skunkworks.erlang_ec2.cluster_status) reads. The log is created root-owned, of O(group), mode
    C(0640).
  - The same writer (C(module_utils/cluster_status.py)) is used by M(skunkworks.erlang_ec2.cluster_restart) when
    it records a rolling restart itself (its C(record) option); the C(_common) role's C(record_rollout.yml) runs
    this module.
author:
  - Skunkworks developers (@skunkworks)
options:
  path:
    description: The rollout log.
    type: path
    required: true
  record:
    description:
      - "What the rollout did: C(kind), C(release_name), C(release_version), C(result), C(message) and C(nodes) (see
        the C(record_rollout) entry point of the C(_common) role)."
    type: dict
    required: true
  group:
    description: Group of the log when it is written (the service user's group).
    type: str
attributes:
  check_mode:
    support: full
    description: Writes nothing; reports the line it would append.
  diff_mode:
    support: none
    description: No diff.
"""

EXAMPLES = r"""
- name: Record a push
  skunkworks.erlang_ec2.rollout_record:
    path: "{{ erlang_layout.rollout_log }}"
    group: "{{ erlang_layout.group }}"
    record:
      kind: push
      release_name: hello_cluster
      release_version: 2.0.1
      result: ok
      message: 3 node(s) loaded 1 module(s)
      nodes: []
"""

RETURN = r"""
line:
  description: The line appended (in check mode, the line that would be).
  returned: always
  type: str
  sample: '{"kind": "push", "message": "...", "nodes": [], "recorded_at": "2026-11-30T10:00:00Z", "result": "ok"}'
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster_status import append_rollout, rollout_line


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True), record=dict(type="dict", required=True),
                                              group=dict(type="str")), supports_check_mode=True)
    params = module.params
    if module.check_mode:
        module.exit_json(changed=True, line=rollout_line(params["record"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    try:
        line = append_rollout(params["path"], params["record"], params["group"])
    except (OSError, IOError, KeyError) as exc:
        module.fail_json(msg="cannot append to the rollout log %s: %s" % (params["path"], exc))
    module.exit_json(changed=True, line=line)


if __name__ == "__main__":
    main()
