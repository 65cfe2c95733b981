"""Several boot servers on localcloud (moto's EC2 API + containers as hosts): cluster_instances launches two
boot servers over two subnets and a worker, the worker reads both from its own user data (IMDSv2, on the
host), and the inventory plugin lists both on every host.

Uses the running localcloud (shared): a cluster of its own (CLUSTER_INSTANCES_LOCALCLOUD_CLUSTER, default a
random name) and terminates only that cluster's instances.
"""

import json
import os
import secrets
import subprocess
import time

import pytest

import playbook_runner
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract

SSH_BOUND_SECONDS = 180
# Run on the host itself: its user data through IMDSv2, as the bootstrap reads it.
READ_USER_DATA = (
    "python3 -c \"import urllib.request as u; b='http://169.254.169.254/latest/';"
    "t=u.urlopen(u.Request(b+'api/token',method='PUT',headers={'X-aws-ec2-metadata-token-ttl-seconds':'60'}),timeout=5).read().decode();"
    "print(u.urlopen(u.Request(b+'user-data',headers={'X-aws-ec2-metadata-token':t}),timeout=5).read().decode())\""
)


def unwrap(value):
    """ansible-inventory marks untrusted strings as {"__ansible_unsafe": ...}: plain values to compare."""
    if isinstance(value, dict):
        return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else dict((k, unwrap(v)) for k, v in value.items())
    return [unwrap(v) for v in value] if isinstance(value, list) else value


def ip_key(ip):
    return tuple(int(part) for part in ip.split("."))


@pytest.fixture
def cluster(endpoint_url, tmp_path):
    from localcloud_cluster import Cluster  # imports localcloud: only when this test runs

    name = os.environ.get("CLUSTER_INSTANCES_LOCALCLOUD_CLUSTER") or "ci" + secrets.token_hex(3)
    c = Cluster(endpoint_url, tmp_path, name, secrets.token_hex(20))
    c.write_files()
    try:
        yield c
    finally:
        ids = [i["InstanceId"] for r in c.ec2.describe_instances(Filters=[
            {"Name": "tag:erlang-cluster", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
            for i in r["Instances"]]
        c.terminate(ids)


def run_tasks(c, tmp_path, *module_args):
    """One play on localhost calling cluster_instances with each args; the registered results."""
    out = tmp_path / "results.json"
    tasks = [{"name": "task %d" % n, "skunkworks.erlang_ec2.cluster_instances": args, "register": "r%d" % n}
             for n, args in enumerate(module_args)]
    tasks.append({"name": "save", "ansible.builtin.copy": {
        "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % n for n in range(len(module_args))), "dest": str(out)}})
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}, "tasks": tasks}]
    path = playbook_runner.write_play(tmp_path / "play.yml", play)
    playbook_runner.run_playbook(path, inventory="localhost,", env=c.env(), check=True)
    return json.loads(out.read_text())


def wait_user_data(c, ip):
    deadline = time.monotonic() + SSH_BOUND_SECONDS
    while True:
        proc = c.ssh(ip, READ_USER_DATA, check=False, timeout=30)
        if proc.returncode == 0 and proc.stdout.startswith(contract.USER_DATA_MARKER):
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError("no user data from %s within %d s: %s %s" % (ip, SSH_BOUND_SECONDS, proc.stdout, proc.stderr))
        time.sleep(2)


def test_two_boot_servers_over_two_subnets_and_a_worker_that_names_both(cluster, tmp_path):
    c = cluster
    subnets = dict((s["AvailabilityZone"], s["SubnetId"]) for s in c.ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"])
    subnet_ids = [subnets["us-east-1a"], subnets["us-east-1b"]]
    # The test harness's groups (SSH from the controller): localcloud enforces security groups.
    common = {"cluster": c.name, "image_id": c.erlang_ami(), "instance_type": "t3.small", "key_name": "localcloud",
              "subnet_ids": subnet_ids, "security_group_ids": c.security_group_ids}
    boot, worker = run_tasks(c, tmp_path, dict(common, role="boot_server", count=2), dict(common, role="worker", count=1))

    # The two boot servers, one per subnet (so one per availability zone).
    assert len(boot["launched"]) == 2
    described = dict((i["InstanceId"], i) for r in c.ec2.describe_instances(InstanceIds=boot["launched"])["Reservations"]
                     for i in r["Instances"])
    assert sorted(i["SubnetId"] for i in described.values()) == sorted(subnet_ids)
    assert len(set(i["Placement"]["AvailabilityZone"] for i in described.values())) == 2
    ips = sorted((i["PrivateIpAddress"] for i in described.values()), key=ip_key)
    assert worker["boot_server_ips"] == ips and worker["boot_server_ip"] == ips[0]

    # The worker's user data, read on the worker host itself, lists both, sorted.
    worker_ip = worker["instances"][0]["private_ip"]
    data = contract.parse_user_data(wait_user_data(c, worker_ip))
    assert data["ERLANG_BOOT_SERVER_IPS"] == ",".join(ips)
    assert data["ERLANG_BOOT_NODES"] == ",".join("boot@" + ip for ip in ips)
    assert (data["ERLANG_BOOT_SERVER_IP"], data["ERLANG_BOOT_NODE"]) == (ips[0], "boot@" + ips[0])
    assert data == contract.parse_user_data(c.user_data_of(worker["launched"][0]))

    # The inventory plugin: the lists on every host of the cluster, no problem reported.
    proc = subprocess.run([os.path.join(playbook_runner.BIN, "ansible-inventory"), "-i", str(c.inventory_file), "--list"],
                          env=c.env(), capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    hostvars = unwrap(json.loads(proc.stdout))["_meta"]["hostvars"]
    by_ip = dict((i["PrivateIpAddress"], instance_id) for instance_id, i in described.items())
    assert sorted(hostvars) == sorted(boot["launched"] + worker["launched"])
    for host, hv in hostvars.items():
        assert "erlang_cluster_problem" not in hv, (host, hv.get("erlang_cluster_problem"))
        assert hv["erlang_boot_server_ips"] == ips
        assert hv["erlang_boot_nodes"] == ["boot@" + ip for ip in ips]
        assert hv["erlang_boot_server_hosts"] == [by_ip[ip] for ip in ips]
        assert (hv["erlang_boot_server_ip"], hv["erlang_boot_server_host"]) == (ips[0], by_ip[ips[0]])
    assert "boot servers" not in " ".join(proc.stderr.split())
