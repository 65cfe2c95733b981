"""Fixtures for localcloud's own tests: THE localcloud (one daemon per machine; its default network is 172.31.0.0/16).

The session uses the running localcloud, or starts one and runs `down` at the end. Tests only touch the
instances they launch (others may be using the cloud at the same time) and terminate them afterwards.
"""

import argparse
import os
import pathlib
import stat
import subprocess
import sys
import time

import boto3
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from localcloud import cli, config  # noqa: E402

SSH_BOUND_SECONDS = 60  # generous: only there so that a broken host fails instead of hanging


def localcloud(*args, check=True):
    return subprocess.run([sys.executable, "-m", "localcloud"] + list(args), cwd=str(REPO), capture_output=True, text=True, check=check)


def cloud_running(paths):
    pid = cli.daemon_pid(paths)
    return pid is not None and cli.api_answers(cli.daemon_info(paths).get("endpoint_url", ""))


class Cloud:
    def __init__(self, paths, started_here):
        self.paths = paths
        self.started_here = started_here

    @property
    def endpoint_url(self):
        return cli.daemon_info(self.paths)["endpoint_url"]

    def others_instances(self):
        """Instances not terminated in the default region, and hosts of any region: the suite terminates its own,
        so these are someone else's."""
        live = []
        for page in self.client().get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]):
            live.extend(i["InstanceId"] for r in page["Reservations"] for i in r["Instances"])
        proc = subprocess.run(["podman", "ps", "-a", "--filter", "label=%s=instance" % config.LABEL, "--format", "{{.Names}}"],
                              capture_output=True, text=True, env=dict(os.environ, CONTAINERS_CONF=str(self.paths.containers_conf)), check=False)
        hosts = [name[len(config.CONTAINER_PREFIX):] for name in proc.stdout.split()]
        return live + sorted(set(hosts) - set(live))

    def client(self, service="ec2", region=config.DEFAULT_REGION):
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def cloud():
    if os.geteuid() != 0:
        pytest.skip("localcloud needs root")
    paths = config.Paths()
    started_here = not cloud_running(paths)
    if started_here:
        proc = localcloud("up", check=False)
        assert proc.returncode == 0, proc.stderr
    cloud = Cloud(paths, started_here)
    yield cloud
    # Leave it as found, unless someone started using it meanwhile (their instances would go with it).
    if started_here and cloud_running(paths) and not cloud.others_instances():
        localcloud("down")


def ssh(ip, key, command, check=True, timeout=30):
    proc = subprocess.run(
        ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "admin@%s" % ip, command],
        capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError("ssh admin@%s %r failed (%d): %s" % (ip, command, proc.returncode, proc.stderr))
    return proc


def wait_ssh(ip, key, bound=SSH_BOUND_SECONDS):
    deadline = time.monotonic() + bound
    while True:
        proc = ssh(ip, key, "true", check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError("no SSH on %s within %d s: %s" % (ip, bound, proc.stderr))
        time.sleep(0.2)


def podman_state(instance_id):
    """The container's state ("running", "exited", ...) or None when there is no container."""
    proc = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Status}}", config.CONTAINER_PREFIX + instance_id],
        capture_output=True, text=True, env=dict(os.environ, CONTAINERS_CONF=str(config.Paths().containers_conf)),
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


class Launcher:
    """Launches instances and terminates them (and waits for their hosts to go) at teardown.

    localcloud enforces security groups as EC2 does, and a VPC's default group lets nothing in from outside it:
    an instance launched without a group gets the launcher's own group of its VPC (SSH from the controller, all
    traffic between its members), made on first use and deleted at teardown. `groups=False`: none added."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.ids = []
        self.groups = {}  # VPC id -> the launcher's group there

    def ssh_group(self, subnet_id=None):
        """The launcher's group in the VPC of `subnet_id` (default: the default VPC), made on first use."""
        if subnet_id:
            vpc = self.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
        else:
            vpc = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        if vpc not in self.groups:
            gid = self.ec2.create_security_group(GroupName="localcloud-test-%d-%d" % (os.getpid(), time.monotonic_ns()), VpcId=vpc,
                                                 Description="localcloud tests: SSH from the controller, all traffic within")["GroupId"]
            self.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": config.NETWORK_GATEWAY + "/32"}]},
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]},
            ])
            self.groups[vpc] = gid
        return self.groups[vpc]

    def _add_group(self, kwargs):
        nics = kwargs.get("NetworkInterfaces")
        if nics:
            primary = [n for n in nics if n.get("DeviceIndex", 0) == 0 and "NetworkInterfaceId" not in n]
            if primary and not primary[0].get("Groups"):
                primary[0]["Groups"] = [self.ssh_group(primary[0].get("SubnetId"))]
        elif not kwargs.get("SecurityGroupIds") and not kwargs.get("SecurityGroups"):
            kwargs["SecurityGroupIds"] = [self.ssh_group(kwargs.get("SubnetId"))]

    def run(self, wait=True, groups=True, **kwargs):
        if groups:
            self._add_group(kwargs)
        kwargs.setdefault("ImageId", config.BASE_AMI_ID)
        kwargs.setdefault("MinCount", kwargs.get("MaxCount", 1))
        kwargs.setdefault("MaxCount", kwargs["MinCount"])
        kwargs.setdefault("InstanceType", "t3.micro")
        instances = self.ec2.run_instances(**kwargs)["Instances"]
        ids = [i["InstanceId"] for i in instances]
        self.ids.extend(ids)
        if wait:
            self.wait("instance_running", ids)
        return self.describe(ids)

    def wait(self, waiter, ids):
        self.ec2.get_waiter(waiter).wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": SSH_BOUND_SECONDS})

    def wait_state(self, state, ids, bound=SSH_BOUND_SECONDS):
        """Wait for `state` without a waiter (waiters give up on states they call failures, e.g. pending)."""
        deadline = time.monotonic() + bound
        while True:
            states = [i["State"]["Name"] for i in self.describe(ids)]
            if set(states) == {state}:
                return
            if time.monotonic() > deadline:
                raise AssertionError("%s still %s after %d s" % (ids, states, bound))
            time.sleep(0.5)

    def describe(self, ids):
        reservations = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        by_id = {i["InstanceId"]: i for r in reservations for i in r["Instances"]}
        return [by_id[i] for i in ids]

    def cleanup(self):
        if self.ids:
            self.ec2.terminate_instances(InstanceIds=self.ids)
            self.wait("instance_terminated", self.ids)
        for gid in self.groups.values():
            self.ec2.delete_security_group(GroupId=gid)
        self.groups.clear()


@pytest.fixture
def ec2(cloud):
    return cloud.client("ec2")


@pytest.fixture
def launcher(ec2):
    launcher = Launcher(ec2)
    yield launcher
    launcher.cleanup()


@pytest.fixture
def key_pair(ec2, tmp_path):
    """A key pair made by CreateKeyPair: its private key, as EC2 hands it out, in a 0600 file."""
    name = "localcloud-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    material = ec2.create_key_pair(KeyName=name)["KeyMaterial"]
    path = tmp_path / "key.pem"
    path.write_text(material)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    yield argparse.Namespace(name=name, path=path)
    ec2.delete_key_pair(KeyName=name)
