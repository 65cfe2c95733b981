"""The moto SSM + EC2 endpoint of the TLS self-join tests: a cluster's fake instances, fake credentials."""

import os
import shutil
import sys
import tempfile

import boto3
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aws_endpoint import FAKE_CREDENTIALS  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tls_join_env import CLUSTER, REGION, make_ca  # noqa: E402


@pytest.fixture
def aws(clean_aws):
    env = dict(FAKE_CREDENTIALS, AWS_DEFAULT_REGION=REGION)
    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                    aws_session_token=env["AWS_SESSION_TOKEN"], region_name=REGION)
    ec2 = session.client("ec2", endpoint_url=clean_aws.url)
    ssm = session.client("ssm", endpoint_url=clean_aws.url)
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def launch(cluster=CLUSTER, role="worker", ip=None):
        kwargs = dict(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, TagSpecifications=[{
            "ResourceType": "instance", "Tags": [{"Key": "erlang-cluster", "Value": cluster},
                                                 {"Key": "erlang-role", "Value": role}]}])
        if ip:
            kwargs["PrivateIpAddress"] = ip
        inst = ec2.run_instances(**kwargs)["Instances"][0]
        return inst["InstanceId"], inst["PrivateIpAddress"]

    class Aws:
        pass

    a = Aws()
    a.url, a.ec2, a.ssm, a.launch = clean_aws.url, ec2, ssm, launch
    a.env = dict(os.environ, **env)
    a.env.pop("AWS_CONFIG_FILE", None)
    return a


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="tls-join-pki-")
    os.chmod(d, 0o700)
    make_ca(d, "root")
    make_ca(d, "issuer", signer="root", pathlen0=True)
    make_ca(d, "otherroot")
    make_ca(d, "otherissuer", signer="otherroot", pathlen0=True)
    os.chmod(os.path.join(d, "issuer.key"), 0o400)
    yield d
    shutil.rmtree(d, ignore_errors=True)
