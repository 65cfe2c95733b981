"""The collection's playbooks run inside the execution environment (make ee) on a localcloud cluster."""

import glob
import os
import re
import subprocess

import pytest

HOST_ANSIBLE = subprocess.run(["ansible", "--version"], capture_output=True, text=True, check=False).stdout.split("\n", 1)[0]


def test_the_jobs_ran_in_the_ee_container(cluster, ee_image):
    for name, job in cluster.jobs.items():
        assert job.command[:2] == ["podman", "run"], (name, job.command)
        assert ee_image in job.command and "--network=host" in job.command, (name, job.command)
        where = job.where()
        # The EE's Debian 12 python3 and its ansible-core 2.19, not the controller's .venv and 2.21.
        assert where["ee_python"] == "/usr/bin/python3", where
        assert where["ee_ansible"].startswith("2.19."), where
        assert where["ee_ansible"] not in HOST_ANSIBLE, (where, HOST_ANSIBLE)
        assert where["ee_erl_call"] is True, where


def test_provision_and_site_made_a_cluster_that_serves(cluster):
    assert cluster.boot_server_ip and len(cluster.workers) == 1, (cluster.boot_server_ip, cluster.workers)
    for ip in cluster.workers.values():
        status = cluster.status(ip, timeout=5.0)
        assert status is not None, "worker %s does not answer /status" % ip
    recap = cluster.jobs["site"].stdout
    assert re.search(r"failed=0", recap) and not re.search(r"failed=[1-9]|unreachable=[1-9]", recap), recap[-3000:]


def test_status_in_the_ee_lists_both_nodes_up(cluster):
    job = cluster.ee_playbook("status")
    assert job.rc == 0, job
    assert "Cluster %s: 2 node(s), 2 up, 0 not up" % cluster.name in job.stdout, job
    assert re.search(r"worker@\S+ .* up .*hello_cluster 1\.0\.0", job.stdout), job


def test_the_cookie_is_in_no_output_event_nor_artifact(cluster):
    for name, job in cluster.jobs.items():
        assert cluster.cookie not in job.stdout, name
        assert cluster.cookie not in repr(job.events), name
    for path in glob.glob(os.path.join(cluster.data_dir, "**"), recursive=True):
        if os.path.isfile(path) and not os.path.islink(path) and "ssh_key_data" not in path:
            with open(path, "rb") as handle:
                assert cluster.cookie.encode() not in handle.read(), path


@pytest.mark.parametrize("command, expected", [
    (["erl_call"], "Usage: erl_call"),  # it runs (no node given: its usage), as the Erlang modules call it
    (["ssh", "-V"], "OpenSSH"),
    (["ansible-runner", "--version"], "2.4."),
    (["python3", "-c", "import boto3, botocore; print('boto3', boto3.__version__)"], "boto3 1."),
])
def test_the_image_has_the_controller_tools(ee_image, command, expected, cluster):
    ran = subprocess.run(["podman", "run", "--rm", "--pull=never", ee_image] + command, env=cluster.env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert expected in ran.stdout + ran.stderr, (command, ran.returncode, ran.stdout, ran.stderr)
