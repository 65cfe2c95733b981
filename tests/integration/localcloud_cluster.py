"""A test cluster on localcloud, looked at from outside: the EC2 API (boto3 on the local endpoint,
fake credentials), SSH into its hosts, erl_call on its boot server as the service user.

Shared by the suites that run clusters (self_join, releases). localcloud is shared too: a suite uses
the running one (or starts it, and leaves it running) and terminates only the instances it launched.
localcloud enforces security groups: the instances launched here get the test harness's groups
(harness_group.py), clusters made by the provision playbook the app port with app_port_rules().
"""

import base64
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.request

import boto3

REPO = pathlib.Path(__file__).resolve().parents[2]
for _path in (REPO, REPO / ".collections"):  # the collection's own path: make bootstrap links it
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from localcloud import cli, config  # noqa: E402
from plugins.module_utils import cluster as contract  # noqa: E402
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT  # noqa: E402

import harness_group  # noqa: E402
import playbook_runner  # noqa: E402
from harness_group import APP_PORT, CONTROLLER_CIDR  # noqa: E402

# harness_group.py stands alone (molecule runs it as a command): its controller address is localcloud's.
assert CONTROLLER_CIDR == config.NETWORK_GATEWAY + "/32", (CONTROLLER_CIDR, config.NETWORK_GATEWAY)

ERLANG_AMI_NAME = "localcloud-debian-12-erlang"
SUBNET_AZ = "us-east-1a"
# Generous bounds: only there so that a broken bootstrap fails the test instead of hanging it.
JOIN_BOUND_SECONDS = 240
PLAYBOOK_TIMEOUT = playbook_runner.PLAYBOOK_TIMEOUT


def run(cmd, timeout=PLAYBOOK_TIMEOUT, check=True, env=None, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO), check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(map(str, cmd)), proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:]))
    return proc


class Cluster:
    """One test cluster on localcloud and the ways to look at it from outside."""

    def __init__(self, endpoint_url, workdir, name, cookie, layout=None):
        self.endpoint_url = endpoint_url
        # The host layout the cluster's hosts use (DEFAULT_LAYOUT unless the suite moves it).
        self.layout = layout or DEFAULT_LAYOUT
        self.workdir = workdir
        self.name = name
        self.cookie = cookie
        self.ec2 = boto3.client("ec2", endpoint_url=endpoint_url, region_name=config.DEFAULT_REGION,
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ssh_key = pathlib.Path(os.environ.get("LOCALCLOUD_SSH_KEY") or config.Paths().ssh_key)
        self.launched = []
        self.boot_id = None
        self.boot_ip = None
        self.boot_node = None
        self.image_id = None
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]},
                                                     {"Name": "availability-zone", "Values": [SUBNET_AZ]}])["Subnets"]
        self.subnet_id = subnets[0]["SubnetId"]
        # Of every instance launched here: SSH and the app port from the controller, all traffic from the group's
        # members (the cluster's hosts talk to each other).
        self.security_group_ids = harness_group.security_group_ids(self.ec2, subnets[0]["VpcId"])

    # ---------------------------------------------------------------- environment

    def env(self):
        env = playbook_runner.ansible_env(
            AWS_ENDPOINT_URL=self.endpoint_url, AWS_REGION=config.DEFAULT_REGION, AWS_DEFAULT_REGION=config.DEFAULT_REGION,
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", LOCALCLOUD_SSH_KEY=str(self.ssh_key),
            ANSIBLE_HOST_KEY_CHECKING="False")
        for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(key, None)
        return env

    def ansible_playbook(self, playbook, *args, inventory=True, check=True):
        """ansible-playbook with the cookie from the cluster's 0600 vars file (-e @file)."""
        return playbook_runner.run_playbook(playbook, *args, inventory=self.inventory_file if inventory else None,
                                            vars_files=[self.secrets_file], env=self.env(), check=check)

    def ansible(self, module, module_args):
        """An ad-hoc ansible run of MODULE on the controller (modules that talk to the EC2 API)."""
        return playbook_runner.run_adhoc("localhost", module, module_args, "-c", "local", "-o", inventory="localhost,",
                                         extra_vars={"ansible_python_interpreter": str(REPO / ".venv/bin/python")},
                                         env=self.env(), check=True)

    def write_files(self):
        """Inventory (the collection's plugin, this cluster only), connection vars, the cookie (0600 file)."""
        inv_dir = self.workdir / "inventory"
        (inv_dir / "group_vars").mkdir(parents=True, exist_ok=True)
        self.inventory_file = inv_dir / "cluster.erlang_ec2.yml"
        self.inventory_file.write_text(
            "plugin: skunkworks.erlang_ec2.ec2\nendpoint_url: %s\nregions: [%s]\nclusters: [%s]\n"
            % (self.endpoint_url, config.DEFAULT_REGION, self.name))
        (inv_dir / "group_vars" / "all.yml").write_text(
            "ansible_user: admin\nansible_ssh_private_key_file: %s\n"
            "ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
            "ansible_python_interpreter: /usr/bin/python3\n" % self.ssh_key)
        self.secrets_file = playbook_runner.write_private(self.workdir / "cookie.yml", "erlang_cookie: %s\n" % self.cookie)

    # ---------------------------------------------------------------- instances

    def erlang_ami(self):
        images = self.ec2.describe_images(Filters=[{"Name": "name", "Values": [ERLANG_AMI_NAME]}])["Images"]
        return images[0]["ImageId"]

    def run_instances(self, image_id, count, role, user_data, node_name=None):
        """RunInstances, tagged as cluster_instances tags; returns the instances."""
        tags = {contract.TAG_CLUSTER: self.name, contract.TAG_ROLE: role,
                contract.TAG_NODE_NAME: node_name or contract.default_node_name(role), "Name": "%s-%s" % (self.name, role)}
        reply = self.ec2.run_instances(
            ImageId=image_id, MinCount=count, MaxCount=count, InstanceType="t3.small", KeyName="localcloud",
            SubnetId=self.subnet_id, SecurityGroupIds=self.security_group_ids, UserData=user_data,
            MetadataOptions={"HttpTokens": "required"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        instances = reply["Instances"]
        self.launched += [i["InstanceId"] for i in instances]
        return instances

    def bake_image_vars(self):
        """bake_image's builder in the harness's groups (its SSH from the controller), as -e JSON."""
        return json.dumps({"bake_image_security_group_ids": self.security_group_ids})

    def join_groups(self, group_ids, instance_ids=None):
        """Add groups to instances launched here (default: all of them), keeping theirs: for hosts that must meet
        hosts of a provisioned cluster (whose groups admit their members only)."""
        reply = self.ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": list(instance_ids or self.launched)},
                                                     {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
        for instance in (i for r in reply["Reservations"] for i in r["Instances"]):
            have = [g["GroupId"] for g in instance["SecurityGroups"]]
            self.ec2.modify_instance_attribute(InstanceId=instance["InstanceId"],
                                               Groups=have + [g for g in group_ids if g not in have])

    def launch_boot_server(self, image_id):
        """The cluster's boot server instance (not waited for); sets boot_id, boot_ip and boot_node."""
        boot = self.run_instances(image_id, 1, contract.ROLE_BOOT_SERVER,
                                  contract.render_user_data(self.name, contract.ROLE_BOOT_SERVER, "boot"))[0]
        self.boot_id, self.boot_ip = boot["InstanceId"], boot["PrivateIpAddress"]
        self.boot_node = contract.node_id("boot", self.boot_ip)
        return boot

    def worker_user_data(self, **extra):
        return contract.render_user_data(self.name, contract.ROLE_WORKER, "worker", boot_server_ip=self.boot_ip, extra=extra)

    def launch_workers(self, count, **extra):
        return self.run_instances(self.image_id, count, contract.ROLE_WORKER, self.worker_user_data(**extra))

    def wait_state(self, instance_ids, state, bound=120):
        deadline = time.monotonic() + bound
        while True:
            reply = self.ec2.describe_instances(InstanceIds=list(instance_ids))
            states = {i["InstanceId"]: i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]}
            if all(s == state for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError("instances not %s after %d s: %s" % (state, bound, states))
            time.sleep(1)

    def terminate(self, instance_ids):
        if instance_ids:
            self.ec2.terminate_instances(InstanceIds=list(instance_ids))

    def user_data_of(self, instance_id):
        attr = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return base64.b64decode(attr["UserData"].get("Value", "")).decode()

    # ---------------------------------------------------------------- looking inside hosts

    def ssh(self, ip, command, check=True, timeout=60, stdin=None):
        proc = subprocess.run(
            ["ssh", "-i", str(self.ssh_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
             "admin@%s" % ip, command], input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("ssh admin@%s %r failed (%d): %s %s" % (ip, command, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def boot_eval(self, expression):
        """Evaluate an Erlang expression on the boot server node (erl_call as the service user: cookie file)."""
        proc = self.ssh(self.boot_ip, "sudo -u %s env HOME=%s erl_call -name %s -R -timeout 10 -e"
                        % (self.layout["user"], self.layout["home"], self.boot_node),
                        check=False, timeout=30, stdin=expression + "\n")
        out = proc.stdout.strip()
        return out if proc.returncode == 0 and out.startswith("{ok,") else None

    def cluster_view(self):
        """{node: sorted connected nodes} of every worker the boot node is connected to (workers only)."""
        out = self.boot_eval(
            'lists:flatten([[atom_to_list(N), "=", lists:join(",", [atom_to_list(M) || M <- lists:sort(rpc:call(N, erlang, nodes, [], 5000)),'
            ' is_atom(M)]), ";"] || N <- lists:sort(nodes()), lists:prefix("worker@", atom_to_list(N))]).')
        if not out:
            return {}
        match = re.search(r'"(.*)"', out, re.S)
        view = {}
        for part in (match.group(1) if match else "").split(";"):
            if "=" in part:
                node, dummy, peers = part.partition("=")
                view[node] = set(p for p in peers.split(",") if p)
        return view

    def which_slaves(self):
        out = self.boot_eval('lists:flatten(lists:join(",", [inet:ntoa(Ip) || {_, Ip} <- erl_boot_server:which_slaves()])).')
        if out == "{ok, []}":  # the empty string, printed as a list
            return set()
        match = re.search(r'"(.*)"', out or "")
        if match is None:
            raise AssertionError("cannot read the boot server's allow-list: %r" % out)
        return set(ip for ip in match.group(1).split(",") if ip)

    def persisted_slaves(self):
        """The persisted allow-list (written by the boot server only, read at its every start)."""
        out = self.ssh(self.boot_ip, "sudo cat %s" % self.layout["allow_list_file"]).stdout
        return set(line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#"))

    def allow_list_file_stat(self):
        """(owner, group, octal mode) of the persisted allow-list."""
        out = self.ssh(self.boot_ip, "sudo stat -c '%%U %%G %%a' %s" % self.layout["allow_list_file"]).stdout
        return tuple(out.split())

    def legacy_joined_file_exists(self):
        """Earlier versions' file of self-joined workers: folded into the allow-list file at start, then removed."""
        proc = self.ssh(self.boot_ip, "sudo test -e %s" % self.layout["joined_allow_list_file"], check=False)
        return proc.returncode == 0

    def restart_boot_server(self, bound=60):
        """systemctl restart (the unit's ExecStartPost waits for erl_boot_server), then the allow-list as read back."""
        self.ssh(self.boot_ip, "sudo systemctl restart %s" % self.layout["boot_server_unit"], timeout=bound)
        deadline = time.monotonic() + bound
        while self.boot_eval("is_pid(whereis(boot_server)).") != "{ok, true}":
            if time.monotonic() > deadline:
                raise AssertionError("the boot server did not come back within %d s" % bound)
            time.sleep(1)
        return self.which_slaves()

    def bootstrap_state(self, ip):
        proc = self.ssh(ip, "systemctl show -p ActiveState --value %s" % self.layout["bootstrap_unit"], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "unreachable"

    def bootstrap_journal(self, ip):
        return self.ssh(ip, "sudo journalctl -b -u %s --no-pager -o cat" % self.layout["bootstrap_unit"], check=False).stdout

    def wait_joined(self, ips, t0, bound=JOIN_BOUND_SECONDS):
        """Wait until every worker at `ips` is connected to the boot node and to every other worker
        (one cluster); returns {ip: seconds from t0 to first seen joined}."""
        want = {"worker@%s" % ip for ip in ips}
        seen = {}
        deadline = time.monotonic() + bound
        while True:
            view = self.cluster_view()
            now = time.monotonic()
            for node in want:
                if node in view and (want - {node}) <= view[node]:
                    seen.setdefault(node, now - t0)
            if len(seen) == len(want):
                return {node.split("@")[1]: round(t, 1) for node, t in seen.items()}
            if now > deadline:
                states = {ip: self.bootstrap_state(ip) for ip in ips}
                raise AssertionError("not joined after %d s: boot node sees %s; bootstrap units %s; journal of one: %s"
                                     % (bound, view, states, self.bootstrap_journal(sorted(ips)[0])[-3000:]))
            time.sleep(1)


def app_port_rules(health_gate_group=None):
    """provision_extra_rules of a test cluster made by the provision playbook: the app port from the controller
    (worker_status, the pollers); with health_gate_group (the cluster's boot servers' group, by name) also from the boot
    servers, for the rolling restart's HTTP health gate, which cluster_restart runs there (docs/security.md)."""
    rules = [{"proto": "tcp", "ports": [str(APP_PORT)], "cidr_ip": CONTROLLER_CIDR,
              "rule_desc": "the example app's /status, polled from the controller (tests)"}]
    if health_gate_group:
        rules.append({"proto": "tcp", "ports": [str(APP_PORT)], "group_name": health_gate_group,
                      "rule_desc": "the example app's /status, the rolling restart's health gate on the boot servers (tests)"})
    return rules


def worker_status(ip, timeout):
    """A worker's http://IP:8080/status document (the example releases), or None while it does not answer."""
    try:
        with urllib.request.urlopen("http://%s:%d/status" % (ip, APP_PORT), timeout=timeout) as answer:  # nosec - the project's own hosts
            return json.loads(answer.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


class StatusPoller(threading.Thread):
    """GET /status of each worker every `interval` seconds, one thread per worker: `polls`, `failed` [(when, ip)],
    and `builds` {ip: ["build" of every answer]} (the example releases answer their BUILD= as "build")."""

    def __init__(self, ips, interval=0.02):
        super().__init__(daemon=True)
        self.ips, self.interval = list(ips), interval
        self.polls, self.failed, self.builds = 0, [], {}
        self._halt = threading.Event()

    def poll_one(self, ip):
        while not self._halt.is_set():
            # 3 s, a patient client's wait: a restarted worker refuses at once; on a loaded test machine an answer
            # can take over 1 s, and that is slow, not failed.
            status = worker_status(ip, timeout=3.0)
            self.polls += 1
            if status is None:
                self.failed.append((time.monotonic(), ip))
            else:
                self.builds.setdefault(ip, []).append(status.get("build"))
            time.sleep(self.interval)

    def run(self):
        threads = [threading.Thread(target=self.poll_one, args=(ip,), daemon=True) for ip in self.ips]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def stop(self):
        self._halt.set()
        self.join(10)


def localcloud_endpoint_url():
    """The running localcloud's endpoint (started if it is not running; never stopped here: it is shared)."""
    paths = config.Paths()
    if not (cli.daemon_pid(paths) and cli.api_answers(cli.daemon_info(paths).get("endpoint_url", ""))):
        run([sys.executable, "-m", "localcloud", "up"], timeout=600)
    return cli.daemon_info(paths)["endpoint_url"]
