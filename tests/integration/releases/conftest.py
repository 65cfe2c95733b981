"""Fixtures for the real-releases suite: the example rebar3 and Elixir releases on localcloud clusters.

Each cluster: a boot server and pushed workers launched by the EC2 API and configured by `site`
(the push path), then workers that join by themselves from a node image baked once by `bake_image`
(the pull path), and for the rebar3 release a worker launched by an Auto Scaling group after the
deploy. Both clusters share one cookie, so one node image (baked without a cluster) serves both.
"""

import os
import re
import secrets
import time

import pytest

from localcloud_cluster import Cluster, contract, run, worker_status

PLAIN_AMI_NAME = "localcloud-debian-12"
EXAMPLES = {"rebar3": "hello_rebar3", "elixir": "hello_elixir"}
# Only there so that a broken node fails the test instead of hanging it; nothing asserts on time.
STATUS_BOUND_SECONDS = 240


class ReleaseCluster(Cluster):
    """A Cluster with pushed workers and the example release's /status."""

    def image_named(self, name):
        images = self.ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}])["Images"]
        return images[0]["ImageId"]

    def playbook(self, name, *args, check=True):
        return self.ansible_playbook("skunkworks.erlang_ec2.%s" % name, "-e", "cluster_name=%s" % self.name, *args, check=check)

    def worker_ips(self):
        reply = self.ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [self.name]},
                                                     {"Name": "tag:erlang-role", "Values": ["worker"]},
                                                     {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        return sorted(i["PrivateIpAddress"] for r in reply["Reservations"] for i in r["Instances"])

    @staticmethod
    def status(ip, timeout=2.0):
        """A worker's /status document, or None while it does not answer."""
        return worker_status(ip, timeout)

    def launch(self, image_name, workers):
        """A boot server and `workers` pushed workers (their user data names it), all running."""
        image = self.image_named(image_name)
        boot = self.launch_boot_server(image)
        pushed = self.run_instances(image, workers, contract.ROLE_WORKER, self.worker_user_data())
        self.wait_state([boot["InstanceId"]] + [i["InstanceId"] for i in pushed], "running")
        self.pushed = sorted(i["PrivateIpAddress"] for i in pushed)

    def wait_status(self, ips, version, bound=STATUS_BOUND_SECONDS):
        """{ip: /status} once every worker at ips serves the release version and sees every other one."""
        deadline = time.monotonic() + bound
        while True:
            found = {ip: self.status(ip) for ip in ips}
            want = {"worker@%s" % ip for ip in ips}
            if all(s and s["version"] == version and (want - {s["node"]}) <= set(s["nodes"]) for s in found.values()):
                return found
            if time.monotonic() > deadline:
                raise AssertionError("workers not all on %s and joined after %d s: %s" % (version, bound, found))
            time.sleep(1)

    def cleanup(self):
        autoscaling = self.aws("autoscaling")
        for group in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]:
            if group["AutoScalingGroupName"].startswith(self.name):
                autoscaling.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
        ids = [i["InstanceId"] for r in self.ec2.describe_instances(
            Filters=[{"Name": "tag:erlang-cluster", "Values": [self.name]}])["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]
        self.terminate(set(ids) | set(self.launched))

    def aws(self, service):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.ec2.meta.region_name,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def build(kind, vsn, out):
    proc = run(["make", "--no-print-directory", "-C", "examples/%s" % EXAMPLES[kind], "tar", "VSN=%s" % vsn, "OUT=%s" % out],
               timeout=900)
    tarball = os.path.join(str(out), "%s-%s.tar.gz" % (EXAMPLES[kind], vsn))
    assert os.path.isfile(tarball), proc.stdout[-2000:]
    return tarball


@pytest.fixture(scope="session")
def cookie():
    return secrets.token_hex(20)


@pytest.fixture(scope="session")
def node_image(endpoint_url, cookie, tmp_path_factory):
    """One node image for both clusters (same cookie, no cluster tag), from the Debian+Erlang image."""
    c = ReleaseCluster(endpoint_url, tmp_path_factory.mktemp("bake"), "rel-bake", cookie)
    c.write_files()
    proc = c.ansible_playbook(
        "skunkworks.erlang_ec2.bake_image", "-e", "bake_image_source_image_id=%s" % c.erlang_ami(),
        "-e", "bake_image_key_name=localcloud", "-e", "bake_image_ssh_private_key_file=%s" % c.ssh_key,
        "-e", "bake_image_subnet_id=%s" % c.subnet_id, "-e", "bake_image_no_reboot=true", "-e", c.bake_image_vars(), inventory=False)
    image_id = re.search(r"AMI (ami-[0-9a-f]+)", proc.stdout).group(1)
    yield image_id
    c.ec2.deregister_image(ImageId=image_id)


def release_cluster(kind, endpoint_url, cookie, tmp_path_factory, image_name, workers):
    """A boot server and `workers` pushed workers, site with v1 of the example; yields (cluster, releases)."""
    workdir = tmp_path_factory.mktemp(kind)
    releases = {vsn: build(kind, vsn, workdir / "dist") for vsn in ("1.0.0", "2.0.0")}
    c = ReleaseCluster(endpoint_url, workdir, "rel%s%s" % (kind[:2], secrets.token_hex(2)), cookie)
    c.releases = releases
    c.write_files()
    try:
        c.launch(image_name, workers)
        c.site = c.playbook("site", "-e", "site_initial_release=%s" % releases["1.0.0"])
        yield c
    finally:
        if not os.environ.get("RELEASES_KEEP"):
            c.cleanup()


@pytest.fixture(scope="module")
def rebar3_cluster(endpoint_url, cookie, tmp_path_factory):
    """The rebar3 release (its own NIF, crypto, ssl) on plain Debian hosts: Erlang from apt, no erlang-crypto."""
    yield from release_cluster("rebar3", endpoint_url, cookie, tmp_path_factory, PLAIN_AMI_NAME, 2)


@pytest.fixture(scope="module")
def elixir_cluster(endpoint_url, cookie, tmp_path_factory):
    """The mix release on Debian+Erlang hosts (crypto, compiler from the boot server's OTP)."""
    yield from release_cluster("elixir", endpoint_url, cookie, tmp_path_factory, "localcloud-debian-12-erlang", 1)
