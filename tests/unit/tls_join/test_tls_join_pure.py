# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of the self-join TLS script: SSM paths, CSR subject, the issuer's decision table, boto3's
errors as the script sees them, the worker's check of a certificate (docs/tls.md, design B)."""
import datetime

import pytest

IID = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
WRITER = "arn:aws:sts::123456789012:assumed-role/erlang-worker/" + IID


def csr(subject="CN=worker@10.0.1.5", verified=True, key="ec-prime256v1"):
    return {"verified": verified, "subject": subject, "key": key}


def inst(state="running", ip="10.0.1.5", cluster="c1", role="worker", iid=IID, **extra_tags):
    tags = [{"Key": "erlang-cluster", "Value": cluster}, {"Key": "erlang-role", "Value": role}]
    tags += [{"Key": k.replace("_", "-"), "Value": v} for k, v in extra_tags.items()]
    return {"InstanceId": iid, "State": {"Name": state}, "PrivateIpAddress": ip, "Tags": tags}


# ------------------------------------------------------------ paths

def test_path_building(tj):
    assert tj.ssm_path("/erlang-ec2", "c1", "csr", IID) == "/erlang-ec2/c1/tls/csr/" + IID
    assert tj.ssm_path("/erlang-ec2", "c1", "cert") == "/erlang-ec2/c1/tls/cert"
    assert tj.ssm_path("/a/b", "c-1_x", "refused", IID) == "/a/b/c-1_x/tls/refused/" + IID


@pytest.mark.parametrize("prefix, cluster, kind, iid, what", [
    ("erlang-ec2", "c1", "csr", IID, "prefix"),
    ("/erlang-ec2/", "c1", "csr", IID, "prefix"),
    ("/x y", "c1", "csr", IID, "prefix"),
    ("/erlang-ec2", "C1", "csr", IID, "cluster"),
    ("/erlang-ec2", "../c1", "csr", IID, "cluster"),
    ("/erlang-ec2", "", "csr", IID, "cluster"),
    ("/erlang-ec2", "c1", "key", IID, "kind"),
    ("/erlang-ec2", "c1", "csr", "i-XYZ", "instance id"),
    ("/erlang-ec2", "c1", "csr", "i-0123456789abcdef0/../x", "instance id"),
    ("/erlang-ec2", "c1", "csr", "", "instance id"),
])
def test_bad_path_parts_are_refused(tj, prefix, cluster, kind, iid, what):
    with pytest.raises(ValueError, match=what):
        tj.ssm_path(prefix, cluster, kind, iid)


def test_instance_id_of(tj):
    assert tj.instance_id_of("/erlang-ec2/c1/tls/csr/" + IID, "/erlang-ec2", "c1", "csr") == IID
    assert tj.instance_id_of("/erlang-ec2/c2/tls/csr/" + IID, "/erlang-ec2", "c1", "csr") is None
    assert tj.instance_id_of("/erlang-ec2/c1/tls/cert/" + IID, "/erlang-ec2", "c1", "csr") is None
    assert tj.instance_id_of("/erlang-ec2/c1/tls/csr/junk", "/erlang-ec2", "c1", "csr") is None
    assert tj.instance_id_of("/erlang-ec2/c1/tls/csr/%s/x" % IID, "/erlang-ec2", "c1", "csr") is None


# ------------------------------------------------------------ CSR subject, writer

@pytest.mark.parametrize("subject, expected", [
    ("CN=worker@10.0.1.5", ("worker", "10.0.1.5")),
    ("subject=CN=w-1_a@192.168.0.254", ("w-1_a", "192.168.0.254")),
    ("CN=worker@10.0.1.5,O=x", None),
    ("O=x,CN=worker@10.0.1.5", None),
    ("CN=worker", None),
    ("CN=1worker@10.0.1.5", None),
    ("CN=worker@10.0.1.256", None),
    ("CN=worker@host.example", None),
    ("CN=worker@10.0.1.5+OU=y", None),
    ("", None),
    (None, None),
])
def test_parse_subject(tj, subject, expected):
    assert tj.parse_subject(subject) == expected


@pytest.mark.parametrize("arn, expected", [
    (WRITER, IID),
    ("arn:aws-us-gov:sts::123456789012:assumed-role/r/" + IID, IID),
    ("arn:aws:iam::123456789012:user/alice", None),
    ("arn:aws:sts::123456789012:assumed-role/r/alice", None),
    ("N/A", None),
    (None, None),
])
def test_writer_instance(tj, arn, expected):
    assert tj.writer_instance(arn) == expected


# ------------------------------------------------------------ the decision table

ISSUE_OK = ("issue", {"name": "worker", "ip": "10.0.1.5"})


@pytest.mark.parametrize("case, args, decision, reason", [
    ("all good", dict(), "issue", None),
    ("signature fails", dict(csr=csr(verified=False)), "refuse", "does not verify"),
    ("RSA key", dict(csr=csr(key="rsa-2048")), "refuse", "EC P-256"),
    ("extra subject field", dict(csr=csr(subject="CN=worker@10.0.1.5,O=evil")), "refuse", "exactly CN="),
    ("no @ip", dict(csr=csr(subject="CN=worker")), "refuse", "exactly CN="),
    ("unknown, young", dict(instance=None, age=10), "wait", "does not know"),
    ("unknown, old", dict(instance=None, age=61), "refuse", "no such instance"),
    ("pending", dict(instance=inst(state="pending")), "wait", "pending"),
    ("stopped", dict(instance=inst(state="stopped")), "refuse", "stopped, not running"),
    ("terminated", dict(instance=inst(state="terminated")), "refuse", "terminated, not running"),
    ("shutting-down", dict(instance=inst(state="shutting-down")), "refuse", "shutting-down"),
    ("other cluster", dict(instance=inst(cluster="c2")), "refuse", "erlang-cluster='c2', not 'c1'"),
    ("no cluster tag", dict(instance={"InstanceId": IID, "State": {"Name": "running"},
                                      "PrivateIpAddress": "10.0.1.5", "Tags": []}), "refuse", "erlang-cluster=None"),
    ("boot server", dict(instance=inst(role="boot_server")), "refuse", "erlang-role='boot_server'"),
    ("other address", dict(instance=inst(ip="10.0.1.6")), "refuse", "names 10.0.1.5 but EC2 gives"),
    ("EC2 answers another id", dict(instance=inst(iid=OTHER)), "refuse", "EC2 answered for"),
    ("node-name tag differs", dict(instance=inst(erlang_node_name="api")), "refuse", "erlang-node-name='api'"),
    ("node-name tag same", dict(instance=inst(erlang_node_name="worker")), "issue", None),
    ("written by another instance",
     dict(writer="arn:aws:sts::123456789012:assumed-role/erlang-worker/" + OTHER), "refuse", "another instance"),
    ("writer unknown, checked", dict(writer="N/A"), "refuse", "cannot tell which instance"),
    ("writer unknown, not checked", dict(writer="N/A", check_writer=False), "issue", None),
    ("other writer, even unchecked",
     dict(writer="arn:aws:sts::1:assumed-role/r/" + OTHER, check_writer=False), "refuse", "another instance"),
])
def test_decision_table(tj, case, args, decision, reason):
    got = tj.decide(args.get("csr", csr()), args.get("instance", inst()), "c1", IID, args.get("age", 5),
                    args.get("writer", WRITER), args.get("check_writer", True))
    assert got[0] == decision, (case, got)
    if decision == "issue":
        assert got == ISSUE_OK
    else:
        assert reason in got[1], (case, got)


def test_checks_run_before_the_instance_is_looked_at(tj):
    # A bad CSR is refused even for an unknown instance (no wait on garbage).
    assert tj.decide(csr(verified=False), None, "c1", IID, 0, WRITER)[0] == "refuse"


# ------------------------------------------------------------ refusals

def test_refusal_concerns_only_its_csr(tj):
    text = tj.refusal_text("-----BEGIN CERTIFICATE REQUEST-----\nAAA\n-----END CERTIFICATE REQUEST-----\n", "bad tag")
    assert tj.refusal_for(text, "-----BEGIN CERTIFICATE REQUEST-----\nAAA\n-----END CERTIFICATE REQUEST-----") == "bad tag"
    assert tj.refusal_for(text, "-----BEGIN CERTIFICATE REQUEST-----\nBBB\n-----END CERTIFICATE REQUEST-----") is None
    assert tj.refusal_for("", "x") is None


def test_extensions_name_the_address_both_ways(tj):
    ext = tj.extensions_text("10.0.1.5")
    assert "subjectAltName = IP:10.0.1.5, DNS:10.0.1.5" in ext
    assert "CA:FALSE" in ext and "serverAuth, clientAuth" in ext


# ------------------------------------------------------------ the worker's check of a certificate

@pytest.mark.parametrize("cert, ok, why", [
    ({"pubkey": "K", "san": ["IP:10.0.1.5", "DNS:10.0.1.5"], "chain_ok": True}, True, ""),
    ({"pubkey": "K2", "san": ["IP:10.0.1.5", "DNS:10.0.1.5"], "chain_ok": True}, False, "another key"),
    ({"pubkey": "K", "san": ["IP:10.0.1.6", "DNS:10.0.1.6"], "chain_ok": True}, False, "not 10.0.1.5"),
    ({"pubkey": "K", "san": ["IP:10.0.1.5"], "chain_ok": True}, False, "not 10.0.1.5"),
    ({"pubkey": "K", "san": ["IP:10.0.1.5", "DNS:10.0.1.5"], "chain_ok": False}, False, "chain"),
])
def test_cert_acceptable(tj, cert, ok, why):
    got = tj.cert_acceptable(cert, "K\n", "10.0.1.5")
    assert got[0] is ok and why in got[1]


# ------------------------------------------------------------ boto3's errors as the script sees them

def client_error(code, status):
    exceptions = pytest.importorskip("botocore.exceptions")
    return exceptions.ClientError({"Error": {"Code": code, "Message": "m"},
                                   "ResponseMetadata": {"HTTPStatusCode": status}}, "GetParameter")


@pytest.mark.parametrize("raised, code, is_transient", [
    (("ParameterNotFound", 400), "ParameterNotFound", False),
    (("AccessDeniedException", 400), "AccessDeniedException", False),
    (("ThrottlingException", 400), "ThrottlingException", True),
    (("InternalServerError", 500), "HTTP500 InternalServerError", True),
])
def test_client_errors_become_aws_errors(tj, raised, code, is_transient):
    exc = client_error(*raised)

    def call(**kwargs):
        raise exc

    with pytest.raises(tj.AwsError) as info:
        tj.Aws._call(call)
    assert info.value.code == code and tj.transient(info.value) is is_transient


def test_an_unreachable_endpoint_is_transient(tj):
    exceptions = pytest.importorskip("botocore.exceptions")

    def call(**kwargs):
        raise exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    with pytest.raises(tj.AwsError) as info:
        tj.Aws._call(call)
    assert info.value.code == "Unreachable" and tj.transient(info.value)


def test_age_of_reads_boto3_datetimes(tj):
    now = datetime.datetime(2026, 12, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
    assert tj.age_of({"LastModifiedDate": now - datetime.timedelta(seconds=90)}, now.timestamp()) == 90.0
    assert tj.age_of({"LastModifiedDate": now + datetime.timedelta(seconds=5)}, now.timestamp()) == 0.0
    assert tj.age_of({}, now.timestamp()) == 0.0


# ------------------------------------------------------------ transient AWS errors

def test_until_retries_transient_errors_only(tj):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise tj.AwsError("ThrottlingException", "slow down")
        return "ok"

    assert tj.until(float("inf"), 0, flaky) == "ok" and len(calls) == 3

    def denied():
        raise tj.AwsError("AccessDeniedException", "no")

    with pytest.raises(tj.AwsError, match="AccessDenied"):
        tj.until(float("inf"), 0, denied)

    def down():
        raise tj.AwsError("Unreachable", "http://x: refused")

    with pytest.raises(tj.AwsError, match="Unreachable"):
        tj.until(0, 0, down)  # past the deadline: the error, not a hang


def test_user_data_settings(tj):
    got = tj.user_data_settings("# erlang-ec2 user-data v1\n# comment\nERLANG_CLUSTER=c1\nERLANG_NODE_NAME=worker\n"
                                "ERLANG_ROLE=worker\n\n")
    assert got == {"ERLANG_CLUSTER": "c1", "ERLANG_NODE_NAME": "worker", "ERLANG_ROLE": "worker"}
    for foreign in ("#!/bin/sh\necho hi\n", "", None):
        with pytest.raises(tj.Failure, match="not erlang-ec2 user data"):
            tj.user_data_settings(foreign)
