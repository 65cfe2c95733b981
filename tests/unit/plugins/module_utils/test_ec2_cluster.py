# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import ec2_cluster


def record(instance_id, launch_time, state="running", subnet_id="subnet-a", role="worker", index=0, private_ip="10.0.0.1"):
    return {"id": instance_id, "launch_time": launch_time, "state": state, "subnet_id": subnet_id, "role": role,
            "launch_index": index, "private_ip": private_ip, "node_name": "worker",
            "node": "worker@" + private_ip if private_ip else None}


# -- distribute_launches ---------------------------------------------------

def test_launches_spread_evenly_first_subnets_get_the_remainder():
    assert ec2_cluster.distribute_launches(7, ["a", "b", "c"]) == [("a", 3), ("b", 2), ("c", 2)]


def test_launches_fill_the_emptiest_subnets_first():
    assert ec2_cluster.distribute_launches(3, ["a", "b", "c"], {"a": 2, "b": 0, "c": 1}) == [("b", 2), ("c", 1)]


def test_launches_ignore_members_in_subnets_not_listed():
    assert ec2_cluster.distribute_launches(2, ["a", "b"], {"z": 5, "a": 1}) == [("a", 1), ("b", 1)]


def test_no_subnets_means_one_call_in_the_default_subnet():
    assert ec2_cluster.distribute_launches(50, []) == [(None, 50)]


def test_nothing_to_launch():
    assert ec2_cluster.distribute_launches(0, ["a"]) == []
    assert ec2_cluster.distribute_launches(-2, ["a"]) == []


# -- select_surplus --------------------------------------------------------

MEMBERS = [
    record("i-old", "2026-01-01T00:00:00+00:00"),
    record("i-mid1", "2026-02-01T00:00:00+00:00", index=1),
    record("i-mid0", "2026-02-01T00:00:00+00:00", index=0),
    record("i-new", "2026-03-01T00:00:00+00:00"),
]


def test_surplus_is_newest_first_by_default():
    assert ec2_cluster.select_surplus(MEMBERS, 2) == ["i-new", "i-mid1"]


def test_surplus_oldest_first_when_asked():
    assert ec2_cluster.select_surplus(MEMBERS, 2, ec2_cluster.OLDEST_FIRST) == ["i-old", "i-mid0"]


def test_stopped_members_go_before_running_ones():
    members = MEMBERS + [record("i-stopped-old", "2025-01-01T00:00:00+00:00", state="stopped")]
    assert ec2_cluster.select_surplus(members, 2) == ["i-stopped-old", "i-new"]


def test_no_surplus():
    assert ec2_cluster.select_surplus(MEMBERS, 0) == []


# -- plan_changes ----------------------------------------------------------

def test_plan_launches_the_difference_balanced_over_subnets():
    members = [record("i-1", "2026-01-01", subnet_id="a"), record("i-2", "2026-01-02", subnet_id="a")]
    plan = ec2_cluster.plan_changes(members, "worker", 5, ["a", "b"])
    assert plan == {"terminate": [], "start": [], "launch": [("a", 1), ("b", 2)]}


def test_plan_at_count_changes_nothing():
    assert ec2_cluster.plan_changes(MEMBERS, "worker", 4, ["a"]) == {"terminate": [], "start": [], "launch": []}


def test_plan_starts_stopped_members_instead_of_launching():
    members = [record("i-1", "2026-01-01"), record("i-2", "2026-01-02", state="stopped")]
    assert ec2_cluster.plan_changes(members, "worker", 3, ["a"]) == {"terminate": [], "start": ["i-2"], "launch": [("a", 1)]}


def test_plan_replaces_named_instances_and_ignores_unknown_ids():
    plan = ec2_cluster.plan_changes(MEMBERS, "worker", 4, ["subnet-a"], terminate_instance_ids=["i-old", "i-gone"])
    assert plan == {"terminate": ["i-old"], "start": [], "launch": [("subnet-a", 1)]}


def test_plan_refuses_to_terminate_a_boot_server():
    boot = [record("i-boot", "2026-01-01", role="boot_server")]
    with pytest.raises(ec2_cluster.PlanError, match="allow_boot_server_termination"):
        ec2_cluster.plan_changes(boot, "boot_server", 0)
    plan = ec2_cluster.plan_changes(boot, "boot_server", 0, allow_boot_server_termination=True)
    assert plan["terminate"] == ["i-boot"]


# -- boot server, tags, run spec ---------------------------------------------

def test_find_boot_server_none_or_one():
    workers = [record("i-w", "2026-01-01")]
    assert ec2_cluster.find_boot_server(workers) is None
    assert ec2_cluster.find_boot_servers(workers) == []
    boot = record("i-b", "2026-01-01", role="boot_server", private_ip="10.0.0.4")
    assert ec2_cluster.find_boot_server(workers + [boot])["private_ip"] == "10.0.0.4"
    stopped = record("i-s", "2026-01-01", role="boot_server", state="stopped", private_ip="10.0.0.5")
    assert ec2_cluster.find_boot_server([boot, stopped])["id"] == "i-b"


def test_find_boot_servers_lists_every_running_one_sorted_numerically():
    boots = [record("i-a", "2026-01-01", role="boot_server", private_ip="10.0.0.10"),
             record("i-b", "2026-01-02", role="boot_server", private_ip="10.0.0.9", state="pending"),
             record("i-c", "2026-01-03", role="boot_server", private_ip="9.0.0.200"),
             record("i-stopped", "2026-01-04", role="boot_server", private_ip="10.0.0.1", state="stopped"),
             record("i-no-ip", "2026-01-05", role="boot_server", private_ip=None),
             record("i-w", "2026-01-06", private_ip="10.0.0.2")]
    assert [r["id"] for r in ec2_cluster.find_boot_servers(boots)] == ["i-c", "i-b", "i-a"]
    assert ec2_cluster.find_boot_server(boots)["id"] == "i-c"


def test_plan_spreads_boot_servers_over_the_subnets():
    plan = ec2_cluster.plan_changes([], "boot_server", 2, ["subnet-a", "subnet-b", "subnet-c"])
    assert plan["launch"] == [("subnet-a", 1), ("subnet-b", 1)]
    # a second one goes to a subnet without a boot server
    one = [record("i-boot", "2026-01-01", role="boot_server", subnet_id="subnet-a")]
    assert ec2_cluster.plan_changes(one, "boot_server", 3, ["subnet-a", "subnet-b", "subnet-c"])["launch"] == [
        ("subnet-b", 1), ("subnet-c", 1)]


def test_plan_refuses_to_lower_the_boot_server_count_without_permission():
    boots = [record("i-b1", "2026-01-01", role="boot_server"), record("i-b2", "2026-01-02", role="boot_server")]
    with pytest.raises(ec2_cluster.PlanError, match="refusing to terminate boot server\\(s\\) i-b2"):
        ec2_cluster.plan_changes(boots, "boot_server", 1)
    assert ec2_cluster.plan_changes(boots, "boot_server", 1, allow_boot_server_termination=True)["terminate"] == ["i-b2"]


def test_contract_tags_win_over_user_tags():
    tags = ec2_cluster.instance_tags("demo", "worker", "app", {"team": "x", "Name": "custom", "erlang-join": "x"})
    assert tags == {"Name": "custom", "team": "x", "erlang-cluster": "demo", "erlang-role": "worker", "erlang-node-name": "app",
                    "erlang-join": "push"}


def test_join_tag_is_on_workers_only():
    assert ec2_cluster.instance_tags("demo", "worker", "worker", join="self")["erlang-join"] == "self"
    assert "erlang-join" not in ec2_cluster.instance_tags("demo", "boot_server", "boot")


def test_run_spec_requires_imdsv2_and_takes_profile_name_or_arn():
    spec = ec2_cluster.build_run_spec("ami-1", "t3.micro", "ud", {"a": "b"}, ["sg-1"], "key", "arn:aws:iam::1:instance-profile/p")
    assert spec["MetadataOptions"]["HttpTokens"] == "required"
    assert spec["IamInstanceProfile"] == {"Arn": "arn:aws:iam::1:instance-profile/p"}
    assert [s["ResourceType"] for s in spec["TagSpecifications"]] == ["instance", "volume"]
    assert ec2_cluster.build_run_spec("ami-1", "t3.micro", "ud", {}, instance_profile="p")["IamInstanceProfile"] == {"Name": "p"}


# -- wait_for --------------------------------------------------------------
# A scripted client stands in for DescribeInstances here so the timing logic can be driven
# by a fake clock; the real endpoint behaviour is covered by the integration suite.

class ScriptedClient:
    def __init__(self, pages):
        self.pages = list(pages)
        self.calls = 0

    def describe_instances(self, aws_retry=False, **params):
        self.calls += 1
        states = self.pages.pop(0) if len(self.pages) > 1 else self.pages[0]
        return {"Reservations": [{"Instances": [{"InstanceId": i, "State": {"Name": s}} for i, s in states.items()]}]}


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


class PagedClient:
    """Three pages linked by NextToken, as DescribeInstances returns them past MaxResults."""

    def __init__(self):
        self.requests = []

    def describe_instances(self, aws_retry=False, **params):
        self.requests.append(dict(params, aws_retry=aws_retry))
        page = int(params.get("NextToken", "0"))
        answer = {"Reservations": [{"Instances": [{"InstanceId": "i-%d" % page, "State": {"Name": "running"}}]}]}
        if page < 2:
            answer["NextToken"] = str(page + 1)
        return answer


def test_describe_cluster_follows_pages_one_request_each_with_retry():
    client = PagedClient()
    found = ec2_cluster.describe_cluster(client, "demo")
    assert [i["InstanceId"] for i in found] == ["i-0", "i-1", "i-2"]
    assert len(client.requests) == 3 and all(r["aws_retry"] for r in client.requests)
    assert [r.get("NextToken") for r in client.requests] == [None, "1", "2"]
    first = client.requests[0]
    assert first["MaxResults"] == 1000
    assert {"Name": "tag:erlang-cluster", "Values": ["demo"]} in first["Filters"]
    assert {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]} in first["Filters"]


def test_wait_needs_no_poll_when_answers_already_final():
    client, clock = ScriptedClient([{}]), FakeClock()
    assert ec2_cluster.wait_for(client, "c", ["i-1"], ["i-2"], 60, {"i-1": "running", "i-2": "terminated"},
                                sleep=clock.sleep, clock=clock.clock) is None
    assert client.calls == 0


def test_wait_polls_until_running_and_gone():
    client = ScriptedClient([{"i-1": "pending", "i-2": "shutting-down"}, {"i-1": "running", "i-2": "shutting-down"}, {"i-1": "running"}])
    clock = FakeClock()
    ec2_cluster.wait_for(client, "c", ["i-1"], ["i-2"], 60, {"i-1": "pending"}, sleep=clock.sleep, clock=clock.clock)
    assert client.calls == 3 and clock.sleeps == [1, 2, 4]


def test_wait_timeout_raises_and_names_the_laggards():
    client, clock = ScriptedClient([{"i-1": "running", "i-2": "pending"}]), FakeClock()
    with pytest.raises(ec2_cluster.WaitTimeout) as err:
        ec2_cluster.wait_for(client, "c", ["i-1", "i-2", "i-3"], [], 20, sleep=clock.sleep, clock=clock.clock)
    assert err.value.not_running == ["i-2", "i-3"]
    assert "i-2, i-3" in str(err.value) and clock.now == 20


def test_run_spec_sizes_the_root_volume_only_when_asked():
    assert "BlockDeviceMappings" not in ec2_cluster.build_run_spec("ami-1", "t3.micro", "ud", {})
    spec = ec2_cluster.build_run_spec("ami-1", "t3.micro", "ud", {}, root_volume=("/dev/xvda", 30, "gp3"))
    assert spec["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30, "VolumeType": "gp3", "DeleteOnTermination": True}}]


def image(**tags):
    return {"ImageId": "ami-1", "RootDeviceName": "/dev/xvda", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def test_node_image_check_accepts_a_node_image_of_any_or_the_same_cluster():
    ec2_cluster.check_node_image(image(**{"erlang-ec2-image": "node"}), "demo")
    ec2_cluster.check_node_image(image(**{"erlang-ec2-image": "node", "erlang-cluster": "demo"}), "demo")


@pytest.mark.parametrize("tags, message", [
    ({}, "needs a node image"),
    ({"erlang-ec2-image": "base"}, "needs a node image"),
    ({"erlang-ec2-image": "node", "erlang-cluster": "other"}, "baked for cluster other"),
])
def test_node_image_check_refuses_other_images(tags, message):
    with pytest.raises(ec2_cluster.PlanError, match=message):
        ec2_cluster.check_node_image(image(**tags), "demo")


def test_root_device_name_of_an_image():
    assert ec2_cluster.root_device_name(image()) == "/dev/xvda"
    with pytest.raises(ec2_cluster.PlanError, match="no root device"):
        ec2_cluster.root_device_name({"ImageId": "ami-2"})
