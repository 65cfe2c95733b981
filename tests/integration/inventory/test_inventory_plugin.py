"""skunkworks.erlang_ec2.ec2 through `ansible-inventory`, against moto's EC2 API over HTTP.

Everything is real except throttling (moto cannot throttle; the endpoint injects
RequestLimitExceeded answers) and the failing or disabled regions (injected error answers).
"""

import pathlib

FAIL_FATAL = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"}


def test_groups_and_hostvars_of_a_cluster(inventory, launch, ec2):
    boot = launch("us-east-1", "demo", "boot_server")[0]
    workers = launch("us-east-1", "demo", "worker", 2, tags={"erlang-node-name": "api"})
    result = inventory.run(inventory.config())
    assert result.rc == 0, result.stderr
    assert result.group("erlang_boot_servers") == [boot]
    assert result.group("erlang_workers") == workers
    assert result.group("erlang_cluster_demo") == sorted([boot] + workers)

    addresses = {}
    for reservation in ec2().describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            addresses[instance["InstanceId"]] = instance["PrivateIpAddress"]
    boot_ip = addresses[boot]
    for host in [boot] + workers:
        hostvars = result.hostvars[host]
        assert hostvars["ansible_host"] == addresses[host]
        assert hostvars["ec2_private_ip"] == addresses[host]
        assert hostvars["ec2_instance_id"] == host
        assert hostvars["ec2_region"] == "us-east-1"
        assert hostvars["ec2_state"] == "running"
        assert hostvars["ec2_instance_type"] == "t3.micro"
        assert hostvars["erlang_cluster"] == "demo"
        assert hostvars["erlang_boot_server_ip"] == boot_ip
        assert hostvars["erlang_boot_node"] == "boot@" + boot_ip
        # the boot server's inventory hostname, so no playbook searches the group for it
        assert hostvars["erlang_boot_server_host"] == boot
        assert "erlang_cluster_problem" not in hostvars
    assert result.hostvars[boot]["erlang_role"] == "boot_server"
    assert result.hostvars[boot]["erlang_node"] == "boot@" + boot_ip
    assert result.hostvars[boot]["ec2_tags"] == {"erlang-cluster": "demo", "erlang-role": "boot_server"}
    for worker in workers:
        assert result.hostvars[worker]["erlang_role"] == "worker"
        # the name part comes from the erlang-node-name tag
        assert result.hostvars[worker]["erlang_node"] == "api@" + addresses[worker]
        assert result.hostvars[worker]["ec2_tags"]["erlang-node-name"] == "api"

    graph = inventory.run(inventory.config(), "--graph")
    assert graph.rc == 0, graph.stderr
    assert "@erlang_cluster_demo:" in graph.stdout and "@erlang_boot_servers:" in graph.stdout
    assert "|--" + boot in graph.stdout


def test_instances_without_both_tags_are_not_listed(inventory, launch, ec2):
    member = launch("us-east-1", "demo", "worker")
    ec2().run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)  # untagged
    ec2().run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "erlang-cluster", "Value": "demo"}]}],
    )
    launch("us-east-1", "demo", "database")  # not an Erlang role
    result = inventory.run(inventory.config())
    assert sorted(result.hostvars) == member


def test_three_regions_each_described_once(inventory, launch, clean_aws):
    ids = {}
    for region, cluster in (("us-east-1", "alpha"), ("eu-west-1", "beta"), ("ap-southeast-2", "gamma")):
        ids[region] = launch(region, cluster, "boot_server") + launch(region, cluster, "worker", 2)
    clean_aws.reset_counts()
    result = inventory.run(inventory.config(regions=["us-east-1", "eu-west-1", "ap-southeast-2"]))
    assert result.rc == 0, result.stderr
    for region, hosts in ids.items():
        for host in hosts:
            assert result.hostvars[host]["ec2_region"] == region
        assert clean_aws.calls("DescribeInstances", region) == 1
    assert sorted(result.hostvars) == sorted(sum(ids.values(), []))
    assert result.group("erlang_cluster_gamma") == sorted(ids["ap-southeast-2"])
    # only the regions asked for: no DescribeRegions, no other region
    assert clean_aws.calls() == 3


def test_clusters_option_selects_clusters(inventory, launch):
    alpha = launch("us-east-1", "alpha", "boot_server") + launch("us-east-1", "alpha", "worker")
    launch("us-east-1", "beta", "boot_server")
    gamma = launch("us-east-1", "gamma", "worker")
    result = inventory.run(inventory.config(clusters=["alpha", "gamma"]))
    assert sorted(result.hostvars) == sorted(alpha + gamma)
    assert "erlang_cluster_beta" not in result.data


def test_filters_option_narrows_the_search(inventory, launch):
    prod = launch("us-east-1", "demo", "worker", 2, tags={"env": "prod"})
    launch("us-east-1", "demo", "worker", 1, tags={"env": "dev"})
    large = launch("us-east-1", "other", "worker", 1, tags={"env": "prod"}, instance_type="m5.large")
    result = inventory.run(inventory.config(filters={"tag:env": "prod"}))
    assert sorted(result.hostvars) == sorted(prod + large)
    result = inventory.run(inventory.config(filters={"tag:env": "prod", "instance-type": ["m5.large"]}))
    assert sorted(result.hostvars) == large


def test_instance_states(inventory, launch, ec2):
    running = launch("us-east-1", "demo", "worker", 2)
    stopped = launch("us-east-1", "demo", "worker")
    terminated = launch("us-east-1", "demo", "worker")
    ec2().stop_instances(InstanceIds=stopped)
    ec2().terminate_instances(InstanceIds=terminated)
    assert sorted(inventory.run(inventory.config()).hostvars) == running  # default: pending + running
    result = inventory.run(inventory.config(instance_states=["stopped"]))
    assert sorted(result.hostvars) == stopped
    assert result.hostvars[stopped[0]]["ec2_state"] == "stopped"
    result = inventory.run(inventory.config(instance_states=["running", "stopped"]))
    assert sorted(result.hostvars) == sorted(running + stopped)


def test_cache_hit_makes_zero_aws_calls(inventory, launch, clean_aws):
    hosts = launch("us-east-1", "demo", "boot_server") + launch("eu-west-1", "demo", "worker", 3)
    # assume_role_arn: aws_ec2 calls STS on every run, cache hit or not; this plugin must not.
    config = inventory.cached_config(regions=["us-east-1", "eu-west-1"], assume_role_arn="arn:aws:iam::123456789012:role/inventory")
    clean_aws.reset_counts()
    cold = inventory.run(config)
    assert cold.rc == 0, cold.stderr
    assert sorted(cold.hostvars) == sorted(hosts)
    assert clean_aws.calls("AssumeRole") == 1
    assert clean_aws.calls("DescribeInstances") == 2

    launch("us-east-1", "demo", "worker")  # a change the cache must hide
    clean_aws.reset_counts()
    warm = inventory.run(config)
    assert warm.rc == 0, warm.stderr
    assert clean_aws.counts() == {}
    assert warm.data == cold.data

    # --flush-cache refreshes it
    clean_aws.reset_counts()
    flushed = inventory.run(config, "--list", "--flush-cache")
    assert len(flushed.hostvars) == len(hosts) + 1
    assert clean_aws.calls("DescribeInstances") == 2


def test_cache_key_changes_with_regions_filters_and_credentials(inventory, launch, clean_aws):
    launch("us-east-1", "demo", "boot_server")
    launch("eu-west-1", "demo", "worker")
    base = inventory.cached_config(regions=["us-east-1"])
    inventory.run(base)
    changed = {
        "regions": inventory.cached_config(regions=["us-east-1", "eu-west-1"]),
        "filters": inventory.cached_config(regions=["us-east-1"], filters={"instance-type": "t3.micro"}),
        "clusters": inventory.cached_config(regions=["us-east-1"], clusters=["demo"]),
        "instance_states": inventory.cached_config(regions=["us-east-1"], instance_states=["running"]),
        "role": inventory.cached_config(regions=["us-east-1"], assume_role_arn="arn:aws:iam::123456789012:role/other"),
    }
    for what, config in changed.items():
        clean_aws.reset_counts()
        result = inventory.run(config)
        assert result.rc == 0, result.stderr
        assert clean_aws.calls("DescribeInstances") >= 1, "changing %s must miss the cache" % what
    clean_aws.reset_counts()
    result = inventory.run(inventory.cached_config(regions=["us-east-1", "eu-west-1"]))
    assert len(result.hostvars) == 2
    assert clean_aws.counts() == {}, "the same options again must hit the cache"
    # other credentials (another account's access key) miss it too
    result = inventory.run(base, env={"AWS_ACCESS_KEY_ID": "AKIDOTHERACCOUNT"})
    assert clean_aws.calls("DescribeInstances") == 1
    clean_aws.reset_counts()
    inventory.run(base)
    assert clean_aws.counts() == {}


def test_failed_region_is_an_error(inventory, launch, clean_aws):
    launch("us-east-1", "demo", "boot_server")
    launch("eu-west-1", "demo", "worker")
    # a client error that is not about the region being disabled for the account
    clean_aws.fail("DescribeInstances", 100, region="eu-west-1", status=400, code="InvalidParameterValue", message="bad request")
    config = inventory.config(regions=["us-east-1", "eu-west-1"])
    result = inventory.run(config, env=FAIL_FATAL)
    assert result.rc != 0
    assert "could not describe instances in 1 region(s)" in result.warnings
    assert "eu-west-1: ClientError" in result.warnings and "InvalidParameterValue" in result.warnings
    # without the fatal setting Ansible goes on, but nothing of this source is in the inventory
    result = inventory.run(config)
    assert "could not describe instances in 1 region(s)" in result.warnings
    assert result.data["_meta"]["hostvars"] == {}


def test_failed_region_with_allow_partial_regions_warns_and_is_not_cached(inventory, launch, clean_aws):
    boot = launch("us-east-1", "demo", "boot_server")
    launch("eu-west-1", "demo", "worker")
    clean_aws.fail("DescribeInstances", 1, region="eu-west-1", status=400, code="InvalidParameterValue", message="bad request")
    config = inventory.cached_config(regions=["us-east-1", "eu-west-1"], allow_partial_regions=True)
    result = inventory.run(config, env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    assert sorted(result.hostvars) == boot
    assert "inventory is PARTIAL, skipped 1 region(s)" in result.warnings and "eu-west-1" in result.warnings
    # the partial answer was not cached: the next run asks again and gets both regions
    clean_aws.reset_counts()
    result = inventory.run(config)
    assert clean_aws.calls("DescribeInstances") == 2
    assert len(result.hostvars) == 2
    assert "PARTIAL" not in result.warnings


def test_throttling_is_retried(inventory, launch, clean_aws):
    hosts = sorted(launch("us-east-1", "demo", "boot_server") + launch("us-east-1", "demo", "worker", 2))
    clean_aws.reset_counts()
    clean_aws.throttle("DescribeInstances", 3, region="us-east-1")
    result = inventory.run(inventory.config(), env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    assert sorted(result.hostvars) == hosts
    assert clean_aws.calls("DescribeInstances", "us-east-1") == 4  # 3 throttled + 1 answered


def test_throttling_beyond_retries_fails(inventory, launch, clean_aws):
    launch("us-east-1", "demo", "boot_server")
    clean_aws.throttle("DescribeInstances", 10, region="us-east-1")
    result = inventory.run(inventory.config(retries=1), env=FAIL_FATAL)
    assert result.rc != 0
    assert "RequestLimitExceeded" in result.warnings
    assert clean_aws.calls("DescribeInstances", "us-east-1") == 2


def ip_key(ip):
    return tuple(int(part) for part in ip.split("."))


def private_ips(ec2, region="us-east-1"):
    return dict((i["InstanceId"], i["PrivateIpAddress"]) for r in ec2(region).describe_instances()["Reservations"] for i in r["Instances"])


def test_a_cluster_without_boot_server_is_reported(inventory, launch):
    orphans = launch("us-east-1", "orphans", "worker", 2)
    result = inventory.run(inventory.config())
    assert result.rc == 0, result.stderr
    assert "Erlang cluster 'orphans': no boot server" in result.warnings
    for host in orphans:
        hostvars = result.hostvars[host]
        assert hostvars["erlang_cluster_problem"] == "no boot server"
        assert hostvars["erlang_boot_server_ip"] is None and hostvars["erlang_boot_node"] is None
        assert hostvars["erlang_boot_server_ips"] == [] and hostvars["erlang_boot_nodes"] == []
        assert hostvars["erlang_boot_server_hosts"] == []
        assert "erlang_boot_server_host" not in hostvars


def test_several_boot_servers_are_lists_on_every_host_of_the_cluster(inventory, launch, ec2):
    trio = launch("us-east-1", "trio", "boot_server", 3)
    trio_worker = launch("us-east-1", "trio", "worker")
    other = launch("us-east-1", "other", "boot_server")
    result = inventory.run(inventory.config())
    assert result.rc == 0, result.stderr
    assert "trio" not in result.warnings
    addresses = private_ips(ec2)
    ips = sorted((addresses[i] for i in trio), key=ip_key)
    by_ip = dict((addresses[i], i) for i in trio)
    assert result.group("erlang_boot_servers") == sorted(trio + other)
    for host in trio + trio_worker:
        hostvars = result.hostvars[host]
        assert "erlang_cluster_problem" not in hostvars
        assert hostvars["erlang_boot_server_ips"] == ips
        assert hostvars["erlang_boot_nodes"] == ["boot@" + ip for ip in ips]
        assert hostvars["erlang_boot_server_hosts"] == [by_ip[ip] for ip in ips]
        assert hostvars["erlang_boot_server_ip"] == ips[0] and hostvars["erlang_boot_node"] == "boot@" + ips[0]
        assert hostvars["erlang_boot_server_host"] == by_ip[ips[0]]
    assert result.hostvars[other[0]]["erlang_boot_server_ips"] == [addresses[other[0]]]
    # with hostnames, the lists name the hosts as the inventory does
    named = inventory.run(inventory.config(hostnames=["private-ip-address"]))
    assert named.rc == 0, named.stderr
    assert named.hostvars[ips[0]]["erlang_boot_server_hosts"] == ips


def test_node_name_template_and_address_choice(inventory, launch, ec2):
    boot = launch("us-east-1", "demo-1", "boot_server", tags={"erlang-node-name": "ignored"})[0]
    result = inventory.run(inventory.config(node_name_template="{cluster}_{role}", ansible_host_source="private_dns_name"))
    assert result.rc == 0, result.stderr
    instance = ec2().describe_instances(InstanceIds=[boot])["Reservations"][0]["Instances"][0]
    hostvars = result.hostvars[boot]
    assert hostvars["erlang_node"] == "demo-1_boot_server@" + instance["PrivateIpAddress"]
    assert hostvars["ansible_host"] == instance["PrivateDnsName"]
    assert result.group("erlang_cluster_demo_1") == [boot]  # sanitized group name


def test_constructed_compose_groups_and_keyed_groups(inventory, launch):
    boot = launch("us-east-1", "demo", "boot_server", tags={"tier": "gold"})
    workers = launch("us-east-1", "demo", "worker", 2)
    result = inventory.run(
        inventory.config(
            compose={"erlang_short_node": "erlang_node.split('@')[0]"},
            groups={"gold": "ec2_tags.tier | default('') == 'gold'"},
            keyed_groups=[{"key": "ec2_instance_type", "prefix": "type"}],
            strict=True,
        )
    )
    assert result.rc == 0, result.stderr
    assert result.group("gold") == boot
    assert result.group("type_t3_micro") == sorted(boot + workers)
    assert result.hostvars[workers[0]]["erlang_short_node"] == "worker"


def test_bad_configuration_is_a_clear_error(inventory):
    cases = [
        ({"clusterz": ["demo"]}, "unknown option(s): clusterz"),
        ({"ansible_host_source": "elastic_ip"}, "ansible_host_source"),
        ({"instance_states": ["runing"]}, "instance_states"),
        ({"node_name_template": "{cluster}-{zone}"}, "node_name_template '{cluster}-{zone}' is not a format string"),
        ({"filters": {"instance-state-name": "stopped"}}, "filters must not set instance-state-name"),
        ({"clusters": ["Bad Name"]}, "invalid cluster name 'Bad Name'"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
    ]
    for options, message in cases:
        result = inventory.run(inventory.config(**options), env=FAIL_FATAL)
        assert result.rc != 0, options
        assert message in result.warnings, (options, result.stderr)


def test_file_name_must_match(inventory, launch):
    launch("us-east-1", "demo", "boot_server")
    result = inventory.run(inventory.config(), name="hosts.yml", env=FAIL_FATAL)
    assert result.rc != 0
    assert "could not be verified by inventory plugin 'skunkworks.erlang_ec2.ec2'" in result.warnings
    result = inventory.run(inventory.config(), name="erlang_ec2.yaml")
    assert result.rc == 0 and len(result.hostvars) == 1


def test_demo_source_shows_the_clusters(inventory, launch):
    boot = launch("us-east-1", "demo", "boot_server")[0]
    workers = launch("us-east-1", "demo", "worker", 3)
    demo = (pathlib.Path(__file__).resolve().parents[3] / "inventory" / "demo.erlang_ec2.yml").read_text()
    result = inventory.run(None, "--graph", raw=demo, name="demo.erlang_ec2.yml", env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    graph = result.stdout
    assert "@erlang_cluster_demo:" in graph and "@erlang_boot_servers:" in graph and "@erlang_workers:" in graph
    for host in [boot] + workers:
        assert "|--" + host in graph


def test_region_not_opted_into_is_skipped_with_a_warning(inventory, launch, clean_aws):
    hosts = launch("us-east-1", "demo", "boot_server") + launch("us-east-1", "demo", "worker")
    clean_aws.fail("DescribeInstances", 100, region="eu-south-2", status=401, code="OptInRequired",
                   message="You are not subscribed to this service.")
    config = inventory.cached_config(regions=["us-east-1", "eu-south-2"])
    result = inventory.run(config, env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    assert sorted(result.hostvars) == sorted(hosts)
    assert "skipped 1 region(s) this account may not use" in result.warnings and "eu-south-2" in result.warnings
    assert "OptInRequired" in result.warnings
    # complete for the account: cached
    clean_aws.reset_counts()
    assert sorted(inventory.run(config).hostvars) == sorted(hosts)
    assert clean_aws.counts() == {}
    # skip_disabled_regions: false makes it an error again
    result = inventory.run(inventory.config(regions=["us-east-1", "eu-south-2"], skip_disabled_regions=False), env=FAIL_FATAL)
    assert result.rc != 0 and "eu-south-2: ClientError" in result.warnings
    # and so does every region refusing (bad credentials look the same)
    clean_aws.fail("DescribeInstances", 100, region="us-east-1", status=401, code="AuthFailure", message="no")
    result = inventory.run(inventory.config(regions=["us-east-1", "eu-south-2"]), env=FAIL_FATAL)
    assert result.rc != 0 and "could not describe instances in 2 region(s)" in result.warnings


def test_hostnames_prefix_and_the_boot_server_host(inventory, launch, ec2):
    boot = launch("us-east-1", "demo", "boot_server", tags={"Name": "demo-boot"})[0]
    workers = launch("us-east-1", "demo", "worker", 2, tags={"Name": "demo-worker"})
    result = inventory.run(inventory.config(hostnames=["tag:Name", "private-ip-address"], hostvars_prefix="aws_"), env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    # the shared Name names neither worker: both by instance id, with a warning
    assert sorted(result.hostvars) == sorted(["demo-boot"] + workers)
    assert "same name to several instances" in result.warnings and "demo-worker (%s, %s)" % tuple(workers) in result.warnings
    assert result.group("erlang_boot_servers") == ["demo-boot"]
    boot_ip = ec2().describe_instances(InstanceIds=[boot])["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    for host in ["demo-boot"] + workers:
        hostvars = result.hostvars[host]
        assert hostvars["erlang_boot_server_host"] == "demo-boot"
        assert hostvars["erlang_boot_server_ip"] == boot_ip
        assert hostvars["aws_ec2_state"] == "running" and "ec2_state" not in hostvars
        assert hostvars["aws_ec2_private_ip"] == hostvars["ec2_private_ip"] == hostvars["ansible_host"]
    assert result.hostvars["demo-boot"]["ec2_instance_id"] == boot


def test_include_and_exclude_filters(inventory, launch, clean_aws):
    prod = launch("us-east-1", "demo", "worker", 2, tags={"env": "prod"})
    dev = launch("us-east-1", "demo", "worker", 1, tags={"env": "dev"})
    launch("us-east-1", "demo", "worker", 1, tags={"env": "test"})
    large = launch("us-east-1", "other", "worker", 1, tags={"env": "prod"}, instance_type="m5.large")
    clean_aws.reset_counts()
    result = inventory.run(inventory.config(filters={"tag:env": "prod"}, include_filters=[{"tag:env": "dev"}],
                                            exclude_filters=[{"instance-type": "m5.large"}]), env=FAIL_FATAL)
    assert result.rc == 0, result.stderr
    assert sorted(result.hostvars) == sorted(prod + dev)
    assert large[0] not in result.hostvars
    assert clean_aws.calls("DescribeInstances", "us-east-1") == 3  # filters, one include, one exclude
