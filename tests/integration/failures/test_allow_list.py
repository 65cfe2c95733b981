"""Stale allow-list entries (instances gone) and a recycled IP: an IP EC2 hands to a new instance must not inherit
the boot server's trust of the instance that had it; reconcile removes stale entries, and a new instance is allowed
only once it is a live worker of the cluster."""

import ipaddress
import json
import os
import shlex
import time

import playbook_runner
from failures_lib import LAYOUT, allow_list, refresh, running_allow_list
from localcloud_cluster import contract
from playbook_runner import ROOT

IMAGE = os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a")


def free_ips(cluster, count):
    """IPs of the cluster's subnet that no instance has (from the top of the subnet down)."""
    ec2 = cluster.boto3("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]},
                                           {"Name": "availability-zone", "Values": ["us-east-1a"]}])["Subnets"][0]
    used = {i.get("PrivateIpAddress") for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    net = ipaddress.ip_network(subnet["CidrBlock"])
    out = [str(ip) for ip in reversed(list(net.hosts())[:-4]) if str(ip) not in used][:count]
    return subnet["SubnetId"], out


def worker_groups(cluster, ip):
    """The security groups of the cluster's worker at ip (as provision gave them)."""
    found = cluster.boto3("ec2").describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [cluster.name]},
                                                             {"Name": "private-ip-address", "Values": [ip]},
                                                             {"Name": "instance-state-name", "Values": ["running"]}])
    groups = [g["GroupId"] for r in found["Reservations"] for i in r["Instances"] for g in i["SecurityGroups"]]
    assert groups, "worker %s has no security group" % ip
    return groups


def allow(cluster, addresses, state="present"):
    """boot_server_allow_list on every boot server (ad hoc, as an operator would)."""
    return playbook_runner.run_adhoc(
        ",".join(cluster.boot_server_ids.values()), "skunkworks.erlang_ec2.boot_server_allow_list",
        json.dumps({"node": "{{ erlang_node }}", "addresses": addresses, "state": state, "cookie_file": LAYOUT["cookie_file"]}), "--become",
        inventory=os.path.join(ROOT, "inventory"), env=cluster.env, check=True)


def loads_from_boot_server(cluster, ip, bound=20):
    """Can the host at ip load a file from the boot server (as a booting worker would)? erl -loader inet, killed after
    `bound` seconds (a refused client waits for an answer that never comes)."""
    program = 'io:format("GET ~p~n", [element(1, erl_prim_loader:get_file("%s/hello_cluster.boot"))]), halt().' % LAYOUT["current_link"]
    out = cluster.ssh(ip, "cd /tmp && timeout -s KILL %d erl -noshell -noinput -loader inet -hosts %s -eval %s"
                      % (bound, " ".join(cluster.boot_server_ips), shlex.quote(program)))
    return "GET ok" in out.stdout


def test_stale_entries_and_a_recycled_ip(cluster, row):
    """stale allow-list entries of terminated instances, and a recycled IP reused by a new instance"""
    refresh(cluster)
    workers = sorted(cluster.workers.values())
    ec2 = cluster.boto3("ec2")
    subnet_id, (recycled, gone) = free_ips(cluster, 2)
    # Two entries left by instances that no longer exist (as a worker terminated by AWS leaves its IP behind).
    allow(cluster, [recycled, gone])
    for boot_ip in cluster.boot_server_ips:
        assert {recycled, gone} <= set(allow_list(cluster, boot_ip)) and {recycled, gone} <= set(running_allow_list(cluster, boot_ip))
    # EC2 hands one of those IPs to a new instance that is no worker of this cluster, launched in the workers'
    # security groups (localcloud enforces them): the fence lets it through, the allow-list is the gate looked at.
    reply = ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.small", KeyName="localcloud",
                              SubnetId=subnet_id, PrivateIpAddress=recycled, SecurityGroupIds=worker_groups(cluster, workers[0]),
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "%s-stranger" % cluster.name}]}])
    stranger = reply["Instances"][0]["InstanceId"]
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=[stranger], WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        deadline = time.monotonic() + 120
        while cluster.ssh(recycled, "true").returncode != 0:
            assert time.monotonic() < deadline, "the new instance does not answer SSH"
            time.sleep(2)
        # The hazard is real: while the stale entry is there, the new instance boots from the boot server.
        assert loads_from_boot_server(cluster, recycled), "a stale entry should let the recycled IP load (the fault is not real)"
        first = cluster.playbook("reconcile")
        for boot_ip in cluster.boot_server_ips:
            assert allow_list(cluster, boot_ip) == workers and running_allow_list(cluster, boot_ip) == workers
        assert not loads_from_boot_server(cluster, recycled, bound=10), "the recycled IP still loads after reconcile"
        # Once it is a live worker of the cluster (tagged as cluster_instances tags it), reconcile allows it.
        ec2.create_tags(Resources=[stranger], Tags=[{"Key": contract.TAG_CLUSTER, "Value": cluster.name},
                                                    {"Key": contract.TAG_ROLE, "Value": contract.ROLE_WORKER},
                                                    {"Key": contract.TAG_NODE_NAME, "Value": contract.default_node_name(contract.ROLE_WORKER)}])
        second = cluster.playbook("reconcile")
        for boot_ip in cluster.boot_server_ips:
            assert allow_list(cluster, boot_ip) == sorted(workers + [recycled])
        assert loads_from_boot_server(cluster, recycled)
    finally:
        ec2.terminate_instances(InstanceIds=[stranger])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[stranger], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    third = cluster.playbook("reconcile")
    for boot_ip in cluster.boot_server_ips:
        assert allow_list(cluster, boot_ip) == workers
    row.did = ("reconcile removed both stale entries (changed=%d), the new instance on the recycled IP could no longer load; "
               "tagged as a worker, reconcile allowed it (changed=%d); terminated, reconcile removed it (changed=%d)"
               % (first.changed, second.changed, third.changed))
    assert first.changed and second.changed and third.changed
    row.close()
    row.check()
