# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters cluster_group, user_data_format and by_address: the cluster contract of module_utils/cluster.py, for YAML (docs in *.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract


def cluster_group(cluster):
    """The inventory group of a cluster, as the inventory plugin names it."""
    if not isinstance(cluster, str):
        raise AnsibleFilterError("skunkworks.erlang_ec2.cluster_group: expected a cluster name, got %r" % (cluster,))
    return contract.cluster_group(cluster)


def user_data_format(version="v1"):
    """The marker and patterns of the user-data format, for readers that cannot import cluster.py."""
    if version != "v1":
        raise AnsibleFilterError("skunkworks.erlang_ec2.user_data_format: unknown format %r (known: v1)" % (version,))
    return contract.user_data_format()


def by_address(items, address_of=None):
    """Items ordered by their IPv4 address (address_of maps an item to its address; default the item itself)."""
    if not isinstance(items, (list, tuple)) or (address_of is not None and not isinstance(address_of, dict)):
        raise AnsibleFilterError("skunkworks.erlang_ec2.by_address: expected a list and an optional dict of addresses, got %r, %r"
                                 % (type(items).__name__, type(address_of).__name__))
    return contract.sort_by_address(list(items), address_of)


class FilterModule(object):
    def filters(self):
        return {"cluster_group": cluster_group, "user_data_format": user_data_format, "by_address": by_address}
