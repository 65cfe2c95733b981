"""provision_instance_profile: the nodes provision launches and the workers' launch template carry the instance
profile; a bad value is refused before any request. On the suite's plain moto endpoint (no host boots: moto's
instances never answer SSH, so a run may fail at its last step, the wait for SSH, and nowhere else)."""

import json

import pytest

import playbook_runner
from aws_endpoint import client_env
from cluster_instances_helpers import IMAGE_ID, REGION, failed_tasks, moto_client as client, node_image

CLUSTER = "profmoto"
# The trust policy's principal: moto does not evaluate it, and tests name no AWS host (on AWS it is EC2's
# service principal, docs/tls.md "IAM").
ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.localcloud.invalid"}, "Action": "sts:AssumeRole"}]})


def provision(clean_aws, extra_vars):
    args = ["-e", "cluster_name=%s" % CLUSTER, "-e", "provision_image_id=%s" % IMAGE_ID, "-e", "provision_ssh_cidr=203.0.113.7/32",
            "-e", "provision_ssh_timeout=1"]
    env = playbook_runner.ansible_env(client_env(clean_aws, REGION), ANSIBLE_LOCALHOST_WARNING="false",
                                      ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return playbook_runner.run_playbook("skunkworks.erlang_ec2.provision", *args, inventory="localhost,", env=env,
                                        extra_vars=dict({"ansible_connection": "local",
                                                         "ansible_python_interpreter": "{{ ansible_playbook_python }}"}, **extra_vars))


def make_profile(clean_aws):
    iam = client(clean_aws, "iam")
    iam.create_role(RoleName="erlang-node", AssumeRolePolicyDocument=ROLE_POLICY)
    arn = iam.create_instance_profile(InstanceProfileName="erlang-node")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="erlang-node", RoleName="erlang-node")
    return arn


def profiles_by_role(clean_aws):
    """{erlang-role: [instance profile ARN or None]} of the cluster's live instances."""
    found = {}
    pages = client(clean_aws, "ec2").get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:erlang-cluster", "Values": [CLUSTER]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for instance in (i for r in page["Reservations"] for i in r["Instances"]):
            role = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("erlang-role")
            found.setdefault(role, []).append(instance.get("IamInstanceProfile", {}).get("Arn"))
    return found


@pytest.mark.parametrize("by", ["name", "arn"])
def test_the_nodes_get_the_profile(clean_aws, by):
    arn = make_profile(clean_aws)
    run = provision(clean_aws, {"provision_worker_count": 1, "provision_instance_profile": "erlang-node" if by == "name" else arn})
    assert run.returncode == 0 or failed_tasks(run) == ["Provision | Wait for SSH on every node"], (failed_tasks(run), run)
    assert profiles_by_role(clean_aws) == {"boot_server": [arn], "worker": [arn]}


def test_without_it_no_node_has_a_profile(clean_aws):
    make_profile(clean_aws)
    run = provision(clean_aws, {"provision_worker_count": 1})
    assert run.returncode == 0 or failed_tasks(run) == ["Provision | Wait for SSH on every node"], (failed_tasks(run), run)
    assert profiles_by_role(clean_aws) == {"boot_server": [None], "worker": [None]}


def test_the_launch_template_carries_the_profile(clean_aws):
    arn = make_profile(clean_aws)
    ec2 = client(clean_aws, "ec2")
    run = provision(clean_aws, {"provision_worker_count": 1, "provision_join": "self", "provision_node_image_id": node_image(ec2),
                                "provision_autoscaling": True, "provision_instance_profile": "erlang-node"})
    assert run.returncode == 0 or failed_tasks(run) == ["Provision | Wait for SSH on every node"], (failed_tasks(run), run)
    version = ec2.describe_launch_template_versions(LaunchTemplateName="erlang-%s-worker" % CLUSTER,
                                                    Versions=["$Latest"])["LaunchTemplateVersions"][0]
    assert version["LaunchTemplateData"]["IamInstanceProfile"] == {"Arn": arn}


BAD = ["erlang node", "arn:aws:iam::12345:instance-profile/erlang-node", "arn:aws:iam::123456789012:role/erlang-node", "x" * 129]


@pytest.mark.parametrize("value", BAD, ids=["a space", "a short account", "a role ARN", "too long"])
def test_a_bad_value_is_refused_before_any_request(clean_aws, value):
    run = provision(clean_aws, {"provision_instance_profile": value})
    assert run.returncode != 0, run
    text = " ".join(run.out.split())
    assert "provision_instance_profile must be an IAM instance profile name" in text and "Nothing was changed." in text, run
    assert sum(clean_aws.counts().values()) == 0, clean_aws.counts()
