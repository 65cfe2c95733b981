# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytest.importorskip("boto3")

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract  # noqa: E402
from ansible_collections.skunkworks.erlang_ec2.plugins.modules import cluster_instances  # noqa: E402


class Failed(Exception):
    pass


class ParamsOnly:
    """Just what preflight() reads: params and fail_json (preflight makes no API call by design)."""

    def __init__(self, **params):
        self.params = dict((k, v.get("default")) for k, v in cluster_instances.ARGUMENT_SPEC.items())
        self.params.update(image_id="ami-1", instance_type="t3.micro")
        self.params.update(params)

    def fail_json(self, msg, **kwargs):
        raise Failed(msg)


def preflight(**params):
    return cluster_instances.preflight(ParamsOnly(**params))


def test_defaults_give_the_contract_node_names():
    assert preflight(cluster="demo", role="worker", count=3) == "worker"
    assert preflight(cluster="demo", role="boot_server", count=1) == "boot"
    assert preflight(cluster="demo", role="worker", count=1, node_name="app") == "app"


@pytest.mark.parametrize("params, message", [
    (dict(cluster="Demo"), "invalid cluster name"),
    (dict(count=-1), "count must be 0 or more"),
    (dict(image_id=None), "image_id is required"),
    (dict(image_id=None, instance_type=None), "image_id and instance_type are required"),
    (dict(boot_server_ip="10.0.0"), "not a dotted-quad IPv4"),
    (dict(role="boot_server", boot_server_ip="10.0.0.1"), "boot_server_ip and boot_server_ips are for workers"),
    (dict(role="boot_server", boot_server_ips=["10.0.0.1"]), "boot_server_ip and boot_server_ips are for workers"),
    (dict(boot_server_ips=["10.0.0.1", "10.0.0"]), "boot_server_ips: '10.0.0' is not a dotted-quad"),
    (dict(boot_server_ips=["10.0.0.1", "10.0.0.1"]), "names an address twice"),
    (dict(tags={"erlang-cluster": "other"}), "tags may not set erlang-cluster"),
    (dict(user_data_extra={"erlang_cookie": "x"}), "must not carry secrets"),
    (dict(user_data_extra={"big": "x" * (contract.USER_DATA_MAX_BYTES - 150)}), "EC2 allows at most"),
    (dict(metadata_hop_limit=0), "metadata_hop_limit"),
    (dict(volume_size=0), "volume_size must be at least 1"),
])
def test_bad_input_fails_in_preflight(params, message):
    base = dict(cluster="demo", role="worker", count=1)
    base.update(params)
    with pytest.raises(Failed, match=message):
        preflight(**base)


def test_size_check_counts_the_boot_server_part_not_known_yet():
    # Fits without a boot server address but not with the longest one a worker could get.
    size_without_boot = len(contract.render_user_data("demo", "worker", "worker").encode())
    filler = "x" * (contract.USER_DATA_MAX_BYTES - size_without_boot - len("ERLANG_PAD=\n") - 10)
    contract.render_user_data("demo", "worker", "worker", extra={"pad": filler})
    with pytest.raises(Failed, match="EC2 allows at most"):
        preflight(cluster="demo", role="worker", count=1, user_data_extra={"pad": filler})
    # a boot server gets no boot server address, so the same data fits
    assert preflight(cluster="demo", role="boot_server", count=1, user_data_extra={"pad": filler}) == "boot"


def test_several_boot_servers_need_no_permission():
    assert preflight(cluster="demo", role="boot_server", count=3) == "boot"
    assert preflight(cluster="demo", role="boot_server", count=3, allow_multiple_boot_servers=False) == "boot"


def test_size_check_counts_every_boot_server_given():
    one = contract.render_user_data("demo", "worker", "worker", boot_server_ips=["10.0.0.1"],
                                    boot_node_name=cluster_instances.WORST_CASE_BOOT_NODE_NAME)
    three = contract.render_user_data("demo", "worker", "worker", boot_server_ips=["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                                      boot_node_name=cluster_instances.WORST_CASE_BOOT_NODE_NAME)
    # Fits with one given boot server, not with three.
    filler = "x" * (contract.USER_DATA_MAX_BYTES - len(one.encode()) - len("ERLANG_PAD=\n") - 1)
    assert len(three.encode()) + len(filler) > contract.USER_DATA_MAX_BYTES
    assert preflight(cluster="demo", role="worker", count=1, boot_server_ips=["10.0.0.1"], user_data_extra={"pad": filler}) == "worker"
    with pytest.raises(Failed, match="EC2 allows at most"):
        preflight(cluster="demo", role="worker", count=1, boot_server_ips=["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                  user_data_extra={"pad": filler})


class Records:
    """The module params resolve_boot_servers reads."""

    def __init__(self, **params):
        self.params = dict(role="worker", boot_server_ip=None, boot_server_ips=None)
        self.params.update(params)


def boot_record(ip, name="boot", role="boot_server", state="running"):
    return dict(id="i-" + ip, private_ip=ip, role=role, state=state, node_name=name)


def test_new_workers_get_every_running_boot_server_sorted():
    records = [boot_record("10.0.1.4"), boot_record("10.0.0.10", name="code"), boot_record("10.0.0.9"),
               boot_record("10.0.0.8", state="stopped"), boot_record("10.0.0.7", name="worker", role="worker")]
    ips, names = cluster_instances.resolve_boot_servers(Records(), records)
    assert ips == ["10.0.0.9", "10.0.0.10", "10.0.1.4"]
    assert names == {"10.0.0.9": "boot", "10.0.0.10": "code", "10.0.1.4": "boot"}
    assert cluster_instances.resolve_boot_servers(Records(role="boot_server"), records) == ([], {})
    # given addresses win; their names come from the cluster's boot servers when they are among them
    assert cluster_instances.resolve_boot_servers(Records(boot_server_ips=["10.9.9.9", "10.0.0.10"]), records) == (
        ["10.0.0.10", "10.9.9.9"], {"10.0.0.10": "code"})
    assert cluster_instances.resolve_boot_servers(Records(boot_server_ip="10.0.1.4"), records) == (["10.0.1.4"], {"10.0.1.4": "boot"})


def test_scale_to_zero_needs_no_image():
    assert preflight(cluster="demo", role="worker", count=0, image_id=None, instance_type=None) == "worker"


PLAN = dict(launch=[("subnet-a", 2), (None, 1)], start=["i-2"], terminate=["i-3"])
NO_CHANGE = dict(launch=[], start=[], terminate=[])


def test_planned_result_reports_the_plan_before_any_change():
    result = cluster_instances.planned_result(PLAN, ["10.0.0.4", "10.0.1.4"], "ERLANG_CLUSTER=demo\n")
    assert result == dict(
        changed=True, launched=[], launch_plan=[dict(subnet_id="subnet-a", count=2), dict(subnet_id=None, count=1)],
        started=["i-2"], terminated=["i-3"], boot_server_ip="10.0.0.4", boot_server_ips=["10.0.0.4", "10.0.1.4"],
        user_data="ERLANG_CLUSTER=demo\n",
    )
    empty = cluster_instances.planned_result(NO_CHANGE, [], None)
    assert empty["changed"] is False and empty["boot_server_ip"] is None and empty["boot_server_ips"] == []


@pytest.mark.parametrize("groups, plan, refused", [
    ([None, None], PLAN, False),
    (["asg-1", None], NO_CHANGE, False),
    (["asg-1", "asg-0"], PLAN, True),
    (["asg-1"], dict(NO_CHANGE, start=["i-1"]), True),
])
def test_members_of_an_auto_scaling_group_refuse_changes(groups, plan, refused):
    members = [dict(id="i-%d" % n, autoscaling_group=g) for n, g in enumerate(groups)]
    message = cluster_instances.autoscaling_refusal(dict(role="worker", cluster="demo"), members, plan)
    if refused:
        assert "belong to the Auto Scaling group(s) %s" % ", ".join(sorted(g for g in groups if g)) in message
        assert message.endswith("Nothing was changed.")
    else:
        assert message is None
