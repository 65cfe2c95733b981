# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.filter.instance_tags import FilterModule

instance_tags = FilterModule().filters()["instance_tags"]


def test_self_joining_worker_tags_and_contract_wins():
    tags = instance_tags("demo", join="self", tags={"team": "x", "erlang-role": "boot_server"})
    assert tags == {"Name": "demo-worker", "team": "x", "erlang-cluster": "demo", "erlang-role": "worker",
                    "erlang-node-name": "worker", "erlang-join": "self"}


def test_boot_server_tags_have_no_join():
    assert instance_tags("demo", role="boot_server") == {
        "Name": "demo-boot_server", "erlang-cluster": "demo", "erlang-role": "boot_server", "erlang-node-name": "boot"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(cluster="Demo!"), "cluster"),
    (dict(cluster="demo", role="db"), "invalid role"),
    (dict(cluster="demo", node_name="9x"), "node name"),
    (dict(cluster="demo", join="pull"), "invalid join"),
])
def test_bad_input_is_a_filter_error(kwargs, message):
    cluster = kwargs.pop("cluster")
    with pytest.raises(AnsibleFilterError, match=message):
        instance_tags(cluster, **kwargs)
