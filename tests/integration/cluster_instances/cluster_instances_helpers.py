"""Constants and helpers shared by the cluster_instances tests (a unique module name, unlike conftest)."""

import os
import re
import sys

import boto3

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# The collection's module_utils (the user-data contract) for checks made by the tests themselves.
sys.path.insert(0, os.path.join(ROOT, ".collections"))
REGION = "us-east-1"
IMAGE_ID = "ami-12c6146b"  # one of moto's built-in AMIs


class PlaybookRun:
    def __init__(self, proc, results):
        self.proc = proc
        self.rc = proc.returncode
        self.results = results  # the registered results of every task, in order

    @property
    def result(self):
        return self.results[-1]

    def __repr__(self):
        return "PlaybookRun(rc=%s)\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.proc.stdout[-6000:], self.proc.stderr[-3000:])


def members(ec2, cluster, role=None, states=("pending", "running", "stopping", "stopped")):
    filters = [{"Name": "tag:erlang-cluster", "Values": [cluster]}, {"Name": "instance-state-name", "Values": list(states)}]
    if role:
        filters.append({"Name": "tag:erlang-role", "Values": [role]})
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def node_image(ec2):
    """An AMI tagged as bake_image tags a node image (the builder is an instance of moto's stock AMI)."""
    builder = ec2.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(InstanceId=builder["InstanceId"], Name="node-%s" % builder["InstanceId"])["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder["InstanceId"]])
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": "erlang-ec2-image", "Value": "node"}])
    return image_id


def moto_client(clean_aws, service="ec2"):
    """A boto3 client on the suite's moto endpoint, with fake credentials."""
    return boto3.client(service, region_name=REGION, endpoint_url=clean_aws.url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def failed_tasks(run):
    """The names of the tasks that failed, from ansible-playbook's output."""
    failed, task = [], None
    for line in run.out.splitlines():
        match = re.match(r"TASK \[(.+)\] \*+$", line)
        task = match.group(1) if match else task
        if line.startswith(("fatal: ", "failed: ")) and task not in failed:
            failed.append(task)
    return failed
