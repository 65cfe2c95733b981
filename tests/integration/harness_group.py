"""The test harness's security groups on localcloud, which enforces security groups as EC2 does (default deny inbound).

An instance a test launches by itself (RunInstances, cluster_instances without the collection's groups, bake_image's
builder, molecule's create) gets two groups:
- `localcloud-test-harness` (HARNESS_GROUP): SSH and the example releases' HTTP port (APP_PORT, their /status) from
  the controller, CONTROLLER_CIDR: how the tests reach and watch hosts; nothing else;
- the VPC's `default` group: all traffic from its other members (EC2's own rule), so the hosts of one such test
  cluster talk to each other, as hosts launched with no group at all do.
Clusters made by the provision playbook keep the collection's groups; their suites add the app port from the
controller with provision_extra_rules (localcloud_cluster.app_port_rules).

localcloud is shared by parallel suites: the group is made once and never deleted; making it is idempotent and
race-safe (a concurrent creator's group is read back; each rule is added alone and a duplicate is ignored).

Also a command, for molecule's create playbooks and make targets (localcloud's environment eval-ed):
    python tests/integration/harness_group.py        ->  {"harness": "sg-...", "default": "sg-...", "security_group_ids": [...]}
    python tests/integration/harness_group.py VAR    ->  {"VAR": [...]} (the security_group_ids, for -e)
"""

import json
import os
import sys

import boto3
import botocore.exceptions

HARNESS_GROUP = "localcloud-test-harness"
# localcloud's NETWORK_GATEWAY: the controller's address on every localcloud network (as the VPC router's on EC2).
CONTROLLER_CIDR = "172.31.0.1/32"
# The HTTP port of the example releases (examples/hello_*): GET /status, polled by the tests from the controller.
APP_PORT = 8080
RULES = ((22, "SSH from the controller (test harness)"),
         (APP_PORT, "the example releases' /status, polled from the controller (test harness)"))


def ec2_client(endpoint_url, region):
    """A client on a local endpoint only, with fake credentials (never real AWS)."""
    if not endpoint_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError("not a local endpoint: %r (run `eval \"$(python -m localcloud env)\"` first)" % endpoint_url)
    return boto3.client("ec2", endpoint_url=endpoint_url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _code(error):
    return error.response.get("Error", {}).get("Code", "")


def default_vpc(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise AssertionError("the region has no default VPC")
    return vpcs[0]["VpcId"]


def _group(ec2, vpc_id, name):
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    return found[0] if found else None


def _has_rule(group, port):
    for perm in group.get("IpPermissions", []):
        if perm.get("IpProtocol") == "tcp" and perm.get("FromPort") == port and perm.get("ToPort") == port:
            if any(r.get("CidrIp") == CONTROLLER_CIDR for r in perm.get("IpRanges", [])):
                return True
    return False


def ensure(ec2, vpc_id=None):
    """{"harness": id, "default": id} of the VPC (default: the region's default VPC); makes the harness group and
    its rules when missing."""
    vpc_id = vpc_id or default_vpc(ec2)
    group = _group(ec2, vpc_id, HARNESS_GROUP)
    if group is None:
        try:
            ec2.create_security_group(GroupName=HARNESS_GROUP, VpcId=vpc_id,
                                      Description="Test harness: SSH and the example app's HTTP port from the controller")
        except botocore.exceptions.ClientError as error:
            if _code(error) != "InvalidGroup.Duplicate":  # made by a concurrent suite in between: read it back
                raise
        group = _group(ec2, vpc_id, HARNESS_GROUP)
    for port, description in RULES:
        if _has_rule(group, port):
            continue
        try:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "IpRanges": [{"CidrIp": CONTROLLER_CIDR, "Description": description}]}])
        except botocore.exceptions.ClientError as error:
            if _code(error) != "InvalidPermission.Duplicate":  # added by a concurrent suite
                raise
    default = _group(ec2, vpc_id, "default")
    if default is None:
        raise AssertionError("VPC %s has no default security group" % vpc_id)
    return {"harness": group["GroupId"], "default": default["GroupId"]}


def security_group_ids(ec2, vpc_id=None):
    """The groups of an instance a test launches by itself: [harness, VPC default]."""
    groups = ensure(ec2, vpc_id)
    return [groups["harness"], groups["default"]]


def main(argv):
    if len(argv) > 2:
        sys.stderr.write("usage: %s [VAR]   (localcloud's environment: AWS_ENDPOINT_URL, AWS_REGION)\n" % argv[0])
        return 2
    ec2 = ec2_client(os.environ.get("AWS_ENDPOINT_URL", ""), os.environ.get("AWS_REGION") or "us-east-1")
    groups = ensure(ec2)
    ids = [groups["harness"], groups["default"]]
    print(json.dumps({argv[1]: ids} if len(argv) == 2 else dict(groups, security_group_ids=ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
