# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter instance_tags: the tags of an instance of an Erlang cluster (docs in instance_tags.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import ec2_cluster


def instance_tags(cluster, role=contract.ROLE_WORKER, node_name=None, tags=None, join=None):
    """The tags skunkworks.erlang_ec2.cluster_instances gives new instances (one place for both)."""
    try:
        contract.validate_cluster_name(cluster)
        node_name = node_name or contract.default_node_name(contract.validate_role(role))
        contract.validate_node_name(node_name)
        if join is not None:
            contract.validate_join(join)
    except contract.ClusterContractError as e:
        raise AnsibleFilterError("skunkworks.erlang_ec2.instance_tags: %s" % e)
    return ec2_cluster.instance_tags(cluster, role, node_name, tags or {}, join)


class FilterModule(object):
    def filters(self):
        return {"instance_tags": instance_tags}
