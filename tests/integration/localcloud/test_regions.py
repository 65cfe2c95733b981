"""Each region (and account) is a network of its own, as on EC2: every default VPC is 172.31.0.0/16, so the
same private IP can be a host in two regions at once.

The default region (us-east-1 of the default account) is routed on this machine: `ssh <private IP>` reaches
its hosts. Another region's hosts are reached through that region's network namespace: `python -m localcloud
ssh --region R <ip>`, `... ssh <private DNS name>`, or any ssh (Ansible's too) with localcloud's ProxyCommand.
"""

import argparse
import ipaddress
import json
import os
import shlex
import subprocess
import sys

import boto3
import pytest

from conftest import Launcher, podman_state, ssh, wait_ssh
from localcloud import cli, config
from playbook_runner import run_adhoc

REGION = "eu-west-1"  # the region these tests launch in, besides the default one
CLUSTER = "lcregions-%d" % os.getpid()  # the pair's erlang-cluster tag, for the collection's inventory plugin
OTHER_ACCOUNT = "111122223333"
IMDS = "http://169.254.169.254/latest"


def localcloud_ssh(*args, check=True, timeout=60):
    """`python -m localcloud ssh ARGS` (the default key pair): its stdout."""
    proc = subprocess.run([sys.executable, "-m", "localcloud", "ssh"] + list(args), cwd=str(config.REPO_ROOT),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("localcloud ssh %s failed (%d): %s" % (" ".join(args), proc.returncode, proc.stderr))
    return proc.stdout


def in_netns(name, *argv):
    return subprocess.run(["ip", "netns", "exec", name] + list(argv), capture_output=True, text=True, timeout=30, check=True).stdout


SHARED_BLOCK = "172.31.0.0/20"  # the default subnet of zone a, in every region


def same_address_in(*clients):
    """An address free in the zone-a default subnet of every client's region (and account), and those subnets.

    Taken from the top of the block: moto hands out addresses from the bottom (to everyone else's instances too),
    and keeps an address for good once an instance had it, unless its interface is deleted on termination."""
    subnets, used = [], set()
    for ec2 in clients:
        subnet = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
                  if s["CidrBlock"] == SHARED_BLOCK][0]
        subnets.append(subnet)
        for page in ec2.get_paginator("describe_network_interfaces").paginate(Filters=[{"Name": "subnet-id", "Values": [subnet]}]):
            used.update(a["PrivateIpAddress"] for n in page["NetworkInterfaces"] for a in n["PrivateIpAddresses"])
    free = [str(a) for a in reversed(list(ipaddress.ip_network(SHARED_BLOCK).hosts())[:-1]) if str(a) not in used]
    return free[0], subnets


def at(subnet, ip=None):
    """RunInstances arguments: a primary interface in `subnet` (at `ip`), deleted on termination (frees the address)."""
    nic = {"DeviceIndex": 0, "SubnetId": subnet, "DeleteOnTermination": True}
    if ip:
        nic["PrivateIpAddress"] = ip
    return {"NetworkInterfaces": [nic]}


def cluster_tags(role):
    return [{"ResourceType": "instance", "Tags": [{"Key": "erlang-cluster", "Value": CLUSTER}, {"Key": "erlang-role", "Value": role}]}]


@pytest.fixture(scope="module")
def pair(cloud):
    """A host in the default region and one in REGION at the same private IP, plus a second host in REGION."""
    here_launcher = Launcher(cloud.client())
    west = cloud.client("ec2", region=REGION)
    west_launcher = Launcher(west)
    try:
        ip, (east_subnet, west_subnet) = same_address_in(here_launcher.ec2, west)
        here = here_launcher.run(KeyName=config.DEFAULT_KEY_NAME, TagSpecifications=cluster_tags("boot_server"), **at(east_subnet, ip))[0]
        there = west_launcher.run(KeyName=config.DEFAULT_KEY_NAME, TagSpecifications=cluster_tags("worker"), **at(west_subnet, ip))[0]
        neighbour = west_launcher.run(KeyName=config.DEFAULT_KEY_NAME, **at(west_subnet))[0]
        wait_ssh(ip, cloud.paths.ssh_key)
        yield argparse.Namespace(here=here, there=there, neighbour=neighbour, ip=ip, west=west, key=cloud.paths.ssh_key)
    finally:
        west_launcher.cleanup()
        here_launcher.cleanup()
    for instance in (here, there, neighbour):
        assert podman_state(instance["InstanceId"]) is None
        assert not os.path.exists("/run/netns/" + config.host_netns_name(instance["InstanceId"]))


def test_the_same_private_ip_is_a_host_in_each_region(pair):
    assert pair.there["Placement"]["AvailabilityZone"].startswith(REGION)
    assert pair.there["PrivateIpAddress"] == pair.ip
    assert [i["State"]["Name"] for i in (pair.here, pair.there)] == ["running", "running"]
    assert podman_state(pair.here["InstanceId"]) == podman_state(pair.there["InstanceId"]) == "running"
    # The default region is routed here: plain ssh to the IP reaches its host, never the other region's.
    assert ssh(pair.ip, pair.key, "curl -s %s/meta-data/instance-id" % IMDS).stdout == pair.here["InstanceId"]
    # The other region's host, through its region's network, answers with its own identity.
    out = localcloud_ssh("--region", REGION, pair.ip, "--",
                         "curl -s %s/meta-data/instance-id; echo; curl -s %s/meta-data/placement/region; echo;"
                         " curl -s %s/meta-data/local-hostname; echo; hostname; ip -4 -o addr show eth0; cat /sys/class/net/eth0/address"
                         % (IMDS, IMDS, IMDS)).split("\n")
    assert out[:4] == [pair.there["InstanceId"], REGION, pair.there["PrivateDnsName"], "ip-" + pair.ip.replace(".", "-")]
    assert " %s/16 " % pair.ip in out[4]
    assert out[5] == pair.there["NetworkInterfaces"][0]["MacAddress"]
    # EC2's private DNS name names the region: ssh by that name needs no --region.
    assert pair.there["PrivateDnsName"] == "ip-%s.%s.compute.internal" % (pair.ip.replace(".", "-"), REGION)
    assert localcloud_ssh(pair.there["PrivateDnsName"], "--", "curl -s %s/meta-data/instance-id" % IMDS) == pair.there["InstanceId"]
    assert localcloud_ssh(pair.here["PrivateDnsName"], "--", "curl -s %s/meta-data/instance-id" % IMDS) == pair.here["InstanceId"]


def test_imds_tells_the_two_hosts_apart(pair):
    token_request = "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' %s/api/token" % IMDS
    there_token = localcloud_ssh("--region", REGION, pair.ip, "--", token_request)
    here_token = ssh(pair.ip, pair.key, token_request).stdout
    document = "curl -s -H %s %s/dynamic/instance-identity/document"
    doc = json.loads(localcloud_ssh("--region", REGION, pair.ip, "--", document % (shlex.quote("X-aws-ec2-metadata-token: " + there_token), IMDS)))
    assert (doc["instanceId"], doc["region"], doc["privateIp"]) == (pair.there["InstanceId"], REGION, pair.ip)
    doc = json.loads(ssh(pair.ip, pair.key, document % (shlex.quote("X-aws-ec2-metadata-token: " + here_token), IMDS)).stdout)
    assert (doc["instanceId"], doc["region"]) == (pair.here["InstanceId"], config.DEFAULT_REGION)
    # A token is bound to its host: the other region's host at the same IP cannot use it.
    status = "curl -s -o /dev/null -w '%%{http_code}' -H %s %s/meta-data/instance-id"
    assert ssh(pair.ip, pair.key, status % (shlex.quote("X-aws-ec2-metadata-token: " + there_token), IMDS)).stdout == "401"
    assert localcloud_ssh("--region", REGION, pair.ip, "--", status % (shlex.quote("X-aws-ec2-metadata-token: " + here_token), IMDS)) == "401"
    # The region's IMDS listens inside the region's namespace only.
    name = config.region_network_name(config.ACCOUNT_ID, REGION)
    assert "%s:80 " % config.IMDS_ADDRESS in in_netns(name, "ss", "-Hlnt")


def test_hosts_of_a_region_reach_each_other_and_not_the_default_region(pair):
    neighbour_ip = pair.neighbour["PrivateIpAddress"]
    assert ipaddress.ip_address(neighbour_ip) in ipaddress.ip_network(config.NETWORK_SUBNET)
    # One network per region (TCP to sshd, as Erlang nodes of one cluster talk to each other): the address
    # both regions have is, seen from this region, this region's host (its MAC), never the default region's.
    out = localcloud_ssh("--region", REGION, neighbour_ip, "--",
                         "curl -s %s/meta-data/instance-id; echo; timeout 5 bash -c 'head -c 4 < /dev/tcp/%s/22'; echo;"
                         " ip neigh show %s | cut -d' ' -f5" % (IMDS, pair.ip, pair.ip)).split("\n")
    assert out[:3] == [pair.neighbour["InstanceId"], "SSH-", pair.there["NetworkInterfaces"][0]["MacAddress"]]
    assert pair.here["NetworkInterfaces"][0]["MacAddress"] != pair.there["NetworkInterfaces"][0]["MacAddress"]


def test_ansible_reaches_both_hosts_at_one_address(pair, tmp_path):
    """The controller's ssh: the default region's host by IP, the other region's by private DNS name and ProxyCommand."""
    env_lines = dict(line[len("export "):].split("=", 1) for line in cli.env_lines(config.Paths()) if line.startswith("export "))
    proxy = shlex.split(env_lines["LOCALCLOUD_SSH_PROXY_COMMAND"])[0]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {
        "east": {"ansible_host": pair.ip},
        "west": {"ansible_host": pair.there["PrivateDnsName"],
                 "ansible_ssh_common_args": "-o ProxyCommand=%s" % shlex.quote(proxy)},
    }}}))
    proc = run_adhoc(
        "all", "ansible.builtin.command", "curl -s %s/meta-data/instance-id" % IMDS, "-u", "admin", "--private-key", str(pair.key), "-o",
        inventory=inventory, extra_vars={"ansible_python_interpreter": "/usr/bin/python3"}, timeout=180,
        env=dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_CONTROL_PATH_DIR=str(tmp_path / "cp"),
                 ANSIBLE_SSH_ARGS="-C -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = {line.split(" | ")[0]: line.rsplit(" ", 1)[-1] for line in proc.stdout.splitlines() if " | CHANGED " in line}
    assert seen == {"east": pair.here["InstanceId"], "west": pair.there["InstanceId"]}, proc.stdout


def test_the_collection_inventory_reaches_both_regions_by_private_dns_name(pair, tmp_path):
    """The documented recipe for a cluster across regions: the inventory plugin with ansible_host_source
    private_dns_name, and localcloud's ProxyCommand for every host (it connects directly in the default region)."""
    env = dict(line[len("export "):].split("=", 1) for line in cli.env_lines(config.Paths()) if line.startswith("export "))
    env = {k: shlex.split(v)[0] for k, v in env.items()}
    (tmp_path / "inventory" / "group_vars").mkdir(parents=True)
    (tmp_path / "inventory" / "regions.erlang_ec2.yml").write_text(
        "plugin: skunkworks.erlang_ec2.ec2\nendpoint_url: %s\nregions: [%s, %s]\nclusters: [%s]\nansible_host_source: private_dns_name\n"
        % (env["AWS_ENDPOINT_URL"], config.DEFAULT_REGION, REGION, CLUSTER))
    (tmp_path / "inventory" / "group_vars" / "all.yml").write_text(json.dumps({
        "ansible_user": "admin", "ansible_ssh_private_key_file": str(pair.key), "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o ProxyCommand=%s -o UserKnownHostsFile=/dev/null" % shlex.quote(env["LOCALCLOUD_SSH_PROXY_COMMAND"]),
    }))
    env.update(ANSIBLE_COLLECTIONS_PATH=str(config.REPO_ROOT / ".collections"), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_CONTROL_PATH_DIR=str(tmp_path / "cp"))
    proc = run_adhoc("all", "ansible.builtin.command", "curl -s %s/meta-data/instance-id" % IMDS, "-o",
                     inventory=tmp_path / "inventory", timeout=180, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = {line.split(" | ")[0]: line.rsplit(" ", 1)[-1] for line in proc.stdout.splitlines() if " | CHANGED " in line}
    assert seen == {pair.here["InstanceId"]: pair.here["InstanceId"], pair.there["InstanceId"]: pair.there["InstanceId"]}, proc.stdout


def test_ssh_to_a_region_without_hosts_fails_clearly(cloud):
    proc = subprocess.run([sys.executable, "-m", "localcloud", "ssh", "--region", "me-central-1", "172.31.0.4", "--", "true"],
                          cwd=str(config.REPO_ROOT), capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "no network localcloud-me-central-1" in proc.stderr and "Traceback" not in proc.stderr


def test_another_account_is_a_network_of_its_own(cloud, launcher):
    """moto models accounts (sts:AssumeRole into another account): each account's regions are networks of their own."""
    credentials = cloud.client("sts").assume_role(RoleArn="arn:aws:iam::%s:role/localcloud-test" % OTHER_ACCOUNT,
                                                  RoleSessionName="localcloud-test")["Credentials"]
    other = boto3.client("ec2", endpoint_url=cloud.endpoint_url, region_name=config.DEFAULT_REGION,
                         aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])
    other_launcher = Launcher(other)
    try:
        ip, (here_subnet, there_subnet) = same_address_in(launcher.ec2, other)
        here = launcher.run(KeyName=config.DEFAULT_KEY_NAME, **at(here_subnet, ip))[0]
        there = other_launcher.run(KeyName=config.DEFAULT_KEY_NAME, **at(there_subnet, ip))[0]
        assert there["PrivateIpAddress"] == ip and there["State"]["Name"] == "running"
        doc = json.loads(localcloud_ssh("--account", OTHER_ACCOUNT, ip, "--", "curl -s %s/dynamic/instance-identity/document" % IMDS))
        assert (doc["instanceId"], doc["accountId"], doc["region"]) == (there["InstanceId"], OTHER_ACCOUNT, config.DEFAULT_REGION)
        assert os.path.exists("/run/netns/" + config.region_network_name(OTHER_ACCOUNT, config.DEFAULT_REGION))
        wait_ssh(ip, config.Paths().ssh_key)
        assert ssh(ip, config.Paths().ssh_key, "curl -s %s/meta-data/instance-id" % IMDS).stdout == here["InstanceId"]
    finally:
        other_launcher.cleanup()
