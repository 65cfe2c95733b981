"""The execution environment suite: the collection's playbooks run inside the EE image (make ee), as AWX runs
them: ansible-runner with process isolation (podman), against a small cluster on localcloud.

The cluster helper is the e2e suite's (tests/integration/e2e/conftest.py), loaded under another module name, as
the status suite does; the playbooks themselves run in the container, not through its `playbook` method.
"""

import importlib.util
import os
import secrets
import shutil
import subprocess

import pytest

_E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

EE_IMAGE = os.environ.get("EE_IMAGE", "localhost/skunkworks-erlang-ec2-ee:latest")
# The playbook the job runs: where it runs, then the collection's playbook named by the job's `ee_playbook`.
PROJECT_PLAYBOOK = """---
- name: Where the job runs
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The controller's ansible-core, Python and erl_call
      ansible.builtin.stat:
        path: /usr/bin/erl_call
      register: ee_erl_call
    - name: Report them
      ansible.builtin.debug:
        msg: "{{ {'ee_ansible': ansible_version.full, 'ee_python': ansible_playbook_python, 'ee_erl_call': ee_erl_call.stat.executable | default(false)} }}"

- name: The collection's playbook
  ansible.builtin.import_playbook: "skunkworks.erlang_ec2.{{ ee_playbook }}"
"""


class EeJob:
    """One ansible-runner job in the EE: `rc`, `status`, `stdout`, `events`, the podman `command` it ran."""

    def __init__(self, result, stdout):
        self.rc, self.status = result.rc, result.status
        self.stdout = stdout
        self.events = list(result.events)
        self.command = result.config.command

    def where(self):
        """The debug task's report: {'ee_ansible', 'ee_python', 'ee_erl_call'} as the job saw them."""
        for event in self.events:
            res = event.get("event_data", {}).get("res", {})
            if event.get("event") == "runner_on_ok" and isinstance(res.get("msg"), dict) and "ee_ansible" in res["msg"]:
                return res["msg"]
        raise AssertionError("no report of where the job ran:\n%s" % self.stdout[-4000:])

    def __repr__(self):
        return "EE job %s (rc %s):\n%s" % (self.status, self.rc, self.stdout[-6000:])


class EeCluster(e2e.Cluster):
    """The e2e Cluster, whose playbooks run in the EE (ansible-runner, process isolation, podman)."""

    def __init__(self, env, name, workdir):
        super().__init__(env, name, workdir)
        self.data_dir = os.path.join(workdir, "runner")
        os.makedirs(os.path.join(self.data_dir, "project"))
        with open(os.path.join(self.data_dir, "project", "ee_job.yml"), "w") as handle:
            handle.write(PROJECT_PLAYBOOK)
        shutil.copytree(os.path.join(e2e.ROOT, "inventory"), os.path.join(self.data_dir, "inventory"))

    def ee_playbook(self, name, extra=None):
        import ansible_runner

        extra_vars = {"ee_playbook": name, "cluster_name": self.name, "erlang_cookie_ssm_parameter": self.cookie_parameter}
        extra_vars.update(extra or {})
        with open(self.env["LOCALCLOUD_SSH_KEY"]) as handle:
            ssh_key = handle.read()
        # Inside the container: the fake credentials and local endpoint only (no host environment); the key
        # goes to ssh-agent (runner's ssh_key), so the inventory's key file path is not set.
        envvars = {key: self.env[key] for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        envvars.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", ANSIBLE_PIPELINING="1",
                       ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        os.environ["CONTAINERS_CONF"] = self.env["CONTAINERS_CONF"]  # podman itself: localcloud's runtime settings
        result = ansible_runner.run(
            private_data_dir=self.data_dir, playbook="ee_job.yml", inventory="/runner/inventory", extravars=extra_vars,
            envvars=envvars, ssh_key=ssh_key, quiet=True, timeout=900,
            process_isolation=True, process_isolation_executable="podman", container_image=EE_IMAGE,
            # The host's network: moto on 127.0.0.1 and the hosts on localcloud's podman bridge. Root: runner (root
            # here) hands the key over in a 0600 fifo, which the EE's default user 1000 could not read.
            container_options=["--network=host", "--pull=never", "--user=0"],
        )
        stdout = result.stdout.read()
        with open(os.path.join(self.workdir, "ansible.log"), "a") as log:
            log.write("=== EE job %s (%s)\n%s\n" % (name, result.status, stdout))
        return EeJob(result, stdout)


@pytest.fixture(scope="session")
def ee_image():
    env = e2e.localcloud_env()
    found = subprocess.run(["podman", "image", "exists", EE_IMAGE], env=env, check=False)
    assert found.returncode == 0, "no image %s: build it with `make ee`" % EE_IMAGE
    return EE_IMAGE


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, ee_image):
    """1 boot server + 1 worker provisioned, then site with hello_cluster 1.0.0: both run in the EE."""
    env = e2e.localcloud_env()
    name = os.environ.get("EE_CLUSTER") or "ee-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("ee"))
    c = EeCluster(env, name, workdir)
    c.cookie = c.ensure_cookie()  # a kept cluster (EE_KEEP, reused with EE_CLUSTER) keeps its cookie
    try:
        release = e2e.build_release(workdir, "1.0.0")
        shutil.copy(release, os.path.join(c.data_dir, "project"))
        c.jobs = {}
        # The container is on the host's network: SSH and the app port come from the controller's address.
        c.jobs["provision"] = c.ee_playbook("provision", extra=c.provision_vars(1))
        assert c.jobs["provision"].rc == 0, c.jobs["provision"]
        # The release as the container sees it: the private data dir is /runner.
        c.jobs["site"] = c.ee_playbook("site", extra={"site_initial_release": "/runner/project/" + os.path.basename(release)})
        assert c.jobs["site"].rc == 0, c.jobs["site"]
        c.refresh()
        yield c
    finally:
        c.end_session("ee")
