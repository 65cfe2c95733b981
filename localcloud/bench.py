"""Launch-to-SSH time on localcloud: RunInstances of N instances until `ssh admin@<private ip> true` works on all.

Usage: python -m localcloud.bench [--count 5] [--ami ami-...]   (starts localcloud if it is not running)
In the region LOCALCLOUD_REGION names (default us-east-1); in a region other than the default one, ssh goes
through the region's network (private DNS name and localcloud's ProxyCommand), as docs/localcloud.md says.
"""

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

import boto3

from localcloud import cli, config


def ssh_ok(host, key, options=()):
    return subprocess.run(
        ["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=2", *options, "admin@" + host, "true"],
        capture_output=True,
    ).returncode == 0


def wait_ssh(host, key, started, deadline, options=()):
    while time.monotonic() < deadline:
        if ssh_ok(host, key, options):
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError("no SSH on %s" % host)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m localcloud.bench")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--ami", default=config.BASE_AMI_ID)
    parser.add_argument("--instance-type", default="t3.micro")
    args = parser.parse_args(argv)
    paths = config.Paths()
    if cli.cmd_up(argparse.Namespace(port=None, no_images=False), paths) != 0:
        return 1
    info = cli.daemon_info(paths)
    client = boto3.client(
        "ec2", endpoint_url=info["endpoint_url"], region_name=config.region(),
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    key = str(paths.ssh_key)
    # Security groups are enforced: a group that lets the controller's SSH in (made before the clock starts).
    group = client.create_security_group(GroupName="localcloud-bench-%d-%d" % (os.getpid(), time.time_ns()),
                                         Description="localcloud bench: SSH from the controller")["GroupId"]
    client.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": config.NETWORK_GATEWAY + "/32"}]}])
    started = time.monotonic()
    try:
        reservation = client.run_instances(
            ImageId=args.ami, InstanceType=args.instance_type, MinCount=args.count, MaxCount=args.count, KeyName=config.DEFAULT_KEY_NAME,
            SecurityGroupIds=[group],
        )
    except Exception:
        client.delete_security_group(GroupId=group)
        raise
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    if config.region_network_name(config.ACCOUNT_ID, config.region()) == config.NETWORK_NAME:  # routed here
        hosts, options = [i["PrivateIpAddress"] for i in reservation["Instances"]], ()
    else:  # another region: through its network
        hosts, options = [i["PrivateDnsName"] for i in reservation["Instances"]], ("-o", "ProxyCommand=" + cli.proxy_command())
    try:
        with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
            times = list(pool.map(lambda host: wait_ssh(host, key, started, started + 120, options), hosts))
        total = time.monotonic() - started
        print("launch-to-SSH, %d instances (%s, %s, %s): all answered ssh in %.1f s (first %.1f s, median %.1f s)"
              % (args.count, args.ami, config.region(), os.uname().nodename, total, min(times), sorted(times)[len(times) // 2]))
    finally:
        client.terminate_instances(InstanceIds=ids)
        client.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        client.delete_security_group(GroupId=group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
