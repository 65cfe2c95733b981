"""cluster_instances join=self against moto: what is refused before any change, and what is launched."""

import boto3

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract
from aws_endpoint import FAKE_CREDENTIALS
from cluster_instances_helpers import IMAGE_ID, REGION, members
from test_cluster_instances import BOOT, args, failed, ok

MUTATING = ("RunInstances", "StartInstances", "TerminateInstances")


def node_image(ec2, **tags):
    """A registered AMI tagged as bake_image tags it (the builder is an instance of moto's stock AMI)."""
    builder = ec2.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(InstanceId=builder["InstanceId"], Name="node-%s" % builder["InstanceId"])["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder["InstanceId"]])
    if tags:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return image_id


def self_workers(image_id, **kw):
    return args({"cluster": "demo", "role": "worker", "join": "self", "image_id": image_id, "instance_type": "t3.micro"}, **kw)


def no_mutation(clean_aws):
    return sum(clean_aws.calls(op) for op in MUTATING) == 0


def test_join_self_launches_a_node_image_with_the_boot_server_in_user_data(playbook, clean_aws, ec2):
    boot_ip = ok(playbook(BOOT))["instances"][0]["private_ip"]
    image_id = node_image(ec2, **{"erlang-ec2-image": "node", "erlang-cluster": "demo"})
    clean_aws.reset_counts()
    result = ok(playbook(self_workers(image_id, count=5)))
    assert len(result["launched"]) == 5
    # One DescribeInstances for the plan, one DescribeImages for the image check, one RunInstances.
    assert clean_aws.calls("DescribeImages") == 1 and clean_aws.calls("RunInstances") == 1
    data = contract.parse_user_data(result["user_data"])
    assert data["ERLANG_BOOT_SERVER_IP"] == boot_ip and data["ERLANG_BOOT_NODE"] == "boot@" + boot_ip
    found = members(ec2, "demo", "worker")
    assert sorted(i["ImageId"] for i in found) == [image_id] * 5
    assert [dict((t["Key"], t["Value"]) for t in i["Tags"])["erlang-join"] for i in found] == ["self"] * 5
    # Unchanged re-run: no image check, no launch.
    clean_aws.reset_counts()
    assert ok(playbook(self_workers(image_id, count=5)))["changed"] is False
    assert clean_aws.calls("DescribeImages") == 0 and no_mutation(clean_aws)


def test_join_self_without_a_boot_server_fails_and_launches_nothing(playbook, clean_aws, ec2):
    image_id = node_image(ec2, **{"erlang-ec2-image": "node"})
    clean_aws.reset_counts()
    for check in (True, False):
        result = failed(playbook(self_workers(image_id, count=2), check=check))
        assert "needs a running boot server in cluster demo" in result["msg"] and "Nothing was launched" in result["msg"]
    assert no_mutation(clean_aws) and members(ec2, "demo") == []
    # An explicit boot server address is enough (the bootstrap retries until that server answers).
    result = ok(playbook(self_workers(image_id, count=1, boot_server_ip="10.0.0.4")))
    assert contract.parse_user_data(result["user_data"])["ERLANG_BOOT_SERVER_IP"] == "10.0.0.4"


def test_join_self_refuses_an_image_that_is_not_a_node_image(playbook, clean_aws, ec2):
    ok(playbook(BOOT))
    untagged = node_image(ec2)
    other_cluster = node_image(ec2, **{"erlang-ec2-image": "node", "erlang-cluster": "payments"})
    clean_aws.reset_counts()
    plain = failed(playbook(self_workers(untagged, count=1)))
    assert "needs a node image" in plain["msg"] and untagged in plain["msg"] and "erlang-ec2-image=node" in plain["msg"]
    # Check mode refuses it the same way.
    assert "needs a node image" in failed(playbook(self_workers(IMAGE_ID, count=1), check=True))["msg"]
    foreign = failed(playbook(self_workers(other_cluster, count=1)))
    assert "baked for cluster payments" in foreign["msg"] and "cannot join cluster demo" in foreign["msg"]
    missing = failed(playbook(self_workers("ami-0000000000000dead", count=1)))
    assert "image ami-0000000000000dead not found" in missing["msg"]
    assert no_mutation(clean_aws) and members(ec2, "demo", "worker") == []


def test_join_self_is_for_workers_only_and_checked_before_any_call(playbook, clean_aws):
    result = failed(playbook(args(BOOT, join="self")))
    assert "join=self is for workers" in result["msg"]
    assert sum(clean_aws.counts().values()) == 0


def test_push_is_the_default_and_does_not_check_the_image(playbook, clean_aws, ec2):
    ok(playbook(BOOT))
    clean_aws.reset_counts()
    result = ok(playbook({"cluster": "demo", "role": "worker", "count": 1, "image_id": IMAGE_ID, "instance_type": "t3.micro"}))
    assert len(result["launched"]) == 1 and clean_aws.calls("DescribeImages") == 0


def test_members_of_an_auto_scaling_group_are_counted_but_never_changed(playbook, clean_aws, ec2):
    """The group owns its instances' number: launching beside them or terminating them is refused."""
    autoscaling = boto3.client(
        "autoscaling", region_name=REGION, endpoint_url=clean_aws.url,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"])
    ok(playbook(BOOT))
    ec2.create_launch_template(LaunchTemplateName="erlang-demo-worker", LaunchTemplateData={
        "ImageId": IMAGE_ID, "InstanceType": "t3.micro",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": "erlang-cluster", "Value": "demo"}, {"Key": "erlang-role", "Value": "worker"}]}]})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="erlang-demo-workers", LaunchTemplate={"LaunchTemplateName": "erlang-demo-worker", "Version": "$Latest"},
        MinSize=2, MaxSize=2, DesiredCapacity=2, AvailabilityZones=["us-east-1a"])
    assert len(members(ec2, "demo", "worker")) == 2
    clean_aws.reset_counts()
    # The group's count: nothing to do, not a failure.
    assert ok(playbook({"cluster": "demo", "role": "worker", "count": 2, "image_id": IMAGE_ID, "instance_type": "t3.micro"}))["changed"] is False
    for count in (3, 0):
        result = failed(playbook({"cluster": "demo", "role": "worker", "count": count, "image_id": IMAGE_ID, "instance_type": "t3.micro"}))
        assert "Auto Scaling group(s) erlang-demo-workers" in result["msg"] and "Nothing was changed" in result["msg"]
    assert no_mutation(clean_aws) and len(members(ec2, "demo", "worker", states=("running",))) == 2
