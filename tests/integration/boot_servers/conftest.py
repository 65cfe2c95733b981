"""Two boot servers on localcloud (real containers, real erl): levelling before serving, the level module and
the membership keeper (docs/boot_servers.md).

One session cluster: `provision` (1 boot server, 2 workers) and `site` with hello_cluster 1.0.0, then a second
boot server launched with cluster_instances (allow_multiple_boot_servers) and both configured by the
erlang and boot_server roles (files/boot_servers.yml), the inventory's boot server lists given as extra
vars. Each test sets up the difference it looks at and leaves both boot servers running.
The cluster helper is the e2e suite's (tests/integration/e2e/conftest.py), loaded under another name.
"""

import base64
import importlib.util
import ipaddress
import os
import re
import secrets
import subprocess
import time

import pytest

import playbook_runner
from localcloud_cluster import DEFAULT_LAYOUT
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import decode_etf, to_text

_E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers_boot_servers", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
UNIT = DEFAULT_LAYOUT["boot_server_unit"]
INTERVAL = 5  # boot_server_membership_interval's default
LOADER_OPEN = "erlang_ec2_loader_server: UDP 4368"


class BootServers(e2e.Cluster):
    """The session's cluster with its boot servers: `ips` (sorted by address), `nodes`; `first` is the one
    `provision` made, `second` the one launched later."""

    boot_ips = ()
    first = second = None

    def boot_vars(self):
        return {"erlang_boot_server_ips": list(self.boot_ips),
                "erlang_boot_nodes": ["boot@%s" % ip for ip in self.boot_ips]}

    def run(self, playbook, *args, extra=None, check=True):
        extra_vars = {"cluster_name": self.name, "erlang_cookie_ssm_parameter": self.cookie_parameter}
        extra_vars.update(extra or {})
        return playbook_runner.run_playbook(os.path.join(FILES, playbook), *args, inventory=os.path.join(e2e.ROOT, "inventory"),
                                            extra_vars=extra_vars, env=self.env, check=check,
                                            log=os.path.join(self.workdir, "ansible.log"))

    def configure(self, *args, extra=None, check=True):
        """The erlang and boot_server roles on the boot servers (both, or --limit)."""
        return self.run("boot_servers.yml", *args, extra=dict(self.boot_vars(), **(extra or {})), check=check)

    def adhoc_level(self, ip, *args):
        """The boot_server_level module on the boot server at ip, as root there."""
        return playbook_runner.run_adhoc(
            "erlang_boot_servers:&%s" % self.group(), "skunkworks.erlang_ec2.boot_server_level",
            "node=boot@%s cookie_file=%s release_root=%s timeout=120" % (ip, DEFAULT_LAYOUT["cookie_file"], DEFAULT_LAYOUT["release_root"]),
            "--become", "--limit", self.host_of(ip), *args, inventory=os.path.join(e2e.ROOT, "inventory"),
            env=self.env, log=os.path.join(self.workdir, "ansible.log"))

    def group(self):
        return "erlang_cluster_" + re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    def host_of(self, ip):
        """The inventory hostname (the plugin names hosts by instance id) of the cluster's host at ip."""
        found = self.boto3("ec2").describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [self.name]},
                                                              {"Name": "private-ip-address", "Values": [ip]},
                                                              {"Name": "instance-state-name", "Values": ["running"]}])
        return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]][0]

    def sh(self, ip, command, stdin=None, check=True):
        key = self.env["LOCALCLOUD_SSH_KEY"]
        proc = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", "admin@%s" % ip, command], input=stdin, capture_output=True, text=True,
                              timeout=120, check=False)
        if check:
            assert proc.returncode == 0, "%s on %s: %s %s" % (command, ip, proc.stdout, proc.stderr)
        return proc

    def erl(self, ip, expression):
        """Evaluate expression on boot@ip (erl_call as the service user, cookie from its file); the decoded result."""
        body = "base64:encode_to_string(term_to_binary(begin %s end)).\n" % expression
        proc = self.sh(ip, "sudo -u %s env HOME=%s erl_call -name boot@%s -R -timeout 60 -e"
                       % (DEFAULT_LAYOUT["user"], DEFAULT_LAYOUT["home"], ip), stdin=body)
        found = re.search(r'"([A-Za-z0-9+/=]+)"', proc.stdout)
        assert found, "erl_call on %s: %s %s" % (ip, proc.stdout, proc.stderr)
        return to_text(decode_etf(base64.b64decode(found.group(1))))

    def state(self, ip):
        state = self.erl(ip, "erlang_ec2_boot_server:state()")
        return {key: state[key] for key in ("current", "previous", "releases", "allow_list")}

    def systemctl(self, ip, action):
        self.sh(ip, "sudo systemctl %s %s" % (action, UNIT))

    def main_pid(self, ip):
        return self.sh(ip, "systemctl show -p MainPID --value %s" % UNIT).stdout.strip()

    def now(self, ip):
        return int(self.sh(ip, "date +%s").stdout.strip())

    def journal(self, ip, since):
        """The boot server's journal lines since the host's epoch second `since`."""
        return self.sh(ip, "sudo journalctl -u %s --since @%d -o cat --no-pager" % (UNIT, since)).stdout.splitlines()


def line_index(lines, text):
    found = [i for i, line in enumerate(lines) if text in line]
    assert found, "no line with %r in:\n%s" % (text, "\n".join(lines[-60:]))
    return found[0]


def wait_for(predicate, bound, interval=0.5):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def boot_servers(ec2, name):
    """The running boot servers' addresses, oldest first."""
    found = ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [name]},
                                            {"Name": "tag:erlang-role", "Values": ["boot_server"]},
                                            {"Name": "instance-state-name", "Values": ["running"]}])
    instances = sorted((i for r in found["Reservations"] for i in r["Instances"]), key=lambda i: (i["LaunchTime"], i["InstanceId"]))
    return [i["PrivateIpAddress"] for i in instances]


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("releases"))
    return {vsn: e2e.build_release(workdir, vsn) for vsn in ("1.0.0", "2.0.0", "2.1.0")}


@pytest.fixture(scope="session")
def pair(tmp_path_factory, releases):
    env = e2e.localcloud_env()
    name = os.environ.get("BOOT_SERVERS_CLUSTER") or "bsrv-%s" % secrets.token_hex(3)
    c = BootServers(env, name, str(tmp_path_factory.mktemp("boot_servers")))
    c.ensure_cookie()
    try:
        ec2 = c.boto3("ec2")
        kept = boot_servers(ec2, name)
        if len(kept) < 2:
            c.provision(2)  # two workers: a connection between them is cut in the overlapping-partitions test
            c.playbook("site", extra={"site_initial_release": releases["1.0.0"]})
        c.refresh()
        # The one provision made (a kept cluster, BOOT_SERVERS_KEEP, is used as it is).
        c.first = kept[0] if len(kept) >= 2 else c.boot_server_ip
        # The second one in the groups provision gave the first (localcloud enforces them: same rules, same peers).
        first = ec2.describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [name]},
                                                {"Name": "private-ip-address", "Values": [c.first]},
                                                {"Name": "instance-state-name", "Values": ["running"]}])
        groups = [g["GroupId"] for r in first["Reservations"] for i in r["Instances"] for g in i["SecurityGroups"]]
        assert groups, "the first boot server %s has no security group" % c.first
        subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"])
        c.run("launch_boot_servers.yml", extra={
            "boot_servers_count": 2, "boot_servers_image_id": os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a"),
            "boot_servers_subnet_ids": subnets, "boot_servers_security_group_ids": groups,
            "boot_servers_key_name": env.get("LOCALCLOUD_KEY_NAME", "localcloud")})
        ips = boot_servers(ec2, name)
        assert len(ips) == 2, ips
        c.boot_ips = sorted(ips, key=ipaddress.IPv4Address)
        c.second = [ip for ip in ips if ip != c.first][0]
        c.worker_ips = sorted(c.workers.values(), key=ipaddress.IPv4Address)
        # The second boot server's first start: it levels from the first before it serves.
        c.first_configure = c.configure()
        yield c
    finally:
        c.end_session("boot_servers")
