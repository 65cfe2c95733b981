"""skunkworks.erlang_ec2.cluster_instances through ansible-playbook against moto over HTTP."""

import base64

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster as contract
from cluster_instances_helpers import IMAGE_ID, members

WORKERS = {"cluster": "demo", "role": "worker", "image_id": IMAGE_ID, "instance_type": "t3.micro"}
BOOT = {"cluster": "demo", "role": "boot_server", "count": 1, "image_id": IMAGE_ID, "instance_type": "t3.small"}


def args(base, **kw):
    merged = dict(base)
    merged.update(kw)
    return merged


def default_subnets(ec2, n):
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return sorted(s["SubnetId"] for s in subnets)[:n]


def user_data_of(ec2, instance_id):
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


def ok(run, index=-1):
    result = run.results[index] if run.results else None
    assert run.rc == 0 and result and not result.get("failed"), run
    return result


def failed(run, index=-1):
    result = run.results[index] if run.results else None
    assert result and result.get("failed"), run
    return result


def test_launch_spreads_over_subnets_one_run_instances_per_subnet(playbook, clean_aws, ec2):
    subnets = default_subnets(ec2, 3)
    result = ok(playbook(args(WORKERS, count=7, subnet_ids=subnets, tags={"team": "payments"})))
    assert result["changed"] is True
    assert len(result["launched"]) == 7
    assert clean_aws.calls("RunInstances") == 3
    assert result["launch_plan"] == [{"subnet_id": subnets[0], "count": 3}, {"subnet_id": subnets[1], "count": 2},
                                     {"subnet_id": subnets[2], "count": 2}]
    found = members(ec2, "demo", "worker")
    assert sorted(i["InstanceId"] for i in found) == sorted(result["launched"])
    assert sorted(i["SubnetId"] for i in found) == sorted([subnets[0]] * 3 + [subnets[1]] * 2 + [subnets[2]] * 2)
    for instance in found:
        tags = dict((t["Key"], t["Value"]) for t in instance["Tags"])
        assert tags == {"erlang-cluster": "demo", "erlang-role": "worker", "erlang-node-name": "worker",
                        "erlang-join": "push", "Name": "demo-worker", "team": "payments"}
        assert instance["State"]["Name"] == "running"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
    returned = dict((i["id"], i) for i in result["instances"])
    assert set(returned) == set(result["launched"])
    for instance in found:
        record = returned[instance["InstanceId"]]
        assert record["private_ip"] == instance["PrivateIpAddress"]
        assert record["node"] == "worker@" + instance["PrivateIpAddress"]
        assert record["state"] == "running" and record["subnet_id"] == instance["SubnetId"]


def test_unchanged_rerun_is_one_describe_and_no_mutation(playbook, clean_aws):
    first = ok(playbook(args(WORKERS, count=5)))
    assert first["changed"] is True
    clean_aws.reset_counts()
    second = ok(playbook(args(WORKERS, count=5)))
    assert second["changed"] is False
    assert second["launched"] == [] and second["terminated"] == [] and second["started"] == []
    assert clean_aws.mutating_calls() == 0
    assert dict(clean_aws.counts()) == {("us-east-1", "DescribeInstances"): 1}
    assert sorted(i["id"] for i in second["instances"]) == sorted(first["launched"])


def test_worker_user_data_names_the_boot_server_found_in_the_same_describe(playbook, clean_aws, ec2):
    boot = ok(playbook(BOOT))
    boot_ip = boot["instances"][0]["private_ip"]
    assert boot["boot_server_ip"] is None
    assert contract.parse_user_data(user_data_of(ec2, boot["launched"][0])) == {
        "ERLANG_CLUSTER": "demo", "ERLANG_ROLE": "boot_server", "ERLANG_NODE_NAME": "boot"}
    clean_aws.reset_counts()
    workers = ok(playbook(args(WORKERS, count=2, node_name="app", user_data_extra={"contact_nodes": "boot@" + boot_ip})))
    assert workers["boot_server_ip"] == boot_ip and workers["boot_server_ips"] == [boot_ip]
    # the boot server came from the cluster listing itself: one describe before the launch
    assert clean_aws.calls("DescribeInstances") <= 2 and clean_aws.calls("RunInstances") == 1
    expected = {
        "ERLANG_CLUSTER": "demo", "ERLANG_ROLE": "worker", "ERLANG_NODE_NAME": "app",
        "ERLANG_BOOT_SERVER_IP": boot_ip, "ERLANG_BOOT_NODE": "boot@" + boot_ip, "ERLANG_CONTACT_NODES": "boot@" + boot_ip,
        "ERLANG_BOOT_SERVER_IPS": boot_ip, "ERLANG_BOOT_NODES": "boot@" + boot_ip,
    }
    assert contract.parse_user_data(workers["user_data"]) == expected
    for instance_id in workers["launched"]:
        text = user_data_of(ec2, instance_id)
        assert contract.parse_user_data(text) == expected
        assert "cookie" not in text.lower()
    assert all(i["node"].startswith("app@") for i in workers["instances"])


def test_scale_down_terminates_newest_first_and_waits(playbook, clean_aws, ec2):
    old = ok(playbook(args(WORKERS, count=2)))["launched"]
    new = ok(playbook(args(WORKERS, count=4)))["launched"]
    assert len(new) == 2
    clean_aws.reset_counts()
    down = ok(playbook(args(WORKERS, count=2)))
    assert sorted(down["terminated"]) == sorted(new)
    assert clean_aws.calls("TerminateInstances") == 1 and clean_aws.calls("RunInstances") == 0
    assert sorted(i["InstanceId"] for i in members(ec2, "demo", "worker")) == sorted(old)
    assert sorted(i["id"] for i in down["instances"]) == sorted(old)


def test_scale_down_oldest_first_when_asked(playbook, clean_aws, ec2):
    old = ok(playbook(args(WORKERS, count=1)))["launched"]
    new = ok(playbook(args(WORKERS, count=2)))["launched"]
    down = ok(playbook(args(WORKERS, count=1, termination_order="oldest_first")))
    assert down["terminated"] == old
    assert [i["InstanceId"] for i in members(ec2, "demo", "worker")] == new


def test_boot_server_is_never_terminated_unless_allowed(playbook, clean_aws, ec2):
    boot_id = ok(playbook(BOOT))["launched"][0]
    ok(playbook(args(WORKERS, count=1)))
    clean_aws.reset_counts()
    refused = failed(playbook(args(BOOT, count=0)))
    assert "allow_boot_server_termination" in refused["msg"] and boot_id in refused["msg"]
    assert clean_aws.mutating_calls() == 0
    assert [i["InstanceId"] for i in members(ec2, "demo", "boot_server")] == [boot_id]
    # scaling workers to zero never touches the boot server either
    ok(playbook(args(WORKERS, count=0)))
    assert [i["InstanceId"] for i in members(ec2, "demo")] == [boot_id]
    allowed = ok(playbook(args(BOOT, count=0, allow_boot_server_termination=True)))
    assert allowed["terminated"] == [boot_id]
    assert members(ec2, "demo") == []


def test_check_mode_makes_no_mutating_call_and_diff_shows_ids(playbook, clean_aws, ec2):
    subnets = default_subnets(ec2, 2)
    kept = ok(playbook(args(WORKERS, count=2, subnet_ids=subnets)))["launched"]
    clean_aws.reset_counts()
    up = ok(playbook(args(WORKERS, count=5, subnet_ids=subnets), check=True, diff=True))
    assert up["changed"] is True and up["launched"] == []
    assert up["launch_plan"] == [{"subnet_id": subnets[0], "count": 1}, {"subnet_id": subnets[1], "count": 2}] or \
        up["launch_plan"] == [{"subnet_id": subnets[0], "count": 2}, {"subnet_id": subnets[1], "count": 1}]
    assert up["diff"]["before"] == {"count": 2, "instance_ids": sorted(kept)}
    assert up["diff"]["after"]["count"] == 5
    down = ok(playbook(args(WORKERS, count=1, subnet_ids=subnets), check=True, diff=True))
    assert len(down["terminated"]) == 1 and down["terminated"][0] in kept
    assert down["diff"]["after"]["instance_ids"] == sorted(set(kept) - set(down["terminated"]))
    assert clean_aws.mutating_calls() == 0
    assert sorted(i["InstanceId"] for i in members(ec2, "demo", "worker")) == sorted(kept)
    # the diff of a real run matches what check mode announced
    real = ok(playbook(args(WORKERS, count=1, subnet_ids=subnets), diff=True))
    assert real["terminated"] == down["terminated"] and real["diff"] == down["diff"]


def test_throttled_run_instances_is_retried_without_double_launch(playbook, clean_aws, ec2):
    # moto cannot throttle: the endpoint answers RunInstances twice with RequestLimitExceeded (simulated).
    clean_aws.throttle("RunInstances", 2)
    result = ok(playbook(args(WORKERS, count=3)))
    assert clean_aws.calls("RunInstances") == 3
    assert len(result["launched"]) == 3
    assert len(members(ec2, "demo", "worker")) == 3
    # a throttled listing is retried too, and the re-run still changes nothing
    clean_aws.reset_counts()
    clean_aws.throttle("DescribeInstances", 2)
    again = ok(playbook(args(WORKERS, count=3)))
    assert again["changed"] is False and clean_aws.mutating_calls() == 0
    assert clean_aws.calls("DescribeInstances") == 3


def test_partial_launch_failure_converges_on_rerun(playbook, clean_aws, ec2):
    subnets = default_subnets(ec2, 2)
    # A zone without capacity (simulated error answer; not retryable): the other subnet still launches.
    clean_aws.fail("RunInstances", 1, status=400, code="InsufficientInstanceCapacity", message="no capacity in this zone")
    first = failed(playbook(args(WORKERS, count=4, subnet_ids=subnets)))
    assert "InsufficientInstanceCapacity" in first["msg"] or "no capacity" in first["msg"]
    assert len(first["launched"]) == 2
    assert len(members(ec2, "demo", "worker")) == 2
    second = ok(playbook(args(WORKERS, count=4, subnet_ids=subnets)))
    assert len(second["launched"]) == 2 and second["launch_plan"] == [{"subnet_id": subnets[0], "count": 2}]
    found = members(ec2, "demo", "worker")
    assert sorted(i["SubnetId"] for i in found) == sorted(subnets * 2)
    third = ok(playbook(args(WORKERS, count=4, subnet_ids=subnets)))
    assert third["changed"] is False


def test_stopped_members_are_counted_and_started(playbook, clean_aws, ec2):
    ids = ok(playbook(args(WORKERS, count=3)))["launched"]
    ec2.stop_instances(InstanceIds=ids[:1])
    clean_aws.reset_counts()
    result = ok(playbook(args(WORKERS, count=3)))
    assert result["changed"] is True and result["started"] == ids[:1] and result["launched"] == []
    assert clean_aws.calls("StartInstances") == 1 and clean_aws.calls("RunInstances") == 0
    assert all(i["State"]["Name"] == "running" for i in members(ec2, "demo", "worker"))
    # with a surplus, a stopped member goes before any running one
    ec2.stop_instances(InstanceIds=ids[2:3])
    down = ok(playbook(args(WORKERS, count=2)))
    assert down["terminated"] == ids[2:3] and down["started"] == []


def test_terminate_instance_ids_replaces_a_named_member(playbook, clean_aws, ec2):
    ids = ok(playbook(args(WORKERS, count=2)))["launched"]
    replaced = ok(playbook(args(WORKERS, count=2, terminate_instance_ids=[ids[0]])))
    assert replaced["terminated"] == [ids[0]] and len(replaced["launched"]) == 1
    assert sorted(i["InstanceId"] for i in members(ec2, "demo", "worker")) == sorted([ids[1]] + replaced["launched"])
    again = ok(playbook(args(WORKERS, count=2, terminate_instance_ids=[ids[0]])))
    assert again["changed"] is False


def test_wait_timeout_fails_and_lists_instances_not_running(playbook, clean_aws, ec2, monkeypatch):
    # moto starts every instance in "running" at once; to get instances that never reach it, this
    # test patches moto's Instance (the endpoint runs in this process) so t3.nano instances stay "pending".
    from moto.ec2.models import instances as moto_instances

    original_init = moto_instances.Instance.__init__

    def stuck_pending(self, *a, **kw):
        original_init(self, *a, **kw)
        if self.instance_type == "t3.nano":
            self._state = moto_instances.InstanceState("pending", 0)

    monkeypatch.setattr(moto_instances.Instance, "__init__", stuck_pending)
    ok(playbook(args(WORKERS, count=1)))
    result = failed(playbook(args(WORKERS, count=3, instance_type="t3.nano", wait_timeout=6)))
    assert "timed out" in result["msg"]
    assert sorted(result["not_running"]) == sorted(result["launched"]) and len(result["launched"]) == 2
    for instance_id in result["launched"]:
        assert instance_id in result["msg"]
    # wait=false returns at once (and reports the pending state)
    no_wait = ok(playbook(args(WORKERS, count=4, instance_type="t3.nano", wait=False)))
    assert [i["state"] for i in no_wait["instances"] if i["id"] in no_wait["launched"]] == ["pending"]


BAD_ARGS = [
    (args(WORKERS, count=1, cluster="Bad Name"), "invalid cluster name"),
    (args(WORKERS, count=-1), "count must be 0 or more"),
    (args(WORKERS, count=1, role="master"), "value of role must be one of"),
    (args(WORKERS, count=1, boot_server_ips=["10.0.0.4", "10.0.0"]), "not a dotted-quad IPv4"),
    (args(WORKERS, count=1, boot_server_ip="10.0.0.4", boot_server_ips=["10.0.0.5"]), "mutually exclusive"),
    (args(BOOT, count=2, boot_server_ips=["10.0.0.5"]), "are for workers"),
    (args(WORKERS, count=1, boot_server_ip="10.0.0.256"), "not a dotted-quad IPv4"),
    (args(WORKERS, count=1, user_data_extra={"cookie": "abc"}), "must not carry secrets"),
    (args(WORKERS, count=1, user_data_extra={"big": "x" * 17000}), "EC2 allows at most 16384"),
    (args(WORKERS, count=1, user_data_extra={"motd": "hello world"}), "invalid user-data value"),
    (args(WORKERS, count=1, tags={"erlang-role": "boot_server"}), "tags may not set erlang-role"),
    (args(WORKERS, count=1, image_id=None), "image_id is required when count > 0"),
    (args(WORKERS, count=1, node_name="1bad"), "invalid Erlang node name"),
]


def test_bad_arguments_fail_before_any_api_call(playbook, clean_aws):
    run = playbook(*[a for a, dummy in BAD_ARGS])
    assert len(run.results) == len(BAD_ARGS), run
    for (bad, expected), result in zip(BAD_ARGS, run.results):
        assert result.get("failed") and expected in result["msg"], (bad, result.get("msg"))
    assert sum(clean_aws.counts().values()) == 0


def test_root_volume_size_and_type(playbook, clean_aws, ec2):
    result = ok(playbook(args(WORKERS, count=1, volume_size=20, volume_type="gp3")))
    assert clean_aws.calls("DescribeImages") == 1
    root = ec2.describe_images(ImageIds=[IMAGE_ID])["Images"][0]["RootDeviceName"]
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": result["launched"]}])["Volumes"]
    sized = [v for v in volumes if v["Attachments"][0]["Device"] == root]
    assert len(sized) == 1 and sized[0]["Size"] == 20 and sized[0]["VolumeType"] == "gp3"
    # volume tags carry the cluster too
    assert {"Key": "erlang-cluster", "Value": "demo"} in sized[0].get("Tags", [])


def test_amazon_aws_connection_options_are_honoured(playbook, clean_aws, ec2):
    # The environment points at a closed loopback port: only the task's endpoint_url can reach moto.
    dead = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    result = ok(playbook(args(WORKERS, count=1, endpoint_url=clean_aws.url, region="us-east-1",
                              access_key="testing", secret_key="testing"), extra_env=dead))
    assert len(result["launched"]) == 1
    assert [i["InstanceId"] for i in members(ec2, "demo", "worker")] == result["launched"]
    assert clean_aws.calls("RunInstances", region="us-east-1") == 1


def ip_key(ip):
    return tuple(int(part) for part in ip.split("."))


def test_several_boot_servers_spread_over_subnets_and_every_one_is_in_new_workers_user_data(playbook, clean_aws, ec2):
    subnets = default_subnets(ec2, 3)
    boot = ok(playbook(args(BOOT, count=2, subnet_ids=subnets)))
    assert len(boot["launched"]) == 2 and boot["boot_server_ips"] == [] and boot["boot_server_ip"] is None
    assert sorted(i["subnet_id"] for i in boot["instances"]) == subnets[:2]
    # one more goes to the third subnet, the one without a boot server
    third = ok(playbook(args(BOOT, count=3, subnet_ids=subnets)))
    assert third["launch_plan"] == [{"subnet_id": subnets[2], "count": 1}]
    found = members(ec2, "demo", "boot_server")
    assert sorted(i["SubnetId"] for i in found) == subnets
    ips = sorted((i["PrivateIpAddress"] for i in found), key=ip_key)
    workers = ok(playbook(args(WORKERS, count=2, subnet_ids=subnets)))
    assert workers["boot_server_ips"] == ips and workers["boot_server_ip"] == ips[0]
    for instance_id in workers["launched"]:
        data = contract.parse_user_data(user_data_of(ec2, instance_id))
        assert data["ERLANG_BOOT_SERVER_IPS"] == ",".join(ips)
        assert data["ERLANG_BOOT_NODES"] == ",".join("boot@" + ip for ip in ips)
        assert (data["ERLANG_BOOT_SERVER_IP"], data["ERLANG_BOOT_NODE"]) == (ips[0], "boot@" + ips[0])
    # a stopped boot server is not named to new workers
    stopped = [i["InstanceId"] for i in found if i["PrivateIpAddress"] == ips[1]]
    ec2.stop_instances(InstanceIds=stopped)
    more = ok(playbook(args(WORKERS, count=3, subnet_ids=subnets)))
    assert more["boot_server_ips"] == [ips[0], ips[2]]
    assert contract.parse_user_data(user_data_of(ec2, more["launched"][0]))["ERLANG_BOOT_SERVER_IPS"] == ips[0] + "," + ips[2]


def test_lowering_the_boot_server_count_needs_permission(playbook, clean_aws, ec2):
    ok(playbook(args(BOOT, count=2)))
    clean_aws.reset_counts()
    refused = failed(playbook(args(BOOT, count=1)))
    assert "allow_boot_server_termination" in refused["msg"]
    assert clean_aws.mutating_calls() == 0 and len(members(ec2, "demo", "boot_server")) == 2
    lowered = ok(playbook(args(BOOT, count=1, allow_boot_server_termination=True)))
    assert len(lowered["terminated"]) == 1 and len(members(ec2, "demo", "boot_server")) == 1


def test_allow_multiple_boot_servers_is_a_deprecated_no_op(playbook, clean_aws, ec2):
    run = playbook(args(BOOT, count=2, allow_multiple_boot_servers=False))
    assert len(ok(run)["launched"]) == 2
    assert "allow_multiple_boot_servers" in run.proc.stdout + run.proc.stderr  # the deprecation warning
    assert len(members(ec2, "demo", "boot_server")) == 2


def test_given_boot_servers_win_and_take_the_clusters_node_names(playbook, clean_aws, ec2):
    boot = ok(playbook(args(BOOT, node_name="code")))
    boot_ip = boot["instances"][0]["private_ip"]
    chosen = ok(playbook(args(WORKERS, count=1, boot_server_ips=["10.1.2.30", boot_ip, "10.1.2.4"])))
    ips = sorted(["10.1.2.30", boot_ip, "10.1.2.4"], key=ip_key)
    assert chosen["boot_server_ips"] == ips
    data = contract.parse_user_data(chosen["user_data"])
    assert data["ERLANG_BOOT_SERVER_IPS"] == ",".join(ips)
    assert data["ERLANG_BOOT_NODES"] == ",".join(("code@" if ip == boot_ip else "boot@") + ip for ip in ips)
    single = ok(playbook(args(WORKERS, count=2, boot_server_ip="10.1.2.3")))
    assert single["boot_server_ips"] == ["10.1.2.3"]
    assert contract.parse_user_data(single["user_data"])["ERLANG_BOOT_SERVER_IPS"] == "10.1.2.3"
