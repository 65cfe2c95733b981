"""The cluster's CA taken from AWS (docs/tls.md, "The cluster's CA"): an SSM certificate + SecureString key pair,
or a Secrets Manager secret {"certificate", "private_key"}, read on the controller by the erlang role's tls tasks
from a moto server on loopback (the aws_endpoint fixture, fake credentials). The CA is the session's role-made
cluster CA, so nodes signed from AWS connect to node a (signed from the CA's files). Bad input stops the role
with a clear message before anything is written; the CA key is never in Ansible's output, even at -vvv."""

import json
import os
import subprocess
import sys

import boto3
import playbook_runner
import pytest

from conftest import node_of

REGION = "us-east-1"
PREFIX = "/erlang-ec2/tls-test/ca/"


def read(path):
    with open(path) as handle:
        return handle.read()


def key_body(pem):
    """The start of a key's base64 body, in one line and as its first line (where the private scalar is; an EC
    key's last line is its public key, which the output may show)."""
    lines = [line for line in pem.splitlines() if line and "-----" not in line]
    return ["".join(lines)[:48], lines[0]]


def assert_no_key_in(text, *pems):
    for pem in pems:
        for needle in key_body(pem):
            assert needle not in text


@pytest.fixture
def aws(clean_aws, issued):
    """The moto endpoint, emptied, holding the cluster CA in SSM and Secrets Manager and bad variants of it."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    ssm = session.client("ssm", endpoint_url=clean_aws.url)
    secrets = session.client("secretsmanager", endpoint_url=clean_aws.url)
    cluster, other = issued.ca_dir("cluster"), issued.ca_dir("other")
    pems = {"cert": read(os.path.join(cluster, "ca.pem")), "key": read(os.path.join(cluster, "ca.key")),
            "other_key": read(os.path.join(other, "ca.key")),
            "leaf_cert": read(os.path.join(issued.node_dir("b"), "node.pem")),
            "leaf_key": read(os.path.join(issued.node_dir("b"), "node.key"))}
    for name, kind, value in (("cert", "String", pems["cert"]), ("key", "SecureString", pems["key"]),
                              ("key-in-clear", "String", pems["key"]), ("other-key", "SecureString", pems["other_key"]),
                              ("leaf-cert", "String", pems["leaf_cert"]), ("leaf-key", "SecureString", pems["leaf_key"])):
        ssm.put_parameter(Name=PREFIX + name, Type=kind, Value=value)
    for name, value in (("ca", {"certificate": pems["cert"], "private_key": pems["key"]}),
                        ("mismatch", {"certificate": pems["cert"], "private_key": pems["other_key"]}),
                        ("shapeless", {"cert": pems["cert"], "key": pems["key"]})):
        secrets.create_secret(Name="tls-test/" + name, SecretString=json.dumps(value))
    secrets.create_secret(Name="tls-test/not-json", SecretString="certificate=... private_key=...")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": clean_aws.url,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    return env, pems


SSM = {"erlang_tls_ca_cert_ssm_parameter": PREFIX + "cert", "erlang_tls_ca_key_ssm_parameter": PREFIX + "key"}
SECRET = {"erlang_tls_ca_secret": "tls-test/ca"}


def verify(issued, name):
    return subprocess.run(["openssl", "verify", "-CAfile", os.path.join(issued.ca_dir("cluster"), "ca.pem"),
                           os.path.join(issued.node_dir(name), "node.pem")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)


@pytest.mark.parametrize("name, source", [("ssm", SSM), ("sm", SECRET)], ids=["ssm-securestring", "secretsmanager"])
def test_ca_from_aws_signs_nodes_that_connect_over_tls(issued, aws, nodes, name, source):
    env, pems = aws
    # -vvv: module arguments and results are printed, except under no_log.
    proc = issued.issue(name, ca="unused-" + name, extra_vars=source, env=env, verbosity=3)
    assert proc.rc == 0, proc.tail()
    assert_no_key_in(proc.out, pems["key"], read(os.path.join(issued.node_dir(name), "node.key")))
    # Nothing of the CA on the controller's disk: no CA directory was made.
    assert not os.path.exists(issued.ca_dir("unused-" + name))
    result = verify(issued, name)
    assert result.returncode == 0, result.stdout
    assert read(os.path.join(issued.node_dir(name), "ca.pem")) == pems["cert"]
    # The node signed from AWS and node a (signed from the same CA's files) connect over TLS.
    a = nodes.start("a")
    node = nodes.start(name)
    # Generous timeouts: a call starts a hidden node and makes two TLS handshakes, slow on a loaded machine.
    with nodes.client(node, issued.optfile(name)) as client:
        assert client.call("net_adm:ping('%s')" % a, timeout=30) == "pong"
    with nodes.client(a, issued.optfile("a")) as client:
        assert client.call("lists:member('%s', nodes())" % node_of(name), timeout=30) is True
    # A second run keeps the certificate.
    proc = issued.issue(name, ca="unused-" + name, extra_vars=source, env=env)
    assert proc.rc == 0 and proc.changed == 0, proc.tail()


BAD = [
    ("two-sources", dict(SSM, **SECRET), "in at most one way"),
    ("half-ssm", {"erlang_tls_ca_cert_ssm_parameter": PREFIX + "cert"}, "go together"),
    ("missing-key", dict(SSM, erlang_tls_ca_key_ssm_parameter=PREFIX + "nothing"),
     "SSM parameter %snothing (erlang_tls_ca_key_ssm_parameter) is missing" % PREFIX),
    ("missing-cert", dict(SSM, erlang_tls_ca_cert_ssm_parameter=PREFIX + "nothing"),
     "SSM parameter %snothing (erlang_tls_ca_cert_ssm_parameter) is missing" % PREFIX),
    ("key-in-clear", dict(SSM, erlang_tls_ca_key_ssm_parameter=PREFIX + "key-in-clear"), "store it as a SecureString"),
    ("not-a-ca", {"erlang_tls_ca_cert_ssm_parameter": PREFIX + "leaf-cert", "erlang_tls_ca_key_ssm_parameter": PREFIX + "leaf-key"},
     "is not usable: the certificate is not a CA"),
    ("ssm-mismatch", dict(SSM, erlang_tls_ca_key_ssm_parameter=PREFIX + "other-key"), "the key does not match the certificate"),
    ("secret-mismatch", {"erlang_tls_ca_secret": "tls-test/mismatch"}, "the key does not match the certificate"),
    ("secret-missing", {"erlang_tls_ca_secret": "tls-test/nothing"}, "secret tls-test/nothing (erlang_tls_ca_secret) is missing"),
    ("secret-shapeless", {"erlang_tls_ca_secret": "tls-test/shapeless"}, "must be a JSON object"),
    ("secret-not-json", {"erlang_tls_ca_secret": "tls-test/not-json"}, "must be a JSON object"),
]


@pytest.mark.parametrize("case, source, message", BAD, ids=[case for case, dummy, dummy2 in BAD])
def test_bad_ca_source_is_refused_before_any_change(issued, aws, case, source, message):
    env, pems = aws
    proc = issued.issue("bad-" + case, ca="bad-" + case, extra_vars=source, env=env)
    assert proc.rc != 0
    assert message in " ".join(proc.out.split()), proc.tail()
    assert proc.changed == 0
    assert not os.path.exists(issued.node_dir("bad-" + case)) and not os.path.exists(issued.ca_dir("bad-" + case))
    assert_no_key_in(proc.out, pems["key"], pems["other_key"], pems["leaf_key"])


def test_the_role_preflight_refuses_a_bad_ca_before_touching_the_host(issued, aws):
    """The whole role (check mode, so that nothing could change even if the preflight let it through): the CA
    source is read and checked in the preflight, before the packages step."""
    env, pems = aws
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars": dict({"erlang_distribution": "tls", "erlang_cookie": "unused-cookie", "erlang_cluster": "tls-test",
                           "erlang_tls_dir": issued.node_dir("preflight")},
                          erlang_tls_ca_secret="tls-test/mismatch"),
             "tasks": [{"name": "erlang", "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang"}}]}]
    path = playbook_runner.write_play(os.path.join(issued.base, "preflight.yml"), play)
    proc = playbook_runner.run_playbook(path, "-c", "local", inventory="localhost,", check_mode=True,
                                        extra_vars={"ansible_python_interpreter": sys.executable},
                                        env=playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False",
                                                                        ANSIBLE_INVENTORY_UNPARSED_WARNING="False", **env),
                                        timeout=300, merge_stderr=True)
    assert proc.rc != 0
    assert "the key does not match the certificate" in " ".join(proc.out.split()), proc.tail()
    assert "Preflight | Read and check the cluster's CA source" in proc.out
    assert "Refresh the apt cache" not in proc.out and "Read the installed Erlang package version" not in proc.out, proc.tail()
    assert not os.path.exists(issued.node_dir("preflight"))
    assert_no_key_in(proc.out, pems["key"], pems["other_key"])
