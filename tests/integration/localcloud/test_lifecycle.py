"""up/down of THE localcloud: reuse, what listens, recovery after a crash, and `down` leaving nothing behind.

The crash and `down` tests take the cloud away from anyone using it, then bring it back up, so that the
tests that run after them (in any file order) find it running; the session's end leaves it as it was found.
They skip while someone else's instances run on the cloud (LOCALCLOUD_TEST_FORCE_DOWN=1 runs them anyway);
LOCALCLOUD_TEST_KEEP_CLOUD=1 always skips them.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import Launcher, cloud_running, localcloud, podman_state, ssh, wait_ssh
from localcloud import cli, config

destructive = pytest.mark.skipif(os.environ.get("LOCALCLOUD_TEST_KEEP_CLOUD") == "1", reason="LOCALCLOUD_TEST_KEEP_CLOUD=1")


@pytest.fixture
def nobody_else(cloud):
    """The crash and `down` tests destroy every instance: not while someone else has some (unless forced)."""
    others = cloud.others_instances()
    if others and os.environ.get("LOCALCLOUD_TEST_FORCE_DOWN") != "1":
        pytest.skip("someone else's instances are running on localcloud (%s); LOCALCLOUD_TEST_FORCE_DOWN=1 runs it anyway" % ", ".join(others[:3]))


def listening(pid):
    """The local addresses (tcp and udp) on which process `pid` listens."""
    out = subprocess.run(["ss", "-H", "-lntup"], capture_output=True, text=True, check=True).stdout
    return {line.split()[4] for line in out.splitlines() if "pid=%d," % pid in line}


def alive(pid):
    """True if process `pid` exists and is not a zombie (init here reaps orphans late)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def localcloud_leftovers():
    """Whatever localcloud may make, if present: containers, network, IMDS device, daemon."""
    left = []
    podman = ["podman"]
    env = dict(os.environ, CONTAINERS_CONF=str(config.Paths().containers_conf))
    ids = subprocess.run(podman + ["ps", "-aq", "--filter", "label=%s" % config.LABEL], capture_output=True, text=True, env=env, check=False).stdout.split()
    if ids:
        left.append("containers %s" % ids)
    if subprocess.run(podman + ["network", "exists", config.NETWORK_NAME], env=env, check=False).returncode == 0:
        left.append("network %s" % config.NETWORK_NAME)
    if subprocess.run(["ip", "link", "show", config.IMDS_INTERFACE], capture_output=True, check=False).returncode == 0:
        left.append("device %s" % config.IMDS_INTERFACE)
    if config.IMDS_ADDRESS in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False).stdout:
        left.append("address %s" % config.IMDS_ADDRESS)
    procs = subprocess.run(["pgrep", "-f", "-a", "localcloud serve"], capture_output=True, text=True, check=False).stdout.strip()
    if procs:
        left.append("processes %s" % procs)
    created = subprocess.run(podman + ["images", "-q", "--filter", "reference=localhost/localcloud-ami"],
                             capture_output=True, text=True, env=env, check=False).stdout.split()
    if created:
        left.append("CreateImage images %s" % created)
    namespaces = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(config.NETNS_PREFIX)]
    if namespaces:
        left.append("network namespaces %s" % namespaces)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    uplinks = re.findall(r"^\d+: (%s\d+)[@:]" % config.REGION_UPLINK_PREFIX, links, re.M)
    if uplinks:
        left.append("uplinks %s" % uplinks)
    rules = [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout.splitlines() if "localcloud:" in line]
    if rules:
        left.append("iptables rules %s" % rules)
    return left


def test_second_up_reuses_the_running_cloud(cloud):
    pid = cli.daemon_pid(cloud.paths)
    proc = localcloud("up")
    assert "already running" in proc.stderr
    assert cli.daemon_pid(cloud.paths) == pid


def test_daemon_listens_only_on_loopback_and_the_imds_address(cloud):
    """The API on loopback; on the IMDS address, IMDS and the API for hosts (docs/localcloud.md). Nothing else."""
    pid = cli.daemon_pid(cloud.paths)
    port = cli.daemon_info(cloud.paths)["port"]
    assert listening(pid) == {"127.0.0.1:%d" % port, "%s:%d" % (config.IMDS_ADDRESS, config.IMDS_PORT),
                              "%s:%d" % (config.IMDS_ADDRESS, config.HOST_API_PORT)}


def test_env_exports_what_clients_need(cloud):
    lines = localcloud("env").stdout.splitlines()
    exports = dict(line[len("export "):].split("=", 1) for line in lines if line.startswith("export "))
    assert exports["AWS_ENDPOINT_URL"] == cloud.endpoint_url
    assert exports["AWS_REGION"] == exports["AWS_DEFAULT_REGION"] == "us-east-1"
    assert exports["AWS_ACCESS_KEY_ID"] == exports["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert exports["CONTAINERS_CONF"] == str(cloud.paths.containers_conf)
    # The exported settings are the ones that make plain podman work on these hosts.
    out = subprocess.run(["bash", "-c", 'eval "$(%s -m localcloud env)"; podman info --format "{{.Host.OCIRuntime.Name}}"' % cli.sys.executable],
                         cwd=str(config.REPO_ROOT), capture_output=True, text=True, check=True).stdout.strip()
    assert out == "runc"


def region_ssh(host, command):
    """`python -m localcloud ssh HOST COMMAND` (HOST: a private DNS name, which names the region): its stdout."""
    proc = localcloud("ssh", host, "--", command, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_restart_keeps_instances_hosts_and_tokens(cloud, key_pair):
    """`restart` replaces the daemon (new code) without touching anyone's hosts, in every region."""
    launcher = Launcher(cloud.client())
    west = Launcher(cloud.client(region="eu-west-1"))
    stale = cloud.paths.root / "saved-state.tmp"  # a directory at the temporary path of older daemons made saves fail
    try:
        instance = launcher.run(KeyName=key_pair.name, MetadataOptions={"HttpTokens": "required"}, UserData="KEEP=1\n")[0]
        ip = instance["PrivateIpAddress"]
        wait_ssh(ip, key_pair.path)
        token = ssh(ip, key_pair.path, "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 600' http://169.254.169.254/latest/api/token").stdout
        pid1 = ssh(ip, key_pair.path, "cut -d\" \" -f22 /proc/1/stat").stdout  # start time of PID 1
        there = west.run(KeyName=config.DEFAULT_KEY_NAME, MetadataOptions={"HttpTokens": "required"}, UserData="WEST=1\n")[0]
        west_token = region_ssh(there["PrivateDnsName"],
                                "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 600' http://169.254.169.254/latest/api/token")
        west_pid1 = region_ssh(there["PrivateDnsName"], "cut -d\" \" -f22 /proc/1/stat")
        stale.mkdir(exist_ok=True)
        old_pid = cli.daemon_pid(cloud.paths)
        ssm = cloud.client("ssm")
        parameter = "/localcloud-test/restart-%d" % time.monotonic_ns()
        ssm.put_parameter(Name=parameter, Value="kept-across-restart", Type="SecureString")
        ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=parameter, Tags=[{"Key": "k", "Value": "v"}])

        proc = localcloud("restart")
        assert cli.daemon_pid(cloud.paths) not in (None, old_pid), proc.stderr
        ec2 = cloud.client()
        described = Launcher(ec2).describe([instance["InstanceId"]])[0]
        assert described["State"]["Name"] == "running" and described["PrivateIpAddress"] == ip
        # The same host, not a new one; its token still works.
        assert ssh(ip, key_pair.path, "cut -d\" \" -f22 /proc/1/stat").stdout == pid1
        out = ssh(ip, key_pair.path, "curl -s -H 'X-aws-ec2-metadata-token: %s' http://169.254.169.254/latest/user-data" % token).stdout
        assert out == "KEEP=1\n"
        ssm = cloud.client("ssm")
        assert ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"] == "kept-across-restart"
        ssm.delete_parameter(Name=parameter)
        # The other region's host too, and its IMDS (served inside its region's network by the new daemon).
        assert region_ssh(there["PrivateDnsName"], "cut -d\" \" -f22 /proc/1/stat") == west_pid1
        west_user_data = "curl -s -H 'X-aws-ec2-metadata-token: %s' http://169.254.169.254/latest/user-data" % west_token
        assert region_ssh(there["PrivateDnsName"], west_user_data) == "WEST=1\n"
        assert not list(cloud.paths.root.glob("saved-state.pickle*"))  # loaded, and no temporary file left
        # The new daemon still drives hosts.
        launcher.ec2 = ec2
        ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
        launcher.wait("instance_stopped", [instance["InstanceId"]])
        assert podman_state(instance["InstanceId"]) == "exited"
    finally:
        if stale.is_dir():
            stale.rmdir()
        launcher.cleanup()
        west.cleanup()


def test_restart_that_cannot_save_keeps_the_daemon_running(cloud):
    """A failed save must not cost anyone their instances: the old daemon keeps serving, unchanged."""
    ec2 = cloud.client()
    launcher = Launcher(ec2)
    blocker = cloud.paths.saved_state  # the save ends with a rename to this path: a directory there makes it fail
    try:
        instance = launcher.run()[0]
        pid = cli.daemon_pid(cloud.paths)
        blocker.mkdir()
        proc = localcloud("restart", check=False)
        assert proc.returncode == 1 and "could not save its state" in proc.stderr and "Is a directory" in proc.stderr, proc.stderr
        assert cli.daemon_pid(cloud.paths) == pid
        assert launcher.describe([instance["InstanceId"]])[0]["State"]["Name"] == "running"
        assert podman_state(instance["InstanceId"]) == "running"
        assert not list(cloud.paths.root.glob("saved-state.pickle.*"))  # the failed save left no temporary file
    finally:
        if blocker.is_dir():
            blocker.rmdir()
        launcher.cleanup()


@destructive
def test_up_after_a_crash_removes_the_dead_instances_hosts(cloud, nobody_else):
    ec2 = cloud.client()
    instance = Launcher(ec2).run()[0]
    assert podman_state(instance["InstanceId"]) == "running"
    west = Launcher(cloud.client(region="eu-west-1")).run()[0]
    assert os.path.exists("/run/netns/" + config.host_netns_name(west["InstanceId"]))
    old_pid = cli.daemon_pid(cloud.paths)
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(old_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cloud_running(cloud.paths)

    proc = localcloud("up")
    assert "left by a previous run" in proc.stderr
    assert cli.daemon_pid(cloud.paths) not in (None, old_pid)
    assert podman_state(instance["InstanceId"]) is None
    assert podman_state(west["InstanceId"]) is None
    assert not os.path.exists("/run/netns/" + config.host_netns_name(west["InstanceId"]))
    # The new cloud works, in every region (the region's network is adopted).
    launcher = Launcher(cloud.client())
    west_launcher = Launcher(cloud.client(region="eu-west-1"))
    try:
        fresh = launcher.run(KeyName=config.DEFAULT_KEY_NAME)[0]
        wait_ssh(fresh["PrivateIpAddress"], cloud.paths.ssh_key)
        fresh_west = west_launcher.run(KeyName=config.DEFAULT_KEY_NAME)[0]
        assert region_ssh(fresh_west["PrivateDnsName"], "curl -s http://169.254.169.254/latest/meta-data/instance-id") == fresh_west["InstanceId"]
    finally:
        launcher.cleanup()
        west_launcher.cleanup()


@destructive
def test_down_leaves_nothing_behind(cloud, nobody_else):
    launcher = Launcher(cloud.client())
    launcher.run(MinCount=2)
    Launcher(cloud.client(region="eu-west-1")).run()  # a region network, its uplink and NAT rules: all go too
    pid = cli.daemon_pid(cloud.paths)
    port = cli.daemon_info(cloud.paths)["port"]
    try:
        proc = localcloud("down")
        removed = re.search(r"daemon stopped, (\d+) host\(s\)", proc.stderr)
        assert removed and int(removed.group(1)) >= 3, proc.stderr  # ours, and any someone else launched
        assert re.search(r"network removed, [1-9]\d* region network\(s\)", proc.stderr), proc.stderr
        assert localcloud_leftovers() == []
        assert not alive(pid)
        ss = subprocess.run(["ss", "-H", "-lnt"], capture_output=True, text=True, check=False).stdout
        assert "127.0.0.1:%d " % port not in ss and "%s:80 " % config.IMDS_ADDRESS not in ss
        assert localcloud("status").stdout.startswith("daemon:   not running")
        # A second down has nothing to do and says so.
        assert "not running, 0 host(s), 0 CreateImage image(s), network absent, 0 region network(s)" in localcloud("down").stderr
    finally:
        # Up again for whatever runs next; the session's end runs `down` if the session started the cloud.
        localcloud("up")
        assert cloud_running(cloud.paths)
