"""Run by test_imds_credentials.py in a process of its own (localcloud's moto patches stay out of pytest's):
localcloud's IMDS handler and host API listener on loopback, over localcloud's patched moto in this process,
as the daemon runs them. Prints what it observed as JSON; the test asserts on it.

The IMDS answers by source address: 127.0.0.2 stands for the host with an instance profile, 127.0.0.3 for one
without (both are loopback addresses on Linux).
"""

import http.client
import json
import sys

import boto3
from moto.server import DomainDispatcherApplication, create_backend_app

from localcloud import config, credentials, ec2
from localcloud.imds import Imds
from localcloud.serve import HostApi

# The trust policy's principal: moto does not evaluate it, and tests name no AWS host (on AWS it is EC2's
# service principal, docs/tls.md "IAM").
ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.localcloud.invalid"}, "Action": "sts:AssumeRole"}]})


class Reconciler:
    def __init__(self):
        self.by_ip = {}

    def wake(self):
        pass


def imds(port, source, method, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def main():
    reconciler = Reconciler()
    ec2.install(reconciler)
    credentials.install()
    api = HostApi(DomainDispatcherApplication(create_backend_app), address="127.0.0.1", port=0).start()
    endpoint = "http://127.0.0.1:%d" % api.server.server_port
    admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", **admin)
    client = boto3.client("ec2", **admin)
    iam.create_role(RoleName="erlang-worker", AssumeRolePolicyDocument=ROLE_POLICY)
    profile = iam.create_instance_profile(InstanceProfileName="erlang-worker-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="erlang-worker-profile", RoleName="erlang-worker")
    out = {"profile_arn": profile["Arn"], "profile_id": profile["InstanceProfileId"]}

    # RunInstances by name (two instances: EC2 gives both the profile; moto alone only the first), by ARN,
    # through a launch template, and without.
    by_name = client.run_instances(ImageId=config.BASE_AMI_ID, MinCount=2, MaxCount=2,
                                   IamInstanceProfile={"Name": "erlang-worker-profile"})["Instances"]
    by_arn = client.run_instances(ImageId=config.BASE_AMI_ID, MinCount=1, MaxCount=1, IamInstanceProfile={"Arn": profile["Arn"]})["Instances"]
    client.create_launch_template(LaunchTemplateName="lt-profile", LaunchTemplateData={
        "ImageId": config.BASE_AMI_ID, "IamInstanceProfile": {"Name": "erlang-worker-profile"}})
    by_template = client.run_instances(LaunchTemplate={"LaunchTemplateName": "lt-profile"}, MinCount=1, MaxCount=1)["Instances"]
    client.create_launch_template(LaunchTemplateName="lt-missing", LaunchTemplateData={
        "ImageId": config.BASE_AMI_ID, "IamInstanceProfile": {"Name": "no-such-profile"}})
    try:
        client.run_instances(LaunchTemplate={"LaunchTemplateName": "lt-missing"}, MinCount=1, MaxCount=1)
        out["missing_profile_error"] = None
    except client.exceptions.ClientError as exc:
        out["missing_profile_error"] = exc.response["Error"]["Code"]
    autoscaling = boto3.client("autoscaling", **admin)
    autoscaling.create_auto_scaling_group(AutoScalingGroupName="asg", LaunchTemplate={"LaunchTemplateName": "lt-profile"}, MinSize=1, MaxSize=1,
                                          DesiredCapacity=1, AvailabilityZones=["us-east-1a"])
    by_group = [i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]]
    plain = client.run_instances(ImageId=config.BASE_AMI_ID, MinCount=1, MaxCount=1)["Instances"][0]
    associations = client.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    out["associated"] = sorted(a["InstanceId"] for a in associations)
    out["profiled"] = sorted([i["InstanceId"] for i in by_name + by_arn + by_template] + by_group)
    out["plain_id"] = plain["InstanceId"]

    instances = {i.id: i for _region, i in ec2.all_instances()}
    profiled = by_name[1]  # the one moto alone would have left without a profile
    reconciler.by_ip[(config.NETWORK_NAME, "127.0.0.2")] = instances[profiled["InstanceId"]]
    reconciler.by_ip[(config.NETWORK_NAME, "127.0.0.3")] = instances[plain["InstanceId"]]
    client.modify_instance_metadata_options(InstanceId=profiled["InstanceId"], HttpTokens="required")
    out["profiled_id"] = profiled["InstanceId"]

    listener = Imds(reconciler, address="127.0.0.1", port=0).start()
    port = listener.server.server_port
    out["no_token"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/security-credentials/erlang-worker")[0]
    status, token = imds(port, "127.0.0.2", "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 200, status
    header = {"X-aws-ec2-metadata-token": token}
    out["other_source_token"] = imds(port, "127.0.0.3", "GET", "/latest/meta-data/iam/info", header)[0]
    out["listing"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/", header)
    out["iam_listing"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/", header)
    out["info"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/info", header)
    out["roles"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/security-credentials/", header)
    out["credentials"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/security-credentials/erlang-worker", header)
    out["credentials_again"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/security-credentials/erlang-worker", header)
    out["region"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/placement/region", header)
    out["plain_iam"] = [imds(port, "127.0.0.3", "GET", path)[0] for path in
                        ("/latest/meta-data/iam/", "/latest/meta-data/iam/info", "/latest/meta-data/iam/security-credentials/",
                         "/latest/meta-data/iam/security-credentials/erlang-worker")]
    out["plain_listing"] = imds(port, "127.0.0.3", "GET", "/latest/meta-data/")[1]

    # The credentials, used as a host's boto3 would, against the API listener.
    creds = json.loads(out["credentials"][1])
    role_session = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": creds["AccessKeyId"],
                    "aws_secret_access_key": creds["SecretAccessKey"], "aws_session_token": creds["Token"]}
    out["caller"] = boto3.client("sts", **role_session).get_caller_identity()["Arn"]
    ssm = boto3.client("ssm", **role_session)
    ssm.put_parameter(Name="/erlang/test/csr/" + profiled["InstanceId"], Value="csr", Type="String")
    ssm.put_parameter(Name="/erlang/test/csr/" + profiled["InstanceId"], Value="csr2", Type="String", Overwrite=True)
    admin_ssm = boto3.client("ssm", **admin)
    admin_ssm.put_parameter(Name="/erlang/test/by-admin", Value="x", Type="String")
    described = admin_ssm.describe_parameters()["Parameters"]
    out["described_users"] = {p["Name"]: p["LastModifiedUser"] for p in described}
    history = admin_ssm.get_parameter_history(Name="/erlang/test/csr/" + profiled["InstanceId"])["Parameters"]
    out["history_users"] = [p["LastModifiedUser"] for p in history]
    # Credentials about to expire are replaced before they do (EC2 rotates them ahead of Expiration).
    import datetime
    cached = credentials._cache[profiled["InstanceId"]][1]
    cached.expiration = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=10)
    out["credentials_refreshed"] = imds(port, "127.0.0.2", "GET", "/latest/meta-data/iam/security-credentials/erlang-worker", header)
    listener.stop()
    api.stop()
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
