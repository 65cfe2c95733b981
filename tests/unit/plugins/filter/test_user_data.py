# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.skunkworks.erlang_ec2.plugins.filter.user_data import FilterModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract

user_data = FilterModule().filters()["user_data"]


def test_worker_user_data_is_what_cluster_instances_renders():
    text = user_data("demo", boot_server_ip="10.0.0.4")
    assert text == contract.render_user_data("demo", "worker", "worker", "10.0.0.4", "boot")
    assert contract.parse_user_data(text) == {
        "ERLANG_CLUSTER": "demo", "ERLANG_ROLE": "worker", "ERLANG_NODE_NAME": "worker",
        "ERLANG_BOOT_SERVER_IP": "10.0.0.4", "ERLANG_BOOT_NODE": "boot@10.0.0.4",
        "ERLANG_BOOT_SERVER_IPS": "10.0.0.4", "ERLANG_BOOT_NODES": "boot@10.0.0.4"}


def test_every_boot_server_is_listed_sorted():
    text = user_data("demo", boot_server_ips=["10.0.1.4", "10.0.0.10", "10.0.0.9"])
    assert text == contract.render_user_data("demo", "worker", "worker", boot_server_ips=["10.0.0.9", "10.0.0.10", "10.0.1.4"])
    parsed = contract.parse_user_data(text)
    assert parsed["ERLANG_BOOT_SERVER_IPS"] == "10.0.0.9,10.0.0.10,10.0.1.4"
    assert parsed["ERLANG_BOOT_NODES"] == "boot@10.0.0.9,boot@10.0.0.10,boot@10.0.1.4"
    assert parsed["ERLANG_BOOT_SERVER_IP"] == "10.0.0.9"


def test_options_reach_the_user_data():
    text = user_data("demo", role="worker", node_name="api", boot_server_ip="10.0.0.4", boot_node_name="code",
                     extra={"bootstrap_deadline": "120"})
    parsed = contract.parse_user_data(text)
    assert parsed["ERLANG_NODE_NAME"] == "api" and parsed["ERLANG_BOOT_NODE"] == "code@10.0.0.4"
    assert parsed["ERLANG_BOOTSTRAP_DEADLINE"] == "120"
    assert "ERLANG_BOOT_SERVER_IP" not in contract.parse_user_data(user_data("demo", role="boot_server"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(cluster="Bad Name"), "cluster"),
    (dict(cluster="demo", role="controller"), "invalid role"),
    (dict(cluster="demo", boot_server_ip="10.0.0"), "not a dotted-quad"),
    (dict(cluster="demo", extra={"cookie": "x"}), "must not carry secrets"),
    (dict(cluster="demo", boot_server_ips="10.0.0.4"), "must be a list"),
    (dict(cluster="demo", boot_server_ips=["10.0.0.4", "x"]), "not a dotted-quad"),
    (dict(cluster="demo", boot_server_ip="10.0.0.4", boot_server_ips=["10.0.0.5"]), "not both"),
])
def test_bad_input_is_a_filter_error(kwargs, message):
    cluster = kwargs.pop("cluster")
    with pytest.raises(AnsibleFilterError, match=message):
        user_data(cluster, **kwargs)
