# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.filter.contract import FilterModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract

FILTERS = FilterModule().filters()


@pytest.mark.parametrize("name, group", [
    ("demo", "erlang_cluster_demo"), ("demo-1", "erlang_cluster_demo_1"), ("a_b", "erlang_cluster_a_b"),
])
def test_cluster_group_is_the_inventory_group(name, group):
    assert FILTERS["cluster_group"](name) == group == contract.cluster_group(name)


def test_cluster_group_refuses_a_non_string():
    with pytest.raises(AnsibleFilterError, match="cluster_group"):
        FILTERS["cluster_group"](None)


def test_user_data_format_is_the_contract():
    fmt = FILTERS["user_data_format"]("v1")
    assert fmt["marker"] == contract.USER_DATA_MARKER
    for key, compiled in (("key_re", contract.USER_DATA_KEY_RE), ("value_re", contract.USER_DATA_VALUE_RE),
                          ("cluster_name_re", contract.CLUSTER_NAME_RE), ("node_name_re", contract.NODE_NAME_RE), ("ipv4_re", contract.IPV4_RE)):
        assert re.compile(fmt[key]).pattern == compiled.pattern


def test_user_data_format_refuses_an_unknown_version():
    with pytest.raises(AnsibleFilterError, match="unknown format"):
        FILTERS["user_data_format"]("v2")


def test_by_address_orders_hosts_numerically_by_their_address():
    hosts = ["a", "b", "c", "d"]
    addresses = {"a": "172.31.0.10", "b": "172.31.0.9", "c": "10.0.0.1"}  # d: no address, its name comes last
    assert FILTERS["by_address"](hosts, addresses) == ["c", "b", "a", "d"]
    assert FILTERS["by_address"](["172.31.1.2", "172.31.0.200", "172.31.0.3"]) == ["172.31.0.3", "172.31.0.200", "172.31.1.2"]
    assert FILTERS["by_address"](hosts, addresses) == contract.sort_by_address(hosts, addresses)


@pytest.mark.parametrize("items, addresses", [("172.31.0.1", None), (["a"], ["172.31.0.1"])])
def test_by_address_refuses_what_is_not_a_list_and_a_dict(items, addresses):
    with pytest.raises(AnsibleFilterError, match="by_address"):
        FILTERS["by_address"](items, addresses)
