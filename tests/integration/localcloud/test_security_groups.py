"""localcloud enforces security groups as EC2 does (LOCALCLOUD_SECURITY_GROUPS=enforce, the default).

Real hosts, through the EC2 API: two members of a cluster-like group (EPMD 4369, a distribution port, a
boot-server-like TCP port, UDP 4368 open to the group itself), an outsider in the same VPC (another group),
and a host launched without a group (the VPC's default group). Listeners run on a member (python3); probes
run on the other hosts over SSH and say, per port, open (an echo came back) or blocked (no answer: DROP).
"""

import argparse
import json
import os
import shlex
import subprocess
import threading
import time

import pytest

from conftest import Launcher, ssh, wait_ssh
from localcloud import cli, config, firewall

CONTROLLER = config.NETWORK_GATEWAY + "/32"
EPMD, DIST, BOOT_TCP, BOOT_UDP = 4369, 9100, 4380, 4368
IPV6_TCP = 4390  # an echo server on IPv6 (link-local addresses: every host has one on its network's bridge)
CLUSTER_PORTS = ("tcp/%d" % EPMD, "tcp/%d" % DIST, "tcp/%d" % BOOT_TCP, "udp/%d" % BOOT_UDP)
FOLLOW_SECONDS = 10  # the daemon recomputes on every API call and every second: "within a few seconds"
TAG = {"Key": "localcloud-test", "Value": "security-groups"}

# An echo server on every cluster port (TCP: echo per connection; UDP: a reply per datagram).
LISTENER = r"""
import socket, threading
def echo(c):
    with c:
        while True:
            d = c.recv(64)
            if not d:
                return
            c.sendall(d)
def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(64)
        s.sendto(d, a)
for p in %r:
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
def tcp6(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    while True:
        threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
for p in %r:
    threading.Thread(target=udp, args=(p,), daemon=True).start()
threading.Thread(target=tcp6, args=(%d,), daemon=True).start()
threading.Event().wait()
""" % ([EPMD, DIST, BOOT_TCP], [BOOT_UDP], IPV6_TCP)

# Probes every "proto/port" at once: {"tcp/4369": "open" | "blocked" | "refused" | "error ..."}.
PROBE = r"""
import json, socket, sys, threading
ip, out = sys.argv[1], {}
def probe(spec):
    proto, port = spec.split("/")
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, int(port)), timeout=2)  # an IPv6 address works too (fe80::...%eth0)
            s.sendall(b"ping")
            s.settimeout(2)
            got = s.recv(4)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b"ping", (ip, int(port)))
            got = s.recvfrom(4)[0]
        s.close()
        out[spec] = "open" if got == b"ping" else "bad answer %r" % got
    except socket.timeout:
        out[spec] = "blocked"
    except ConnectionRefusedError:
        out[spec] = "refused"
    except OSError as exc:
        out[spec] = "error %s" % exc
threads = [threading.Thread(target=probe, args=(spec,)) for spec in sys.argv[2:]]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
"""

# Holds one TCP connection: an echo, then waits for /tmp/go, then another echo on the same connection.
HOLD = r"""
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"one!")
print(s.recv(4).decode(), flush=True)
while not os.path.exists("/tmp/go"):
    time.sleep(0.1)
s.settimeout(5)
try:
    s.sendall(b"two!")
    print(s.recv(4).decode() or "closed", flush=True)
except OSError as exc:
    print("lost %s" % exc, flush=True)
"""


def probe(source_ip, key, target_ip, specs=CLUSTER_PORTS):
    out = ssh(source_ip, key, "python3 -c %s %s %s" % (shlex.quote(PROBE), target_ip, " ".join(specs))).stdout
    return json.loads(out)


def wait_for(check, what, bound=FOLLOW_SECONDS):
    """Poll `check` until it returns truthy; the seconds it took. Fails after `bound` seconds."""
    started = time.monotonic()
    while True:
        last = check()
        if last is True:
            return time.monotonic() - started
        if time.monotonic() - started > bound:
            raise AssertionError("%s: not within %d s (last: %s)" % (what, bound, last))
        time.sleep(0.2)


def group(ec2, name, *permissions):
    gid = ec2.create_security_group(GroupName=name, Description="localcloud security group test")["GroupId"]
    rules = [dict(p, UserIdGroupPairs=[{"GroupId": gid}]) if p.pop("self", False) else p for p in (dict(p) for p in permissions)]
    if rules:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=rules)
    return gid


def tcp(port, to=None, **source):
    return dict(IpProtocol="tcp", FromPort=port, ToPort=to or port, **source)


def ssh_from_controller():
    return tcp(22, IpRanges=[{"CidrIp": CONTROLLER}])


@pytest.fixture(scope="module")
def hosts(cloud):
    info = cli.daemon_info(cloud.paths)
    if info.get("security_groups") == "off":
        pytest.skip("localcloud runs with LOCALCLOUD_SECURITY_GROUPS=off")
    ec2 = cloud.client()
    key = cloud.paths.ssh_key
    launcher = Launcher(ec2)
    suffix = "%d-%d" % (os.getpid(), time.monotonic_ns())
    groups = []
    try:
        member_group = group(ec2, "lc-sg-member-" + suffix, ssh_from_controller(), tcp(EPMD, self=True), tcp(DIST, DIST + 5, self=True),
                             tcp(BOOT_TCP, self=True), dict(IpProtocol="udp", FromPort=BOOT_UDP, ToPort=BOOT_UDP, self=True))
        groups.append(member_group)
        outsider_group = group(ec2, "lc-sg-outsider-" + suffix, ssh_from_controller())
        groups.append(outsider_group)
        tags = [{"ResourceType": "instance", "Tags": [TAG]}]
        common = dict(KeyName=config.DEFAULT_KEY_NAME, TagSpecifications=tags, wait=False)
        members = launcher.run(MinCount=2, SecurityGroupIds=[member_group], **common)
        outsider = launcher.run(SecurityGroupIds=[outsider_group], **common)[0]
        plain = launcher.run(groups=False, **common)[0]  # no group: the VPC's default group
        launcher.wait("instance_running", launcher.ids)
        member, peer = members
        for instance in (member, peer, outsider):
            wait_ssh(instance["PrivateIpAddress"], key)
        ssh(member["PrivateIpAddress"], key, "setsid -f python3 -c %s >/dev/null 2>&1 </dev/null" % shlex.quote(LISTENER))
        # Listening: a probe from the member itself (its loopback is always accepted).
        wait_for(lambda: set(probe(member["PrivateIpAddress"], key, member["PrivateIpAddress"]).values()) == {"open"} or "not yet",
                 "listeners on the member", bound=30)
        yield argparse.Namespace(ec2=ec2, key=key, member=member, peer=peer, outsider=outsider, plain=plain,
                                 member_group=member_group, outsider_group=outsider_group, launcher=launcher)
    finally:
        launcher.cleanup()
        for gid in groups:
            ec2.delete_security_group(GroupId=gid)


def ip(instance):
    return instance["PrivateIpAddress"]


def test_an_outsider_in_the_same_vpc_reaches_no_cluster_port(hosts):
    assert hosts.outsider["VpcId"] == hosts.member["VpcId"]
    assert probe(ip(hosts.outsider), hosts.key, ip(hosts.member)) == {spec: "blocked" for spec in CLUSTER_PORTS}


def test_a_member_reaches_every_cluster_port(hosts):
    assert probe(ip(hosts.peer), hosts.key, ip(hosts.member)) == {spec: "open" for spec in CLUSTER_PORTS}


def test_a_port_outside_the_rules_is_blocked_for_members_too(hosts):
    # 4370 is in no rule: even a member's packets are dropped (no "refused": they never reach the host's stack).
    assert probe(ip(hosts.peer), hosts.key, ip(hosts.member), ["tcp/4370"]) == {"tcp/4370": "blocked"}


def test_authorize_opens_within_seconds_and_revoke_closes_again(hosts):
    permission = [tcp(EPMD, UserIdGroupPairs=[{"GroupId": hosts.outsider_group}])]
    hosts.ec2.authorize_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
    try:
        opened = wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["tcp/%d" % EPMD])["tcp/%d" % EPMD] == "open" or "closed",
                          "authorize")
        # Only that port: the others stay closed to the outsider.
        assert probe(ip(hosts.outsider), hosts.key, ip(hosts.member), CLUSTER_PORTS[1:]) == {spec: "blocked" for spec in CLUSTER_PORTS[1:]}
    finally:
        hosts.ec2.revoke_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
    closed = wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["tcp/%d" % EPMD])["tcp/%d" % EPMD] == "blocked" or "open",
                      "revoke")
    print("authorize followed in %.1f s, revoke in %.1f s" % (opened, closed))


def test_a_cidr_rule_opens_to_that_address_only(hosts):
    permission = [dict(IpProtocol="udp", FromPort=BOOT_UDP, ToPort=BOOT_UDP, IpRanges=[{"CidrIp": ip(hosts.outsider) + "/32"}])]
    hosts.ec2.authorize_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
    try:
        wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["udp/%d" % BOOT_UDP])["udp/%d" % BOOT_UDP] == "open" or "closed",
                 "authorize a CIDR")
    finally:
        hosts.ec2.revoke_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
    wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["udp/%d" % BOOT_UDP])["udp/%d" % BOOT_UDP] == "blocked" or "open",
             "revoke a CIDR")


def test_modify_instance_attribute_groups_makes_the_outsider_a_member_and_back(hosts):
    outsider = hosts.outsider["InstanceId"]
    hosts.ec2.modify_instance_attribute(InstanceId=outsider, Groups=[hosts.outsider_group, hosts.member_group])
    try:
        # It is a member both ways: it reaches the member, and the member accepts it as a source.
        wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member)) == {spec: "open" for spec in CLUSTER_PORTS} or "not yet",
                 "joining the group")
    finally:
        hosts.ec2.modify_instance_attribute(InstanceId=outsider, Groups=[hosts.outsider_group])
    wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member)) == {spec: "blocked" for spec in CLUSTER_PORTS} or "not yet",
             "leaving the group")


def test_an_established_connection_survives_a_revoke(hosts):
    """As on EC2, where a tracked connection is not cut when the rule that let it in goes: we keep conntrack's
    established connections (accepted before any rule). New connections are refused at once."""
    permission = [tcp(DIST, UserIdGroupPairs=[{"GroupId": hosts.outsider_group}])]
    hosts.ec2.authorize_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
    revoked = False
    ssh(ip(hosts.outsider), hosts.key, "rm -f /tmp/go")
    holder = None
    try:
        wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["tcp/%d" % DIST])["tcp/%d" % DIST] == "open" or "closed",
                 "authorize")
        holder = subprocess.Popen(
            ["ssh", "-i", str(hosts.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "admin@%s" % ip(hosts.outsider), "python3 -c %s %s %d" % (shlex.quote(HOLD), ip(hosts.member), DIST)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = []
        reader = threading.Thread(target=lambda: first.append(holder.stdout.readline().strip()), daemon=True)
        reader.start()
        reader.join(20)
        assert first == ["one!"], holder.stderr.read() if holder.poll() is not None else first
        hosts.ec2.revoke_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)
        revoked = True
        wait_for(lambda: probe(ip(hosts.outsider), hosts.key, ip(hosts.member), ["tcp/%d" % DIST])["tcp/%d" % DIST] == "blocked" or "open",
                 "revoke")
        ssh(ip(hosts.outsider), hosts.key, "touch /tmp/go")
        out, err = holder.communicate(timeout=20)
        assert out.strip() == "two!", (out, err)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.communicate()
        if not revoked:
            hosts.ec2.revoke_security_group_ingress(GroupId=hosts.member_group, IpPermissions=permission)


def test_a_host_in_the_default_group_runs_though_the_controller_cannot_reach_it(hosts):
    """No group at launch: the VPC's default group, whose one rule (as on EC2) is all traffic from its members.
    The instance is running all the same (localcloud probes sshd from inside the host), and the controller is out."""
    default = hosts.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [hosts.plain["VpcId"]]},
                                                          {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
    assert [g["GroupId"] for g in hosts.plain["SecurityGroups"]] == [default["GroupId"]]
    assert [(p["IpProtocol"], [g["GroupId"] for g in p["UserIdGroupPairs"]], p["IpRanges"]) for p in default["IpPermissions"]] == \
        [("-1", [default["GroupId"]], [])]
    assert hosts.launcher.describe([hosts.plain["InstanceId"]])[0]["State"]["Name"] == "running"
    proc = ssh(ip(hosts.plain), hosts.key, "true", check=False, timeout=30)
    assert proc.returncode != 0 and "timed out" in proc.stderr, proc.stderr


def test_link_local_ipv6_is_fenced_too(hosts):
    """No rule opens IPv6 (the VPC has no IPv6 block), yet every host has a link-local address on the bridge."""
    address = ssh(ip(hosts.member), hosts.key, "ip -6 -o addr show dev eth0 scope link").stdout.split()[3].split("/")[0] + "%eth0"
    spec = "tcp/%d" % IPV6_TCP
    assert probe(ip(hosts.member), hosts.key, address, [spec]) == {spec: "open"}  # the listener answers (the host's own traffic)
    assert probe(ip(hosts.outsider), hosts.key, address, [spec]) == {spec: "blocked"}
    assert probe(ip(hosts.peer), hosts.key, address, [spec]) == {spec: "blocked"}


def test_the_rules_live_in_the_hosts_own_namespace(hosts):
    """The chain is in the host's own namespace (it goes with the host; nothing on this machine), ending in DROP."""
    proc = subprocess.run(["podman", "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", config.CONTAINER_PREFIX + hosts.plain["InstanceId"]],
                          capture_output=True, text=True, check=True, env=dict(os.environ, CONTAINERS_CONF=str(config.Paths().containers_conf)))
    rules = subprocess.run(["nsenter", "--net=" + proc.stdout.strip(), "iptables", "-w", "-S", firewall.CHAIN],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert rules[-1] == "-A %s -j DROP" % firewall.CHAIN
    here = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert firewall.CHAIN not in here
