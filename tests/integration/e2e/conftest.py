"""End-to-end fixtures: a real cluster on localcloud, driven by ansible-playbook as users run it.

Everything is real: the EC2 API is localcloud's moto server on loopback, the hosts are podman
containers with systemd and sshd, the nodes are real `erl` processes. Each session uses its own
cluster name and cookie parameter, and terminates its own instances at the end (localcloud itself
is shared and left running).
"""

import os
import secrets
import shlex
import subprocess
import sys

import pytest

import playbook_runner
from localcloud_cluster import app_port_rules, worker_status
from playbook_runner import ROOT

PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
EXAMPLE = os.path.join(ROOT, "examples", "hello_cluster")
WORKERS = int(os.environ.get("E2E_WORKERS", "3"))  # the workers the session's cluster is provisioned with


def localcloud_env():
    """Start localcloud if needed and return the environment its `env` command prints."""
    subprocess.run([PYTHON, "-m", "localcloud", "up"], cwd=ROOT, check=True, timeout=600)
    out = subprocess.run([PYTHON, "-m", "localcloud", "env"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        parts = shlex.split(line)
        if parts and parts[0] == "export":
            key, dummy, value = parts[1].partition("=")
            env[key] = value
        elif parts and parts[0] == "unset":
            for key in parts[1:]:
                env.pop(key, None)
    env = playbook_runner.ansible_env(env, ANSIBLE_PIPELINING="1", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:"), env["AWS_ENDPOINT_URL"]
    return env


class Cluster:
    """One cluster on localcloud, and the ansible-playbook runs against it."""

    def __init__(self, env, name, workdir):
        self.env = env
        self.name = name
        self.workdir = workdir
        self.cookie_parameter = "/erlang-ec2/%s/cookie" % name
        self.workers = {}  # inventory hostname -> private ip
        self.boot_server_ip = None  # the first boot server, by address
        self.boot_servers = {}  # inventory hostname (instance id) -> private ip, by address
        self.worker_count = WORKERS  # the workers it is provisioned with
        # The app port open to the boot servers too (provision_extra_rules): the rolling restart's HTTP health
        # gate, run on the acting boot server (the e2e suite sets it; others poll from the controller only).
        self.health_gate = False

    def playbook(self, name, *args, check=True, extra=None, environ=None):
        """ansible-playbook skunkworks.erlang_ec2.NAME on the project's inventory; the cookie stays in SSM.
        `environ` adds to the environment (for example a TMPDIR of the test's own)."""
        extra_vars = {"cluster_name": self.name, "erlang_cookie_ssm_parameter": self.cookie_parameter}
        extra_vars.update(extra or {})
        return playbook_runner.run_playbook("skunkworks.erlang_ec2.%s" % name, *args, inventory=os.path.join(ROOT, "inventory"),
                                            extra_vars=extra_vars, env=dict(self.env, **(environ or {})), check=check,
                                            log=os.path.join(self.workdir, "ansible.log"))

    def provision_vars(self, workers):
        """provision's variables as the demo gives them, plus the app port for the tests (every run passes the same
        rules: the playbook makes the group's rules exactly these)."""
        gate = "erlang-%s-boot-servers" % self.name if self.health_gate else None
        return {"provision_image_id": os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a"), "provision_ssh_cidr": "172.31.0.1/32",
                "provision_key_name": self.env.get("LOCALCLOUD_KEY_NAME", "localcloud"), "provision_worker_count": workers,
                "provision_extra_rules": app_port_rules(gate)}

    def provision(self, workers, boot_servers=None):
        """provision as the demo runs it: keeps `workers` workers in the cluster (adds the missing ones), and
        `boot_servers` boot servers when given (the playbook's default, 1, otherwise)."""
        extra = self.provision_vars(workers)
        if boot_servers is not None:
            extra["provision_boot_server_count"] = boot_servers
        return self.playbook("provision", extra=extra)

    def boto3(self, service):
        import boto3

        return boto3.client(service, endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=self.env["AWS_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def refresh(self):
        ec2 = self.boto3("ec2")
        found = ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [self.name]},
                                                {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        self.workers = {}
        boot_servers = {}
        for reservation in found["Reservations"]:
            for instance in reservation["Instances"]:
                role = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("erlang-role")
                if role == "worker":
                    self.workers[instance["InstanceId"]] = instance["PrivateIpAddress"]
                elif role == "boot_server":
                    boot_servers[instance["InstanceId"]] = instance["PrivateIpAddress"]
        by_address = sorted(boot_servers.items(), key=lambda item: tuple(int(part) for part in item[1].split(".")))
        self.boot_servers = dict(by_address)
        self.boot_server_ip = by_address[0][1] if by_address else None
        return self

    def status(self, ip, timeout=1.0):
        """A worker's /status document, or None if it does not answer."""
        return worker_status(ip, timeout)

    def ssh(self, ip, command):
        key = self.env["LOCALCLOUD_SSH_KEY"]
        return subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                               "admin@%s" % ip, command], capture_output=True, text=True, timeout=60, check=False)

    def ensure_cookie(self):
        """The cluster's cookie in SSM (what the playbooks read): a new random one unless the parameter exists, so
        a kept cluster reused by a later session keeps its cookie. Returns it."""
        ssm = self.boto3("ssm")
        try:
            return ssm.get_parameter(Name=self.cookie_parameter, WithDecryption=True)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            cookie = secrets.token_urlsafe(32)
            ssm.put_parameter(Name=self.cookie_parameter, Type="SecureString", Value=cookie)
            return cookie

    def end_session(self, suite):
        """A suite's session is over: terminate the cluster unless <SUITE>_KEEP is set; say where the ansible log is."""
        if not os.environ.get("%s_KEEP" % suite.upper()):
            self.terminate()
        sys.stderr.write("%s: ansible output in %s/ansible.log\n" % (suite, self.workdir))

    def terminate(self):
        ec2 = self.boto3("ec2")
        found = ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [self.name]}])
        ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
        try:
            self.boto3("ssm").delete_parameter(Name=self.cookie_parameter)
        except Exception:  # pylint: disable=broad-except  # best-effort clean-up
            pass


def build_release(workdir, vsn, crash=False):
    out = os.path.join(workdir, "dist")
    cmd = ["make", "-s", "-C", EXAMPLE, "tar", "VSN=%s" % vsn, "OUT=%s" % out] + (["CRASH=1"] if crash else [])
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return os.path.join(out, "hello_cluster-%s.tar.gz" % vsn)


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("releases"))
    return {"v1": build_release(workdir, "1.0.0"), "v2": build_release(workdir, "2.0.0"), "v3": build_release(workdir, "3.0.0", crash=True)}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, releases):
    """Provision 1 boot server + 3 workers and run site with v1 (the demo's first steps)."""
    env = localcloud_env()
    name = os.environ.get("E2E_CLUSTER") or "e2e-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("e2e"))
    c = Cluster(env, name, workdir)
    c.health_gate = True  # test_rollout's rolling_restart_health_url
    c.ensure_cookie()
    try:
        c.provision(c.worker_count)
        c.site_first = c.playbook("site", extra={"site_initial_release": releases["v1"]})
        c.refresh()
        yield c
    finally:
        c.end_session("e2e")
