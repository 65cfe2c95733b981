"""The provision playbook's Auto Scaling path on localcloud: a launch template and an Auto Scaling group
whose instances boot the baked node image and join by themselves; site leaves them to their image.

Runs after test_self_join.py on the same session cluster (a boot server and a baked image).
"""

import json
import time

import boto3

from localcloud import config
from plugins.module_utils import cluster as contract

from conftest import report
from playbook_runner import parse_recap


def recap(stdout):
    """{host: (ok, changed, failed)} from an ansible-playbook recap."""
    return {host: (counts["ok"], counts["changed"], counts["failed"]) for host, counts in parse_recap(stdout).items()}


def group_instances(cluster, autoscaling, name):
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    ids = [i["InstanceId"] for i in group[0]["Instances"]] if group else []
    if not ids:
        return []
    reply = cluster.ec2.describe_instances(InstanceIds=ids)
    return [i for r in reply["Reservations"] for i in r["Instances"] if i["State"]["Name"] in ("pending", "running")]


def cluster_groups(cluster, instances):
    """The security groups provision made for the cluster (tagged with it), and those of its instances."""
    tagged = cluster.ec2.describe_security_groups(Filters=[{"Name": "tag:%s" % contract.TAG_CLUSTER, "Values": [cluster.name]}])
    found = [g["GroupId"] for g in tagged["SecurityGroups"]]
    for group in (g for i in instances for g in i["SecurityGroups"]):
        if group["GroupId"] not in found:
            found.append(group["GroupId"])
    assert found, "provision made no security group for %s" % cluster.name
    return found


def test_provision_autoscaling_workers_join_by_themselves(cluster):
    autoscaling = boto3.client("autoscaling", endpoint_url=cluster.endpoint_url, region_name=config.DEFAULT_REGION,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
    group_name = "erlang-%s-workers" % cluster.name
    template_name = "erlang-%s-worker" % cluster.name
    variables = {
        "cluster_name": cluster.name, "provision_image_id": cluster.erlang_ami(), "provision_ssh_cidr": config.NETWORK_SUBNET,
        "provision_key_name": "localcloud", "provision_join": "self", "provision_node_image_id": cluster.image_id,
        "provision_autoscaling": True, "provision_worker_count": 2, "provision_autoscaling_max_size": 4,
        "aws_endpoint_url": cluster.endpoint_url, "aws_region": config.DEFAULT_REGION,
    }
    provision = ["skunkworks.erlang_ec2.provision", "-e", json.dumps(variables)]
    push_with_autoscaling = dict(variables, provision_join="push")
    # Workers launched by the API in the earlier tests joined by themselves too: say so, as cluster_instances join=self does.
    if cluster.launched:
        cluster.ec2.create_tags(Resources=list(cluster.launched), Tags=[{"Key": contract.TAG_JOIN, "Value": contract.JOIN_SELF}])
    try:
        # Bad input first: refused before any change.
        bad = cluster.ansible_playbook("skunkworks.erlang_ec2.provision", "-e", json.dumps(push_with_autoscaling),
                                       inventory=False, check=False)
        assert bad.returncode != 0 and "provision_autoscaling=true needs provision_join=self" in bad.stdout, bad.stdout[-3000:]
        assert autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"] == []

        # Check mode: reports the template and the group, creates neither.
        checked = cluster.ansible_playbook(*provision, "--check", inventory=False)
        assert recap(checked.stdout)["localhost"][1] >= 2, checked.stdout[-3000:]
        assert autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"] == []
        assert template_name not in [t["LaunchTemplateName"] for t in cluster.ec2.describe_launch_templates()["LaunchTemplates"]]

        t0 = time.monotonic()
        first = cluster.ansible_playbook(*provision, inventory=False)
        assert cluster.cookie not in first.stdout
        instances = group_instances(cluster, autoscaling, group_name)
        assert len(instances) == 2
        # The session's boot server and workers were launched by the test before provision made the cluster's
        # security groups, which localcloud enforces: they join them, as the hosts provision launches are in them.
        cluster.join_groups(cluster_groups(cluster, instances))
        for instance in instances:
            tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
            assert tags[contract.TAG_CLUSTER] == cluster.name and tags[contract.TAG_ROLE] == contract.ROLE_WORKER
            assert tags[contract.TAG_JOIN] == contract.JOIN_SELF and instance["ImageId"] == cluster.image_id
            data = contract.parse_user_data(cluster.user_data_of(instance["InstanceId"]))
            assert data["ERLANG_BOOT_SERVER_IP"] == cluster.boot_ip and data["ERLANG_CLUSTER"] == cluster.name
        ips = [i["PrivateIpAddress"] for i in instances]
        joined = cluster.wait_joined(ips + cluster.workers, t0)
        report("provision_autoscaling_to_joined_seconds_2_workers", {ip: joined[ip] for ip in ips})
        cluster.workers += ips

        # Unchanged re-run: nothing to do.
        again = cluster.ansible_playbook(*provision, inventory=False)
        assert recap(again.stdout)["localhost"][1] == 0, again.stdout[-3000:]

        # Scale out without a playbook: the group's desired capacity (what a scaling policy changes).
        t0 = time.monotonic()
        autoscaling.set_desired_capacity(AutoScalingGroupName=group_name, DesiredCapacity=3)
        deadline = time.monotonic() + 60
        while len(group_instances(cluster, autoscaling, group_name)) < 3:
            assert time.monotonic() < deadline, "the group did not launch a third instance"
            time.sleep(1)
        new_ips = [i["PrivateIpAddress"] for i in group_instances(cluster, autoscaling, group_name) if i["PrivateIpAddress"] not in ips]
        joined = cluster.wait_joined(new_ips + cluster.workers, t0)
        report("autoscaling_desired_capacity_to_joined_seconds_1_worker", {ip: joined[ip] for ip in new_ips})
        cluster.workers += new_ips

        # site configures the boot server and pushed workers; it leaves self-joined workers to their image,
        # keeps them on the allow-list and reports them healthy.
        site = cluster.ansible_playbook("skunkworks.erlang_ec2.site", "-e", "cluster_name=%s" % cluster.name)
        assert cluster.cookie not in site.stdout
        changed = {host: counts[1] for host, counts in recap(site.stdout).items()}
        for instance in group_instances(cluster, autoscaling, group_name):
            assert changed[instance["InstanceId"]] == 0, site.stdout[-4000:]
        assert set(ips + new_ips) <= cluster.which_slaves()
        for ip in ips + new_ips:
            assert cluster.bootstrap_state(ip) == "active"

        # decommission refuses a group member (the group would replace it) before any change.
        member = group_instances(cluster, autoscaling, group_name)[0]
        refused = cluster.ansible_playbook("skunkworks.erlang_ec2.decommission", "-e", "cluster_name=%s" % cluster.name,
                                           "-e", json.dumps({"decommission_hosts": [member["InstanceId"]]}), check=False)
        assert refused.returncode != 0 and "belong to an Auto Scaling group" in refused.stdout, refused.stdout[-3000:]
        assert member["PrivateIpAddress"] in cluster.which_slaves() and cluster.bootstrap_state(member["PrivateIpAddress"]) == "active"
        assert len(group_instances(cluster, autoscaling, group_name)) == 3
    finally:
        # The group's instances go with it (they would be orphans otherwise), and leave the session's
        # running workers, so the suite's other files find only the workers they know of.
        members = group_instances(cluster, autoscaling, group_name)
        cluster.launched += [i["InstanceId"] for i in members]
        if autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]:
            autoscaling.delete_auto_scaling_group(AutoScalingGroupName=group_name, ForceDelete=True)
        if members:
            cluster.terminate([i["InstanceId"] for i in members])
            cluster.wait_state([i["InstanceId"] for i in members], "terminated")
        gone = set(i["PrivateIpAddress"] for i in members)
        cluster.workers[:] = [ip for ip in cluster.workers if ip not in gone]
        try:
            cluster.ec2.delete_launch_template(LaunchTemplateName=template_name)
        except cluster.ec2.exceptions.ClientError:
            pass
