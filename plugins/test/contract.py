# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests cluster_name, node_name and ipv4: the cluster contract of module_utils/cluster.py, for YAML (docs in *.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract


def cluster_name(value):
    """A cluster name (value of the erlang-cluster tag)."""
    return contract.is_cluster_name(value)


def node_name(value, host=None):
    """A node name part; with host, a full node name on that host (True: on any IPv4 address)."""
    return contract.is_node_name(value, host=host)


def ipv4(value):
    """A dotted-quad IPv4 address."""
    return contract.is_ipv4(value)


class TestModule(object):
    def tests(self):
        return {"cluster_name": cluster_name, "node_name": node_name, "ipv4": ipv4}
