"""The instance metadata service at 169.254.169.254:80, answering each instance by the request's source IP.

One listener per network: the default network's on this machine, each region network's inside that region's
namespace. The same private IP may be a host in two regions: the listener a request came to says which.
"""

import http.server
import json
import logging
import secrets
import threading
import time

from localcloud import config, credentials, ec2, netns

log = logging.getLogger("localcloud.imds")

TOKEN_TTL_MAX = 21600


def _hostname(instance, region):
    domain = "ec2.internal" if region == "us-east-1" else "%s.compute.internal" % region
    return "ip-%s.%s" % (instance.private_ip.replace(".", "-"), domain)


def metadata_tree(instance):
    """meta-data/ as nested dicts (directories) and strings (values)."""
    region = instance.region_name
    tree = {
        "ami-id": instance.image_id,
        "ami-launch-index": str(instance.ami_launch_index),
        "hostname": _hostname(instance, region),
        "local-hostname": _hostname(instance, region),
        "local-ipv4": instance.private_ip,
        "instance-id": instance.id,
        "instance-type": instance.instance_type,
        "instance-life-cycle": "spot" if instance.lifecycle == "spot" else "on-demand",
        "placement": {
            "availability-zone": instance.placement.zone,
            "region": region,
        },
        "security-groups": "\n".join(g.name for g in instance.security_groups),
    }
    if getattr(instance, "public_ip", None):
        tree["public-ipv4"] = instance.public_ip
    macs = _interfaces(instance)
    if macs:
        primary = [mac for mac, info in macs.items() if info["device-number"] == "0"]
        tree["mac"] = primary[0] if primary else sorted(macs)[0]
        tree["network"] = {"interfaces": {"macs": macs}}
    key = getattr(instance, "localcloud_public_key", None)
    if key:
        tree["public-keys"] = {"0=%s" % instance.key_name: {"openssh-key": key}}
    profile = credentials.profile_of(instance)
    if profile is not None:  # EC2: iam/ only on an instance with an instance profile
        tree["iam"] = {"info": lambda: credentials.iam_info(profile)}
        role = credentials.role_of(profile)
        if role is not None:  # a value called when asked for: assuming the role is not free
            tree["iam"]["security-credentials"] = {role.name: lambda: credentials.security_credentials(instance, role)}
    return tree


def _interfaces(instance):
    """network/interfaces/macs/<mac>/..., from moto's network interfaces (the container has the primary one's MAC)."""
    macs = {}
    for nic in list(getattr(instance, "nics", {}).values()):
        try:
            subnet = nic.subnet
            vpc = instance.ec2_backend.get_vpc(subnet.vpc_id)
            groups = list(nic.group_set)
        except Exception:  # a half-deleted interface: leave it out
            continue
        macs[nic.mac_address] = {
            "device-number": str(nic.device_index or 0),
            "interface-id": nic.id,
            "local-hostname": _hostname(instance, instance.region_name),
            "local-ipv4s": nic.private_ip_address,
            "mac": nic.mac_address,
            "owner-id": instance.owner_id,
            "security-group-ids": "\n".join(g.id for g in groups),
            "security-groups": "\n".join(g.name for g in groups),
            "subnet-id": subnet.id,
            "subnet-ipv4-cidr-block": subnet.cidr_block,
            "vpc-id": subnet.vpc_id,
            "vpc-ipv4-cidr-block": vpc.cidr_block,
            "vpc-ipv4-cidr-blocks": vpc.cidr_block,
        }
    return macs


def _tags(instance):
    return dict(instance.ec2_backend.tags.get(instance.id, {}))


def _lookup(tree, parts):
    node = tree
    for part in parts:
        if not isinstance(node, dict):
            return None
        if part in node:
            node = node[part]
        elif part.isdigit():  # public-keys/0/ addresses "0=<key name>"
            matches = [k for k in node if k.split("=", 1)[0] == part]
            if not matches:
                return None
            node = node[matches[0]]
        else:
            return None
    return node


def _listing(node):
    names = []
    for key, value in node.items():
        # EC2 lists directories with a slash, except public-keys' "0=<key name>" entries.
        names.append(key + "/" if isinstance(value, dict) and "=" not in key else key)
    return "\n".join(names)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many hosts booting at once all ask at the same moment

    def handle_error(self, request, client_address):
        log.debug("IMDS request from %s failed", client_address[0], exc_info=True)  # e.g. a client gone mid-request


class Imds(netns.ServedSocket):
    def __init__(self, reconciler, network=config.NETWORK_NAME, address=config.IMDS_ADDRESS, port=config.IMDS_PORT):
        self.reconciler = reconciler
        self.network = network  # the network whose hosts this listener answers
        self._tokens = {}  # token -> (source ip, expiry)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"imds": self})
        super().__init__(None if network == config.NETWORK_NAME else network, lambda: _Server((address, port), handler),
                         "imds-%s" % network)

    def new_token(self, ip, ttl):
        token = secrets.token_urlsafe(42)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (ip, now + ttl)
        return token

    def export_tokens(self):
        """Tokens with wall-clock expiry (monotonic clocks do not survive a restart)."""
        offset = time.time() - time.monotonic()
        with self._lock:
            return {t: (ip, expiry + offset) for t, (ip, expiry) in self._tokens.items()}

    def import_tokens(self, tokens):
        offset = time.time() - time.monotonic()
        with self._lock:
            self._tokens.update({t: (ip, expiry - offset) for t, (ip, expiry) in tokens.items()})

    def token_valid(self, token, ip):
        with self._lock:
            entry = self._tokens.get(token)
        return entry is not None and entry[0] == ip and entry[1] > time.monotonic()

    def instance_for(self, ip):
        instance = self.reconciler.by_ip.get((self.network, ip))
        if instance is None:
            for _region, candidate in ec2.all_instances():
                if (candidate.private_ip == ip and candidate._state.name not in ("terminated", "shutting-down")
                        and ec2.network_of(candidate) == self.network):
                    return candidate
        return instance


class _Handler(http.server.BaseHTTPRequestHandler):
    imds = None
    server_version = "EC2ws"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.client_address[0], fmt % args)

    def _send(self, status, body="", headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status):
        texts = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
        self._send(status, '<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>%d - %s</title></head>'
                   "<body><h1>%d - %s</h1></body></html>\n" % (status, texts[status], status, texts[status]),
                   headers={"Content-Type": "text/html"})

    def _instance(self):
        instance = self.imds.instance_for(self.client_address[0])
        if instance is None or instance.metadata_options.http_endpoint == "disabled":
            self._error(403)
            return None
        return instance

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.rstrip("/") != "/latest/api/token":
            return self._error(404 if self.path.startswith("/latest/") else 403)
        if self.headers.get("X-Forwarded-For"):  # EC2 refuses token requests that went through a proxy
            return self._error(403)
        instance = self._instance()
        if instance is None:
            return None
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            return self._error(400)
        if not 1 <= ttl <= TOKEN_TTL_MAX:
            return self._error(400)
        token = self.imds.new_token(self.client_address[0], ttl)
        return self._send(200, token, headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})

    def do_GET(self):
        instance = self._instance()
        if instance is None:
            return None
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is not None and not self.imds.token_valid(token, self.client_address[0]):
            return self._error(401)
        if token is None and instance.metadata_options.http_tokens == "required":
            return self._error(401)
        path = self.path.split("?", 1)[0]
        if path in ("/", ""):
            return self._send(200, "latest")
        if path in ("/latest", "/latest/"):
            return self._send(200, "dynamic\nmeta-data\nuser-data" if ec2.user_data_bytes(instance) is not None else "dynamic\nmeta-data")
        if path.rstrip("/") == "/latest/user-data":  # amazon.aws.ec2_metadata_facts asks for user-data/
            data = ec2.user_data_bytes(instance)
            return self._send(200, data, headers={"Content-Type": "application/octet-stream"}) if data is not None else self._error(404)
        if path.rstrip("/") == "/latest/dynamic":
            return self._send(200, "instance-identity/")
        if path.rstrip("/") == "/latest/dynamic/instance-identity":
            return self._send(200, "document")
        if path.rstrip("/") == "/latest/dynamic/instance-identity/document":
            doc = {
                "accountId": instance.owner_id,
                "architecture": instance.architecture,
                "availabilityZone": instance.placement.zone,
                "imageId": instance.image_id,
                "instanceId": instance.id,
                "instanceType": instance.instance_type,
                "pendingTime": instance.launch_time,
                "privateIp": instance.private_ip,
                "region": instance.region_name,
                "version": "2017-09-30",
            }
            return self._send(200, json.dumps(doc, indent=2, default=str), headers={"Content-Type": "application/json"})
        if not path.startswith("/latest/meta-data"):
            return self._error(404)
        tree = metadata_tree(instance)
        if instance.metadata_options.instance_metadata_tags == "enabled":
            tree["tags"] = {"instance": _tags(instance)}
        rest = path[len("/latest/meta-data"):].strip("/")
        node = _lookup(tree, rest.split("/") if rest else [])
        if node is None:
            return self._error(404)
        if isinstance(node, dict):
            return self._send(200, _listing(node))
        return self._send(200, node() if callable(node) else node)

    do_HEAD = do_GET
