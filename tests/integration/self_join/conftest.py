"""Fixtures for the self-join suite: a real cluster on localcloud.

One session: a boot server (an instance configured by the site playbook with the hello_cluster
release), a node image baked by the bake_image playbook, then workers launched by the EC2 API only
(boto3 RunInstances with the user data of cluster.render_user_data, no playbook against them).
localcloud is shared: the session uses the running one (or starts it, and leaves it running),
and terminates only the instances it launched.
"""

import json
import os
import re
import secrets
import time

import pytest

from localcloud_cluster import Cluster, run  # tests/integration is on sys.path: see its conftest.py

REPORT = os.environ.get("SELF_JOIN_REPORT", "")


def report(name, value):
    """Print a timing and append it to the suite's report file (make test-self-join sets SELF_JOIN_REPORT)."""
    print("%s: %s" % (name, value))
    if REPORT:
        with open(REPORT, "a") as handle:
            handle.write(json.dumps({name: value}) + "\n")


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = run(["make", "--no-print-directory", "-C", "examples/hello_cluster", "tar", "VSN=1.0.0", "OUT=%s" % out])
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster(endpoint_url, release, tmp_path_factory):
    """A running boot server (site playbook) and a node image (bake_image playbook) for one test cluster."""
    name = os.environ.get("SELF_JOIN_CLUSTER") or "sj" + secrets.token_hex(3)
    c = Cluster(endpoint_url, tmp_path_factory.mktemp("self_join"), name, secrets.token_hex(20))
    c.write_files()
    # The IPs of this session's running workers, in launch order: every test that launches or terminates
    # one updates it, so the files may run in any order.
    c.workers = []
    try:
        c.wait_state([c.launch_boot_server(c.erlang_ami())["InstanceId"]], "running")
        c.ansible_playbook("skunkworks.erlang_ec2.site", "-e", "cluster_name=%s" % c.name, "-e", "site_initial_release=%s" % release)
        started = time.monotonic()
        proc = c.ansible_playbook(
            "skunkworks.erlang_ec2.bake_image", "-e", "cluster_name=%s" % c.name, "-e", "bake_image_source_image_id=%s" % c.erlang_ami(),
            "-e", "bake_image_key_name=localcloud", "-e", "bake_image_ssh_private_key_file=%s" % c.ssh_key,
            "-e", "bake_image_subnet_id=%s" % c.subnet_id, "-e", "bake_image_no_reboot=true", "-e", c.bake_image_vars(), inventory=False)
        c.bake_seconds = round(time.monotonic() - started, 1)
        c.bake_output = proc.stdout
        match = re.search(r"AMI (ami-[0-9a-f]+)", proc.stdout)
        assert match, proc.stdout[-3000:]
        c.image_id = match.group(1)
        yield c
    finally:
        c.terminate(c.launched)
        if c.image_id:
            c.ec2.deregister_image(ImageId=c.image_id)
