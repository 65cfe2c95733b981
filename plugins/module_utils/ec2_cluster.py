# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2 side of cluster_instances: find a cluster's instances, plan, launch, terminate, wait.

Pure planning functions (distribute_launches, select_surplus, plan_changes) are kept apart
from the API calls so they can be unit tested without an endpoint. API calls go through a
client wrapped with AWSRetry (module.client(..., retry_decorator=...)) and are made with
aws_retry=True, one page at a time, so a throttled page is retried alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import uuid

try:
    import botocore
except ImportError:
    pass  # Handled by AnsibleAWSModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract

# Instances that count as members of the cluster: they run or can be started.
# shutting-down/terminated instances are on their way out and never counted.
COUNTED_STATES = ("pending", "running", "stopping", "stopped")
# While waiting for terminations, shutting-down instances must still be seen.
ALIVE_STATES = COUNTED_STATES + ("shutting-down",)
NOT_SERVING_STATES = ("stopping", "stopped")

DESCRIBE_PAGE_SIZE = 1000
TERMINATE_BATCH = 1000
# Poll after 1, 2, 4 seconds, then every 5: fast when the instances are quick, cheap when not.
WAIT_MAX_DELAY_SECONDS = 5

NEWEST_FIRST = "newest_first"
OLDEST_FIRST = "oldest_first"

# Right after RunInstances, EC2 is eventually consistent: new ids may be "not found" for a while.
CATCH_NOT_YET_VISIBLE = ["InvalidInstanceID.NotFound"]
# A "stopping" instance cannot be started until it is stopped: retry with backoff.
CATCH_NOT_YET_STOPPED = ["IncorrectInstanceState"]


class PlanError(Exception):
    """The requested change is refused (e.g. it would terminate a boot server)."""


class WaitTimeout(Exception):
    """Instances did not reach the wanted state in time."""

    def __init__(self, not_running, not_terminated, timeout):
        self.not_running = sorted(not_running)
        self.not_terminated = sorted(not_terminated)
        parts = []
        if self.not_running:
            parts.append("not running: %s" % ", ".join(self.not_running))
        if self.not_terminated:
            parts.append("not terminated: %s" % ", ".join(self.not_terminated))
        super(WaitTimeout, self).__init__("timed out after %d seconds waiting for instances (%s)" % (timeout, "; ".join(parts)))


class LaunchError(Exception):
    """One or more RunInstances calls failed; `launched` holds what did start."""

    def __init__(self, message, launched, failures):
        super(LaunchError, self).__init__(message)
        self.launched = launched
        self.failures = failures


# -- instance records -------------------------------------------------------

# Set by AWS on the instances of an Auto Scaling group.
AUTOSCALING_GROUP_TAG = "aws:autoscaling:groupName"


def tag_dict(resource):
    """Tags of an instance or an image, as a dict."""
    return dict((t["Key"], t["Value"]) for t in resource.get("Tags") or [])


def summarize(instance):
    """The record returned to users and used by the planner (JSON-safe)."""
    tags = tag_dict(instance)
    role = tags.get(contract.TAG_ROLE)
    name = tags.get(contract.TAG_NODE_NAME) or (contract.default_node_name(role) if role in contract.ROLES else None)
    private_ip = instance.get("PrivateIpAddress")
    launch_time = instance.get("LaunchTime")
    if hasattr(launch_time, "isoformat"):
        launch_time = launch_time.isoformat()
    return {
        "id": instance["InstanceId"],
        "private_ip": private_ip,
        "state": instance.get("State", {}).get("Name"),
        "node": contract.node_id(name, private_ip) if name and private_ip else None,
        "node_name": name,
        "role": role,
        "subnet_id": instance.get("SubnetId"),
        "launch_time": launch_time,
        "launch_index": instance.get("AmiLaunchIndex", 0),
        "autoscaling_group": tags.get(AUTOSCALING_GROUP_TAG),
    }


def public_record(record):
    """What the module returns per instance (planner-only keys dropped)."""
    return dict((k, record[k]) for k in ("id", "private_ip", "state", "node", "subnet_id", "launch_time"))


def sort_by_age(records):
    """Oldest first; ties (same RunInstances call) broken by launch index, then id."""
    return sorted(records, key=lambda r: (r["launch_time"] or "", r["launch_index"] or 0, r["id"]))


# -- pure planning ----------------------------------------------------------

def distribute_launches(count, subnet_ids, existing_per_subnet=None):
    """Spread `count` new instances over `subnet_ids` so the totals per subnet end up even.

    Each new instance goes to the subnet that has the fewest (existing + planned) members;
    ties go to the subnet listed first. Returns [(subnet_id, n)] in `subnet_ids` order,
    without zero entries. With no subnet_ids, [(None, count)] (the EC2 default subnet).
    """
    if count <= 0:
        return []
    if not subnet_ids:
        return [(None, count)]
    existing_per_subnet = existing_per_subnet or {}
    totals = [existing_per_subnet.get(s, 0) for s in subnet_ids]
    planned = [0] * len(subnet_ids)
    for dummy in range(count):
        i = min(range(len(subnet_ids)), key=lambda k: (totals[k], k))
        totals[i] += 1
        planned[i] += 1
    return [(s, n) for s, n in zip(subnet_ids, planned) if n]


def select_surplus(records, surplus, termination_order=NEWEST_FIRST):
    """Choose `surplus` instances to terminate.

    Stopped/stopping instances go first (they serve nothing), then running/pending ones,
    newest first by default (undo the latest scale-up, keep long-lived nodes) or oldest first.
    """
    if surplus <= 0:
        return []
    idle = sort_by_age([r for r in records if r["state"] in NOT_SERVING_STATES])
    serving = sort_by_age([r for r in records if r["state"] not in NOT_SERVING_STATES])
    if termination_order == NEWEST_FIRST:
        idle.reverse()
        serving.reverse()
    return [r["id"] for r in (idle + serving)[:surplus]]


def plan_changes(members, role, count, subnet_ids=None, termination_order=NEWEST_FIRST,
                 terminate_instance_ids=None, allow_boot_server_termination=False):
    """Decide what to start, launch and terminate so exactly `count` members remain.

    `members` are the summarized instances of one cluster and role in COUNTED_STATES.
    Returns {"terminate": [ids], "start": [ids], "launch": [(subnet_id, n)]}.
    Raises PlanError if a boot server would be terminated without explicit permission.
    """
    by_id = dict((r["id"], r) for r in members)
    # Explicitly named instances go first; ids not among the members are already gone.
    forced = [i for i in (terminate_instance_ids or []) if i in by_id]
    keep = [r for r in members if r["id"] not in forced]
    extra = select_surplus(keep, len(keep) - count, termination_order)
    terminate = forced + extra
    if terminate and role == contract.ROLE_BOOT_SERVER and not allow_boot_server_termination:
        raise PlanError(
            "refusing to terminate boot server(s) %s: set allow_boot_server_termination=true to allow it" % ", ".join(terminate)
        )
    remaining = [r for r in members if r["id"] not in terminate]
    start = [r["id"] for r in sort_by_age(remaining) if r["state"] in NOT_SERVING_STATES]
    per_subnet = {}
    for r in remaining:
        per_subnet[r["subnet_id"]] = per_subnet.get(r["subnet_id"], 0) + 1
    launch = distribute_launches(count - len(remaining), subnet_ids or [], per_subnet)
    return {"terminate": terminate, "start": start, "launch": launch}


def find_boot_servers(records):
    """The cluster's running (or pending) boot servers with a private IP, sorted by address (numerically)."""
    boot = [r for r in records if r["role"] == contract.ROLE_BOOT_SERVER and r["state"] in ("pending", "running") and r["private_ip"]]
    return sorted(boot, key=lambda r: contract.ipv4_sort_key(r["private_ip"]))


def find_boot_server(records):
    """The first of find_boot_servers (lowest address), None if there is none."""
    boot = find_boot_servers(records)
    return boot[0] if boot else None


def instance_tags(cluster, role, node_name, user_tags=None, join=None):
    """Tags for a new instance: the user's, then the contract's (which win)."""
    tags = {"Name": "%s-%s" % (cluster, role)}
    tags.update(user_tags or {})
    tags.update({contract.TAG_CLUSTER: cluster, contract.TAG_ROLE: role, contract.TAG_NODE_NAME: node_name})
    if role == contract.ROLE_WORKER:
        tags[contract.TAG_JOIN] = join or contract.JOIN_PUSH
    return tags


def build_run_spec(image_id, instance_type, user_data, tags, security_group_ids=None, key_name=None,
                   instance_profile=None, metadata_tokens="required", metadata_hop_limit=2,
                   instance_metadata_tags="disabled", root_volume=None):
    """RunInstances parameters shared by every subnet's call (SubnetId/counts added per call).

    root_volume: None, or (device name, size GiB, volume type) for the root EBS volume.
    """
    tag_list = [{"Key": k, "Value": str(v)} for k, v in sorted(tags.items())]
    spec = {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "UserData": user_data,
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list}, {"ResourceType": "volume", "Tags": tag_list}],
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": metadata_tokens,
            "HttpPutResponseHopLimit": metadata_hop_limit,
            "InstanceMetadataTags": instance_metadata_tags,
        },
    }
    if root_volume:
        device, size, volume_type = root_volume
        spec["BlockDeviceMappings"] = [{"DeviceName": device, "Ebs": {"VolumeSize": size, "VolumeType": volume_type, "DeleteOnTermination": True}}]
    if security_group_ids:
        spec["SecurityGroupIds"] = list(security_group_ids)
    if key_name:
        spec["KeyName"] = key_name
    if instance_profile:
        # EC2 takes a name or an ARN directly: no IAM lookup (and no IAM permission) needed.
        spec["IamInstanceProfile"] = {"Arn": instance_profile} if instance_profile.startswith("arn:") else {"Name": instance_profile}
    return spec


# -- API calls --------------------------------------------------------------

def describe_image(client, image_id):
    """The AMI: one DescribeImages request; PlanError if there is no such image."""
    try:
        images = client.describe_images(aws_retry=True, ImageIds=[image_id])["Images"]
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
            raise PlanError("image %s not found" % image_id)
        raise
    if not images:
        raise PlanError("image %s not found" % image_id)
    return images[0]


def root_device_name(image):
    """The AMI's root device name (needed to size the root volume)."""
    if not image.get("RootDeviceName"):
        raise PlanError("image %s has no root device" % image.get("ImageId"))
    return image["RootDeviceName"]


def check_node_image(image, cluster):
    """Refuse an image that cannot join `cluster` by itself (see docs/design.md, AMI tags)."""
    tags = tag_dict(image)
    image_id = image.get("ImageId")
    if tags.get(contract.TAG_IMAGE) != contract.IMAGE_NODE:
        raise PlanError(
            "join=self needs a node image (made by the skunkworks.erlang_ec2.bake_image playbook, tagged %s=%s); "
            "%s has no such tag. Nothing was launched." % (contract.TAG_IMAGE, contract.IMAGE_NODE, image_id))
    baked_for = tags.get(contract.TAG_CLUSTER)
    if baked_for and baked_for != cluster:
        raise PlanError(
            "image %s was baked for cluster %s (its cookie) and cannot join cluster %s. Nothing was launched."
            % (image_id, baked_for, cluster))


def describe_cluster(client, cluster, states=COUNTED_STATES):
    """Every instance of `cluster` in `states`: one DescribeInstances request per 1000 instances."""
    params = {
        "Filters": [
            {"Name": "tag:" + contract.TAG_CLUSTER, "Values": [cluster]},
            {"Name": "instance-state-name", "Values": list(states)},
        ],
        "MaxResults": DESCRIBE_PAGE_SIZE,
    }
    instances = []
    while True:
        page = client.describe_instances(aws_retry=True, **params)
        for reservation in page.get("Reservations", []):
            instances.extend(reservation.get("Instances", []))
        token = page.get("NextToken")
        if not token:
            return instances
        params["NextToken"] = token


def launch(client, base_spec, launch_plan):
    """One RunInstances call per subnet (MinCount=MaxCount). Returns the launched instances.

    A failure in one subnet (e.g. no capacity in that zone) does not stop the others;
    LaunchError then reports what was launched so the caller can return it and a re-run converges.
    """
    launched, failures = [], []
    for subnet_id, n in launch_plan:
        spec = dict(base_spec, MinCount=n, MaxCount=n, ClientToken=uuid.uuid4().hex)
        if subnet_id:
            spec["SubnetId"] = subnet_id
        try:
            launched.extend(client.run_instances(aws_retry=True, **spec)["Instances"])
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            failures.append((subnet_id or "default subnet", n, e))
    if failures:
        message = "; ".join("launching %d in %s failed: %s" % (n, where, e) for where, n, e in failures)
        raise LaunchError(message, launched, failures)
    return launched


def start(client, instance_ids):
    if not instance_ids:
        return []
    return client.start_instances(aws_retry=True, InstanceIds=list(instance_ids))["StartingInstances"]


def terminate(client, instance_ids):
    changes = []
    ids = list(instance_ids)
    for i in range(0, len(ids), TERMINATE_BATCH):
        changes.extend(client.terminate_instances(aws_retry=True, InstanceIds=ids[i:i + TERMINATE_BATCH])["TerminatingInstances"])
    return changes


def wait_for(client, cluster, want_running, want_gone, timeout, known_states=None,
             max_delay=WAIT_MAX_DELAY_SECONDS, sleep=time.sleep, clock=time.monotonic):
    """Poll the cluster until every id in `want_running` runs and every id in `want_gone` is terminated.

    `known_states` ({id: state}, from the RunInstances/TerminateInstances answers) saves polls when
    those already show the final state. Each poll is one paginated DescribeInstances of the
    cluster. Returns the last poll's instances (None if no poll was needed); raises WaitTimeout.
    """
    known_states = known_states or {}
    not_running = set(i for i in want_running if known_states.get(i) != "running")
    not_gone = set(i for i in want_gone if known_states.get(i) != "terminated")
    deadline = clock() + timeout
    instances = None
    attempt = 0
    while not_running or not_gone:
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(not_running, not_gone, timeout)
        sleep(min(2 ** attempt, max_delay, remaining))
        attempt += 1
        instances = describe_cluster(client, cluster, ALIVE_STATES)
        states = dict((i["InstanceId"], i["State"]["Name"]) for i in instances)
        not_running = set(i for i in not_running if states.get(i) != "running")
        not_gone = set(i for i in not_gone if i in states)
    return instances
