# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: host_layout
short_description: The host layout of an Erlang node (paths, unit names, service user)
version_added: 1.1.0
description:
  - Returns one dictionary with every path, unit name and the service user the collection's roles,
    playbooks and modules use on a node, from the one place that defines them
    (C(plugins/module_utils/layout.py)).
  - Four roots can be moved by setting their variable; every path below a root moves with it.
    C(erlang_home) (the service user's home, the cookie and the boot server's allow-list files),
    C(erlang_release_root) (the releases and the C(current) link), C(erlang_user) and C(erlang_group).
  - The roles and playbooks read the result as C(erlang_layout); use it rather than writing a path.
options:
  _terms:
    description: Not used.
    required: false
"""

EXAMPLES = r"""
- name: Where the cookie is on this cluster's nodes
  ansible.builtin.debug:
    msg: "{{ lookup('skunkworks.erlang_ec2.host_layout').cookie_file }}"

- name: A cluster whose nodes keep their state under /data/erlang
  ansible.builtin.import_playbook: skunkworks.erlang_ec2.site
  vars:
    erlang_home: /data/erlang
"""

RETURN = r"""
_raw:
  description:
    - One dictionary. Keys include C(home), C(release_root), C(user), C(group), C(cookie_file),
      C(allow_list_file), C(joined_allow_list_file), C(releases_dir), C(current_link), C(previous_link),
      C(config_dir), C(worker_args_file), C(worker_env_file), C(helpers_dir), C(ebin_dir), C(src_dir),
      C(wait_node_script), C(local_files_script), C(bootstrap_script), C(node_command), C(otp_root),
      C(otp_lib_dir), C(worker_unit), C(boot_server_unit) and C(bootstrap_unit).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import ROOTS, host_layout


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        roots = {}
        for name, (var, _default) in ROOTS.items():
            if var in variables:
                roots[name] = self._templar.template(variables[var])
        try:
            return [host_layout(**roots)]
        except ValueError as e:
            raise AnsibleLookupError("host_layout: %s" % e)
