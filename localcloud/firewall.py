"""Security groups enforced on the hosts, as EC2 does (LOCALCLOUD_SECURITY_GROUPS=enforce|off, default enforce).

Design (one idea: each host filters its own inbound traffic, in its own network namespace):

- The desired state is a pure function of the API's state: `desired(instances, groups)` gives, per host, the
  iptables-restore text of one chain, LOCALCLOUD-SG, jumped to from INPUT:
    established/related accepted (stateful, as EC2), loopback accepted, then one ACCEPT per ingress rule of each
    of the instance's groups (protocol tcp/udp/icmp/all, port range or ICMP type/code, source CIDR or source
    group = the private IPs of the live instances of that group in the same network), then DROP.
  Egress is not filtered (EC2's default egress rule allows all; we do not model egress rules).
  IPv6 ranges and prefix lists are not modelled (the networks are IPv4 only); inbound IPv6 (the hosts'
  link-local addresses) is dropped by the same chain with no rule in it (ip6tables), once per namespace.
- The daemon reads the groups and instances in-process from moto's backends (`from_moto`): no HTTP round trip
  every second, and one consistent snapshot with the states the reconciler sets. `from_api` reads the same
  through the EC2 API (DescribeInstances/DescribeSecurityGroups), for `python -m localcloud.firewall`, which
  applies the rules of chosen instances from outside the daemon (debugging).
- `Firewall.run` (a thread of the daemon) recomputes when the API is called (the daemon wakes it after every
  non-GET request) and at least every second, hashes each host's text, and applies only the changed ones:
  `iptables-restore --noflush` inside the host's namespace (podman's SandboxKey on the default network, the
  host's own namespace on the others), one transaction: declaring the chain flushes it, INPUT is flushed and
  re-pointed to it. Nothing is added on this machine: the rules go with the hosts' namespaces.
- A new (or started, or rebooted) host gets its rules before its first process runs: the reconciler does
  `podman create` + `podman init` (the namespace exists, nothing runs yet), `Firewall.apply_now`, then `podman start`.
- Connections already established survive a revoke (conntrack), as tracked connections do on EC2.
"""

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import namedtuple

from localcloud import config, netns
from localcloud.errors import LocalcloudError

log = logging.getLogger("localcloud.firewall")

CHAIN = "LOCALCLOUD-SG"
MISSING_SECONDS = 3  # a host without a namespace yet (being made) is looked up again after this
MODES = ("enforce", "off")
HOST_STATES = ("pending", "running")  # instances whose host runs: their rules are kept applied
MEMBER_STATES = ("pending", "running", "stopping")  # instances whose private IP counts as a member of their groups
PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp", "-1": "-1", "all": "-1"}

# One source per rule, as moto stores them: `cidr` or `group` (a group id), the other None.
Rule = namedtuple("Rule", "protocol from_port to_port cidr group")
# network: the instance's network (config.region_network_name); groups: its group ids.
Host = namedtuple("Host", "id ip network state groups")


def mode():
    value = (os.environ.get("LOCALCLOUD_SECURITY_GROUPS") or "enforce").strip().lower()
    if value not in MODES:
        raise LocalcloudError("LOCALCLOUD_SECURITY_GROUPS=%s: expected one of %s" % (value, ", ".join(MODES)))
    return value


def _port_match(protocol, from_port, to_port):
    if protocol in ("tcp", "udp"):
        if from_port is None or to_port is None or (from_port, to_port) in ((-1, -1), (0, 65535)):
            return []
        return ["--dport", str(from_port) if from_port == to_port else "%d:%d" % (from_port, to_port)]
    if protocol == "icmp":  # EC2: FromPort is the ICMP type, ToPort the code; -1 is any
        if from_port is None or from_port == -1:
            return []
        return ["--icmp-type", str(from_port) if to_port in (None, -1) else "%d/%d" % (from_port, to_port)]
    return []


def compile_host(host, groups, members):
    """The iptables-restore text for `host`: `groups` {group id: [Rule]}, `members` {group id: [IP]}."""
    lines = [
        "*filter",
        ":%s - [0:0]" % CHAIN,  # with --noflush, declaring a chain flushes it
        "-F INPUT",
        "-A INPUT -j %s" % CHAIN,
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % CHAIN,
        "-A %s -i lo -j ACCEPT" % CHAIN,
    ]
    seen = set()
    for group_id in host.groups:
        for rule in groups.get(group_id, []):
            protocol = PROTOCOLS.get(str(rule.protocol).lower())
            if protocol is None:  # another IP protocol number: match it as such
                protocol = str(rule.protocol)
            if rule.cidr is not None:
                sources = [rule.cidr]
            elif rule.group is not None:
                sources = sorted(set(members.get(rule.group, [])), key=_ip_key)
            else:
                continue
            proto_args = [] if protocol == "-1" else ["-p", protocol]
            for source in sources:
                args = ["-A", CHAIN, "-s", source] + proto_args + _port_match(protocol, rule.from_port, rule.to_port) + ["-j", "ACCEPT"]
                line = " ".join(args)
                if line not in seen:
                    seen.add(line)
                    lines.append(line)
    lines += ["-A %s -j DROP" % CHAIN, "COMMIT", ""]
    return "\n".join(lines)


# IPv6: no rule opens any (the VPCs have no IPv6 block, IPv6 ranges are not modelled), but every host has a
# link-local address on its network's bridge: only the host's own traffic (established, loopback) comes in.
IPV6_TEXT = compile_host(Host("-", None, None, None, ()), {}, {})


def _ip_key(ip):
    try:
        return tuple(int(p) for p in ip.split("/")[0].split("."))
    except ValueError:
        return (999,)


def desired(hosts, groups):
    """{instance id: iptables-restore text} for every host that runs (`hosts`: [Host], `groups`: {id: [Rule]})."""
    members = {}
    for host in hosts:
        if host.state in MEMBER_STATES and host.ip:
            for group_id in host.groups:
                members.setdefault((host.network, group_id), []).append(host.ip)
    texts = {}
    for host in hosts:
        if host.state in HOST_STATES and host.ip:
            same_network = {gid: ips for (net, gid), ips in members.items() if net == host.network}
            texts[host.id] = compile_host(host, groups, same_network)
    return texts


# -- the API's state -------------------------------------------------------------------------
def _rule_from_moto(rule):
    cidr = (rule.ip_range or {}).get("CidrIp")
    group = (rule.source_group or {}).get("GroupId")
    return Rule(rule.ip_protocol, rule.from_port, rule.to_port, cidr, group)


def instance_groups(instance):
    """The instance's group ids: its own list (RunInstances, ModifyInstanceAttribute) or, when moto left that
    empty (launched without a group), its primary interface's (the VPC's default group, as on EC2)."""
    found = [g.id for g in list(instance.security_groups or [])]
    if not found:
        for nic in list(instance.nics.values()):
            if (nic.device_index or 0) == 0:
                found = [g.id for g in list(nic.group_set or [])]
    return found


def from_moto():
    """(hosts, groups) from moto's in-process backends (the daemon)."""
    from moto.ec2.models import ec2_backends

    from localcloud import ec2

    hosts = [Host(i.id, i.private_ip, ec2.network_of(i), i._state.name, tuple(instance_groups(i))) for _region, i in ec2.all_instances()]
    groups = {}
    for _account, regions in list(ec2_backends.items()):
        for _region, backend in list(regions.items()):
            for by_id in list(backend.groups.values()):
                for group in list(by_id.values()):
                    groups[group.id] = [_rule_from_moto(r) for r in list(group.ingress_rules)]
    return hosts, groups


def from_api(client, network):
    """(hosts, groups) of one region through the EC2 API (`client`: boto3 EC2 client; `network`: its network)."""
    hosts = []
    for page in client.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for i in reservation["Instances"]:
                gids = [g["GroupId"] for g in i.get("SecurityGroups") or []]
                if not gids:
                    for nic in i.get("NetworkInterfaces") or []:
                        if (nic.get("Attachment") or {}).get("DeviceIndex", 0) == 0:
                            gids = [g["GroupId"] for g in nic.get("Groups") or []]
                hosts.append(Host(i["InstanceId"], i.get("PrivateIpAddress"), network, i["State"]["Name"], tuple(gids)))
    groups = {}
    for page in client.get_paginator("describe_security_groups").paginate():
        for group in page["SecurityGroups"]:
            rules = []
            for perm in group.get("IpPermissions") or []:
                args = (perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort"))
                rules += [Rule(*args, r["CidrIp"], None) for r in perm.get("IpRanges") or []]
                rules += [Rule(*args, None, p["GroupId"]) for p in perm.get("UserIdGroupPairs") or [] if p.get("GroupId")]
            groups[group["GroupId"]] = rules
    return hosts, groups


# -- applying --------------------------------------------------------------------------------
class Firewall:
    """Keeps every running host's LOCALCLOUD-SG chain equal to `desired` (see the module's docstring)."""

    def __init__(self, podman, enforce=True, source=from_moto, only=None):
        self.podman = podman
        self.enforce = enforce
        self.source = source
        self.only = only  # a set of instance ids, or a function giving one (debugging: leave the others alone); None: all
        self._applied = {}  # instance id -> (namespace path, hash of the text applied there)
        self._sandbox = {}  # instance id -> podman's namespace path of its container (default network)
        self._missing = {}  # instance id -> monotonic time before which podman is not asked again
        self._lock = threading.Lock()  # one apply per host at a time (the thread and apply_now)
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self):
        self._wake.set()

    def stop(self):
        self._stop.set()
        self._wake.set()

    def namespace(self, instance_id, network, refresh=False):
        """The path of the host's network namespace, or None (no container, or not running/initialized)."""
        if network != config.NETWORK_NAME:
            path = netns.path(config.host_netns_name(instance_id))
            return path if os.path.exists(path) else None
        path = None if refresh else self._sandbox.get(instance_id)
        if path is None or not os.path.exists(path):
            if not refresh and self._missing.get(instance_id, 0) > time.monotonic():
                return None  # asked podman a moment ago (a host being made): apply_now covers it
            proc = self.podman.run("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", config.CONTAINER_PREFIX + instance_id, check=False)
            path = proc.stdout.decode().strip() if proc.returncode == 0 else ""
            if not path or not os.path.exists(path):
                self._sandbox.pop(instance_id, None)
                self._missing[instance_id] = time.monotonic() + MISSING_SECONDS
                return None
            self._missing.pop(instance_id, None)
            self._sandbox[instance_id] = path
        return path

    def _apply(self, instance_id, path, text):
        digest = hashlib.sha256(text.encode()).hexdigest()
        if self._applied.get(instance_id) == (path, digest):
            return False
        if self._applied.get(instance_id, (None,))[0] != path:  # a namespace new to us: IPv6 closed first
            self._restore(instance_id, path, "ip6tables-restore", IPV6_TEXT)
        self._restore(instance_id, path, "iptables-restore", text)
        self._applied[instance_id] = (path, digest)
        return True

    @staticmethod
    def _restore(instance_id, path, command, text):
        proc = subprocess.run(["nsenter", "--net=%s" % path, command, "-w", "5", "--noflush"],
                              input=text, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LocalcloudError("%s for %s failed: %s" % (command, instance_id, proc.stderr.strip()))

    def _chosen(self):
        return self.only() if callable(self.only) else self.only

    def apply_now(self, instance_id, network):
        """Apply the host's rules at once (its namespace just made, nothing running in it yet). No-op when off."""
        only = self._chosen()
        if not self.enforce or (only is not None and instance_id not in only):
            return
        hosts, groups = self.source()
        hosts = [h._replace(state="pending") if h.id == instance_id and h.state not in HOST_STATES else h for h in hosts]
        text = desired(hosts, groups).get(instance_id)
        path = self.namespace(instance_id, network, refresh=True)
        if text is None or path is None:
            raise LocalcloudError("cannot apply the security groups of %s: no instance or no network namespace" % instance_id)
        with self._lock:
            self._applied.pop(instance_id, None)
            self._apply(instance_id, path, text)
        log.info("%s: security groups applied", instance_id)

    def sync(self):
        """One pass: apply what changed. Returns the ids applied."""
        hosts, groups = self.source()
        texts = desired(hosts, groups)
        network_of = {h.id: h.network for h in hosts}
        only = self._chosen()
        done = []
        for instance_id, text in sorted(texts.items()):
            if only is not None and instance_id not in only:
                continue
            path = self.namespace(instance_id, network_of[instance_id])
            if path is None:  # not made yet, or stopped: apply_now (launch/start) or a later pass
                continue
            try:
                with self._lock:
                    if self._apply(instance_id, path, text):
                        done.append(instance_id)
            except (LocalcloudError, OSError, subprocess.SubprocessError) as exc:  # the host may just be going away
                log.warning("%s", exc)
        for instance_id in (set(self._applied) | set(self._sandbox) | set(self._missing)) - set(texts):
            self._applied.pop(instance_id, None)
            self._sandbox.pop(instance_id, None)
            self._missing.pop(instance_id, None)
        return done

    def run(self, interval=1.0):
        if not self.enforce:
            return
        while not self._stop.is_set():
            try:
                done = self.sync()
                if done:
                    log.info("security groups applied on %s", ", ".join(done))
            except Exception:  # keep the thread alive; the next pass retries
                log.exception("security group pass failed")
            self._wake.wait(interval)
            self._wake.clear()


def main(argv=None):
    """Apply the security groups of chosen instances from outside the daemon (debugging; the daemon does it itself)."""
    from localcloud import cli
    from localcloud.podman import Podman

    parser = argparse.ArgumentParser(prog="python -m localcloud.firewall", description=main.__doc__)
    parser.add_argument("--region", default=config.region())
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--print", action="store_true", help="print the rules, apply nothing")
    parser.add_argument("--tag", help="KEY=VALUE: the instances carrying that tag (looked up on every pass)")
    parser.add_argument("instance_ids", nargs="*")
    args = parser.parse_args(argv)
    if not args.instance_ids and not args.tag:
        parser.error("name instances, or --tag KEY=VALUE")
    import boto3

    paths = config.Paths()
    client = boto3.client("ec2", endpoint_url=cli.daemon_info(paths)["endpoint_url"], region_name=args.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    network = config.region_network_name(config.ACCOUNT_ID, args.region)
    def chosen():
        """The chosen instances once running: a daemon without enforcement probes sshd from outside the host."""
        filters = [{"Name": "instance-state-name", "Values": ["running"]}]
        if args.tag:
            key, _, value = args.tag.partition("=")
            filters.append({"Name": "tag:" + key, "Values": [value]})
        else:
            filters.append({"Name": "instance-id", "Values": args.instance_ids})
        ids = set()
        for page in client.get_paginator("describe_instances").paginate(Filters=filters):
            ids.update(i["InstanceId"] for r in page["Reservations"] for i in r["Instances"] if not args.instance_ids or i["InstanceId"] in args.instance_ids)
        return ids

    if args.print:
        texts = desired(*from_api(client, network))
        for iid in sorted(chosen()):
            print("# %s\n%s" % (iid, texts.get(iid, "(no running host)\n")))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    firewall = Firewall(Podman(paths.containers_conf), source=lambda: from_api(client, network), only=chosen)
    if args.once:
        print(" ".join(firewall.sync()))
        return 0
    try:
        firewall.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
