# Run as `python3 <this file>` by its units (no shebang: not executable by itself).
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS certificates for self-joined workers (docs/tls.md, "Self-joined workers", design B).

  request  (on a worker, at boot): key (0400) -> CSR in SSM -> poll for the certificate -> node.pem
  issue    (on a boot server, from a timer): each CSR in SSM -> EC2 DescribeInstances -> sign or refuse

Python 3 standard library and the openssl command only: the hosts have no AWS SDK, so requests are signed
here (AWS SigV4). Credentials: the environment (AWS_ACCESS_KEY_ID, ...) or the instance role through IMDSv2.
Exit 0 done, 1 failed (one "<3>... FAILED: cause" line), 2 usage.
"""

import argparse
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

PROG = "erlang-ec2-tls-join"

# The cluster contract (plugins/module_utils/cluster.py): tags and name patterns.
TAG_CLUSTER = "erlang-cluster"
TAG_ROLE = "erlang-role"
TAG_NODE_NAME = "erlang-node-name"
ROLE_WORKER = "worker"
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NODE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
PREFIX_RE = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")
KINDS = ("csr", "cert", "refused")
# An instance-role session as SSM records the writer: arn:aws:sts::<account>:assumed-role/<role>/<instance id>.
WRITER_RE = re.compile(r"^arn:aws[a-z-]*:sts::\d*:assumed-role/[^/]+/(i-[0-9a-f]{8,17})$")
# EC2 is eventually consistent: an instance may be unknown to DescribeInstances for a moment after launch.
UNKNOWN_GRACE_S = 60

ISSUE, REFUSE, WAIT = "issue", "refuse", "wait"


class Failure(Exception):
    """A clear, expected failure: logged as one FAILED line, exit 1."""


# ------------------------------------------------------------------ pure parts

def ssm_path(prefix, cluster, kind, instance_id=None):
    """<prefix>/<cluster>/tls/<kind>[/<instance id>], every part checked (a bad one raises ValueError)."""
    if not PREFIX_RE.match(prefix or ""):
        raise ValueError("SSM prefix %r must look like /name[/name...]" % (prefix,))
    if not CLUSTER_NAME_RE.match(cluster or ""):
        raise ValueError("cluster name %r does not match %s" % (cluster, CLUSTER_NAME_RE.pattern))
    if kind not in KINDS:
        raise ValueError("kind %r is not one of %s" % (kind, ", ".join(KINDS)))
    path = "%s/%s/tls/%s" % (prefix, cluster, kind)
    if instance_id is None:
        return path
    if not INSTANCE_ID_RE.match(instance_id or ""):
        raise ValueError("instance id %r does not match %s" % (instance_id, INSTANCE_ID_RE.pattern))
    return path + "/" + instance_id


def instance_id_of(path, prefix, cluster, kind):
    """The instance id at the end of a parameter name of that kind, or None when the name is not one."""
    base = ssm_path(prefix, cluster, kind) + "/"
    if not path.startswith(base):
        return None
    rest = path[len(base):]
    return rest if INSTANCE_ID_RE.match(rest) else None


def parse_subject(subject):
    """'CN=<name>@<ip>' (openssl -nameopt RFC2253) -> (name, ip); anything else (more fields too) -> None."""
    subject = (subject or "").strip()
    if subject.startswith("subject="):
        subject = subject[len("subject="):].strip()
    m = re.match(r"^CN=([^,=+/\\]+)$", subject)
    if not m:
        return None
    name, sep, ip = m.group(1).partition("@")
    if not sep or not NODE_NAME_RE.match(name) or not IPV4_RE.match(ip):
        return None
    return name, ip


def writer_instance(arn):
    """The instance id of an instance-role session ARN (who wrote a parameter), else None."""
    m = WRITER_RE.match(arn or "")
    return m.group(1) if m else None


def tag_map(instance):
    return {t.get("Key"): t.get("Value") for t in instance.get("Tags") or []}


def decide(csr, instance, cluster, instance_id, csr_age_s, writer, check_writer=True):
    """The issuer's decision for one CSR: (ISSUE, {"name", "ip"}) | (REFUSE, reason) | (WAIT, reason).

    csr: {"verified": bool, "subject": str, "key": "ec-prime256v1" | other} (openssl's view of the CSR);
    instance: DescribeInstances' dict for instance_id (InstanceId, State.Name, PrivateIpAddress, Tags), or None;
    writer: SSM's LastModifiedUser of the CSR parameter.
    """
    if not csr.get("verified"):
        return REFUSE, "bad CSR: it does not parse or its signature does not verify"
    if csr.get("key") != "ec-prime256v1":
        return REFUSE, "bad CSR: the key must be EC P-256, not %s" % (csr.get("key") or "unknown")
    subject = parse_subject(csr.get("subject"))
    if subject is None:
        return REFUSE, "bad CSR: the subject must be exactly CN=<node name>@<IPv4>, not %r" % (csr.get("subject"),)
    name, ip = subject
    if instance is None:
        if csr_age_s < UNKNOWN_GRACE_S:
            return WAIT, "EC2 does not know %s yet" % instance_id
        return REFUSE, "no such instance %s (asked EC2 for %d s)" % (instance_id, int(csr_age_s))
    if instance.get("InstanceId") not in (None, instance_id):
        return REFUSE, "EC2 answered for %s, not %s" % (instance.get("InstanceId"), instance_id)
    state = (instance.get("State") or {}).get("Name")
    if state == "pending":
        return WAIT, "instance %s is pending" % instance_id
    if state != "running":
        return REFUSE, "instance %s is %s, not running" % (instance_id, state)
    tags = tag_map(instance)
    if tags.get(TAG_CLUSTER) != cluster:
        return REFUSE, "instance %s has tag %s=%r, not %r" % (instance_id, TAG_CLUSTER, tags.get(TAG_CLUSTER), cluster)
    if tags.get(TAG_ROLE) != ROLE_WORKER:
        return REFUSE, "instance %s has tag %s=%r, not %r" % (instance_id, TAG_ROLE, tags.get(TAG_ROLE), ROLE_WORKER)
    if instance.get("PrivateIpAddress") != ip:
        return REFUSE, "the CSR names %s but EC2 gives instance %s the address %s" % (
            ip, instance_id, instance.get("PrivateIpAddress"))
    if TAG_NODE_NAME in tags and tags[TAG_NODE_NAME] != name:
        return REFUSE, "the CSR names node %s but instance %s has tag %s=%r" % (name, instance_id, TAG_NODE_NAME, tags[TAG_NODE_NAME])
    wrote = writer_instance(writer)
    if wrote is not None and wrote != instance_id:
        return REFUSE, "the CSR under %s was written by another instance (%s)" % (instance_id, writer)
    if wrote is None and check_writer:
        return REFUSE, "cannot tell which instance wrote the CSR (SSM says %r)" % (writer,)
    return ISSUE, {"name": name, "ip": ip}


def refusal_text(csr_pem, reason):
    return "sha256=%s %s" % (csr_digest(csr_pem), reason)


def csr_digest(csr_pem):
    return hashlib.sha256(csr_pem.strip().encode()).hexdigest()


def refusal_for(text, csr_pem):
    """The reason when a refusal parameter concerns this CSR, else None (a refusal of an earlier one)."""
    digest, _, reason = (text or "").partition(" ")
    return reason if digest == "sha256=" + csr_digest(csr_pem) else None


def extensions_text(ip):
    """The leaf's extensions, made by the issuer from EC2's address (never copied from the CSR)."""
    return ("[leaf]\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyAgreement\n"
            "extendedKeyUsage = serverAuth, clientAuth\n"
            "subjectAltName = IP:%s, DNS:%s\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n") % (ip, ip)


def parse_describe_instances(xml_text):
    """EC2 DescribeInstances' XML -> [{InstanceId, State: {Name}, PrivateIpAddress, Tags: [{Key, Value}]}]."""
    root = ET.fromstring(xml_text)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    out = []
    for res in root.iter(ns + "reservationSet"):
        for item in res.findall(ns + "item"):
            for inst in item.iter(ns + "instancesSet"):
                for i in inst.findall(ns + "item"):
                    tags = [{"Key": t.findtext(ns + "key"), "Value": t.findtext(ns + "value")}
                            for ts in i.findall(ns + "tagSet") for t in ts.findall(ns + "item")]
                    out.append({"InstanceId": i.findtext(ns + "instanceId"),
                                "State": {"Name": i.findtext(ns + "instanceState/" + ns + "name")},
                                "PrivateIpAddress": i.findtext(ns + "privateIpAddress"),
                                "Tags": tags})
    return out


def ec2_error_code(xml_text):
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Code"):
            return el.text
    return None


def sigv4_headers(method, url, body, creds, region, service, amz_date, extra_headers=None):
    """The headers of an AWS SigV4-signed request (creds: access_key, secret_key, token or None)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    path = urllib.parse.quote(parts.path or "/", safe="/~")
    query = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                     for k, v in sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-date": amz_date}
    if creds.get("token"):
        headers["x-amz-security-token"] = creds["token"]
    for k, v in (extra_headers or {}).items():
        headers[k.lower()] = v
    signed = sorted(headers)
    canonical_headers = "".join("%s:%s\n" % (k, " ".join(str(headers[k]).split())) for k in signed)
    signed_headers = ";".join(signed)
    canonical = "\n".join([method, path, query, canonical_headers, signed_headers, payload_hash])
    day = amz_date[:8]
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])

    def _h(key, msg):
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = _h(_h(_h(_h(("AWS4" + creds["secret_key"]).encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        creds["access_key"], scope, signed_headers, signature)
    return out


def cert_acceptable(cert, own_pubkey_pem, ip):
    """The worker's check of a certificate from SSM: (True, "") or (False, why).

    cert: {"pubkey": PEM, "san": [..], "chain_ok": bool}.
    """
    if cert.get("pubkey", "").strip() != own_pubkey_pem.strip():
        return False, "it is for another key (an earlier request)"
    if sorted(cert.get("san") or []) != sorted(["IP:" + ip, "DNS:" + ip]):
        return False, "it names %s, not %s" % (", ".join(cert.get("san") or []) or "nothing", ip)
    if not cert.get("chain_ok"):
        return False, "it does not chain to the cluster CA"
    return True, ""
