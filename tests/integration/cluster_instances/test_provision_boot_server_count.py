"""The provision playbook's provision_boot_server_count against moto over HTTP: bad values and lowering the
count are refused before any change; with permission (or unchanged) the plan goes on.

The runs that pass are check-mode runs: a real run waits for SSH on the instances, which moto's are not.
"""

import boto3

import playbook_runner
from aws_endpoint import FAKE_CREDENTIALS, client_env
from cluster_instances_helpers import IMAGE_ID, REGION, members

CLUSTER = "bootcount"


def provision(clean_aws, *extra, check=False):
    args = ["-e", "cluster_name=%s" % CLUSTER, "-e", "provision_image_id=%s" % IMAGE_ID,
            "-e", "provision_ssh_cidr=203.0.113.7/32", "-e", "provision_worker_count=0"] + list(extra)
    env = playbook_runner.ansible_env(client_env(clean_aws, REGION), ANSIBLE_LOCALHOST_WARNING="false",
                                      ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return playbook_runner.run_playbook("skunkworks.erlang_ec2.provision", *args, inventory="localhost,", check_mode=check,
                                        env=env, timeout=600,
                                        extra_vars={"ansible_connection": "local",
                                                    "ansible_python_interpreter": "{{ ansible_playbook_python }}"})


def launch_boot_servers(clean_aws, count):
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=clean_aws.url,
                       aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    tags = [{"Key": "erlang-cluster", "Value": CLUSTER}, {"Key": "erlang-role", "Value": "boot_server"}]
    ec2.run_instances(ImageId=IMAGE_ID, MinCount=count, MaxCount=count, InstanceType="t3.small",
                      TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    return ec2


def security_groups(ec2):
    return ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["erlang-" + CLUSTER]}])["SecurityGroups"]


def test_a_boot_server_count_below_one_is_refused_before_any_request(clean_aws):
    for bad in ("0", "-2"):
        run = provision(clean_aws, "-e", "provision_boot_server_count=%s" % bad)
        assert run.returncode != 0 and "provision_boot_server_count >= 1 (got %s)" % bad in run.out, run
    run = provision(clean_aws, "-e", "provision_boot_server_count=two")
    assert run.returncode != 0 and "provision_boot_server_count" in run.out, run
    assert sum(clean_aws.counts().values()) == 0


def test_lowering_the_boot_server_count_is_refused_before_any_change(clean_aws):
    ec2 = launch_boot_servers(clean_aws, 2)
    clean_aws.reset_counts()
    run = provision(clean_aws, "-e", "provision_boot_server_count=1")
    assert run.returncode != 0, run
    assert ("provision_boot_server_count=1 but cluster %s has 2 boot servers" % CLUSTER) in " ".join(run.out.split()), run
    assert "provision_allow_boot_server_termination=true" in run.out and "Nothing was changed." in run.out
    assert clean_aws.mutating_calls() == 0
    assert len(members(ec2, CLUSTER, "boot_server")) == 2 and security_groups(ec2) == []


def test_the_same_or_an_allowed_lower_count_goes_on(clean_aws):
    ec2 = launch_boot_servers(clean_aws, 2)
    same = provision(clean_aws, "-e", "provision_boot_server_count=2", check=True)
    assert same.returncode == 0, same
    allowed = provision(clean_aws, "-e", "provision_boot_server_count=1", "-e", "provision_allow_boot_server_termination=true",
                        check=True)
    assert allowed.returncode == 0, allowed
    # check mode: planned, not done
    assert len(members(ec2, CLUSTER, "boot_server")) == 2
