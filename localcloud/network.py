"""The container network (moto's default VPC as a podman bridge) and the IMDS address."""

import subprocess

from localcloud import config
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
