"""The worker's `request` with nothing on its command line but the IMDS address, as its unit runs it: instance id,
address, region, cluster and node name come from localcloud's own IMDS handler (localcloud/imds.py, run here on a
loopback port over the in-process moto backend; no localcloud daemon), the request is signed with the
environment's fake credentials (localcloud's IMDS serves no role credentials: the "no instance role" case)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_tls_join as tj  # noqa: E402
from tls_join_env import CLUSTER, PREFIX, SCRIPT_PYTHON  # noqa: E402

USER_DATA = "# erlang-ec2 user-data v1\nERLANG_CLUSTER=%s\nERLANG_ROLE=%s\nERLANG_NODE_NAME=tjimds\n"


@pytest.fixture
def imds_host(aws):
    """launch(role) -> (instance id, IMDS url): an instance at 127.0.0.1 answered by localcloud's IMDS handler."""
    from localcloud import config, ec2 as lec2, imds as limds
    servers = []

    def launch(role="worker"):
        vpc = aws.ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["127.0.0.0/16"]}])["Vpcs"][0]["VpcId"]
        subnet = aws.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
        image = aws.ec2.describe_images()["Images"][0]["ImageId"]
        iid = aws.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress="127.0.0.1",
                                    UserData=USER_DATA % (CLUSTER, role), TagSpecifications=[{
                                        "ResourceType": "instance", "Tags": [{"Key": "erlang-cluster", "Value": CLUSTER},
                                                                             {"Key": "erlang-role", "Value": role}]}]
                                    )["Instances"][0]["InstanceId"]

        class Reconciler:  # what localcloud's reconciler knows: which instance a host address is
            by_ip = {(config.NETWORK_NAME, "127.0.0.1"): [i for _r, i in lec2.all_instances() if i.id == iid][0]}

        server = limds.Imds(Reconciler(), address="127.0.0.1", port=0).start()
        servers.append(server)
        return iid, "http://127.0.0.1:%d" % server.server.server_address[1]

    yield launch
    for server in servers:
        server.stop()


def request_from_imds(aws, pki, tls_dir, imds_url, env=None):
    os.makedirs(tls_dir, exist_ok=True)
    argv = [SCRIPT_PYTHON, tj.SCRIPT, "--endpoint-url", aws.url, "--prefix", PREFIX, "--interval", "0.3",
            "--imds-url", imds_url, "request", "--tls-dir", tls_dir, "--ca-file", os.path.join(pki, "root.pem"),
            "--deadline", "20"]
    environ = dict(env if env is not None else aws.env)
    environ.pop("AWS_REGION", None)
    environ.pop("AWS_DEFAULT_REGION", None)  # the region comes from IMDS
    return subprocess.Popen(argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_worker_takes_its_identity_from_imds(aws, pki, imds_host, tmp_path):
    iid, url = imds_host()
    tls_dir = str(tmp_path / "w")
    worker = request_from_imds(aws, pki, tls_dir, url)
    tj.wait_for_parameter(aws, tj.path("csr", iid))
    assert tj.issue(aws, pki, "--no-check-writer").returncode == 0
    dummy, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "asked for a certificate for tjimds@127.0.0.1 in %s" % tj.path("csr", iid) in err
    with open(os.path.join(tls_dir, "node.pem")) as f:
        leaf = f.read()
    assert tj.text("x509", "-noout", "-subject", "-nameopt", "RFC2253", data=leaf).strip() == "subject=CN=tjimds@127.0.0.1"


def test_without_an_instance_role_the_worker_fails_clearly(aws, pki, imds_host, tmp_path):
    dummy, url = imds_host()
    env = {k: v for k, v in aws.env.items() if not k.startswith("AWS_")}
    worker = request_from_imds(aws, pki, str(tmp_path / "w"), url, env=env)
    dummy, err = worker.communicate(timeout=30)
    assert worker.returncode == 1
    assert "FAILED: this instance has no instance role" in err, err
    assert os.listdir(str(tmp_path / "w")) == []
    assert aws.ssm.describe_parameters()["Parameters"] == []


def test_user_data_of_another_role_asks_nothing(aws, pki, imds_host, tmp_path):
    dummy, url = imds_host(role="boot_server")
    worker = request_from_imds(aws, pki, str(tmp_path / "w"), url)
    dummy, err = worker.communicate(timeout=30)
    assert worker.returncode == 0 and "names no worker: nothing to ask" in err, err
    assert aws.ssm.describe_parameters()["Parameters"] == []
