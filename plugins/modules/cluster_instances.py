#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cluster_instances
short_description: Ensure an Erlang cluster has exactly a given number of EC2 instances of one role
version_added: 0.1.0
description:
  - Ensures exactly O(count) EC2 instances of one O(role) (C(boot_server) or C(worker)) exist in one
    Erlang O(cluster), identified by the tags C(erlang-cluster) and C(erlang-role).
  - Instances in state C(pending), C(running), C(stopping) or C(stopped) are members. Stopped
    (and stopping) members count towards O(count) and are started, so after a run every member
    runs; if there is a surplus, stopped members are terminated before running ones.
  - Missing instances are launched with one RunInstances call per subnet, spread over O(subnet_ids)
    so that every subnet ends up with as even a number of members as possible.
  - Surplus instances are terminated, newest first by default (see O(termination_order)). A boot
    server is never terminated unless O(allow_boot_server_termination=true).
  - New instances get user data (a C(KEY=value) file, see the collection's C(docs/design.md)) naming
    their cluster, role, node name and, for workers, every boot server of the cluster (sorted by address).
    It never carries the Erlang cookie or another secret. It is checked to be at most 16 KB before any API call
    (with the boot servers given in O(boot_server_ip) or O(boot_server_ips), else with one boot server of the
    longest address and node name), and again with the cluster's actual boot servers before any change.
  - A cluster may have several boot servers (O(role=boot_server) with O(count) greater than 1). They are spread
    over O(subnet_ids) like workers, so give at least as many subnets (in different availability zones) as boot
    servers to put each in its own.
  - "Members launched by an Auto Scaling group (tag C(aws:autoscaling:groupName)) are counted, but a run
    that would launch, start or terminate members fails without any change: the group owns their number."
  - Only the number of members is enforced. Existing instances are never modified or replaced
    when O(image_id), O(instance_type), tags or user data change.
  - An unchanged run makes one paginated DescribeInstances request (one per 1000 instances of
    the cluster) and no other request.
author:
  - skunkworks.erlang_ec2 developers (@skunkworks)
options:
  cluster:
    description:
      - Name of the Erlang cluster (value of the C(erlang-cluster) tag).
      - 1 to 63 characters of C(a-z), C(0-9), C(_) or C(-), starting with a letter or digit.
    type: str
    required: true
  role:
    description:
      - Role of the instances this task manages (value of the C(erlang-role) tag).
    type: str
    required: true
    choices: [boot_server, worker]
  count:
    description:
      - Exact number of instances of O(role) wanted in O(cluster).
      - For a boot server, 1 or more keeps that many (2 or 3 for availability); lowering it needs
        O(allow_boot_server_termination=true).
    type: int
    required: true
  image_id:
    description:
      - AMI to launch. Required when O(count) is greater than 0.
    type: str
  instance_type:
    description:
      - EC2 instance type to launch. Required when O(count) is greater than 0.
    type: str
  subnet_ids:
    description:
      - Subnets to launch into; new instances are spread over them evenly.
      - When empty, EC2 places instances in the default subnet of the default VPC.
    type: list
    elements: str
    default: []
  security_group_ids:
    description:
      - Security group IDs for new instances. When empty, EC2 uses the VPC's default group.
    type: list
    elements: str
    default: []
  key_name:
    description:
      - Name of the EC2 key pair for new instances.
    type: str
  instance_profile:
    description:
      - IAM instance profile for new instances, by name or ARN (passed to EC2 as is, no IAM request).
    type: str
  tags:
    description:
      - Extra tags for new instances and their volumes.
      - C(erlang-cluster), C(erlang-role), C(erlang-node-name) and, on workers, C(erlang-join) (the value
        of O(join)) are set by the module and cannot be given here.
      - C(Name) defaults to C(<cluster>-<role>).
    type: dict
    default: {}
  volume_size:
    description:
      - Size of the root EBS volume of new instances, in GiB. Default is the AMI's.
      - Costs one DescribeImages request per launching run (to find the AMI's root device name).
    type: int
  volume_type:
    description:
      - Type of the root EBS volume when O(volume_size) is set.
    type: str
    choices: [gp2, gp3, io1, io2, st1, sc1, standard]
    default: gp3
  node_name:
    description:
      - Name part of the Erlang node name (C(<node_name>@<private-ip>)), stored in the C(erlang-node-name) tag.
      - Defaults to C(boot) for a boot server and C(worker) for a worker.
    type: str
  boot_server_ip:
    description:
      - Private IPv4 address of the one boot server written in the user data of new workers.
      - Default is every running boot server of the cluster, found in the same DescribeInstances
        request that lists the cluster. If there is none, workers are launched without a boot server
        address (with a warning, or a failure with O(join=self)).
      - Mutually exclusive with O(boot_server_ips).
    type: str
  boot_server_ips:
    description:
      - Private IPv4 addresses of the boot servers written in the user data of new workers (in any
        order; the user data lists them sorted by address). Same default as O(boot_server_ip).
      - Their node names are taken from the cluster's boot servers at these addresses, else C(boot).
      - Mutually exclusive with O(boot_server_ip).
    type: list
    elements: str
    version_added: 0.2.0
  join:
    description:
      - How new workers join the cluster. Only for O(role=worker).
      - V(push) launches them for a playbook (C(skunkworks.erlang_ec2.site)) to put on the boot
        server's allow-list and start.
      - V(self) launches them from a node image (made by the C(skunkworks.erlang_ec2.bake_image)
        playbook) that, at every boot, reads the user data, puts its own address on the boot
        server's allow-list and starts its worker; no playbook runs against the new instances.
      - With V(self), a run that launches checks first, with one DescribeImages request, that
        O(image_id) is tagged C(erlang-ec2-image=node) and was not baked for another cluster
        (its C(erlang-cluster) tag), and that the cluster has a running boot server (or O(boot_server_ip)
        is given); otherwise it fails and launches nothing.
    type: str
    choices: [push, self]
    default: push
  user_data_extra:
    description:
      - Extra C(KEY=value) pairs for the user data. Keys are upper-cased and prefixed with C(ERLANG_).
      - "Values may only use C(A-Z a-z 0-9 @ . _ : , / -). Keys naming a cookie, secret or password are refused."
    type: dict
    default: {}
  metadata_tokens:
    description:
      - Whether the instance metadata service requires session tokens (IMDSv2).
    type: str
    choices: [required, optional]
    default: required
  metadata_hop_limit:
    description:
      - PUT response hop limit of the instance metadata service. 2 lets containers on the instance use IMDSv2.
    type: int
    default: 2
  instance_metadata_tags:
    description:
      - Whether instance tags are readable from the instance metadata service.
    type: str
    choices: [enabled, disabled]
    default: disabled
  termination_order:
    description:
      - Which surplus instances are terminated first (after stopped ones).
      - V(newest_first) undoes the latest scale-up and keeps long-running nodes.
    type: str
    choices: [newest_first, oldest_first]
    default: newest_first
  terminate_instance_ids:
    description:
      - Members to terminate in any case (for example a broken node); they are replaced if O(count) requires it.
      - IDs that are not (or no longer) members of the cluster and role are ignored, so re-runs are idempotent.
    type: list
    elements: str
    default: []
  allow_boot_server_termination:
    description:
      - Allow terminating boot servers. Without it, a run that would terminate one fails before any change.
    type: bool
    default: false
  allow_multiple_boot_servers:
    description:
      - Deprecated and ignored; O(count) greater than 1 for O(role=boot_server) is always allowed now.
        Passing it gives a deprecation warning.
    type: bool
  wait:
    description:
      - Wait until launched and started instances run and terminated ones are gone.
      - On timeout the task fails and lists the instances that did not reach their state.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait when O(wait=true).
    type: int
    default: 600
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Supports check mode (reports what would be launched, started and terminated) and diff mode
    (member count and IDs before and after).
  - Compared with M(amazon.aws.ec2_instance) and O(amazon.aws.ec2_instance#module:exact_count), this module
    terminates the newest instances by default, fails instead of warning when the wait times out,
    and needs one DescribeInstances request for an unchanged run whatever the number of instances.
"""

EXAMPLES = r"""
- name: One boot server
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: boot_server
    count: 1
    image_id: ami-0123456789abcdef0
    instance_type: t3.small
    subnet_ids: [subnet-0aaa, subnet-0bbb]
    security_group_ids: [sg-0123]
    instance_profile: erlang-node

- name: Two boot servers, one per subnet (each in its own availability zone)
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: boot_server
    count: 2
    image_id: ami-0123456789abcdef0
    instance_type: t3.small
    subnet_ids: [subnet-0aaa, subnet-0bbb]
  register: boot_servers

- name: Ten workers, spread over two subnets, with every boot server found in their user data
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: worker
    count: 10
    image_id: ami-0123456789abcdef0
    instance_type: t3.small
    subnet_ids: [subnet-0aaa, subnet-0bbb]
    tags:
      team: payments
    user_data_extra:
      contact_nodes: boot@10.0.0.4
  register: workers

- name: Grow the cluster by five workers that join by themselves (no playbook against them)
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: worker
    count: "{{ groups['erlang_workers'] | length + 5 }}"
    join: self
    image_id: "{{ node_image_id }}"  # AMI from the skunkworks.erlang_ec2.bake_image playbook
    instance_type: t3.small
    subnet_ids: [subnet-0aaa, subnet-0bbb]

- name: Replace a broken worker, keep ten
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: worker
    count: 10
    image_id: ami-0123456789abcdef0
    instance_type: t3.small
    subnet_ids: [subnet-0aaa, subnet-0bbb]
    terminate_instance_ids: [i-0123456789abcdef0]

- name: Tear the cluster down (boot server last, explicitly allowed)
  skunkworks.erlang_ec2.cluster_instances:
    cluster: demo
    role: "{{ item }}"
    count: 0
    allow_boot_server_termination: true
  loop: [worker, boot_server]
"""

RETURN = r"""
instances:
  description: The members of the cluster and role after the run, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Instance ID.
      type: str
      sample: i-0123456789abcdef0
    private_ip:
      description: Private IPv4 address.
      type: str
      sample: 172.31.0.4
    state:
      description: EC2 instance state.
      type: str
      sample: running
    node:
      description: Full Erlang node name, C(<node_name>@<private_ip>).
      type: str
      sample: worker@172.31.0.9
    subnet_id:
      description: Subnet of the instance.
      type: str
      sample: subnet-0aaa
    launch_time:
      description: Launch time, ISO 8601.
      type: str
      sample: "2026-11-24T10:00:00+00:00"
launched:
  description: IDs of the instances launched by this run (empty in check mode, see RV(launch_plan)).
  returned: always
  type: list
  elements: str
launch_plan:
  description: How many instances were (or in check mode would be) launched per subnet.
  returned: always
  type: list
  elements: dict
  sample: [{"subnet_id": "subnet-0aaa", "count": 2}]
started:
  description: IDs of stopped members started (or that would be started in check mode).
  returned: always
  type: list
  elements: str
terminated:
  description: IDs of the instances terminated (or that would be terminated in check mode).
  returned: always
  type: list
  elements: str
boot_server_ip:
  description: The first (lowest) boot server address written in new workers' user data (null if none).
  returned: always
  type: str
  sample: 172.31.0.4
boot_server_ips:
  description: Every boot server address written in new workers' user data, sorted by address (empty if none).
  returned: always
  type: list
  elements: str
  sample: ["172.31.0.4", "172.31.16.4"]
  version_added: 0.2.0
user_data:
  description: The user data given (or that would be given) to new instances. It holds no secret.
  returned: always
  type: str
  sample: "# erlang-ec2 user-data v1\nERLANG_CLUSTER=demo\nERLANG_ROLE=worker\n"
"""

try:
    import botocore
except ImportError:
    pass  # Handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import ec2_cluster

RESERVED_TAGS = (contract.TAG_CLUSTER, contract.TAG_ROLE, contract.TAG_NODE_NAME, contract.TAG_JOIN)
# Worst case for the 16 KB check before the boot server is known: longest IPv4 and node name.
WORST_CASE_BOOT_IP = "255.255.255.255"
WORST_CASE_BOOT_NODE_NAME = "b" * 64

ARGUMENT_SPEC = dict(
    cluster=dict(type="str", required=True),
    role=dict(type="str", required=True, choices=list(contract.ROLES)),
    count=dict(type="int", required=True),
    image_id=dict(type="str"),
    instance_type=dict(type="str"),
    subnet_ids=dict(type="list", elements="str", default=[]),
    security_group_ids=dict(type="list", elements="str", default=[]),
    key_name=dict(type="str"),
    instance_profile=dict(type="str"),
    tags=dict(type="dict", default={}),
    volume_size=dict(type="int"),
    volume_type=dict(type="str", choices=["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"], default="gp3"),
    node_name=dict(type="str"),
    boot_server_ip=dict(type="str"),
    boot_server_ips=dict(type="list", elements="str"),
    join=dict(type="str", choices=list(contract.JOIN_MODES), default=contract.JOIN_PUSH),
    user_data_extra=dict(type="dict", default={}),
    metadata_tokens=dict(type="str", choices=["required", "optional"], default="required"),
    metadata_hop_limit=dict(type="int", default=2),
    instance_metadata_tags=dict(type="str", choices=["enabled", "disabled"], default="disabled"),
    termination_order=dict(type="str", choices=[ec2_cluster.NEWEST_FIRST, ec2_cluster.OLDEST_FIRST], default=ec2_cluster.NEWEST_FIRST),
    terminate_instance_ids=dict(type="list", elements="str", default=[]),
    allow_boot_server_termination=dict(type="bool", default=False),
    # Deprecated no-op: several boot servers need no permission any more.
    allow_multiple_boot_servers=dict(type="bool", removed_in_version="1.0.0", removed_from_collection="skunkworks.erlang_ec2"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=600),
)


def preflight(module):
    """Every check that needs no API call; fails the task before any request is made."""
    p = module.params
    try:
        contract.validate_cluster_name(p["cluster"])
        node_name = p["node_name"] or contract.default_node_name(p["role"])
        contract.validate_node_name(node_name)
        if p["count"] < 0:
            raise contract.ClusterContractError("count must be 0 or more, got %d" % p["count"])
        if p["count"] > 0:
            missing = [k for k in ("image_id", "instance_type") if not p[k]]
            if missing:
                raise contract.ClusterContractError("%s %s required when count > 0" % (" and ".join(missing), "is" if len(missing) == 1 else "are"))
        if p["boot_server_ip"] is not None and not contract.is_ipv4(p["boot_server_ip"]):
            raise contract.ClusterContractError("boot_server_ip %r is not a dotted-quad IPv4 address" % p["boot_server_ip"])
        for ip in p["boot_server_ips"] or []:
            if not contract.is_ipv4(ip):
                raise contract.ClusterContractError("boot_server_ips: %r is not a dotted-quad IPv4 address" % (ip,))
        if len(set(p["boot_server_ips"] or [])) != len(p["boot_server_ips"] or []):
            raise contract.ClusterContractError("boot_server_ips names an address twice: %s" % ", ".join(p["boot_server_ips"]))
        if (p["boot_server_ip"] or p["boot_server_ips"]) and p["role"] == contract.ROLE_BOOT_SERVER:
            raise contract.ClusterContractError("boot_server_ip and boot_server_ips are for workers; a boot server does not get one")
        if p["join"] == contract.JOIN_SELF and p["role"] != contract.ROLE_WORKER:
            raise contract.ClusterContractError("join=self is for workers; a boot server is set up by the site playbook")
        reserved = sorted(k for k in p["tags"] if k in RESERVED_TAGS)
        if reserved:
            raise contract.ClusterContractError("tags may not set %s: the module sets them from cluster, role and node_name" % ", ".join(reserved))
        if p["volume_size"] is not None and p["volume_size"] < 1:
            raise contract.ClusterContractError("volume_size must be at least 1 (GiB), got %d" % p["volume_size"])
        if p["wait_timeout"] < 0 or not 1 <= p["metadata_hop_limit"] <= 64:
            raise contract.ClusterContractError("wait_timeout must be >= 0 and metadata_hop_limit between 1 and 64")
        # The size and secret checks with the boot servers given, else one of the longest address and node name;
        # refuse() checks again with the cluster's boot servers, before any change.
        worst_ips = []
        if p["role"] == contract.ROLE_WORKER:
            worst_ips = given_boot_server_ips(p) or [WORST_CASE_BOOT_IP]
        render_user_data(module, node_name, worst_ips, WORST_CASE_BOOT_NODE_NAME)
    except contract.ClusterContractError as e:
        module.fail_json(msg=str(e))
    return node_name


def given_boot_server_ips(params):
    """The boot server addresses given in boot_server_ip or boot_server_ips ([] if none)."""
    return [params["boot_server_ip"]] if params["boot_server_ip"] else list(params["boot_server_ips"] or [])


def render_user_data(module, node_name, boot_server_ips, boot_node_names):
    p = module.params
    return contract.render_user_data(p["cluster"], p["role"], node_name, boot_node_name=boot_node_names,
                                     extra=p["user_data_extra"], boot_server_ips=boot_server_ips)


def resolve_boot_servers(module, records):
    """([ip], {ip: node name}) of the boot servers for new workers' user data, sorted by address."""
    p = module.params
    if p["role"] != contract.ROLE_WORKER:
        return [], {}
    names = dict((r["private_ip"], r["node_name"]) for r in records if r["role"] == contract.ROLE_BOOT_SERVER and r["private_ip"])
    ips = given_boot_server_ips(p) or [r["private_ip"] for r in ec2_cluster.find_boot_servers(records)]
    ips = contract.sort_ipv4(ips)
    return ips, dict((ip, names[ip]) for ip in ips if ip in names)


def run(module, client, node_name):
    """Refuse -> apply -> report: every refusal (and check mode) comes before the first change."""
    p = module.params
    try:
        records = [ec2_cluster.summarize(i) for i in ec2_cluster.describe_cluster(client, p["cluster"])]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Failed to describe the instances of cluster %s" % p["cluster"])
    members = ec2_cluster.sort_by_age([r for r in records if r["role"] == p["role"]])
    plan, boot_ips, user_data, image = refuse(module, client, node_name, records, members)
    result = planned_result(plan, boot_ips, user_data)
    before_ids = [r["id"] for r in members]
    kept = [i for i in before_ids if i not in plan["terminate"]]
    if not result["changed"] or module.check_mode:
        new = ["(new in %s)" % (s or "default subnet") for s, n in plan["launch"] for dummy in range(n)]
        set_diff(result, before_ids, kept + new)
        result["instances"] = [ec2_cluster.public_record(r) for r in members]
        module.exit_json(**result)
    launched, polled, known_states = apply(module, client, node_name, plan, user_data, image, members, result)
    result["instances"] = final_instances(members, plan, launched, polled, known_states)
    set_diff(result, before_ids, kept + result["launched"])
    module.exit_json(**result)


def planned_result(plan, boot_ips, user_data):
    """The module's result for a plan, before anything is done (what check mode reports)."""
    return dict(
        changed=bool(plan["launch"] or plan["start"] or plan["terminate"]),
        launched=[],
        launch_plan=[dict(subnet_id=s, count=n) for s, n in plan["launch"]],
        started=plan["start"],
        terminated=plan["terminate"],
        boot_server_ip=boot_ips[0] if boot_ips else None,
        boot_server_ips=boot_ips,
        user_data=user_data,
    )


def autoscaling_refusal(params, members, plan):
    """Why a change to members of an Auto Scaling group is refused (None: it is not)."""
    scaled = sorted(set(r["autoscaling_group"] for r in members if r["autoscaling_group"]))
    if scaled and (plan["launch"] or plan["start"] or plan["terminate"]):
        # The group would undo the change (or fight over the count): its capacity is the one to change.
        return ("%s members of cluster %s belong to the Auto Scaling group(s) %s: change the group's desired "
                "capacity instead of count. Nothing was changed." % (params["role"], params["cluster"], ", ".join(scaled)))
    return None


def refuse(module, client, node_name, records, members):
    """The plan, or a failure with nothing changed: (plan, boot server ips, user data, node image or None)."""
    p = module.params
    instances = [ec2_cluster.public_record(r) for r in members]
    try:
        plan = ec2_cluster.plan_changes(
            members, p["role"], p["count"], p["subnet_ids"], p["termination_order"],
            p["terminate_instance_ids"], p["allow_boot_server_termination"],
        )
        boot_ips, boot_node_names = resolve_boot_servers(module, records)
        user_data = render_user_data(module, node_name, boot_ips, boot_node_names)
    except (ec2_cluster.PlanError, contract.ClusterContractError) as e:
        module.fail_json(msg=str(e), instances=instances)
    refusal = autoscaling_refusal(p, members, plan)
    if refusal:
        module.fail_json(msg=refusal, instances=instances)
    image = None
    if plan["launch"] and p["join"] == contract.JOIN_SELF:
        image = self_join_image(module, client, boot_ips, instances)
    elif plan["launch"] and p["role"] == contract.ROLE_WORKER and not boot_ips:
        module.warn("cluster %s has no running boot server: new workers get no boot server address in their user data" % p["cluster"])
    return plan, boot_ips, user_data, image


def self_join_image(module, client, boot_ips, instances):
    """The node image of a join=self launch, checked in check mode too: a launch that could not join is refused."""
    p = module.params
    if not boot_ips:
        module.fail_json(msg="join=self needs a running boot server in cluster %s (or boot_server_ip(s)): its address goes "
                             "in the new workers' user data. Nothing was launched." % p["cluster"], instances=instances)
    try:
        image = ec2_cluster.describe_image(client, p["image_id"])
        ec2_cluster.check_node_image(image, p["cluster"])
    except ec2_cluster.PlanError as e:
        module.fail_json(msg=str(e), instances=instances)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Failed to describe image %s" % p["image_id"])
    return image


def apply(module, client, node_name, plan, user_data, image, members, result):
    """Terminate, start, launch, wait; result reports what was done: (launched, last wait poll, known states)."""
    p = module.params
    result.update(changed=False, started=[], terminated=[])
    spec = None
    if plan["launch"]:
        # Everything the launch needs is resolved before the first change.
        try:
            spec = run_spec(module, client, node_name, user_data, image)
        except (ec2_cluster.PlanError, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json(msg="Failed to prepare the launch: %s" % e, **result)
    known_states = change_states(module, client, plan, result)
    launched = launch(module, client, spec, plan, members, result, known_states)
    polled = None
    if p["wait"]:
        try:
            polled = ec2_cluster.wait_for(
                client, p["cluster"], result["launched"] + plan["start"], plan["terminate"], p["wait_timeout"], known_states,
            )
        except ec2_cluster.WaitTimeout as e:
            result["instances"] = final_instances(members, plan, launched, None, known_states)
            module.fail_json(msg=str(e), not_running=e.not_running, not_terminated=e.not_terminated, **result)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json_aws(e, msg="Failed while waiting for instances of cluster %s" % p["cluster"], **result)
    return launched, polled, known_states


def change_states(module, client, plan, result):
    """Terminate then start: {instance id: state the API answered}."""
    known_states = {}
    try:
        # Terminate first: a surplus never coexists with launches, but forced replacements
        # should free their capacity before new instances take it.
        for change in ec2_cluster.terminate(client, plan["terminate"]):
            known_states[change["InstanceId"]] = change["CurrentState"]["Name"]
        result.update(terminated=plan["terminate"], changed=result["changed"] or bool(plan["terminate"]))
        for change in ec2_cluster.start(client, plan["start"]):
            known_states[change["InstanceId"]] = change["CurrentState"]["Name"]
        result.update(started=plan["start"], changed=result["changed"] or bool(plan["start"]))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Failed to change the state of instances of cluster %s" % module.params["cluster"], **result)
    return known_states


def launch(module, client, spec, plan, members, result, known_states):
    """Launch the plan; a partial launch fails the module with what was launched."""
    launched, launch_error = [], None
    try:
        launched = ec2_cluster.launch(client, spec, plan["launch"]) if plan["launch"] else []
    except ec2_cluster.LaunchError as e:
        launched, launch_error = e.launched, e
    for instance in launched:
        known_states[instance["InstanceId"]] = instance["State"]["Name"]
    result["launched"] = [i["InstanceId"] for i in launched]
    result["changed"] = result["changed"] or bool(launched)
    if launch_error:
        result["instances"] = [ec2_cluster.public_record(r) for r in members if r["id"] not in plan["terminate"]]
        result["instances"] += [ec2_cluster.public_record(ec2_cluster.summarize(i)) for i in launched]
        module.fail_json(msg="%s (launched %d of %d; a re-run launches the rest)" % (
            launch_error, len(launched), sum(n for s, n in plan["launch"])), **result)
    return launched


def run_spec(module, client, node_name, user_data, image=None):
    p = module.params
    root_volume = None
    if p["volume_size"]:
        image = image or ec2_cluster.describe_image(client, p["image_id"])
        root_volume = (ec2_cluster.root_device_name(image), p["volume_size"], p["volume_type"])
    return ec2_cluster.build_run_spec(
        p["image_id"], p["instance_type"], user_data,
        ec2_cluster.instance_tags(p["cluster"], p["role"], node_name, p["tags"], p["join"]),
        p["security_group_ids"], p["key_name"], p["instance_profile"],
        p["metadata_tokens"], p["metadata_hop_limit"], p["instance_metadata_tags"], root_volume,
    )


def final_instances(members, plan, launched, polled, known_states):
    """Members after the run: from the last wait poll if there was one, else from the API answers."""
    if polled is not None:
        wanted = set(r["id"] for r in members) | set(i["InstanceId"] for i in launched)
        records = [ec2_cluster.summarize(i) for i in polled]
        records = [r for r in records if r["id"] in wanted and r["id"] not in plan["terminate"]]
    else:
        records = [dict(r) for r in members if r["id"] not in plan["terminate"]]
        records += [ec2_cluster.summarize(i) for i in launched]
        for r in records:
            r["state"] = known_states.get(r["id"], r["state"])
    return [ec2_cluster.public_record(r) for r in ec2_cluster.sort_by_age(records)]


def set_diff(result, before_ids, after_ids):
    if result["changed"]:
        result["diff"] = dict(
            before=dict(count=len(before_ids), instance_ids=sorted(before_ids)),
            after=dict(count=len(after_ids), instance_ids=sorted(after_ids)),
        )


def main():
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                              mutually_exclusive=[("boot_server_ip", "boot_server_ips")])
    # Preflight before the client exists: bad input fails without any request.
    node_name = preflight(module)
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff(
        catch_extra_error_codes=ec2_cluster.CATCH_NOT_YET_VISIBLE + ec2_cluster.CATCH_NOT_YET_STOPPED))
    run(module, client, node_name)


if __name__ == "__main__":
    main()
