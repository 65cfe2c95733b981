"""The test harness's security group on localcloud, which enforces security groups as EC2 does (default deny inbound).

An instance a test launches by itself (RunInstances, cluster_instances without the collection's groups, bake_image's
builder, molecule's create) is in `localcloud-test-harness` (HARNESS_GROUP): SSH and the example releases' HTTP port
(APP_PORT, their /status) from the controller (CONTROLLER_CIDR), and all traffic from the group's other members, so
the hosts of such a test cluster talk to each other (EPMD, distribution, the boot server's loader). The group is its
own: the VPC's default group would do the same on EC2, but moto makes it without its self-referencing rule.
Clusters made by the provision playbook keep the collection's groups; their suites add the app port from the
controller with provision_extra_rules (localcloud_cluster.app_port_rules).

localcloud is shared by parallel suites: the group is made once and never deleted; making it is idempotent and
race-safe (a concurrent creator's group is read back; each rule is added alone and a duplicate is ignored).

Also a command, for molecule's create playbooks and make targets (localcloud's environment eval-ed):
    python tests/integration/harness_group.py        ->  {"harness": "sg-...", "security_group_ids": ["sg-..."]}
    python tests/integration/harness_group.py VAR    ->  {"VAR": ["sg-..."]} (the security_group_ids, for -e)
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
CONTROLLER_PORTS = ((22, "SSH from the controller (test harness)"),
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


def _group(ec2, vpc_id):
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [HARNESS_GROUP]},
                                                  {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    return found[0] if found else None


def _wanted(group_id):
    """The group's rules: (IpPermission, a test that an existing permission is it)."""
    rules = [({"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "its members (test harness)"}]},
              lambda p: p.get("IpProtocol") == "-1" and any(g.get("GroupId") == group_id for g in p.get("UserIdGroupPairs", [])))]
    for port, description in CONTROLLER_PORTS:
        rules.append(({"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                       "IpRanges": [{"CidrIp": CONTROLLER_CIDR, "Description": description}]},
                      lambda p, port=port: (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort")) == ("tcp", port, port)
                      and any(r.get("CidrIp") == CONTROLLER_CIDR for r in p.get("IpRanges", []))))
    return rules


def ensure(ec2, vpc_id=None):
    """The harness group's id in the VPC (default: the region's default VPC); makes it and its rules when missing."""
    vpc_id = vpc_id or default_vpc(ec2)
    group = _group(ec2, vpc_id)
    if group is None:
        try:
            ec2.create_security_group(GroupName=HARNESS_GROUP, VpcId=vpc_id,
                                      Description="Test harness: SSH and the example app's HTTP port from the controller, all from its members")
        except botocore.exceptions.ClientError as error:
            if _code(error) != "InvalidGroup.Duplicate":  # made by a concurrent suite in between: read it back
                raise
        group = _group(ec2, vpc_id)
    for permission, present in _wanted(group["GroupId"]):
        if any(present(p) for p in group.get("IpPermissions", [])):
            continue
        try:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[permission])
        except botocore.exceptions.ClientError as error:
            if _code(error) != "InvalidPermission.Duplicate":  # added by a concurrent suite
                raise
    return group["GroupId"]


def security_group_ids(ec2, vpc_id=None):
    """The groups of an instance a test launches by itself."""
    return [ensure(ec2, vpc_id)]


def main(argv):
    if len(argv) > 2:
        sys.stderr.write("usage: %s [VAR]   (localcloud's environment: AWS_ENDPOINT_URL, AWS_REGION)\n" % argv[0])
        return 2
    ec2 = ec2_client(os.environ.get("AWS_ENDPOINT_URL", ""), os.environ.get("AWS_REGION") or "us-east-1")
    ids = security_group_ids(ec2)
    print(json.dumps({argv[1]: ids} if len(argv) == 2 else {"harness": ids[0], "security_group_ids": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
