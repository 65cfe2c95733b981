# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter user_data: the user data of an instance of an Erlang cluster (docs in user_data.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract


def user_data(cluster, role=contract.ROLE_WORKER, node_name=None, boot_server_ip=None, boot_node_name=None, extra=None,
              boot_server_ips=None):
    """The same text skunkworks.erlang_ec2.cluster_instances gives new instances (one renderer for both)."""
    try:
        if not node_name and role in contract.ROLES:
            node_name = contract.default_node_name(role)
        if boot_server_ips is not None and (isinstance(boot_server_ips, (str, bytes, dict)) or not hasattr(boot_server_ips, "__iter__")):
            raise contract.ClusterContractError("boot_server_ips must be a list of addresses, got %r" % (boot_server_ips,))
        return contract.render_user_data(cluster, role, node_name, boot_server_ip=boot_server_ip or None,
                                         boot_node_name=boot_node_name or None, extra=extra or {},
                                         boot_server_ips=list(boot_server_ips or []))
    except contract.ClusterContractError as e:
        raise AnsibleFilterError("skunkworks.erlang_ec2.user_data: %s" % e)


class FilterModule(object):
    def filters(self):
        return {"user_data": user_data}
