# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster contract shared by the inventory plugin, cluster_instances and the bootstrap.

Tag names, roles, node names and the user-data format live here only (docs/design.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

TAG_CLUSTER = "erlang-cluster"
TAG_ROLE = "erlang-role"
TAG_NODE_NAME = "erlang-node-name"
# On workers: how the worker joins (JOIN_MODES); a worker without it joins by push.
TAG_JOIN = "erlang-join"
# On AMIs made by the bake_image playbook: what the image is for (and, if baked for one, its cluster).
TAG_IMAGE = "erlang-ec2-image"
IMAGE_NODE = "node"

JOIN_PUSH = "push"
JOIN_SELF = "self"
JOIN_MODES = (JOIN_PUSH, JOIN_SELF)

ROLE_BOOT_SERVER = "boot_server"
ROLE_WORKER = "worker"
ROLES = (ROLE_BOOT_SERVER, ROLE_WORKER)

DEFAULT_NODE_NAMES = {ROLE_BOOT_SERVER: "boot", ROLE_WORKER: "worker"}

GROUP_BOOT_SERVERS = "erlang_boot_servers"
GROUP_WORKERS = "erlang_workers"
GROUP_BY_ROLE = {ROLE_BOOT_SERVER: GROUP_BOOT_SERVERS, ROLE_WORKER: GROUP_WORKERS}
GROUP_CLUSTER_PREFIX = "erlang_cluster_"

USER_DATA_MARKER = "# erlang-ec2 user-data v1"
USER_DATA_MAX_BYTES = 16 * 1024

CLUSTER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NODE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
USER_DATA_VALUE_RE = re.compile(r"^[A-Za-z0-9@._:,/-]*$")
USER_DATA_KEY_RE = re.compile(r"^ERLANG_[A-Z0-9_]+$")
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


class ClusterContractError(ValueError):
    """Input that breaks the cluster contract."""


def validate_cluster_name(name):
    if not isinstance(name, str) or not CLUSTER_NAME_RE.match(name):
        raise ClusterContractError(
            "invalid cluster name %r: use 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit" % (name,)
        )
    return name


def validate_node_name(name):
    if not isinstance(name, str) or not NODE_NAME_RE.match(name):
        raise ClusterContractError(
            "invalid Erlang node name %r: use a letter, then up to 63 of A-Z, a-z, 0-9, '_' or '-'" % (name,)
        )
    return name


def validate_role(role):
    if role not in ROLES:
        raise ClusterContractError("invalid role %r: expected one of %s" % (role, ", ".join(ROLES)))
    return role


def validate_join(join):
    if join not in JOIN_MODES:
        raise ClusterContractError("invalid join %r: expected one of %s" % (join, ", ".join(JOIN_MODES)))
    return join


def is_ipv4(value):
    return isinstance(value, str) and bool(IPV4_RE.match(value))


def is_cluster_name(value):
    return isinstance(value, str) and bool(CLUSTER_NAME_RE.match(value))


def is_node_name(value, host=None):
    """A node name part (`worker`); with host, a full node `name@host`: host True means any IPv4, else that address."""
    if not isinstance(value, str):
        return False
    if host is None:
        return bool(NODE_NAME_RE.match(value))
    name, sep, node_host = value.partition("@")
    if not sep or not NODE_NAME_RE.match(name):
        return False
    return is_ipv4(node_host) if host is True else node_host == host


def user_data_format():
    """What a reader of user data must check (the bootstrap escript reads this, rendered by node_image)."""
    return {
        "marker": USER_DATA_MARKER,
        "key_re": USER_DATA_KEY_RE.pattern,
        "value_re": USER_DATA_VALUE_RE.pattern,
        "cluster_name_re": CLUSTER_NAME_RE.pattern,
        "node_name_re": NODE_NAME_RE.pattern,
        "ipv4_re": IPV4_RE.pattern,
    }


def sanitize_group_part(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def cluster_group(cluster):
    return GROUP_CLUSTER_PREFIX + sanitize_group_part(cluster)


def default_node_name(role):
    return DEFAULT_NODE_NAMES[role]


def node_id(name, private_ip):
    """The full Erlang node name, `name@ip` (long names: workers are addressed by IP)."""
    return "%s@%s" % (name, private_ip)


# The boot server keys of the user data: the lists (every boot server) and the first, for older readers.
UD_BOOT_SERVER_IP = "ERLANG_BOOT_SERVER_IP"
UD_BOOT_NODE = "ERLANG_BOOT_NODE"
UD_BOOT_SERVER_IPS = "ERLANG_BOOT_SERVER_IPS"
UD_BOOT_NODES = "ERLANG_BOOT_NODES"
UD_BOOT_KEYS = (UD_BOOT_SERVER_IP, UD_BOOT_NODE, UD_BOOT_SERVER_IPS, UD_BOOT_NODES)
# Set by render_user_data from its arguments: user_data extra may not set them.
UD_RESERVED_KEYS = ("ERLANG_CLUSTER", "ERLANG_ROLE", "ERLANG_NODE_NAME") + UD_BOOT_KEYS


def ipv4_sort_key(ip):
    """Numeric order of dotted quads (172.31.0.9 before 172.31.0.10); anything else after them, as text."""
    if not is_ipv4(ip):
        return (1, (), str(ip))
    return (0, tuple(int(part) for part in ip.split(".")), "")


def sort_by_address(items, address_of=None):
    """`items` in the order of their addresses (`address_of[item]`, else the item itself), as ipv4_sort_key; the
    order of every boot server list (docs/design.md). Ties keep the items' own order."""
    address_of = address_of or {}
    return sorted(items, key=lambda item: ipv4_sort_key(str(address_of.get(item, item))))


def sort_ipv4(ips):
    """Addresses sorted numerically; ClusterContractError on one that is not a dotted quad."""
    for ip in ips:
        if not is_ipv4(ip):
            raise ClusterContractError("boot server address %r is not a dotted-quad IPv4 address" % (ip,))
    return sorted(ips, key=ipv4_sort_key)


def boot_server_list(boot_server_ips, boot_node_names=None):
    """[(ip, node)] of the boot servers, sorted by address.

    boot_node_names: None (every one is `boot`), one name for all, or {ip: name}.
    """
    ips = list(boot_server_ips or [])
    if len(set(ips)) != len(ips):
        raise ClusterContractError("boot server addresses are repeated: %s" % ", ".join(ips))
    servers = []
    for ip in sort_ipv4(ips):
        if isinstance(boot_node_names, dict):
            name = boot_node_names.get(ip)
        else:
            name = boot_node_names
        name = validate_node_name(name or default_node_name(ROLE_BOOT_SERVER))
        servers.append((ip, node_id(name, ip)))
    return servers


def render_user_data(cluster, role, node_name, boot_server_ip=None, boot_node_name=None, extra=None, boot_server_ips=None):
    """Render the user-data file; raises ClusterContractError on bad input or size > 16 KB.

    boot_server_ip (one) or boot_server_ips (a list, any order) name the cluster's boot servers;
    boot_node_name is the name part of their nodes: one name for all, or {ip: name}.
    """
    validate_cluster_name(cluster)
    validate_role(role)
    validate_node_name(node_name)
    if boot_server_ip and boot_server_ips:
        raise ClusterContractError("give boot_server_ip or boot_server_ips, not both")
    pairs = [("ERLANG_CLUSTER", cluster), ("ERLANG_ROLE", role), ("ERLANG_NODE_NAME", node_name)]
    servers = boot_server_list([boot_server_ip] if boot_server_ip else boot_server_ips, boot_node_name)
    if servers:
        pairs.append((UD_BOOT_SERVER_IP, servers[0][0]))
        pairs.append((UD_BOOT_NODE, servers[0][1]))
        pairs.append((UD_BOOT_SERVER_IPS, ",".join(ip for ip, node in servers)))
        pairs.append((UD_BOOT_NODES, ",".join(node for ip, node in servers)))
    for key, value in sorted((extra or {}).items()):
        key = "ERLANG_" + key.upper() if not key.upper().startswith("ERLANG_") else key.upper()
        if key in UD_RESERVED_KEYS:
            raise ClusterContractError("user data extra may not set %s: it comes from the cluster, role, node name and boot servers" % key)
        pairs.append((key, value))
    lines = [USER_DATA_MARKER]
    for key, value in pairs:
        value = str(value)
        if not USER_DATA_KEY_RE.match(key):
            raise ClusterContractError("invalid user-data key %r" % (key,))
        if not USER_DATA_VALUE_RE.match(value):
            raise ClusterContractError("invalid user-data value for %s: only A-Z a-z 0-9 @ . _ : , / - are allowed" % key)
        if "COOKIE" in key or "SECRET" in key or "PASSWORD" in key:
            raise ClusterContractError("user data must not carry secrets (%s)" % key)
        lines.append("%s=%s" % (key, value))
    text = "\n".join(lines) + "\n"
    if len(text.encode("utf-8")) > USER_DATA_MAX_BYTES:
        raise ClusterContractError("user data is %d bytes; EC2 allows at most %d" % (len(text.encode("utf-8")), USER_DATA_MAX_BYTES))
    return text


def parse_user_data(text):
    """Parse user data rendered by render_user_data; returns a dict or None if it is not ours.

    The boot server keys are checked and completed (check_boot_servers): the result has all four or none.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != USER_DATA_MARKER:
        return None
    result = {}
    for line in lines[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not USER_DATA_KEY_RE.match(key) or not USER_DATA_VALUE_RE.match(value):
            raise ClusterContractError("malformed user-data line: %r" % line)
        result[key] = value
    return check_boot_servers(result)


def check_boot_servers(settings):
    """Check the boot server keys of parsed user data and complete them (the bootstrap escript does the same).

    1. None of the four keys: no boot server, nothing added.
    2. ERLANG_BOOT_SERVER_IPS and ERLANG_BOOT_NODES: both or neither. Without them (user data written before
       several boot servers), ERLANG_BOOT_SERVER_IP and ERLANG_BOOT_NODE (both needed) are a list of one.
    3. The lists split at ',': the same length (at least 1), every address a dotted quad, no address twice,
       every node `<node name>@<address at the same position>`. Their order is kept.
    4. ERLANG_BOOT_SERVER_IP and ERLANG_BOOT_NODE, when present, are the first of each list; when absent they
       are set to it.
    """
    present = [key for key in UD_BOOT_KEYS if key in settings]
    if not present:
        return settings
    ips_text, nodes_text = settings.get(UD_BOOT_SERVER_IPS), settings.get(UD_BOOT_NODES)
    if (ips_text is None) != (nodes_text is None):
        raise ClusterContractError("user data has %s without %s" % (
            (UD_BOOT_SERVER_IPS, UD_BOOT_NODES) if nodes_text is None else (UD_BOOT_NODES, UD_BOOT_SERVER_IPS)))
    if ips_text is None:
        if UD_BOOT_SERVER_IP not in settings or UD_BOOT_NODE not in settings:
            raise ClusterContractError("user data has %s without %s" % (
                (UD_BOOT_SERVER_IP, UD_BOOT_NODE) if UD_BOOT_NODE not in settings else (UD_BOOT_NODE, UD_BOOT_SERVER_IP)))
        ips_text, nodes_text = settings[UD_BOOT_SERVER_IP], settings[UD_BOOT_NODE]
    ips, nodes = ips_text.split(","), nodes_text.split(",")
    if len(ips) != len(nodes):
        raise ClusterContractError("user data lists %d boot server address(es) but %d boot node(s)" % (len(ips), len(nodes)))
    for ip, node in zip(ips, nodes):
        if not is_ipv4(ip):
            raise ClusterContractError("user data boot server address %r is not a dotted-quad IPv4 address" % (ip,))
        if not is_node_name(node, host=ip):
            raise ClusterContractError("user data boot node %r is not <node name>@%s" % (node, ip))
    if len(set(ips)) != len(ips):
        raise ClusterContractError("user data lists a boot server address twice: %s" % ips_text)
    for key, first in ((UD_BOOT_SERVER_IP, ips[0]), (UD_BOOT_NODE, nodes[0])):
        if settings.setdefault(key, first) != first:
            raise ClusterContractError("user data %s=%s is not the first of the list (%s)" % (key, settings[key], first))
    settings[UD_BOOT_SERVER_IPS], settings[UD_BOOT_NODES] = ips_text, nodes_text
    return settings


def boot_servers_of(settings):
    """[(ip, node)] of parsed user data (parse_user_data), in its order; [] without a boot server."""
    if UD_BOOT_SERVER_IPS not in settings:
        return []
    return list(zip(settings[UD_BOOT_SERVER_IPS].split(","), settings[UD_BOOT_NODES].split(",")))
