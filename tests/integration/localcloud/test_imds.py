"""IMDS at 169.254.169.254, asked from inside the hosts (curl over SSH), as on EC2."""

import json
import shlex

import pytest

from conftest import ssh, wait_ssh

IMDS = "http://169.254.169.254/latest"


def curl(ip, key, args):
    """(HTTP status, body) of a curl run on the host."""
    out = ssh(ip, key, "curl -s -o /tmp/body -w '%%{http_code}' %s; echo; cat /tmp/body" % args).stdout
    status, dummy, body = out.partition("\n")
    return int(status), body


@pytest.fixture(scope="module")
def hosts(cloud):
    """Two hosts with their own user data; the second requires IMDSv2 tokens and exposes its tags."""
    import argparse
    import os
    import stat
    import tempfile
    import time

    from conftest import Launcher

    ec2 = cloud.client("ec2")
    name = "localcloud-test-imds-%d" % time.monotonic_ns()
    tmp = tempfile.TemporaryDirectory()
    key = os.path.join(tmp.name, "key.pem")
    with open(key, "w") as f:
        f.write(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    os.chmod(key, stat.S_IRUSR | stat.S_IWUSR)
    launcher = Launcher(ec2)
    try:
        optional = launcher.run(KeyName=name, UserData="ERLANG_CLUSTER=one\n")[0]
        required = launcher.run(
            KeyName=name,
            UserData="ERLANG_CLUSTER=two\n",
            MetadataOptions={"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "erlang-role", "Value": "worker"}, {"Key": "Name", "Value": "imds-test"}]}],
        )[0]
        for instance in (optional, required):
            wait_ssh(instance["PrivateIpAddress"], key)
        yield argparse.Namespace(optional=optional, required=required, key=key, ec2=ec2)
    finally:
        launcher.cleanup()
        ec2.delete_key_pair(KeyName=name)
        tmp.cleanup()


def test_each_host_gets_its_own_user_data_and_identity(hosts):
    for instance, user_data in ((hosts.optional, "ERLANG_CLUSTER=one\n"), (hosts.required, "ERLANG_CLUSTER=two\n")):
        ip = instance["PrivateIpAddress"]
        token = ssh(ip, hosts.key, "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' %s/api/token" % IMDS).stdout
        header = "-H %s" % shlex.quote("X-aws-ec2-metadata-token: " + token)
        assert curl(ip, hosts.key, "%s %s/user-data" % (header, IMDS)) == (200, user_data)
        expected = {
            "instance-id": instance["InstanceId"],
            "local-ipv4": ip,
            "placement/availability-zone": instance["Placement"]["AvailabilityZone"],
            "ami-id": instance["ImageId"],
            "instance-type": instance["InstanceType"],
            "hostname": "ip-%s.ec2.internal" % ip.replace(".", "-"),
        }
        for path, value in expected.items():
            assert curl(ip, hosts.key, "%s %s/meta-data/%s" % (header, IMDS, path)) == (200, value), path
        status, listing = curl(ip, hosts.key, "%s %s/meta-data/" % (header, IMDS))
        assert status == 200 and {"instance-id", "local-ipv4", "placement/"} <= set(listing.split("\n"))
        status, doc = curl(ip, hosts.key, "%s %s/dynamic/instance-identity/document" % (header, IMDS))
        assert status == 200 and json.loads(doc)["instanceId"] == instance["InstanceId"]
        assert curl(ip, hosts.key, "%s %s/meta-data/no-such-thing" % (header, IMDS))[0] == 404


def test_imdsv2_token_flow_when_tokens_are_required(hosts):
    ip = hosts.required["PrivateIpAddress"]
    # No token: 401 (IMDSv1 refused); a made-up token: 401.
    assert curl(ip, hosts.key, "%s/meta-data/instance-id" % IMDS)[0] == 401
    assert curl(ip, hosts.key, "-H 'X-aws-ec2-metadata-token: made-up' %s/meta-data/instance-id" % IMDS)[0] == 401
    # Token requests: TTL required and within 1..21600; not through a proxy.
    assert curl(ip, hosts.key, "-X PUT %s/api/token" % IMDS)[0] == 400
    assert curl(ip, hosts.key, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 0' %s/api/token" % IMDS)[0] == 400
    assert curl(ip, hosts.key, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21601' %s/api/token" % IMDS)[0] == 400
    assert curl(ip, hosts.key, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' -H 'X-Forwarded-For: 1.2.3.4' %s/api/token" % IMDS)[0] == 403
    status, token = curl(ip, hosts.key, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' %s/api/token" % IMDS)
    assert status == 200 and token
    header = "-H %s" % shlex.quote("X-aws-ec2-metadata-token: " + token)
    assert curl(ip, hosts.key, "%s %s/meta-data/instance-id" % (header, IMDS)) == (200, hosts.required["InstanceId"])
    # A token expires after its TTL.
    out = ssh(ip, hosts.key,
              "t=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 1' %s/api/token); sleep 2;"
              " curl -s -o /dev/null -w '%%{http_code}' -H \"X-aws-ec2-metadata-token: $t\" %s/meta-data/instance-id" % (IMDS, IMDS)).stdout
    assert out == "401"
    # Another instance's token is not valid here.
    other_token = ssh(hosts.optional["PrivateIpAddress"], hosts.key, "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' %s/api/token" % IMDS).stdout
    assert curl(ip, hosts.key, "-H %s %s/meta-data/instance-id" % (shlex.quote("X-aws-ec2-metadata-token: " + other_token), IMDS))[0] == 401


def test_imdsv1_allowed_when_tokens_are_optional(hosts):
    ip = hosts.optional["PrivateIpAddress"]
    assert curl(ip, hosts.key, "%s/meta-data/instance-id" % IMDS) == (200, hosts.optional["InstanceId"])
    assert curl(ip, hosts.key, "-H 'X-aws-ec2-metadata-token: made-up' %s/meta-data/instance-id" % IMDS)[0] == 401


def test_instance_tags_only_when_enabled(hosts):
    ip = hosts.required["PrivateIpAddress"]
    token = ssh(ip, hosts.key, "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' %s/api/token" % IMDS).stdout
    header = "-H %s" % shlex.quote("X-aws-ec2-metadata-token: " + token)
    status, listing = curl(ip, hosts.key, "%s %s/meta-data/tags/instance" % (header, IMDS))
    assert status == 200 and set(listing.split("\n")) == {"erlang-role", "Name"}
    assert curl(ip, hosts.key, "%s %s/meta-data/tags/instance/erlang-role" % (header, IMDS)) == (200, "worker")
    # Tags follow the API.
    hosts.ec2.create_tags(Resources=[hosts.required["InstanceId"]], Tags=[{"Key": "erlang-role", "Value": "boot_server"}])
    assert curl(ip, hosts.key, "%s %s/meta-data/tags/instance/erlang-role" % (header, IMDS)) == (200, "boot_server")
    assert curl(hosts.optional["PrivateIpAddress"], hosts.key, "%s/meta-data/tags/instance" % IMDS)[0] == 404


def test_modify_metadata_options_takes_effect(hosts):
    ip = hosts.optional["PrivateIpAddress"]
    iid = hosts.optional["InstanceId"]
    hosts.ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="required")
    try:
        assert curl(ip, hosts.key, "%s/meta-data/instance-id" % IMDS)[0] == 401
    finally:
        hosts.ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional")
    assert curl(ip, hosts.key, "%s/meta-data/instance-id" % IMDS)[0] == 200


def test_network_interfaces_match_the_api(hosts):
    instance = hosts.optional
    ip = instance["PrivateIpAddress"]
    eni = instance["NetworkInterfaces"][0]
    status, mac = curl(ip, hosts.key, "%s/meta-data/mac" % IMDS)
    assert status == 200 and mac == eni["MacAddress"]
    # The host's own interface has that MAC, as on EC2.
    assert ssh(ip, hosts.key, "cat /sys/class/net/eth0/address").stdout.strip() == mac
    base = "%s/meta-data/network/interfaces/macs/%s" % (IMDS, mac)
    subnet = hosts.ec2.describe_subnets(SubnetIds=[instance["SubnetId"]])["Subnets"][0]
    expected = {
        "subnet-id": instance["SubnetId"],
        "vpc-id": instance["VpcId"],
        "local-ipv4s": ip,
        "interface-id": eni["NetworkInterfaceId"],
        "subnet-ipv4-cidr-block": subnet["CidrBlock"],
        "vpc-ipv4-cidr-block": "172.31.0.0/16",
        "device-number": "0",
    }
    for path, value in expected.items():
        assert curl(ip, hosts.key, "%s/%s" % (base, path)) == (200, value), path


def test_amazon_aws_ec2_metadata_facts_reads_the_host(cloud, hosts, tmp_path):
    """The metadata as Ansible's amazon.aws.ec2_metadata_facts gathers it on the host, over SSH."""
    import os

    from playbook_runner import run_adhoc

    instance = hosts.required
    ip = instance["PrivateIpAddress"]
    proc = run_adhoc("all", "amazon.aws.ec2_metadata_facts", "", "-u", "admin", "--private-key", hosts.key,
                     "--ssh-common-args=-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null", "-o",
                     inventory="%s," % ip, extra_vars={"ansible_python_interpreter": "/usr/bin/python3"}, timeout=120,
                     env=dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads(proc.stdout.split(" => ", 1)[1])["ansible_facts"]
    assert facts["ansible_ec2_instance_id"] == instance["InstanceId"]
    assert facts["ansible_ec2_local_ipv4"] == ip
    assert facts["ansible_ec2_user_data"] == "ERLANG_CLUSTER=two\n"
    assert facts["ansible_ec2_tags_instance_erlang_role"] in ("worker", "boot_server")
    assert facts["ansible_ec2_instance_identity_document_region"] == "us-east-1"
