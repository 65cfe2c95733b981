"""The security-group fence of a cluster made by provision, on localcloud (which enforces groups as EC2 does).

The issue's report, as a test: an instance launched in the same VPC outside the cluster's groups could open a TCP
connection to the boot server's EPMD. Now it cannot reach any cluster port, while a worker reaches the boot server's
EPMD, distribution port and file port; SSH is open to the controller only (docs/security.md lists the rules).
A probe's result: "open" (connected), "refused" (the host answered: no listener) or "blocked" (no answer: dropped).
"""

import json
import os
import shlex
import socket
import time

import pytest

import harness_group

PROBE_SECONDS = 3
# Runs on a host: connects to each [ip, port] and prints one result per target (no secret in it).
PROBE = r"""
import json, socket, sys
results = []
for ip, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(float(sys.argv[2]))
    try:
        sock.connect((ip, port))
        results.append("open")
    except socket.timeout:
        results.append("blocked")
    except ConnectionRefusedError:
        results.append("refused")
    except OSError as exc:
        results.append("error: %s" % exc)
    finally:
        sock.close()
print(json.dumps(results))
"""


def probe_from(cluster, source_ip, targets):
    """{(ip, port): result} for TCP connections opened on host `source_ip`."""
    command = "python3 -c %s %s %s" % (shlex.quote(PROBE), shlex.quote(json.dumps(targets)), PROBE_SECONDS)
    proc = cluster.ssh(source_ip, command)
    assert proc.returncode == 0, proc.stderr
    return dict(zip([tuple(t) for t in targets], json.loads(proc.stdout)))


def listening_ports(cluster, ip):
    """The TCP ports host `ip` listens on (from /proc/net/tcp: state 0A)."""
    proc = cluster.ssh(ip, "cat /proc/net/tcp")
    assert proc.returncode == 0, proc.stderr
    ports = set()
    for line in proc.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def distribution_port(cluster, ip):
    """The node's distribution port on host `ip`: the one it listens on in the pinned range."""
    pinned = [p for p in listening_ports(cluster, ip) if 9100 <= p <= 9155]
    assert len(pinned) == 1, "expected one distribution listener on %s, found %s" % (ip, pinned)
    return pinned[0]


@pytest.fixture(scope="module")
def outsider(cluster):
    """An instance in the cluster's VPC and subnet, outside its groups (the test harness's group: SSH from the
    controller only); terminated at the end."""
    ec2 = cluster.boto3("ec2")
    worker_id = sorted(cluster.workers)[0]
    subnet = ec2.describe_instances(InstanceIds=[worker_id])["Reservations"][0]["Instances"][0]["SubnetId"]
    vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    reply = ec2.run_instances(ImageId=os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a"), MinCount=1, MaxCount=1,
                              InstanceType="t3.small", KeyName=cluster.env.get("LOCALCLOUD_KEY_NAME", "localcloud"), SubnetId=subnet,
                              SecurityGroupIds=harness_group.security_group_ids(ec2, vpc),
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "%s-outsider" % cluster.name}]}])
    instance = reply["Instances"][0]
    try:
        ec2.get_waiter("instance_running").wait(InstanceIds=[instance["InstanceId"]], WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        deadline = time.monotonic() + 120
        while cluster.ssh(instance["PrivateIpAddress"], "true").returncode != 0:
            assert time.monotonic() < deadline, "the outsider does not answer SSH"
            time.sleep(2)
        yield instance["PrivateIpAddress"]
    finally:
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])


def cluster_ports(cluster):
    """[(ip, port)] of every cluster port: the boot server's SSH, EPMD, file port and distribution port, and a worker's
    EPMD and distribution port."""
    cluster.refresh()
    boot, worker = cluster.boot_server_ip, sorted(cluster.workers.values())[0]
    return [[boot, 22], [boot, 4369], [boot, 4368], [boot, distribution_port(cluster, boot)],
            [worker, 4369], [worker, distribution_port(cluster, worker)]]


def test_an_outsider_in_the_vpc_reaches_no_cluster_port(cluster, outsider):
    results = probe_from(cluster, outsider, cluster_ports(cluster))
    assert set(results.values()) == {"blocked"}, results


def test_a_worker_reaches_the_boot_servers_ports_but_not_its_ssh(cluster):
    cluster.refresh()
    boot = cluster.boot_server_ip
    worker = sorted(cluster.workers.values())[-1]
    targets = [[boot, 4369], [boot, 4368], [boot, distribution_port(cluster, boot)], [boot, 22]]
    results = probe_from(cluster, worker, targets)
    assert [results[tuple(t)] for t in targets] == ["open", "open", "open", "blocked"], results


def test_the_controller_reaches_ssh_only(cluster):
    """The controller (172.31.0.1, provision_ssh_cidr) is outside the cluster: SSH yes, EPMD and the loader no."""
    cluster.refresh()
    results = {}
    for port in (22, 4369, 4368):
        sock = socket.socket()
        sock.settimeout(PROBE_SECONDS)
        try:
            sock.connect((cluster.boot_server_ip, port))
            results[port] = "open"
        except socket.timeout:
            results[port] = "blocked"
        except OSError as exc:
            results[port] = "error: %s" % exc
        finally:
            sock.close()
    assert results == {22: "open", 4369: "blocked", 4368: "blocked"}, results
