"""Push suite fixtures: one cluster on localcloud (1 boot server, 2 workers) shared by the suite's tests,
and hello_cluster builds that differ from each other only in module code.

Each test sets up the state it needs itself (`at_release`), so the files and tests run in any order.
PUSH_CLUSTER=<name> reuses a running cluster of that name, PUSH_KEEP=1 keeps it at the end.
"""

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile

import pytest

import playbook_runner

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("push_e2e_helpers", os.path.join(HERE, "..", "e2e", "conftest.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import cluster_group  # noqa: E402
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT  # noqa: E402

REFUSE_MARKER = "/var/tmp/erlang-ec2-refuse-push"


def build(workdir, vsn, build_tag="", loop_version=None):
    """hello_cluster VSN (GET /status answers "build": build_tag), with push_loop (its version/0 answers
    loop_version) added to the application when loop_version is given."""
    out = os.path.join(workdir, "dist")
    subprocess.run(["make", "-s", "-C", e2e.EXAMPLE, "tar", "VSN=%s" % vsn, "OUT=%s" % out] + (["BUILD=%s" % build_tag] if build_tag else []),
                   check=True, capture_output=True, timeout=120)
    tarball = os.path.join(out, "hello_cluster-%s.tar.gz" % vsn)
    if loop_version is None:
        return tarball
    stage = os.path.join(workdir, "stage-%s" % vsn)
    shutil.rmtree(stage, ignore_errors=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(stage, filter="data")
    ebin = os.path.join(stage, "lib", "hello_cluster-%s" % vsn, "ebin")
    subprocess.run(["erlc", "-DVERSION=%d" % loop_version, "-o", ebin, os.path.join(HERE, "files", "push_loop.erl")],
                   check=True, capture_output=True, timeout=60)
    app = os.path.join(ebin, "hello_cluster.app")
    with open(app) as handle:
        text = handle.read()
    with open(app, "w") as handle:
        handle.write(re.sub(r"hello_cluster_http\]", "hello_cluster_http, push_loop]", text))
    with tarfile.open(tarball, "w:gz") as archive:
        for part in ("lib", "releases"):
            archive.add(os.path.join(stage, part), arcname=part)
    return tarball


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("push-releases"))
    return {
        "2.0.0": build(workdir, "2.0.0"),
        "2.0.1": build(workdir, "2.0.1", "one", loop_version=1),
        "2.0.2": build(workdir, "2.0.2", "two", loop_version=2),
    }


class PushCluster(e2e.Cluster):
    """The e2e Cluster plus what the push tests look at."""

    @property
    def group(self):
        return cluster_group(self.name)

    def erl(self, node_ip, expression, name="worker"):
        """Evaluate an expression on a node (erl_call on the boot server as the service user); erl_call's output."""
        node = "%s@%s" % (name, node_ip)
        command = "sudo -u %s env HOME=%s erl_call -name %s -R -timeout 20 -e" % (LAYOUT["user"], LAYOUT["home"], node)
        key = self.env["LOCALCLOUD_SSH_KEY"]
        proc = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", "admin@%s" % self.boot_server_ip, command],
                              input=expression + "\n", capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("{ok,"), (expression, proc.stdout, proc.stderr)
        return proc.stdout

    def md5s(self, module):
        """{worker ip: hex MD5 of the module as loaded there, or 'not_loaded'}."""
        expression = ("case code:is_loaded(%s) of false -> not_loaded; _ -> "
                      "binary_to_list(binary:encode_hex(%s:module_info(md5))) end." % (module, module))
        return {ip: re.search(r'\{ok,\s*"?([^"}]*)"?\}', self.erl(ip, expression)).group(1).lower()
                for ip in self.workers.values()}

    def node_info(self, ip, name="worker"):
        """The node_info module's result for a node, run on the boot server host as the push runs (ad-hoc ansible)."""
        args = json.dumps({"node": "%s@%s" % (name, ip), "cookie_file": LAYOUT["cookie_file"]})
        result = playbook_runner.run([os.path.join(playbook_runner.BIN, "ansible"), "erlang_boot_servers:&%s" % self.group, "-b",
                                      "-i", os.path.join(e2e.ROOT, "inventory"), "-m", "skunkworks.erlang_ec2.node_info", "-a", args,
                                      "-o"], env=self.env, check=True)
        return json.loads(result.stdout.split(" => ", 1)[1])

    def current(self):
        return os.path.basename(self.ssh(self.boot_server_ip, "readlink %s" % LAYOUT["current_link"]).stdout.strip())

    def at_release(self, releases, version):
        """Every worker freshly booted on `version` (deploy: install, switch, rolling restart), nothing pushed."""
        for ip in self.workers.values():
            self.ssh(ip, "sudo rm -f %s" % REFUSE_MARKER)
        self.playbook("deploy", extra={"deploy_release": releases[version]})
        booted = {ip: (self.status(ip) or {}).get("version") for ip in self.workers.values()}
        assert set(booted.values()) == {version}, booted


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, releases):
    env = e2e.localcloud_env()
    reuse = os.environ.get("PUSH_CLUSTER")
    name = reuse or "push-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("push"))
    c = PushCluster(env, name, workdir)
    try:
        if not reuse:
            c.ensure_cookie()
            c.provision(int(os.environ.get("PUSH_WORKERS", "2")))
            c.playbook("site", extra={"site_initial_release": releases["2.0.0"]})
        c.refresh()
        yield c
    finally:
        c.end_session("push")
