"""The container networks (moto's default VPC as a podman bridge; a namespace per other region) and the IMDS address."""

import ipaddress
import os
import shlex
import subprocess

from localcloud import config, netns
from localcloud.errors import LocalcloudError


def _ip(*args, check=True):
    proc = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LocalcloudError("ip %s failed: %s" % (" ".join(args), proc.stderr.strip()))
    return proc


def ensure_network(podman):
    """Create the localcloud network, or adopt it if a previous run left it with the right settings."""
    for net in podman.json("network", "ls", "--format", "json"):
        subnets = [s.get("subnet") for s in net.get("subnets") or []]
        if net.get("name") == config.NETWORK_NAME:
            if config.NETWORK_SUBNET in subnets and (net.get("labels") or {}).get(config.LABEL):
                return False
            raise LocalcloudError("a podman network named %r exists but is not localcloud's (subnets %s): remove it" % (config.NETWORK_NAME, subnets))
        if config.NETWORK_SUBNET in subnets:
            raise LocalcloudError("podman network %r already uses %s, which localcloud needs: remove it" % (net.get("name"), config.NETWORK_SUBNET))
    podman.run(
        "network", "create",
        "--subnet", config.NETWORK_SUBNET,
        "--gateway", config.NETWORK_GATEWAY,
        "--label", "%s=network" % config.LABEL,
        config.NETWORK_NAME,
    )
    return True


def remove_network(podman):
    if podman.network_exists(config.NETWORK_NAME):
        labels = podman.json("network", "inspect", config.NETWORK_NAME)[0].get("labels") or {}
        if labels.get(config.LABEL):
            # Not forced: a container someone else attached to the network stays, and we say so.
            proc = podman.run("network", "rm", config.NETWORK_NAME, check=False)
            if proc.returncode != 0:
                raise LocalcloudError("cannot remove network %s (containers not made by localcloud use it?): %s"
                                      % (config.NETWORK_NAME, proc.stderr.decode(errors="replace").strip()))
            return True
    return False


def imds_address_present():
    return _ip("link", "show", config.IMDS_INTERFACE, check=False).returncode == 0


def ensure_imds_address():
    if not imds_address_present():
        _ip("link", "add", config.IMDS_INTERFACE, "type", "bridge")  # no dummy driver on these kernels; a port-less bridge holds the address as well
        try:  # no IPv6 link-local address: the device holds 169.254.169.254 and nothing else
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % config.IMDS_INTERFACE, "w") as f:
                f.write("1")
        except OSError:
            pass
    addrs = _ip("-o", "addr", "show", "dev", config.IMDS_INTERFACE).stdout
    if " %s/32 " % config.IMDS_ADDRESS not in addrs:
        _ip("addr", "add", "%s/32" % config.IMDS_ADDRESS, "dev", config.IMDS_INTERFACE)
    _ip("link", "set", config.IMDS_INTERFACE, "up")


def remove_imds_address():
    if imds_address_present():
        _ip("link", "del", config.IMDS_INTERFACE)
        return True
    return False


# -- networks of other regions and accounts (see config.region_network_name) --------------------------
# On EC2 every region's default VPC is 172.31.0.0/16: here each region other than the default one gets a
# network namespace of its own, holding the same subnet without clashing with the podman network above.

_REGION_ADDRESS = "%s/16" % config.NETWORK_GATEWAY  # the VPC router's address, on the region's bridge
_COMMENT = "localcloud:"  # iptables rules localcloud adds carry this comment (+ the network's name)


def _ip_ns(name, *args, check=True):
    return _ip("-n", name, *args, check=check)


def _run(argv, check=True):
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LocalcloudError("%s failed: %s" % (" ".join(argv), proc.stderr.strip()))
    return proc


def _iptables(netns_name, table, rule, action="-A"):
    """Add `rule` (a list: chain first) to `table` unless it is there already; in namespace `netns_name` or here (None)."""
    prefix = ["ip", "netns", "exec", netns_name] if netns_name else []
    if _run(prefix + ["iptables", "-w", "-t", table, "-C"] + rule, check=False).returncode == 0:
        return
    _run(prefix + ["iptables", "-w", "-t", table, action] + rule)


def _netns_names():
    try:
        return os.listdir(netns.NETNS_DIR)
    except FileNotFoundError:
        return []


def region_networks():
    """The region networks that exist (namespace names)."""
    return sorted(n for n in _netns_names() if n.startswith(config.NETNS_PREFIX) and not n.startswith(config.HOST_NETNS_PREFIX))


def host_namespaces():
    """{instance id: namespace name} of the hosts of region networks."""
    return {n[len(config.NETNS_PREFIX):]: n for n in _netns_names() if n.startswith(config.HOST_NETNS_PREFIX)}


def _uplinks():
    """{namespace name: (machine-side device, its address)} from this machine's uplink devices."""
    found = {}
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split()
        device = fields[1].rstrip(":").split("@")[0] if len(fields) > 1 else ""
        if device.startswith(config.REGION_UPLINK_PREFIX) and device[len(config.REGION_UPLINK_PREFIX):].isdigit():
            alias = line.split(" alias ", 1)[1].split()[0] if " alias " in line else ""
            found[alias] = device
    return found


def _uplink_subnet(device):
    index = int(device[len(config.REGION_UPLINK_PREFIX):])
    return list(ipaddress.ip_network(config.UPLINK_SUBNET).subnets(new_prefix=30))[index]


def ensure_region_network(name):
    """Create region network `name` (a namespace with bridge, router address, IMDS address, uplink, NAT), or
    complete what a previous run left. Returns the machine-side uplink device."""
    if name not in _netns_names():
        _ip("netns", "add", name)
    _ip_ns(name, "link", "set", "lo", "up")
    if _ip_ns(name, "link", "show", config.REGION_BRIDGE, check=False).returncode != 0:
        _ip_ns(name, "link", "add", config.REGION_BRIDGE, "type", "bridge")
    addrs = _ip_ns(name, "-o", "addr", "show").stdout
    if " %s " % _REGION_ADDRESS not in addrs:
        _ip_ns(name, "addr", "add", _REGION_ADDRESS, "dev", config.REGION_BRIDGE)
    if " %s/32 " % config.IMDS_ADDRESS not in addrs:
        _ip_ns(name, "addr", "add", "%s/32" % config.IMDS_ADDRESS, "dev", "lo")
    _ip_ns(name, "link", "set", config.REGION_BRIDGE, "up")
    _run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    # The uplink: hosts reach the outside (Debian's mirror, DNS) through NAT, as those of the default network do.
    uplinks = _uplinks()
    device = uplinks.get(name)
    if device is None or _ip_ns(name, "link", "show", config.REGION_UPLINK, check=False).returncode != 0:
        # None yet, or half of one left by an earlier run (a removed namespace's uplink lingers for a moment).
        if device is not None:
            _ip("link", "del", uplinks.pop(name), check=False)
        _ip_ns(name, "link", "del", config.REGION_UPLINK, check=False)
        _remove_rules(_COMMENT + name)  # they name the old uplink
        used = {int(d[len(config.REGION_UPLINK_PREFIX):]) for d in uplinks.values()}
        device = "%s%d" % (config.REGION_UPLINK_PREFIX, min(set(range(1, 16000)) - used))
        _ip("link", "add", device, "type", "veth", "peer", "name", config.REGION_UPLINK, "netns", name)
        _ip("link", "set", device, "alias", name)
    subnet = _uplink_subnet(device)
    outer, inner = ["%s/30" % a for a in list(subnet.hosts())[:2]]
    if " %s " % outer not in _ip("-o", "addr", "show", "dev", device).stdout:
        _ip("addr", "add", outer, "dev", device)
    _ip("link", "set", device, "up")
    if " %s " % inner not in _ip_ns(name, "-o", "addr", "show", "dev", config.REGION_UPLINK).stdout:
        _ip_ns(name, "addr", "add", inner, "dev", config.REGION_UPLINK)
    _ip_ns(name, "link", "set", config.REGION_UPLINK, "up")
    _ip_ns(name, "route", "replace", "default", "via", outer.split("/")[0])
    comment = ["-m", "comment", "--comment", _COMMENT + name]
    _iptables(name, "nat", ["POSTROUTING", "-s", config.NETWORK_SUBNET, "-o", config.REGION_UPLINK, "-j", "MASQUERADE"] + comment)
    _iptables(None, "nat", ["POSTROUTING", "-s", str(subnet), "!", "-d", str(subnet), "-j", "MASQUERADE"] + comment)
    # First in FORWARD: this machine's own rules may drop forwarded traffic (a DROP policy, e.g. where Docker runs).
    _iptables(None, "filter", ["FORWARD", "-i", device, "-j", "ACCEPT"] + comment, action="-I")
    _iptables(None, "filter", ["FORWARD", "-o", device, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"] + comment, action="-I")
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        if f.read().strip() != "1":
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")  # what podman does for its own networks
    return device


def attach_host(network_name, instance_id, ip, mac=None):
    """The namespace of a new host of region network `network_name`: eth0 with `ip` (and `mac`) on the region's
    bridge, default route through the VPC router. Returns its path, for `podman run --network ns:<path>`."""
    host = config.host_netns_name(instance_id)
    detach_host(instance_id)  # what a failed attempt left
    _ip("netns", "add", host)
    peer = "lc" + instance_id[-13:]  # the bridge port, in the region's namespace (device names: 15 characters)
    try:
        _ip_ns(network_name, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", host)
        _ip_ns(network_name, "link", "set", peer, "master", config.REGION_BRIDGE, "up")
        if mac:
            _ip_ns(host, "link", "set", "eth0", "address", mac)
        _ip_ns(host, "addr", "add", "%s/16" % ip, "dev", "eth0")
        _ip_ns(host, "link", "set", "lo", "up")
        _ip_ns(host, "link", "set", "eth0", "up")
        _ip_ns(host, "route", "add", "default", "via", config.NETWORK_GATEWAY)
    except LocalcloudError:
        detach_host(instance_id)
        raise
    return netns.path(host)


def detach_host(instance_id):
    """Remove a host's namespace (its eth0 and the bridge port go with it). True if there was one."""
    host = config.host_netns_name(instance_id)
    if not netns.exists(host):
        return False
    _ip("netns", "del", host, check=False)
    return True


def remove_region_networks():
    """Remove every host namespace, region network, uplink and iptables rule localcloud made: [what was removed]."""
    removed = []
    for iid in sorted(host_namespaces()):
        if detach_host(iid):
            removed.append(config.host_netns_name(iid))
    for name in region_networks():
        _ip("netns", "del", name, check=False)  # the uplink pair and the bridge go with it
        removed.append(name)
    for device in _uplinks().values():  # an uplink whose namespace was removed by hand
        _ip("link", "del", device, check=False)
    _remove_rules(_COMMENT)
    return removed


def _remove_rules(comment):
    """Remove this machine's iptables rules whose comment is `comment` (all of localcloud's: _COMMENT)."""
    for table in ("nat", "filter"):
        for line in _run(["iptables-save", "-t", table], check=False).stdout.splitlines():
            words = shlex.split(line)
            if words[:1] != ["-A"] or "--comment" not in words:
                continue
            found = words[words.index("--comment") + 1]
            if found == comment or (comment == _COMMENT and found.startswith(_COMMENT)):
                _run(["iptables", "-w", "-t", table, "-D"] + words[1:], check=False)
