# Run as `python3 <this file>` by its units (no shebang: not executable by itself).
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS certificates for self-joined workers (docs/tls.md, "Self-joined workers", design B).

  request  (on a worker, at boot): key (0400) -> CSR in SSM -> poll for the certificate -> node.pem
  issue    (on a boot server, from a timer): each CSR in SSM -> EC2 DescribeInstances -> sign or refuse

Python 3, boto3 (Debian's python3-boto3) and the openssl command. Credentials: botocore's default chain (the
environment, else the instance role through IMDS). The endpoint is given (--endpoint-url): the boto3 of Debian
bookworm does not read AWS_ENDPOINT_URL itself.
Exit 0 done, 1 failed (one "<3>... FAILED: cause" line), 2 usage.
"""

import argparse
import datetime
import hashlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

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
    digest, dummy, reason = (text or "").partition(" ")
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


# ------------------------------------------------------------------ logging

def log(priority, msg):
    """One journal line (sd-daemon priority prefix), never a key."""
    sys.stderr.write("<%d>%s: %s\n" % (priority, PROG, " ".join(str(msg).split())))
    sys.stderr.flush()


# ------------------------------------------------------------------ IMDSv2 and credentials

class Imds:
    """The instance's own facts (id, address, region, user data) over IMDSv2. Credentials are botocore's."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.token = None

    def _token(self):
        if self.token is None:
            req = urllib.request.Request(self.url + "/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            with urllib.request.urlopen(req, timeout=3) as resp:
                self.token = resp.read().decode()
        return self.token

    def get(self, path):
        """The text at path, or None on 404."""
        for dummy in range(2):
            req = urllib.request.Request(self.url + path, headers={"X-aws-ec2-metadata-token": self._token()})
            try:
                with urllib.request.urlopen(req, timeout=3) as resp:
                    return resp.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code != 401:
                    raise Failure("IMDS answered %d for %s" % (exc.code, path))
                self.token = None
        raise Failure("IMDS refused the token twice for %s" % path)


# ------------------------------------------------------------------ AWS (boto3)

class AwsError(Exception):
    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code


def boto3_session(region, imds_url):
    """A boto3 session whose credentials are botocore's default chain: the environment, else the instance role
    through IMDS at imds_url (botocore reads IMDS itself). Failure when there are none."""
    try:
        import boto3
        import botocore.session
    except ImportError as exc:
        raise Failure("boto3 is not installed (the erlang role installs python3-boto3 with tls self-join)") from exc
    core = botocore.session.get_session()
    core.set_config_variable("ec2_metadata_service_endpoint", imds_url.rstrip("/") + "/")
    if core.get_credentials() is None:
        raise Failure("this instance has no instance role (no credentials in the environment nor in IMDS "
                      "iam/security-credentials/): launch it with the instance profile whose role may use SSM and EC2 "
                      "as docs/tls.md says")
    return boto3.session.Session(botocore_session=core, region_name=region)


class Aws:
    """The SSM and EC2 calls of docs/tls.md's IAM statements, boto3's errors turned into AwsError(code)."""

    def __init__(self, session, endpoint_url):
        from botocore.config import Config
        # botocore retries throttling and 5xx itself; the callers retry what remains until their deadline.
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})
        self.ssm = session.client("ssm", endpoint_url=endpoint_url or None, config=config)
        self.ec2 = session.client("ec2", endpoint_url=endpoint_url or None, config=config)

    @staticmethod
    def _call(fn, **kwargs):
        import botocore.exceptions
        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error") or {}
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
            code = err.get("Code") or "HTTP%d" % status
            if status >= 500 and not code.startswith("HTTP5"):
                code = "HTTP%d %s" % (status, code)
            raise AwsError(code, err.get("Message") or str(exc)) from exc
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError) as exc:
            raise AwsError("Unreachable", str(exc)) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise AwsError("NoCredentials", str(exc)) from exc

    def get_parameter(self, name):
        """The value, or None when the parameter does not exist."""
        try:
            return self._call(self.ssm.get_parameter, Name=name)["Parameter"]["Value"]
        except AwsError as exc:
            if exc.code == "ParameterNotFound":
                return None
            raise

    def put_parameter(self, name, value):
        self._call(self.ssm.put_parameter, Name=name, Value=value, Type="String", Overwrite=True)

    def delete_parameter(self, name):
        try:
            self._call(self.ssm.delete_parameter, Name=name)
        except AwsError as exc:
            if exc.code != "ParameterNotFound":
                raise

    def parameters_under(self, path):
        """[{Name, LastModifiedUser, LastModifiedDate}] one level under path."""
        out, token = [], None
        while True:
            kwargs = {"ParameterFilters": [{"Key": "Path", "Option": "OneLevel", "Values": [path]}], "MaxResults": 50}
            if token:
                kwargs["NextToken"] = token
            page = self._call(self.ssm.describe_parameters, **kwargs)
            out.extend(page.get("Parameters") or [])
            token = page.get("NextToken")
            if not token:
                return out

    def instances(self, instance_ids):
        """{instance id: DescribeInstances dict} of those EC2 knows (a filter: unknown ids are simply absent)."""
        if not instance_ids:
            return {}
        out, token = {}, None
        while True:
            kwargs = {"Filters": [{"Name": "instance-id", "Values": sorted(instance_ids)}]}
            if token:
                kwargs["NextToken"] = token
            page = self._call(self.ec2.describe_instances, **kwargs)
            for res in page.get("Reservations") or []:
                for inst in res.get("Instances") or []:
                    out[inst["InstanceId"]] = inst
            token = page.get("NextToken")
            if not token:
                return out


# ------------------------------------------------------------------ openssl

def openssl(args, data=None):
    """openssl's stdout; a non-zero exit raises Failure with its stderr (never a key: keys are files)."""
    proc = subprocess.run(["openssl"] + args, input=data.encode() if data is not None else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise Failure("openssl %s failed: %s" % (args[0], proc.stderr.decode(errors="replace").strip()[:300]))
    return proc.stdout.decode()


def split_pem(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", text or "", re.S)


def csr_facts(csr_pem):
    """openssl's view of a CSR, for decide(): verified, subject (RFC 2253), key."""
    try:
        openssl(["req", "-noout", "-verify"], csr_pem)
        subject = openssl(["req", "-noout", "-subject", "-nameopt", "RFC2253"], csr_pem).strip()
        text = openssl(["req", "-noout", "-text"], csr_pem)
    except Failure:
        return {"verified": False, "subject": None, "key": None}
    if "id-ecPublicKey" in text and re.search(r"ASN1 OID: prime256v1", text):
        key = "ec-prime256v1"
    else:
        m = re.search(r"Public Key Algorithm: (\S+)", text)
        key = m.group(1) if m else "unknown"
    return {"verified": True, "subject": subject, "key": key}


def cert_facts(chain_pem, ca_file):
    """The leaf's public key and SAN, and whether leaf + the rest chain to ca_file."""
    certs = split_pem(chain_pem)
    if not certs:
        return {"pubkey": "", "san": [], "chain_ok": False}
    leaf = certs[0]
    pubkey = openssl(["x509", "-noout", "-pubkey"], leaf)
    ext = openssl(["x509", "-noout", "-ext", "subjectAltName"], leaf)
    san = [s.strip().replace("IP Address:", "IP:") for s in ext.split("\n", 1)[-1].split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        untrusted = os.path.join(tmp, "chain.pem")
        with open(untrusted, "w") as f:
            f.write("".join(certs[1:]) or leaf)
        proc = subprocess.run(["openssl", "verify", "-CAfile", ca_file, "-untrusted", untrusted, "-purpose", "sslclient"],
                              input=leaf.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return {"pubkey": pubkey, "san": san, "chain_ok": proc.returncode == 0}


def write_file(path, data, mode, owner=None, group=None):
    """Written beside path, mode set before the content, then renamed into place."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tls-join-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        chown(tmp, owner, group)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def chown(path, owner, group):
    if owner or group:
        import grp
        import pwd
        os.chown(path, pwd.getpwnam(owner).pw_uid if owner else -1, grp.getgrnam(group).gr_gid if group else -1)


def generate_key(path, owner, group):
    """EC P-256 key in path, 0400 from its first byte (umask), owned by owner; never on a command line."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tls-join-key-")
    os.close(fd)
    try:
        old = os.umask(0o077)
        try:
            openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", tmp])
        finally:
            os.umask(old)
        chown(tmp, owner, group)
        os.chmod(tmp, 0o400)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------ the issuer (boot servers)

def issuer_days(issuer_cert_file, days):
    """The leaf's lifetime: days, cut to the whole days the intermediate has left (never past its end)."""
    end = openssl(["x509", "-noout", "-enddate", "-in", issuer_cert_file]).strip().split("=", 1)[1]
    end_ts = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc).timestamp()
    left = int((end_ts - time.time()) // 86400)
    if left < 1:
        raise Failure("the intermediate %s ends within a day (%s): run the boot_server role to renew it" % (
            issuer_cert_file, end))
    return min(days, left)


def sign(csr_pem, ip, args):
    """leaf + intermediate (PEM); the extensions are the issuer's, the subject was checked by decide()."""
    days = issuer_days(args.issuer_cert, args.days)
    with tempfile.TemporaryDirectory() as tmp:
        ext, csr = os.path.join(tmp, "leaf.ext"), os.path.join(tmp, "req.csr")
        with open(ext, "w") as f:
            f.write(extensions_text(ip))
        with open(csr, "w") as f:
            f.write(csr_pem)
        leaf = openssl(["x509", "-req", "-in", csr, "-CA", args.issuer_cert, "-CAkey", args.issuer_key,
                        "-set_serial", "0x" + secrets.token_hex(16), "-days", str(days), "-sha256",
                        "-extfile", ext, "-extensions", "leaf"])
    with open(args.issuer_cert) as f:
        intermediate = split_pem(f.read())[0]
    return leaf.strip() + "\n" + intermediate


def age_of(param, now):
    """Seconds since the CSR was written (boto3 gives a datetime; 0 when unknown)."""
    when = param.get("LastModifiedDate")
    if isinstance(when, datetime.datetime):
        when = when.timestamp()
    try:
        return max(0.0, now - float(when))
    except (TypeError, ValueError):
        return 0.0


def issue_once(aws, args, now=None):
    """One round over the CSRs in SSM: {instance id: (decision, detail)}."""
    now = time.time() if now is None else now
    base = ssm_path(args.prefix, args.cluster, "csr")
    params = {p["Name"]: p for p in aws.parameters_under(base)}
    ids = {}
    for name in sorted(params):
        iid = instance_id_of(name, args.prefix, args.cluster, "csr")
        if iid is None:
            log(4, "ignoring %s: not <csr path>/<instance id>" % name)
        else:
            ids[iid] = name
    known = aws.instances(set(ids))
    results = {}
    for iid, name in sorted(ids.items()):
        csr_pem = aws.get_parameter(name)
        if csr_pem is None:
            continue  # deleted meanwhile (another boot server decided)
        decision, detail = decide(csr_facts(csr_pem), known.get(iid), args.cluster, iid,
                                  age_of(params[name], now), params[name].get("LastModifiedUser"), args.check_writer)
        results[iid] = (decision, detail)
        if decision == ISSUE:
            aws.put_parameter(ssm_path(args.prefix, args.cluster, "cert", iid), sign(csr_pem, detail["ip"], args))
            aws.delete_parameter(name)
            log(6, "issued a certificate to %s (%s@%s)" % (iid, detail["name"], detail["ip"]))
        elif decision == REFUSE:
            aws.put_parameter(ssm_path(args.prefix, args.cluster, "refused", iid), refusal_text(csr_pem, detail))
            aws.delete_parameter(name)
            log(4, "refused %s: %s" % (iid, detail))
        else:
            log(6, "waiting on %s: %s" % (iid, detail))
    return results


def cmd_issue(args):
    for path in (args.issuer_cert, args.issuer_key):
        if not os.access(path, os.R_OK):
            raise Failure("cannot read %s (the boot_server role installs the intermediate with tls self-join)" % path)
    region = args.region or region_from(Imds(args.imds_url))
    aws = Aws(boto3_session(region, args.imds_url), args.endpoint_url)
    end = time.time() + args.loop
    while True:
        try:
            issue_once(aws, args)
        except AwsError as exc:
            if not transient(exc):
                raise Failure("SSM/EC2: %s" % exc)
            log(4, "SSM/EC2: %s; next round in %g s" % (exc, args.interval))
        if time.time() + args.interval > end:
            return 0
        time.sleep(args.interval)


def region_from(imds):
    region = imds.get("/latest/meta-data/placement/region")
    if not region:
        raise Failure("no region: give --region or AWS_REGION (IMDS has no placement/region)")
    return region.strip()


# ------------------------------------------------------------------ the worker's request

def user_data_settings(text):
    """KEY=value lines of erlang-ec2 user data (the bootstrap checks the rest of it)."""
    lines = (text or "").splitlines()
    if not lines or lines[0].strip() != "# erlang-ec2 user-data v1":
        raise Failure("the user data is not erlang-ec2 user data: refusing to ask for a certificate")
    return dict(line.strip().split("=", 1) for line in lines[1:] if "=" in line and not line.strip().startswith("#"))


def identity(args, imds):
    """(cluster, node name, instance id, ip, region) from the options, else from IMDS and the user data;
    None when the user data names another role than worker."""
    settings = {}
    if not (args.cluster and args.node_name):
        settings = user_data_settings(imds.get("/latest/user-data"))
        if settings.get("ERLANG_ROLE") != ROLE_WORKER:
            return None  # as the bootstrap: self-join is for workers
    cluster = args.cluster or settings.get("ERLANG_CLUSTER")
    name = args.node_name or settings.get("ERLANG_NODE_NAME")
    iid = args.instance_id or (imds.get("/latest/meta-data/instance-id") or "").strip()
    ip = args.ip or (imds.get("/latest/meta-data/local-ipv4") or "").strip()
    region = args.region or region_from(imds)
    ssm_path(args.prefix, cluster or "", "csr", iid)  # checks cluster and instance id
    if not NODE_NAME_RE.match(name or "") or not IPV4_RE.match(ip):
        raise Failure("node name %r / address %r are not a node name and an IPv4 address" % (name, ip))
    return cluster, name, iid, ip, region


def current_ok(args, ip):
    """True when node.key and node.pem are a pair for ip that lasts more than --renew-before seconds."""
    key, pem = os.path.join(args.tls_dir, "node.key"), os.path.join(args.tls_dir, "node.pem")
    if not (os.path.exists(key) and os.path.exists(pem)):
        return False
    with open(pem) as f:
        chain = f.read()
    ok, dummy = cert_acceptable(cert_facts(chain, args.ca_file), openssl(["pkey", "-in", key, "-pubout"]), ip)
    if not ok:
        return False
    proc = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(args.renew_before)],
                          input=split_pem(chain)[0].encode(), stdout=subprocess.PIPE, check=False)
    return proc.returncode == 0


TRANSIENT = ("Unreachable", "ThrottlingException", "Throttling", "RequestLimitExceeded", "InternalServerError")


def transient(exc):
    return exc.code in TRANSIENT or exc.code.startswith("HTTP5")


def until(deadline, interval, call):
    """call() again after a transient AWS error (network, throttling, 5xx) until the deadline."""
    said = None
    while True:
        try:
            return call()
        except AwsError as exc:
            if not transient(exc) or time.time() > deadline:
                raise
            if str(exc) != said:
                log(4, "AWS: %s; retrying" % exc)
                said = str(exc)
            time.sleep(interval)


def wait_for_cert(aws, args, paths, csr_pem, pubkey, ip):
    """The chain once the issuer wrote an acceptable one; Failure on refusal or at the deadline."""
    deadline = time.time() + args.deadline
    last_put = time.time()
    said = None
    while True:
        refusal = until(deadline, args.interval, lambda: aws.get_parameter(paths["refused"]))
        reason = refusal_for(refusal, csr_pem) if refusal else None
        if reason is not None:
            raise Failure("the issuer refused this instance's certificate: %s" % reason)
        chain = until(deadline, args.interval, lambda: aws.get_parameter(paths["cert"]))
        if chain:
            ok, why = cert_acceptable(cert_facts(chain, args.ca_file), pubkey, ip)
            if ok:
                return chain
            if why != said:  # once per reason, not once per poll
                log(6, "the certificate in %s is not for this request yet: %s" % (paths["cert"], why))
                said = why
        if time.time() > deadline:
            raise Failure("no certificate in %s within %d s: is the issuer running on the boot servers? "
                          "(systemctl status erlang-ec2-tls-issuer.timer; journalctl -u erlang-ec2-tls-issuer)"
                          % (paths["cert"], args.deadline))
        if time.time() - last_put > 30 and aws.get_parameter(paths["csr"]) is None:
            aws.put_parameter(paths["csr"], csr_pem)  # lost (e.g. deleted in a race): ask again
            last_put = time.time()
        time.sleep(args.interval)


def cmd_request(args):
    imds = Imds(args.imds_url)
    who = identity(args, imds)
    if who is None:
        log(6, "the user data names no worker: nothing to ask")
        return 0
    cluster, name, iid, ip, region = who
    if current_ok(args, ip):
        log(6, "node.key and node.pem are valid for %s beyond %d s: nothing to ask" % (ip, args.renew_before))
        return 0
    aws = Aws(boto3_session(region, args.imds_url), args.endpoint_url)
    paths = {k: ssm_path(args.prefix, cluster, k, iid) for k in KINDS}
    new_key = os.path.join(args.tls_dir, "node.key.new")
    generate_key(new_key, args.owner, args.group)
    csr_pem = openssl(["req", "-new", "-key", new_key, "-subj", "/CN=%s@%s" % (name, ip), "-sha256"])
    pubkey = openssl(["pkey", "-in", new_key, "-pubout"])
    try:
        until(time.time() + args.deadline, args.interval, lambda: aws.put_parameter(paths["csr"], csr_pem))
        log(6, "asked for a certificate for %s@%s in %s" % (name, ip, paths["csr"]))
        chain = wait_for_cert(aws, args, paths, csr_pem, pubkey, ip)
    except AwsError as exc:
        os.unlink(new_key)
        raise Failure("SSM: %s" % exc)
    except BaseException:
        os.unlink(new_key)  # a key no certificate will ever match
        raise
    # The certificate first, then the key: the pair is complete once both are renamed in place.
    write_file(os.path.join(args.tls_dir, "node.pem"), chain, 0o444, None, args.group)
    os.replace(new_key, os.path.join(args.tls_dir, "node.key"))
    log(6, "certificate for %s@%s installed in %s" % (name, ip, args.tls_dir))
    return 0


# ------------------------------------------------------------------ command line

def parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", default="/erlang-ec2", help="SSM prefix (default /erlang-ec2)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    p.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="SSM and EC2 endpoint")
    p.add_argument("--imds-url", default="http://169.254.169.254")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("request", help="worker: key, CSR, wait for the certificate")
    r.add_argument("--cluster", help="default: the user data's ERLANG_CLUSTER")
    r.add_argument("--tls-dir", required=True)
    r.add_argument("--ca-file", required=True, help="the cluster CA (the certificate must chain to it)")
    r.add_argument("--node-name", help="default: the user data's ERLANG_NODE_NAME")
    r.add_argument("--instance-id", help="default: IMDS")
    r.add_argument("--ip", help="default: IMDS local-ipv4")
    r.add_argument("--owner", help="owner of node.key (the service user)")
    r.add_argument("--group", help="group of node.key and node.pem")
    r.add_argument("--deadline", type=int, default=300, help="seconds to wait for the certificate")
    r.add_argument("--renew-before", type=int, default=172800, help="keep a certificate valid beyond this (s)")
    i = sub.add_parser("issue", help="boot server: decide every CSR in SSM")
    i.add_argument("--cluster", dest="cluster", required=True)
    i.add_argument("--issuer-cert", required=True)
    i.add_argument("--issuer-key", required=True)
    i.add_argument("--days", type=int, default=7, help="certificate lifetime (never past the issuer's end)")
    i.add_argument("--loop", type=float, default=0, help="keep deciding for this many seconds (0: one round)")
    i.add_argument("--no-check-writer", dest="check_writer", action="store_false",
                   help="issue even when SSM does not say which instance wrote the CSR (moto, localcloud)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.command == "issue":
            ssm_path(args.prefix, args.cluster, "csr")
            return cmd_issue(args)
        return cmd_request(args)
    except (Failure, ValueError) as exc:
        log(3, "FAILED: %s" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
