"""Instances launched through the EC2 API are real hosts that follow the API."""

import ipaddress
import json
import subprocess
import sys
import time

import pytest

from conftest import podman_state, ssh, wait_ssh
from localcloud import cli, config


def test_run_instances_gives_hosts_reachable_by_ssh_on_their_private_ip(launcher, key_pair):
    instances = launcher.run(MinCount=3, KeyName=key_pair.name)
    ips = [i["PrivateIpAddress"] for i in instances]
    assert len(set(ips)) == 3
    for instance in instances:
        ip = instance["PrivateIpAddress"]
        assert instance["State"]["Name"] == "running"
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(config.NETWORK_SUBNET)
        wait_ssh(ip, key_pair.path)
        out = ssh(ip, key_pair.path, "hostname; ip -4 -o addr show scope global; sudo -n id -u; systemctl is-system-running --wait || true").stdout.split("\n")
        assert out[0] == "ip-" + ip.replace(".", "-")
        assert " %s/16 " % ip in out[1]
        assert out[2] == "0"  # passwordless sudo, as on a Debian AMI
        assert out[3] in ("running", "degraded"), out


def test_import_key_pair_and_default_key(ec2, launcher, tmp_path, cloud):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = "localcloud-test-import-%d" % time.monotonic_ns()
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=key.with_suffix(".pub").read_bytes())
    try:
        imported, default = launcher.run(MinCount=1, KeyName=name)[0], launcher.run(MinCount=1, KeyName=config.DEFAULT_KEY_NAME)[0]
        wait_ssh(imported["PrivateIpAddress"], key)
        wait_ssh(default["PrivateIpAddress"], cloud.paths.ssh_key)
        # `python -m localcloud ssh` uses the default key pair.
        out = subprocess.run([sys.executable, "-m", "localcloud", "ssh", default["PrivateIpAddress"], "--", "id", "-un"],
                             cwd=str(config.REPO_ROOT), capture_output=True, text=True, timeout=30, check=False)
        assert out.stdout.strip() == "admin", out.stderr
        # Each host trusts only its own key pair.
        assert ssh(default["PrivateIpAddress"], key, "true", check=False).returncode != 0
    finally:
        ec2.delete_key_pair(KeyName=name)


def test_instance_without_subnet_goes_to_the_default_subnet_of_its_zone(ec2, launcher):
    default_subnets = {
        s["AvailabilityZone"]: s
        for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    }
    zone = "us-east-1b"
    instance = launcher.run(wait=False, Placement={"AvailabilityZone": zone})[0]
    assert instance["SubnetId"] == default_subnets[zone]["SubnetId"]
    assert ipaddress.ip_address(instance["PrivateIpAddress"]) in ipaddress.ip_network(default_subnets[zone]["CidrBlock"])
    plain = launcher.run(wait=False)[0]  # no placement either: the region's first zone
    assert plain["SubnetId"] == default_subnets["us-east-1a"]["SubnetId"]
    assert ipaddress.ip_address(plain["PrivateIpAddress"]) in ipaddress.ip_network(default_subnets["us-east-1a"]["CidrBlock"])


def test_states_follow_the_hosts_stop_start_terminate(ec2, launcher, key_pair):
    instance = launcher.run(KeyName=key_pair.name)[0]
    iid, ip = instance["InstanceId"], instance["PrivateIpAddress"]
    wait_ssh(ip, key_pair.path)
    ssh(ip, key_pair.path, "echo kept | sudo tee /var/tmp/marker >/dev/null")
    assert podman_state(iid) == "running"

    stopping = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert stopping["CurrentState"]["Name"] == "stopping"
    launcher.wait("instance_stopped", [iid])
    assert podman_state(iid) == "exited"
    assert ssh(ip, key_pair.path, "true", check=False).returncode != 0

    starting = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
    assert starting["CurrentState"]["Name"] == "pending"
    launcher.wait("instance_running", [iid])
    assert podman_state(iid) == "running"
    wait_ssh(ip, key_pair.path)
    # A stopped instance keeps its disk (EBS root) and its private IP.
    assert ssh(ip, key_pair.path, "cat /var/tmp/marker").stdout.strip() == "kept"

    terminating = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert terminating["CurrentState"]["Name"] == "shutting-down"
    launcher.wait("instance_terminated", [iid])
    assert podman_state(iid) is None


def test_instance_outside_the_network_gets_no_host(ec2, launcher):
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    try:
        instance = launcher.run(wait=False, SubnetId=subnet)[0]
        launcher.wait_state("terminated", [instance["InstanceId"]])
        described = launcher.describe([instance["InstanceId"]])[0]
        assert "outside localcloud's network" in described["StateReason"]["Message"]
        assert podman_state(instance["InstanceId"]) is None
    finally:
        launcher.cleanup()
        launcher.ids = []
        ec2.delete_subnet(SubnetId=subnet)
        ec2.delete_vpc(VpcId=vpc)


def test_auto_scaling_group_instances_become_hosts_with_the_template_user_data(cloud, ec2, key_pair, launcher):
    autoscaling = cloud.client("autoscaling")
    name = "localcloud-test-asg-%d" % time.monotonic_ns()
    user_data = "# erlang-ec2 user-data v1\nERLANG_CLUSTER=asgtest\n"
    import base64

    ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={
            "ImageId": config.BASE_AMI_ID,
            "InstanceType": "t3.micro",
            "KeyName": key_pair.name,
            "UserData": base64.b64encode(user_data.encode()).decode(),
            "SecurityGroupIds": [launcher.ssh_group()],  # SSH from the controller (security groups are enforced)
        },
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
        MinSize=2,
        MaxSize=2,
        DesiredCapacity=2,
        AvailabilityZones=["us-east-1a"],
    )
    ids = []
    try:
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
        ids = [i["InstanceId"] for i in group["Instances"]]
        assert len(ids) == 2
        ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for instance in r["Instances"]:
                ip = instance["PrivateIpAddress"]
                assert ipaddress.ip_address(ip) in ipaddress.ip_network(config.NETWORK_SUBNET)
                wait_ssh(ip, key_pair.path)
                assert ssh(ip, key_pair.path, "curl -sf http://169.254.169.254/latest/user-data").stdout == user_data
    finally:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=name)
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert [podman_state(i) for i in ids] == [None, None]


def test_baked_ami_has_erlang_and_is_found_by_name(ec2, launcher, key_pair):
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": [config.BAKED_IMAGE_NAME]}])["Images"]
    assert [i["ImageId"] for i in images] == [config.BAKED_AMI_ID]
    instance = launcher.run(ImageId=config.BAKED_AMI_ID, KeyName=key_pair.name)[0]
    wait_ssh(instance["PrivateIpAddress"], key_pair.path)
    out = ssh(instance["PrivateIpAddress"], key_pair.path, "erl -noshell -eval 'io:format(\"~s\", [erlang:system_info(otp_release)]), halt().'").stdout
    assert out == "25"


def test_create_image_commits_the_host(ec2, launcher, key_pair):
    source = launcher.run(KeyName=key_pair.name)[0]
    wait_ssh(source["PrivateIpAddress"], key_pair.path)
    ssh(source["PrivateIpAddress"], key_pair.path, "echo baked-by-test | sudo tee /etc/localcloud-test-marker >/dev/null")
    ami = ec2.create_image(
        InstanceId=source["InstanceId"],
        Name="localcloud-test-%d" % time.monotonic_ns(),
        # EC2 accepts snapshot tags too (moto alone fails on them with a 500).
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]},
                           {"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
    )["ImageId"]
    try:
        ec2.get_waiter("image_available").wait(ImageIds=[ami], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        copy = launcher.run(ImageId=ami, KeyName=key_pair.name)[0]
        wait_ssh(copy["PrivateIpAddress"], key_pair.path)
        out = ssh(copy["PrivateIpAddress"], key_pair.path,
                  "cat /etc/localcloud-test-marker; curl -s http://169.254.169.254/latest/meta-data/instance-id").stdout.split("\n")
        assert out[0] == "baked-by-test"
        assert out[1] == copy["InstanceId"]
    finally:
        launcher.cleanup()  # no host uses the image any more
        launcher.ids = []
        ec2.deregister_image(ImageId=ami)
    # The image goes with the AMI.
    deadline = time.monotonic() + 30
    while subprocess.run(["podman", "image", "exists", "localhost/localcloud-ami:%s" % ami], check=False).returncode == 0:
        assert time.monotonic() < deadline, "image of %s still there" % ami
        time.sleep(0.5)
    assert ami not in (json.loads(config.Paths().ami_map.read_text()) if config.Paths().ami_map.exists() else {})


@pytest.mark.parametrize("missing", ["podman", "runc"])
def test_up_without_a_tool_fails_clearly_and_changes_nothing(cloud, missing, tmp_path):
    import os
    import shutil
    import sys

    from conftest import REPO

    # A PATH holding every tool localcloud uses but the missing one.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("podman", "runc", "ip", "debootstrap", "ssh-keygen"):
        if tool != missing and shutil.which(tool):
            (bindir / tool).symlink_to(shutil.which(tool))
    # (Other people may launch hosts meanwhile: compare what this `up` could have touched, not all containers.)
    before = (cli.daemon_pid(cloud.paths), cloud.paths.info.read_text(), sorted(p.name for p in cloud.paths.root.iterdir()))
    proc = subprocess.run([sys.executable, "-m", "localcloud", "up"], cwd=str(REPO), capture_output=True, text=True,
                          env=dict(os.environ, PATH=str(bindir)), check=False)
    assert proc.returncode == 1
    assert "%s not found" % missing in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (cli.daemon_pid(cloud.paths), cloud.paths.info.read_text(), sorted(p.name for p in cloud.paths.root.iterdir())) == before


def test_power_off_inside_the_host_stops_the_instance(ec2, launcher, key_pair):
    stays = launcher.run(KeyName=key_pair.name)[0]
    goes = launcher.run(KeyName=key_pair.name, InstanceInitiatedShutdownBehavior="terminate")[0]
    for instance in (stays, goes):
        wait_ssh(instance["PrivateIpAddress"], key_pair.path)
        ssh(instance["PrivateIpAddress"], key_pair.path, "sudo systemctl --no-block poweroff", check=False)
    # EC2: a shutdown from inside stops the instance, or terminates it when that is its shutdown behaviour.
    launcher.wait_state("stopped", [stays["InstanceId"]])
    launcher.wait_state("terminated", [goes["InstanceId"]])
    assert podman_state(stays["InstanceId"]) == "exited"
    assert podman_state(goes["InstanceId"]) is None


def test_reboot_restarts_the_host(ec2, launcher, key_pair):
    instance = launcher.run(KeyName=key_pair.name)[0]
    ip = instance["PrivateIpAddress"]
    wait_ssh(ip, key_pair.path)
    boot_id = ssh(ip, key_pair.path, "cat /proc/sys/kernel/random/boot_id; cat /proc/1/stat").stdout
    ec2.reboot_instances(InstanceIds=[instance["InstanceId"]])
    deadline = time.monotonic() + 60
    while True:  # PID 1 of the container is a new process once the host has restarted
        proc = ssh(ip, key_pair.path, "cat /proc/sys/kernel/random/boot_id; cat /proc/1/stat", check=False)
        if proc.returncode == 0 and proc.stdout != boot_id:
            break
        assert time.monotonic() < deadline, "host %s did not restart" % ip
        time.sleep(0.5)
    assert launcher.describe([instance["InstanceId"]])[0]["State"]["Name"] == "running"


def test_a_host_removed_by_hand_terminates_its_instance(launcher):
    instance = launcher.run()[0]
    subprocess.run(["podman", "rm", "-f", "-t", "0", config.CONTAINER_PREFIX + instance["InstanceId"]], check=True, capture_output=True)
    launcher.wait_state("terminated", [instance["InstanceId"]], bound=30)
    assert "removed outside localcloud" in launcher.describe([instance["InstanceId"]])[0]["StateReason"]["Message"]


def test_run_instances_with_the_same_client_token_launches_once(ec2, launcher):
    token = "localcloud-test-%d" % time.monotonic_ns()
    first = ec2.run_instances(ImageId=config.BASE_AMI_ID, MinCount=2, MaxCount=2, ClientToken=token)
    launcher.ids.extend(i["InstanceId"] for i in first["Instances"])
    again = ec2.run_instances(ImageId=config.BASE_AMI_ID, MinCount=2, MaxCount=2, ClientToken=token)
    assert again["ReservationId"] == first["ReservationId"]
    assert sorted(i["InstanceId"] for i in again["Instances"]) == sorted(launcher.ids)
    launched = [i for r in ec2.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceId"] for i in launched) == sorted(launcher.ids)
    # Without a token every call launches.
    one = ec2.run_instances(ImageId=config.BASE_AMI_ID, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    two = ec2.run_instances(ImageId=config.BASE_AMI_ID, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    launcher.ids.extend([one, two])
    assert one != two


def test_an_address_freed_by_terminate_goes_to_the_next_host(ec2, launcher, key_pair):
    # A primary interface deleted on termination (what amazon.aws.ec2_instance asks for) frees its address in
    # moto, and moto hands a freed address out first.
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]},
                                           {"Name": "availability-zone", "Values": ["us-east-1c"]}])["Subnets"][0]
    nics = [{"DeviceIndex": 0, "SubnetId": subnet["SubnetId"], "DeleteOnTermination": True}]
    old = launcher.run(KeyName=key_pair.name, NetworkInterfaces=nics)[0]
    ec2.terminate_instances(InstanceIds=[old["InstanceId"]])  # no wait: its container is still being removed
    new = launcher.run(KeyName=key_pair.name, NetworkInterfaces=nics)[0]
    assert new["PrivateIpAddress"] == old["PrivateIpAddress"]
    wait_ssh(new["PrivateIpAddress"], key_pair.path)
    assert ssh(new["PrivateIpAddress"], key_pair.path, "curl -s http://169.254.169.254/latest/meta-data/instance-id").stdout == new["InstanceId"]
    assert podman_state(old["InstanceId"]) is None


def test_run_instances_beyond_the_host_limit_is_refused(cloud, ec2):
    """Every instance is a container on this machine: asking for more than the limit launches nothing."""
    import botocore.exceptions

    limit = cli.daemon_info(cloud.paths)["max_hosts"]  # the daemon's own setting
    marker = "localcloud-test-limit-%d" % time.monotonic_ns()
    with pytest.raises(botocore.exceptions.ClientError) as error:
        ec2.run_instances(ImageId=config.BASE_AMI_ID, MinCount=limit + 1, MaxCount=limit + 1,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": marker}]}])
    assert error.value.response["Error"]["Code"] == "InstanceLimitExceeded"
    assert "LOCALCLOUD_MAX_HOSTS" in error.value.response["Error"]["Message"]
    assert ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [marker]}])["Reservations"] == []


def test_auto_scaling_metrics_collection_can_be_disabled(cloud, ec2):
    """amazon.aws.autoscaling_group calls DisableMetricsCollection on every update; moto lacks it, localcloud adds it."""
    autoscaling = cloud.client("autoscaling")
    name = "localcloud-test-metrics-%d" % time.monotonic_ns()
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": config.BASE_AMI_ID, "InstanceType": "t3.micro"})
    autoscaling.create_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name},
                                          MinSize=0, MaxSize=0, DesiredCapacity=0, AvailabilityZones=["us-east-1a"])
    try:
        def enabled():
            return [m["Metric"] for m in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["EnabledMetrics"]]
        autoscaling.enable_metrics_collection(AutoScalingGroupName=name, Granularity="1Minute", Metrics=["GroupMinSize", "GroupMaxSize"])
        autoscaling.disable_metrics_collection(AutoScalingGroupName=name, Metrics=["GroupMinSize"])
        assert enabled() == ["GroupMaxSize"]
        autoscaling.disable_metrics_collection(AutoScalingGroupName=name)  # no Metrics: all of them
        assert enabled() == []
    finally:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=name)


def test_up_raises_the_inotify_instance_limit_only_when_lower(tmp_path, cloud):
    # A stand-in for /proc/sys/fs/inotify/max_user_instances: the function reads and writes this file only.
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    assert cli.ensure_inotify_instances(str(limit), wanted=1024) == 1024
    assert limit.read_text().strip() == "1024"
    limit.write_text("4096\n")
    assert cli.ensure_inotify_instances(str(limit), wanted=1024) == 4096
    assert limit.read_text().strip() == "4096"
    # The running localcloud was started through `up`, which raised the real limit.
    with open(cli.INOTIFY_SYSCTL) as handle:
        assert int(handle.read()) >= cli.INOTIFY_INSTANCES
