# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster


def test_user_data_round_trip_for_a_worker():
    text = cluster.render_user_data("demo", "worker", "worker", boot_server_ip="172.31.0.4")
    assert text.splitlines()[0] == cluster.USER_DATA_MARKER
    assert cluster.parse_user_data(text) == {
        "ERLANG_CLUSTER": "demo",
        "ERLANG_ROLE": "worker",
        "ERLANG_NODE_NAME": "worker",
        "ERLANG_BOOT_SERVER_IP": "172.31.0.4",
        "ERLANG_BOOT_NODE": "boot@172.31.0.4",
        "ERLANG_BOOT_SERVER_IPS": "172.31.0.4",
        "ERLANG_BOOT_NODES": "boot@172.31.0.4",
    }


def test_several_boot_servers_are_listed_sorted_numerically_and_the_first_is_the_single_pair():
    text = cluster.render_user_data("demo", "worker", "worker", boot_server_ips=["172.31.16.4", "172.31.0.10", "172.31.0.9"],
                                    boot_node_name={"172.31.0.10": "code"})
    assert text.splitlines()[4:] == [
        "ERLANG_BOOT_SERVER_IP=172.31.0.9",
        "ERLANG_BOOT_NODE=boot@172.31.0.9",
        "ERLANG_BOOT_SERVER_IPS=172.31.0.9,172.31.0.10,172.31.16.4",
        "ERLANG_BOOT_NODES=boot@172.31.0.9,code@172.31.0.10,boot@172.31.16.4",
    ]
    parsed = cluster.parse_user_data(text)
    assert cluster.boot_servers_of(parsed) == [
        ("172.31.0.9", "boot@172.31.0.9"), ("172.31.0.10", "code@172.31.0.10"), ("172.31.16.4", "boot@172.31.16.4")]


def test_user_data_written_before_several_boot_servers_reads_as_a_list_of_one():
    parsed = cluster.parse_user_data(cluster.USER_DATA_MARKER + "\nERLANG_CLUSTER=demo\nERLANG_BOOT_SERVER_IP=10.0.0.4\n"
                                     "ERLANG_BOOT_NODE=boot@10.0.0.4\n")
    assert cluster.boot_servers_of(parsed) == [("10.0.0.4", "boot@10.0.0.4")]
    assert cluster.boot_servers_of(cluster.parse_user_data(cluster.render_user_data("demo", "worker", "worker"))) == []


def test_one_name_for_every_boot_server():
    text = cluster.render_user_data("demo", "worker", "worker", boot_server_ips=["10.0.1.4", "10.0.0.4"], boot_node_name="code")
    assert "ERLANG_BOOT_NODES=code@10.0.0.4,code@10.0.1.4" in text.splitlines()


def test_sort_ipv4_is_numeric():
    assert cluster.sort_ipv4(["10.0.0.10", "9.255.255.255", "10.0.0.9", "10.0.0.100"]) == [
        "9.255.255.255", "10.0.0.9", "10.0.0.10", "10.0.0.100"]


def test_boot_server_user_data_names_no_boot_server():
    parsed = cluster.parse_user_data(cluster.render_user_data("c1", "boot_server", "boot"))
    assert "ERLANG_BOOT_SERVER_IP" not in parsed
    assert parsed["ERLANG_ROLE"] == "boot_server"


def test_extra_keys_are_prefixed_and_sorted():
    text = cluster.render_user_data("c1", "worker", "w", "10.0.0.1", extra={"contact_nodes": "a@10.0.0.2,b@10.0.0.3", "zone": "a"})
    assert text.splitlines()[-2:] == ["ERLANG_CONTACT_NODES=a@10.0.0.2,b@10.0.0.3", "ERLANG_ZONE=a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cluster="Bad Name", role="worker", node_name="w"), "invalid cluster name"),
        (dict(cluster="c", role="leader", node_name="w"), "invalid role"),
        (dict(cluster="c", role="worker", node_name="1w"), "invalid Erlang node name"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ip="boot.example"), "not a dotted-quad"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ip="300.1.1.1"), "not a dotted-quad"),
        (dict(cluster="c", role="worker", node_name="w", extra={"cookie": "x"}), "must not carry secrets"),
        (dict(cluster="c", role="worker", node_name="w", extra={"note": "has space"}), "invalid user-data value"),
        (dict(cluster="c", role="worker", node_name="w", extra={"pad": "x" * (17 * 1024)}), "EC2 allows at most"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ips=["10.0.0.4", "10.0.0"]), "not a dotted-quad"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ips=["10.0.0.4", "10.0.0.4"]), "repeated"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ip="10.0.0.4", boot_server_ips=["10.0.0.5"]), "not both"),
        (dict(cluster="c", role="worker", node_name="w", boot_server_ips=["10.0.0.4"], boot_node_name="1b"), "invalid Erlang node name"),
        (dict(cluster="c", role="worker", node_name="w", extra={"boot_server_ips": "10.0.0.4"}), "may not set ERLANG_BOOT_SERVER_IPS"),
        (dict(cluster="c", role="worker", node_name="w", extra={"ERLANG_ROLE": "boot_server"}), "may not set ERLANG_ROLE"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(cluster.ClusterContractError, match=message):
        cluster.render_user_data(**kwargs)


def test_foreign_user_data_is_not_ours():
    assert cluster.parse_user_data("#cloud-config\npackages: [erlang]\n") is None
    assert cluster.parse_user_data(b"") is None


def test_malformed_line_is_an_error():
    with pytest.raises(cluster.ClusterContractError, match="malformed"):
        cluster.parse_user_data(cluster.USER_DATA_MARKER + "\nERLANG_X=a b\n")


@pytest.mark.parametrize("value, ok", [("172.31.0.4", True), ("0.0.0.0", True), ("255.255.255.255", True),
                                       ("256.1.1.1", False), ("1.2.3", False), ("host", False), ("01.2.3.4", False), (None, False)])
def test_is_ipv4(value, ok):
    assert cluster.is_ipv4(value) is ok


def test_cluster_group_is_sanitized():
    assert cluster.cluster_group("my-cluster.prod") == "erlang_cluster_my_cluster_prod"
    assert cluster.node_id("worker", "172.31.0.5") == "worker@172.31.0.5"
