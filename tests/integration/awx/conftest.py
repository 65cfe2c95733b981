"""AWX's run path on localcloud: one small cluster (1 boot server + 2 workers) for the whole suite.

The cluster helper is the e2e suite's (tests/integration/e2e/conftest.py), loaded under another module name.
What AWX does around a job (inventory update, import, the job's inventory script, credentials, runner) is in
awx_mimic.py, read from AWX's own code. The cookie and the AWS secret key are random per session, and distinctive,
so the job artifacts can be scanned for them.
"""

import importlib.util
import json
import os
import secrets
import subprocess

import pytest

import awx_mimic
import playbook_runner

_E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers_awx", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

# The connection settings an AWX inventory would carry as its variables (here: the inventory source's
# group_vars/all, imported by the update as the `all` group's vars). The user comes with the machine credential.
CONNECTION_VARS = (
    "ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
    "ansible_python_interpreter: /usr/bin/python3\n"
)


class AwxSite:
    """One AWX-like setup for a cluster: the project's inventory source, the credentials, the stored inventory."""

    def __init__(self, cluster, workdir):
        self.cluster = cluster
        self.workdir = workdir
        self.cookie = "awxck-" + secrets.token_urlsafe(30)
        # A fake, distinctive AWS key pair (localcloud's moto accepts any); AWX's AWS credential injects these.
        self.aws_access_key_id = "AKIA" + secrets.token_hex(8).upper()
        self.aws_secret_access_key = "awxsk" + secrets.token_urlsafe(30)
        self.jobs = []  # (name, private data dir, runner result)
        self.next_id = 100
        source_dir = os.path.join(workdir, "project", "inventory")
        os.makedirs(os.path.join(source_dir, "group_vars", "all"))
        self.source = os.path.join(source_dir, "awx.erlang_ec2.yml")
        with open(self.source, "w") as handle:
            handle.write("plugin: skunkworks.erlang_ec2.ec2\nendpoint_url: %s\nregions: [%s]\nclusters: [%s]\n"
                         % (cluster.env["AWS_ENDPOINT_URL"], cluster.env["AWS_REGION"], cluster.name))
        with open(os.path.join(source_dir, "group_vars", "all", "connection.yml"), "w") as handle:
            handle.write("---\n" + CONNECTION_VARS)
        self.export = None
        self.stored = None

    def aws_env(self):
        """AWX's AWS credential as environment, plus the endpoint (localcloud's)."""
        return {"AWS_ACCESS_KEY_ID": self.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
                "AWS_ENDPOINT_URL": self.cluster.env["AWS_ENDPOINT_URL"], "AWS_REGION": self.cluster.env["AWS_REGION"],
                "AWS_DEFAULT_REGION": self.cluster.env["AWS_REGION"]}

    def base_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_", "ERLANG_EC2_"))}
        env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", PATH=self.cluster.env["PATH"])
        return env

    def update_inventory(self):
        """The inventory update: ansible-inventory --list --export as RunInventoryUpdate runs it, then the import."""
        self.next_id += 1
        artifacts = os.path.join(self.workdir, "inventory_update_%d" % self.next_id)
        os.makedirs(artifacts)
        output = os.path.join(artifacts, "output.json")
        env = self.base_env()
        env.update(self.aws_env())
        env.update(awx_mimic.STANDARD_INVENTORY_UPDATE_ENV)
        env["ANSIBLE_COLLECTIONS_PATH"] = self.collections_path()
        proc = subprocess.run(["ansible-inventory", "--list", "--export", "-i", self.source, "--output", output,
                               "--playbook-dir", os.path.dirname(self.source)],
                              env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(output) as handle:
            self.export = json.load(handle)  # what post_run_hook does: plain json
        self.stored = awx_mimic.import_inventory(self.export)
        return self.stored

    @staticmethod
    def collections_path():
        """As RunJob.build_env sets it: the project's requirements collections first, then the defaults."""
        return os.pathsep.join([playbook_runner.COLLECTIONS, "~/.ansible/collections", "/usr/share/ansible/collections"])

    def run_job(self, name, playbook, extravars):
        """One job template run: a fresh private data dir, the stored inventory as AWX writes it, credentials
        injected as AWX injects them, ansible-runner as AWX calls it. Returns the runner object."""
        import ansible_runner

        self.next_id += 1
        ident = str(self.next_id)
        pdd = os.path.join(self.workdir, "job_%s_%s" % (ident, name))
        project = os.path.join(pdd, "project")
        os.makedirs(project)
        # The project's playbook as a job template names it: a file in the project importing the collection's.
        with open(os.path.join(project, "%s.yml" % playbook), "w") as handle:
            handle.write("---\n- name: Run skunkworks.erlang_ec2.%s\n  ansible.builtin.import_playbook: skunkworks.erlang_ec2.%s\n" % (playbook, playbook))
        inventory = awx_mimic.write_job_inventory(pdd, self.stored)
        cookie_path = awx_mimic.inject_file_credential(pdd, self.cookie)  # the "Erlang cluster cookie" credential
        envvars = self.aws_env()
        envvars.update(ERLANG_EC2_COOKIE_FILE=cookie_path, ANSIBLE_COLLECTIONS_PATH=self.collections_path(),
                       ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(pdd, "cp"), ANSIBLE_FORCE_COLOR="0")
        os.makedirs(os.path.join(pdd, "cp"), mode=0o700)
        with open(self.cluster.env["LOCALCLOUD_SSH_KEY"]) as handle:
            ssh_key = handle.read()  # the machine credential: runner hands it to ssh-agent
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("AWS_", "ANSIBLE_", "ERLANG_EC2_"))}
        try:
            runner = ansible_runner.run(private_data_dir=pdd, ident=ident, playbook="%s.yml" % playbook, inventory=inventory,
                                        extravars=extravars, envvars=envvars, ssh_key=ssh_key, cmdline="-u admin",
                                        suppress_env_files=True, fact_cache_type="jsonfile", quiet=True, timeout=900)
        finally:
            os.environ.update(saved)
        self.jobs.append((name, pdd, runner))
        return runner


@pytest.fixture(scope="session")
def awx(tmp_path_factory):
    env = e2e.localcloud_env()
    name = os.environ.get("AWX_RUN_CLUSTER") or "awx-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("awx"))
    c = e2e.Cluster(env, name, workdir)
    try:
        c.releases = {"v1": e2e.build_release(workdir, "1.0.0"), "v2": e2e.build_release(workdir, "2.0.0")}
        c.provision(2)
        c.refresh()
        yield AwxSite(c, workdir)
    finally:
        c.end_session("awx_run")
