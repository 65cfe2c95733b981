"""Names, addresses and paths shared by every part of localcloud (one concept, one name)."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# The container network is moto's default VPC (172.31.0.0/16) so an instance's private IP is its container's IP.
NETWORK_NAME = "localcloud"
NETWORK_SUBNET = "172.31.0.0/16"
NETWORK_GATEWAY = "172.31.0.1"  # the VPC router's address on EC2; moto never assigns it
# 169.254.169.254 lives on a dummy interface of its own: netavark deletes the bridge with its last
# container, which would take the address (and the IMDS socket) with it. Containers reach it through
# their default route (the bridge gateway); the host accepts it because the address is local.
IMDS_INTERFACE = "localcloud-imds"
IMDS_ADDRESS = "169.254.169.254"
IMDS_PORT = 80
# The AWS API as hosts reach it (localcloud's stand-in for VPC interface endpoints): the same moto as on
# loopback, on the IMDS address of every network (the default one and each region's), so a host needs no route
# to this machine's loopback. Fixed, whatever LOCALCLOUD_PORT is: hosts' scripts name it.
HOST_API_PORT = 5050

LABEL = "io.localcloud"  # every container and network localcloud makes carries this label
LABEL_INSTANCE_ID = "io.localcloud.instance-id"
LABEL_PRIVATE_IP = "io.localcloud.private-ip"
LABEL_NETWORK = "io.localcloud.network"  # the network the host is on (absent on hosts made before regions had their own: NETWORK_NAME)
LABEL_REGION = "io.localcloud.region"
LABEL_ACCOUNT = "io.localcloud.account"
CONTAINER_PREFIX = "localcloud-"

# Every region (and account) is a network of its own, as on EC2, where all default VPCs are 172.31.0.0/16.
# The default region of the default account is the podman network above, routed on this machine. Any other
# is a network namespace named by region_network_name(): a bridge `br0` with the VPC router's address, IMDS
# on its loopback, and an uplink (a veth pair, REGION_UPLINK_PREFIX<n> on this machine) for NAT to the outside.
# Each host of such a network has a namespace of its own (HOST_NETNS_PREFIX + instance id) that its container joins.
NETNS_PREFIX = "localcloud-"
HOST_NETNS_PREFIX = "localcloud-i-"  # instance ids start with "i-", region names never do
REGION_BRIDGE = "br0"  # inside a region's namespace
REGION_UPLINK = "uplink"  # inside a region's namespace
REGION_UPLINK_PREFIX = "lcu"  # on this machine: lcu1, lcu2, ...
UPLINK_SUBNET = "100.127.0.0/16"  # one /30 per region network (machine side .1, namespace side .2)

DEFAULT_PORT = 5050
DEFAULT_REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_KEY_NAME = "localcloud"  # key pair imported into every region at start

# AMIs localcloud registers in every region (fixed ids, so docs and tests can name them).
BASE_IMAGE_NAME = "localcloud-debian-12"
BAKED_IMAGE_NAME = "localcloud-debian-12-erlang"
BASE_AMI_ID = "ami-0deb1200000000000"
BAKED_AMI_ID = "ami-0deb120000000e71a"


def region_network_name(account, region):
    """The network of `region` in `account`: NETWORK_NAME for the default region of the default account, which
    is routed on this machine; a network namespace of its own for any other (see docs/localcloud.md)."""
    if account == ACCOUNT_ID and region == DEFAULT_REGION:
        return NETWORK_NAME
    if account == ACCOUNT_ID:
        return NETNS_PREFIX + region
    return "%s%s-%s" % (NETNS_PREFIX, account, region)


def host_netns_name(instance_id):
    return NETNS_PREFIX + instance_id  # starts with HOST_NETNS_PREFIX


def state_dir():
    return pathlib.Path(os.environ.get("LOCALCLOUD_STATE_DIR") or REPO_ROOT / ".state" / "localcloud").resolve()


def port():
    return int(os.environ.get("LOCALCLOUD_PORT") or DEFAULT_PORT)


def region():
    return os.environ.get("LOCALCLOUD_REGION") or DEFAULT_REGION


def max_hosts():
    """Most instances alive at once (each is a container on this machine): LOCALCLOUD_MAX_HOSTS, default 64."""
    return int(os.environ.get("LOCALCLOUD_MAX_HOSTS") or 64)


def endpoint_url(port_number=None):
    return "http://127.0.0.1:%d" % (port_number or port())


def host_endpoint_url():
    return "http://%s:%d" % (IMDS_ADDRESS, HOST_API_PORT)


class Paths:
    """Files under the state directory."""

    def __init__(self, root=None):
        self.root = pathlib.Path(root) if root else state_dir()
        self.containers_conf = self.root / "containers.conf"
        self.pid = self.root / "serve.pid"
        self.log = self.root / "serve.log"
        self.info = self.root / "serve.json"  # port and region of the running daemon
        self.lock = self.root / "cli.lock"  # serialises up and down
        self.saved_state = self.root / "saved-state.pickle"  # the API's state across `restart`
        self.restart_failed = self.root / "restart-failed"  # written by a daemon that could not save its state
        self.images = self.root / "images"
        self.ami_map = self.root / "ami-map.json"
        self.ssh_dir = self.root / "ssh"
        self.ssh_key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"

    def ensure(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(exist_ok=True)
        self.ssh_dir.mkdir(mode=0o700, exist_ok=True)
        return self
