# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of skunkworks.erlang_ec2.ec2: no network; DescribeInstances pages recorded from moto."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, inventory_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

if AnsibleCollectionConfig.collection_finder is None:  # plain pytest; ansible-test units sets it up itself
    init_plugin_loader()

from ansible_collections.skunkworks.erlang_ec2.plugins.inventory import ec2
from ansible_collections.skunkworks.erlang_ec2.plugins.inventory.ec2 import InventoryModule
from ansible_collections.skunkworks.erlang_ec2.plugins.plugin_utils import ec2_records, ec2_scan

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "describe_instances_eu-west-1.json")


def recorded():
    with open(FIXTURE) as f:
        data = json.load(f)
    return data["region"], data["pages"]


def instances_by_tag():
    """{(cluster, role): [(instance id, private ip), ...]} from the recorded pages."""
    result = {}
    for page in recorded()[1]:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = dict((t["Key"], t["Value"]) for t in instance["Tags"])
                key = (tags["erlang-cluster"], tags["erlang-role"])
                result.setdefault(key, []).append((instance["InstanceId"], instance["PrivateIpAddress"]))
    return dict((k, sorted(v)) for k, v in result.items())


class FakeAws:
    """Stands in for ec2_scan.fetch: answers with the recorded pages, remembers what it was asked."""

    def __init__(self, errors=None):
        self.calls = []
        self.errors = errors or {}

    def __call__(self, plugin, server_filters, user_filters, retries, max_concurrency):
        self.calls.append(dict(server_filters=server_filters, user_filters=user_filters, retries=retries, max_concurrency=max_concurrency))
        region, pages = recorded()
        return {region: ec2_scan.records_from_pages(pages)}, dict(self.errors)


@pytest.fixture
def fake_aws(monkeypatch):
    fake = FakeAws()
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    return fake


@pytest.fixture
def source(tmp_path):
    """Write a config file; returns its path."""

    def write(name="test.erlang_ec2.yml", **options):
        config = {"plugin": "skunkworks.erlang_ec2.ec2", "regions": ["eu-west-1"]}
        config.update(options)
        path = tmp_path / name
        path.write_text(json.dumps(config))  # JSON is YAML
        return str(path)

    return write


def parse(path, cache=True):
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), path, cache=cache)
    if getattr(plugin, "_cache", None) is not None:
        plugin.update_cache_if_changed()  # what InventoryManager does after parse()
    return plugin, inventory


def hosts_of(inventory, group):
    return sorted(h.name for h in inventory.groups[group].get_hosts())


# -- verify_file --------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("prod.erlang_ec2.yml", True),
        ("prod.erlang_ec2.yaml", True),
        ("erlang_ec2.yml", True),
        ("erlang_ec2.yaml", True),
        ("prod.aws_ec2.yml", False),
        ("proderlang_ec2.yml", False),
        ("erlang_ec2.yml.bak", False),
        ("hosts.yml", False),
    ],
)
def test_verify_file(tmp_path, name, expected):
    path = tmp_path / name
    path.write_text("plugin: skunkworks.erlang_ec2.ec2\n")
    assert InventoryModule().verify_file(str(path)) is expected


def test_verify_file_needs_the_file():
    assert InventoryModule().verify_file("/nonexistent/prod.erlang_ec2.yml") is False


# -- records --------------------------------------------------------------------
def test_records_keep_only_the_fields_used():
    region, pages = recorded()
    records = ec2_scan.records_from_pages(pages)
    assert len(records) == 6
    first = pages[0]["Reservations"][0]["Instances"][0]
    record = [r for r in records if r[ec2_records.REC_ID] == first["InstanceId"]][0]
    assert record[ec2_records.REC_PRIVATE_IP] == first["PrivateIpAddress"]
    assert record[ec2_records.REC_STATE] == "running"
    assert record[ec2_records.REC_ZONE] == first["Placement"]["AvailabilityZone"]
    assert record[ec2_records.REC_TAGS] == dict((t["Key"], t["Value"]) for t in first["Tags"])
    json.dumps(records)  # cacheable as JSON


def test_plugin_module_does_not_import_boto3():
    # A cache hit must not pay for boto3: the plugin reads records through ec2_records only.
    code = (
        "import sys\n"
        "from ansible_collections.skunkworks.erlang_ec2.plugins.inventory import ec2\n"
        "print(sorted(m for m in ('boto3', 'botocore', ec2.__name__.replace('inventory.ec2', 'plugin_utils.ec2_scan')) if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_build_filters_combines_own_and_user_filters():
    filters = ec2_scan.build_filters({"tag-key": "erlang-cluster", "instance-state-name": ["running"]}, {"vpc-id": "vpc-1"})
    assert {"Name": "tag-key", "Values": ["erlang-cluster"]} in filters
    assert {"Name": "instance-state-name", "Values": ["running"]} in filters
    assert {"Name": "vpc-id", "Values": ["vpc-1"]} in filters


# -- options and grouping ------------------------------------------------------------
def test_default_options_and_server_side_filters(source, fake_aws):
    parse(source())
    (call,) = fake_aws.calls
    assert call["server_filters"] == {
        "tag:erlang-role": ["boot_server", "worker"],
        "instance-state-name": ["pending", "running"],
        "tag-key": "erlang-cluster",
    }
    assert call["user_filters"] == {}
    assert call["retries"] == 10 and call["max_concurrency"] == 8


def test_clusters_states_and_filters_options(source, fake_aws):
    parse(source(clusters=["payments"], instance_states=["running"], filters={"vpc-id": "vpc-1"}, max_concurrency=3, retries=2))
    (call,) = fake_aws.calls
    assert call["server_filters"]["tag:erlang-cluster"] == ["payments"]
    assert "tag-key" not in call["server_filters"]
    assert call["server_filters"]["instance-state-name"] == ["running"]
    assert call["user_filters"] == {"vpc-id": "vpc-1"}
    assert (call["retries"], call["max_concurrency"]) == (2, 3)


def test_groups_and_hostvars(source, fake_aws):
    members = instances_by_tag()
    _plugin, inventory = parse(source())
    (boot_id, boot_ip), = members[("payments", "boot_server")]
    workers = members[("payments", "worker")]
    assert hosts_of(inventory, "erlang_cluster_payments") == sorted([boot_id] + [w[0] for w in workers])
    assert hosts_of(inventory, "erlang_cluster_batch_jobs") == [members[("batch-jobs", "worker")][0][0]]
    assert boot_id in hosts_of(inventory, "erlang_boot_servers")
    assert set(w[0] for w in workers) <= set(hosts_of(inventory, "erlang_workers"))
    for worker_id, worker_ip in workers:
        hostvars = inventory.get_host(worker_id).vars
        assert hostvars["erlang_node"] == "api@" + worker_ip  # erlang-node-name tag
        assert hostvars["erlang_boot_server_ip"] == boot_ip
        assert hostvars["erlang_boot_node"] == "boot@" + boot_ip
        assert hostvars["ansible_host"] == worker_ip
        assert hostvars["ec2_region"] == "eu-west-1"
        assert hostvars["ec2_tags"]["Name"] == "payments-worker"
        assert "erlang_cluster_problem" not in hostvars
        assert hostvars["erlang_join"] == "push"  # no erlang-join tag: pushed by the site playbook
    assert inventory.get_host(boot_id).vars["erlang_node"] == "boot@" + boot_ip
    assert inventory.get_host(boot_id).vars["erlang_join"] is None


def test_boot_server_host_names_the_clusters_boot_server_on_every_host(source, fake_aws):
    members = instances_by_tag()
    _plugin, inventory = parse(source())
    (boot_id, boot_ip), = members[("payments", "boot_server")]
    for host_id in hosts_of(inventory, "erlang_cluster_payments"):
        boot_host = inventory.get_host(host_id).vars["erlang_boot_server_host"]
        assert boot_host == boot_id
        # the hostname a play delegates to: the boot server's own vars
        assert inventory.get_host(boot_host).vars["erlang_role"] == "boot_server"
        assert inventory.get_host(boot_host).vars["ec2_private_ip"] == boot_ip
    for problem_cluster in ("erlang_cluster_batch_jobs", "erlang_cluster_twins"):
        for host_id in hosts_of(inventory, problem_cluster):
            assert "erlang_boot_server_host" not in inventory.get_host(host_id).vars


def test_erlang_join_hostvar_follows_the_tag(source, monkeypatch):
    region, pages = recorded()
    worker_id = instances_by_tag()[("payments", "worker")][0][0]
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] == worker_id:
                    instance["Tags"].append({"Key": "erlang-join", "Value": "self"})
    monkeypatch.setattr(ec2_scan, "fetch", lambda *a, **kw: ({region: ec2_scan.records_from_pages(pages)}, {}))
    _plugin, inventory = parse(source())
    assert inventory.get_host(worker_id).vars["erlang_join"] == "self"
    others = [w[0] for w in instances_by_tag()[("payments", "worker")] if w[0] != worker_id]
    assert [inventory.get_host(w).vars["erlang_join"] for w in others] == ["push"] * len(others)


def test_cluster_problems_are_hostvars(source, fake_aws):
    members = instances_by_tag()
    _plugin, inventory = parse(source())
    (orphan, _ip), = members[("batch-jobs", "worker")]
    assert inventory.get_host(orphan).vars["erlang_cluster_problem"] == "no boot server"
    assert inventory.get_host(orphan).vars["erlang_boot_server_ip"] is None
    twins = [t[0] for t in members[("twins", "boot_server")]]
    for twin in twins:
        assert inventory.get_host(twin).vars["erlang_cluster_problem"] == "2 boot servers: %s, %s" % tuple(sorted(twins))
        assert inventory.get_host(twin).vars["erlang_boot_node"] is None


def test_node_name_template_and_ansible_host_source(source, fake_aws):
    members = instances_by_tag()
    _plugin, inventory = parse(source(node_name_template="{cluster}_{role}", ansible_host_source="private_dns_name"))
    (boot_id, boot_ip), = members[("payments", "boot_server")]
    hostvars = inventory.get_host(boot_id).vars
    assert hostvars["erlang_node"] == "payments_boot_server@" + boot_ip
    assert hostvars["ansible_host"].startswith("ip-") and hostvars["ansible_host"] != boot_ip


def test_template_giving_an_invalid_node_name_fails(source, fake_aws):
    with pytest.raises(AnsibleError, match="not a valid Erlang node name"):
        parse(source(node_name_template="{instance_id}.x"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"clusterz": ["a"]}, "unknown option"),
        ({"node_name_template": "{nope}"}, "not a format string"),
        ({"filters": {"tag:erlang-cluster": "a"}}, "filters must not set tag:erlang-cluster"),
        ({"clusters": ["UPPER"]}, "invalid cluster name"),
        ({"retries": -1}, "retries must be at least 0"),
    ],
)
def test_bad_options(source, fake_aws, options, message):
    with pytest.raises(AnsibleParserError, match=message):
        parse(source(**options))
    assert fake_aws.calls == []  # nothing asked of AWS


def test_aliases_are_known_options(source, fake_aws):
    parse(source(aws_region="eu-west-1"))
    assert len(fake_aws.calls) == 1


def test_failed_region_fails_or_warns(source, monkeypatch):
    fake = FakeAws(errors={"ap-south-1": "ClientError: AuthFailure"})
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    with pytest.raises(AnsibleError, match="could not describe instances in 1 region"):
        parse(source())
    _plugin, inventory = parse(source(allow_partial_regions=True))
    assert inventory.groups["erlang_cluster_payments"].get_hosts()


# -- cache ------------------------------------------------------------------------------
def test_cache_hit_does_not_call_aws(source, fake_aws, tmp_path):
    path = source(cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "cache"))
    _plugin, cold = parse(path)
    _plugin, warm = parse(path)
    assert len(fake_aws.calls) == 1
    assert sorted(warm.hosts) == sorted(cold.hosts)
    assert warm.get_host(sorted(warm.hosts)[0]).vars == cold.get_host(sorted(cold.hosts)[0]).vars
    parse(path, cache=False)  # --flush-cache
    assert len(fake_aws.calls) == 2


def test_partial_result_is_not_cached(source, monkeypatch, tmp_path):
    fake = FakeAws(errors={"ap-south-1": "ClientError: AuthFailure"})
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    path = source(cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "cache"), allow_partial_regions=True)
    parse(path)
    parse(path)
    assert len(fake.calls) == 2


def cache_key(source, **options):
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    path = source(**options)
    # The base parse() sets what the plugin reads: loader, and templar on ansible-core 2.17.
    super(type(plugin), plugin).parse(InventoryData(), DataLoader(), path)
    plugin._read_config_data(path)
    return plugin.get_cache_key(path)


def test_cache_key_follows_what_decides_the_answer(source, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    base = cache_key(source)
    assert cache_key(source) == base
    # output-only options do not change the query
    assert cache_key(source, ansible_host_source="public_dns_name", node_name_template="{role}") == base
    changed = [
        dict(regions=["eu-west-1", "us-east-1"]),
        dict(filters={"vpc-id": "vpc-1"}),
        dict(clusters=["payments"]),
        dict(instance_states=["running"]),
        dict(profile="other"),
        dict(assume_role_arn="arn:aws:iam::123456789012:role/x"),
        dict(endpoint_url="http://127.0.0.1:1"),
        dict(access_key="AKIDOTHER"),
    ]
    keys = set([base])
    for options in changed:
        key = cache_key(source, **options)
        assert key not in keys, options
        keys.add(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert cache_key(source) not in keys


def test_cache_key_does_not_carry_the_access_key(source):
    assert "AKIDSECRETISH" not in cache_key(source, access_key="AKIDSECRETISH")


# -- boot-server discovery and hostvars, on the recorded shapes --------------------
def recorded_records():
    region, pages = recorded()
    return region, ec2_scan.records_from_pages(pages)


def default_names(cluster, role, instance_id, region, tags):
    return "boot" if role == "boot_server" else "worker"


def test_collect_hosts_finds_every_clusters_boot_servers():
    region, records = recorded_records()
    members = instances_by_tag()
    hosts, servers = ec2.collect_hosts({region: records}, default_names)
    assert [h[0][ec2_records.REC_ID] for h in hosts] == sorted(i for ids in members.values() for i, _ip in ids)
    assert [(h[1], h[2], h[3], h[4]) for h in hosts if h[0][ec2_records.REC_ID] == members[("payments", "worker")][0][0]] == [
        (region, "payments", "worker", "worker")]
    (boot_id, boot_ip), = members[("payments", "boot_server")]
    assert servers["payments"] == [(boot_id, boot_ip, "boot")]
    assert servers["batch-jobs"] == []
    assert sorted(servers["twins"]) == [(i, ip, "boot") for i, ip in members[("twins", "boot_server")]]


@pytest.mark.parametrize("servers, expected", [
    ([], (None, None, None, "no boot server")),
    ([("i-0b", "10.0.0.4", "boot")], ("10.0.0.4", "boot@10.0.0.4", "i-0b", None)),
    ([("i-0b", None, "boot")], (None, None, None, "boot server i-0b has no private IP address")),
    ([("i-0c", "10.0.0.5", "boot"), ("i-0a", "10.0.0.4", "b2")], (None, None, None, "2 boot servers: i-0a, i-0c")),
])
def test_cluster_boot_server(servers, expected):
    assert tuple(ec2.cluster_boot_server(servers)) == expected


def test_prepare_host_vars_of_a_recorded_worker():
    region, records = recorded_records()
    worker_id, worker_ip = instances_by_tag()[("payments", "worker")][0]
    record, = [r for r in records if r[ec2_records.REC_ID] == worker_id]
    boot = ec2.BootServer("172.31.0.4", "boot@172.31.0.4", "i-f6675034d82bcf982", None)
    hostvars = ec2.prepare_host_vars(record, region, "payments", "worker", "api", boot, ec2_records.REC_PUBLIC_IP)
    assert hostvars == {
        "erlang_cluster": "payments",
        "erlang_role": "worker",
        "erlang_node": "api@" + worker_ip,
        "erlang_boot_server_ip": "172.31.0.4",
        "erlang_boot_node": "boot@172.31.0.4",
        "erlang_boot_server_host": "i-f6675034d82bcf982",
        "erlang_join": "push",
        "ec2_instance_id": worker_id,
        "ec2_region": region,
        "ec2_private_ip": worker_ip,
        "ec2_state": "running",
        "ec2_instance_type": "t3.micro",
        "ec2_availability_zone": "eu-west-1a",
        "ec2_tags": {"erlang-cluster": "payments", "erlang-role": "worker", "Name": "payments-worker", "erlang-node-name": "api"},
        "ansible_host": record[ec2_records.REC_PUBLIC_IP],
    }


def test_prepare_host_vars_of_a_cluster_with_a_problem_and_no_address():
    region, records = recorded_records()
    record = list(records[0])
    record[ec2_records.REC_PUBLIC_DNS] = None
    boot = ec2.cluster_boot_server([])
    hostvars = ec2.prepare_host_vars(record, region, "payments", "boot_server", "boot", boot, ec2_records.REC_PUBLIC_DNS)
    assert hostvars["erlang_cluster_problem"] == "no boot server"
    assert hostvars["erlang_boot_server_ip"] is None and hostvars["erlang_boot_node"] is None
    assert hostvars["erlang_join"] is None
    assert "erlang_boot_server_host" not in hostvars and "ansible_host" not in hostvars
