# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of skunkworks.erlang_ec2.ec2: no network; DescribeInstances pages recorded from moto."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import botocore.exceptions
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


class Events:
    def __init__(self):
        self.registered = []

    def register(self, event, handler, unique_id=None):
        self.registered.append((event, unique_id))


# DescribeInstances filter names the recorded-answer client understands (others fail the test: no silent pass).
INSTANCE_FIELDS = {"instance-id": "InstanceId", "instance-type": "InstanceType", "private-ip-address": "PrivateIpAddress",
                   "vpc-id": "VpcId", "subnet-id": "SubnetId"}


def matches(instance, filters):
    """EC2's filter semantics on one recorded instance: every filter matches (AND), any of its values (OR)."""
    tags = dict((t["Key"], t["Value"]) for t in instance.get("Tags", ()))
    for f in filters:
        name, values = f["Name"], f["Values"]
        if name.startswith("tag:"):
            ok = tags.get(name[4:]) in values
        elif name == "tag-key":
            ok = any(key in values for key in tags)
        elif name == "instance-state-name":
            ok = instance["State"]["Name"] in values
        else:
            assert name in INSTANCE_FIELDS, "filter %s not understood by the test client" % name
            ok = instance.get(INSTANCE_FIELDS[name]) in values
        if not ok:
            return False
    return True


class RecordedEc2:
    """An EC2 client of one region that answers DescribeInstances from recorded pages, filtered as EC2 would,
    or fails with the given error code; it remembers the filters of every query."""

    def __init__(self, pages, error_code=None):
        self.pages = pages
        self.error_code = error_code
        self.queries = []
        self.meta = type("Meta", (), {})()
        self.meta.events = Events()

    def get_paginator(self, name):
        assert name == "describe_instances"
        return self

    def paginate(self, Filters, PaginationConfig):
        self.queries.append(Filters)
        if self.error_code:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": self.error_code, "Message": "recorded failure"}}, "DescribeInstances")
        for page in self.pages:
            reservations = []
            for reservation in page["Reservations"]:
                instances = [i for i in reservation["Instances"] if matches(i, Filters)]
                if instances:
                    reservations.append(dict(reservation, Instances=instances))
            yield dict(page, Reservations=reservations)


class FakeAws:
    """Stands in for ec2_scan.fetch: the plugin's queries (ec2_scan.build_queries) run by ec2_scan.scan_regions
    against RecordedEc2 clients, without any connection: the recorded region answers from its pages, the
    regions in `errors` ({region: error code}) fail. Remembers what it was asked."""

    def __init__(self, errors=None, pages=None):
        self.calls = []
        self.errors = errors or {}
        self.pages = pages
        self.clients = {}
        self.only_errors = False

    def __call__(self, plugin, server_filters, user_filters, retries, max_concurrency, include_filters=(), exclude_filters=()):
        self.calls.append(dict(server_filters=server_filters, user_filters=user_filters, retries=retries,
                               max_concurrency=max_concurrency, include_filters=include_filters, exclude_filters=exclude_filters))
        region, pages = recorded()
        pages = self.pages or pages
        self.clients = {} if self.only_errors else {region: RecordedEc2(pages)}
        for name, code in self.errors.items():
            self.clients[name] = RecordedEc2([], error_code=code)
        includes, excludes = ec2_scan.build_queries(server_filters, user_filters, include_filters, exclude_filters)
        return ec2_scan.scan_regions(self.clients, includes, max_concurrency, excludes)


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
        assert hostvars["erlang_boot_server_ips"] == [boot_ip]
        assert hostvars["erlang_boot_nodes"] == ["boot@" + boot_ip]
        assert hostvars["erlang_boot_server_hosts"] == [boot_id]
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
    for host_id in hosts_of(inventory, "erlang_cluster_batch_jobs"):
        assert "erlang_boot_server_host" not in inventory.get_host(host_id).vars
        assert inventory.get_host(host_id).vars["erlang_boot_server_hosts"] == []


def test_erlang_join_hostvar_follows_the_tag(source, monkeypatch):
    region, pages = recorded()
    worker_id = instances_by_tag()[("payments", "worker")][0][0]
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] == worker_id:
                    instance["Tags"].append({"Key": "erlang-join", "Value": "self"})
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=pages))
    _plugin, inventory = parse(source())
    assert inventory.get_host(worker_id).vars["erlang_join"] == "self"
    others = [w[0] for w in instances_by_tag()[("payments", "worker")] if w[0] != worker_id]
    assert [inventory.get_host(w).vars["erlang_join"] for w in others] == ["push"] * len(others)


def test_cluster_problems_are_hostvars(source, fake_aws, monkeypatch):
    members = instances_by_tag()
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    warnings = []
    monkeypatch.setattr(plugin.display, "warning", warnings.append)
    _plugin, inventory = parse(source())
    (orphan, _ip), = members[("batch-jobs", "worker")]
    hostvars = inventory.get_host(orphan).vars
    assert hostvars["erlang_cluster_problem"] == "no boot server"
    assert hostvars["erlang_boot_server_ip"] is None and hostvars["erlang_boot_node"] is None
    assert hostvars["erlang_boot_server_ips"] == [] and hostvars["erlang_boot_nodes"] == []
    assert hostvars["erlang_boot_server_hosts"] == [] and "erlang_boot_server_host" not in hostvars
    assert [w for w in warnings if "Erlang cluster" in w] == ["skunkworks.erlang_ec2.ec2: Erlang cluster 'batch-jobs': no boot server"]


def test_two_boot_servers_are_no_problem(source, fake_aws, monkeypatch):
    members = instances_by_tag()
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    warnings = []
    monkeypatch.setattr(plugin.display, "warning", warnings.append)
    _plugin, inventory = parse(source())
    twins = members[("twins", "boot_server")]  # 172.31.0.8 and 172.31.0.9 in the recording
    ips = sorted((ip for _i, ip in twins), key=lambda ip: tuple(int(p) for p in ip.split(".")))
    by_ip = dict((ip, i) for i, ip in twins)
    for twin, _ip in twins:
        hostvars = inventory.get_host(twin).vars
        assert "erlang_cluster_problem" not in hostvars
        assert hostvars["erlang_boot_server_ips"] == ips
        assert hostvars["erlang_boot_nodes"] == ["boot@" + ip for ip in ips]
        assert hostvars["erlang_boot_server_hosts"] == [by_ip[ip] for ip in ips]
        assert (hostvars["erlang_boot_server_ip"], hostvars["erlang_boot_node"], hostvars["erlang_boot_server_host"]) == (
            ips[0], "boot@" + ips[0], by_ip[ips[0]])
    assert not [w for w in warnings if "twins" in w]


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
    fake = FakeAws(errors={"ap-south-1": "InternalError"})
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
    fake = FakeAws(errors={"ap-south-1": "InternalError"})
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
    assert cache_key(source, ansible_host_source="public_dns_name", node_name_template="{role}", hostnames=["tag:Name"],
                     hostvars_prefix="aws_", hostvars_suffix="_x") == base
    changed = [
        dict(regions=["eu-west-1", "us-east-1"]),
        dict(filters={"vpc-id": "vpc-1"}),
        dict(clusters=["payments"]),
        dict(instance_states=["running"]),
        dict(profile="other"),
        dict(assume_role_arn="arn:aws:iam::123456789012:role/x"),
        dict(endpoint_url="http://127.0.0.1:1"),
        dict(access_key="AKIDOTHER"),
        dict(include_filters=[{"tag:Name": "a"}]),
        dict(exclude_filters=[{"tag:Name": "a"}]),
        dict(skip_disabled_regions=False),
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
    ([], ((), (), (), "no boot server")),
    ([("i-0b", "10.0.0.4", "boot")], (("10.0.0.4",), ("boot@10.0.0.4",), ("i-0b",), None)),
    ([("i-0b", None, "boot")], ((), (), (), "boot server i-0b has no private IP address")),
    ([("i-0c", "10.0.0.5", "boot"), ("i-0a", "10.0.0.4", "b2")],
     (("10.0.0.4", "10.0.0.5"), ("b2@10.0.0.4", "boot@10.0.0.5"), ("i-0a", "i-0c"), None)),
    # numerically: .9 before .10 before .100, whatever the instance ids or the listing order say
    ([("i-01", "172.31.0.100", "boot"), ("i-02", "172.31.0.10", "boot"), ("i-03", "172.31.0.9", "boot")],
     (("172.31.0.9", "172.31.0.10", "172.31.0.100"), ("boot@172.31.0.9", "boot@172.31.0.10", "boot@172.31.0.100"),
      ("i-03", "i-02", "i-01"), None)),
    ([("i-0a", "10.0.0.4", "boot"), ("i-0c", None, "boot"), ("i-0b", None, "boot")],
     ((), (), (), "boot servers i-0b, i-0c have no private IP address")),
    ([("i-0a", "10.0.0.4", "boot"), ("i-0b", None, "boot")], ((), (), (), "boot server i-0b has no private IP address")),
])
def test_cluster_boot_servers(servers, expected):
    assert tuple(ec2.cluster_boot_servers(servers)) == expected
    assert tuple(ec2.cluster_boot_servers(servers[::-1])) == expected


def test_prepare_host_vars_of_a_recorded_worker():
    region, records = recorded_records()
    worker_id, worker_ip = instances_by_tag()[("payments", "worker")][0]
    record, = [r for r in records if r[ec2_records.REC_ID] == worker_id]
    boot = ec2.BootServers(("172.31.0.4",), ("boot@172.31.0.4",), ("i-f6675034d82bcf982",), None)
    hostvars = ec2.prepare_host_vars(record, region, "payments", "worker", "api", boot, ec2_records.REC_PUBLIC_IP)
    assert hostvars == {
        "erlang_cluster": "payments",
        "erlang_role": "worker",
        "erlang_node": "api@" + worker_ip,
        "erlang_boot_server_ips": ["172.31.0.4"],
        "erlang_boot_nodes": ["boot@172.31.0.4"],
        "erlang_boot_server_hosts": ["i-f6675034d82bcf982"],
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
    boot = ec2.cluster_boot_servers([])
    hostvars = ec2.prepare_host_vars(record, region, "payments", "boot_server", "boot", boot, ec2_records.REC_PUBLIC_DNS)
    assert hostvars["erlang_cluster_problem"] == "no boot server"
    assert hostvars["erlang_boot_server_ip"] is None and hostvars["erlang_boot_node"] is None
    assert hostvars["erlang_boot_server_ips"] == hostvars["erlang_boot_nodes"] == hostvars["erlang_boot_server_hosts"] == []
    assert hostvars["erlang_join"] is None
    assert "erlang_boot_server_host" not in hostvars and "ansible_host" not in hostvars


# -- hostnames ------------------------------------------------------------------------
def recorded_instance(instance_id):
    for page in recorded()[1]:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] == instance_id:
                    return instance
    raise KeyError(instance_id)


def test_without_hostnames_hosts_are_named_by_instance_id(source, fake_aws):
    _plugin, inventory = parse(source())
    assert sorted(inventory.hosts) == sorted(i for ids in instances_by_tag().values() for i, _ip in ids)


@pytest.mark.parametrize("entry, field", [
    ("private-ip-address", "PrivateIpAddress"),
    ("ip-address", "PublicIpAddress"),
    ("private-dns-name", "PrivateDnsName"),
    ("dns-name", "PublicDnsName"),
    ("instance-id", "InstanceId"),
])
def test_hostnames_from_an_instance_field(source, fake_aws, entry, field):
    _plugin, inventory = parse(source(hostnames=[entry]))
    ids = sorted(i for ids in instances_by_tag().values() for i, _ip in ids)
    assert sorted(inventory.hosts) == sorted(recorded_instance(i)[field] for i in ids)
    for instance_id in ids:
        assert inventory.get_host(recorded_instance(instance_id)[field]).vars["ec2_instance_id"] == instance_id


def test_hostnames_tag_and_duplicates_fall_back_to_instance_ids(source, fake_aws):
    members = instances_by_tag()
    plugin, inventory = parse(source(hostnames=["tag:Name", "private-ip-address"]))
    (boot_id, _ip), = members[("payments", "boot_server")]
    (batch_id, _ip), = members[("batch-jobs", "worker")]
    payments_workers = [i for i, _ip in members[("payments", "worker")]]
    twins = [i for i, _ip in members[("twins", "boot_server")]]
    # unique Name tags name their host
    assert inventory.get_host("payments-boot_server").vars["ec2_instance_id"] == boot_id
    assert inventory.get_host("batch-jobs-worker").vars["ec2_instance_id"] == batch_id
    # a Name two instances share names neither: both fall back to the instance id, not to the next entry
    assert "payments-worker" not in inventory.hosts and "twins-boot_server" not in inventory.hosts
    for instance_id in payments_workers + twins:
        assert inventory.get_host(instance_id).vars["ec2_instance_id"] == instance_id
    assert sorted(inventory.hosts) == sorted(["payments-boot_server", "batch-jobs-worker"] + payments_workers + twins)
    assert hosts_of(inventory, "erlang_cluster_payments") == sorted(["payments-boot_server"] + payments_workers)


def test_duplicate_hostnames_warn_and_do_not_depend_on_order(source, monkeypatch):
    region, pages = recorded()
    warnings = []
    reversed_pages = json.loads(json.dumps(pages))[::-1]
    for page in reversed_pages:
        page["Reservations"] = page["Reservations"][::-1]
    results = []
    for answer in (pages, reversed_pages):
        monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=answer))
        plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
        monkeypatch.setattr(plugin.display, "warning", warnings.append)
        inventory = InventoryData()
        plugin.parse(inventory, DataLoader(), source(hostnames=["tag:Name"]), cache=False)
        results.append(dict((name, inventory.get_host(name).vars["ec2_instance_id"]) for name in inventory.hosts))
    assert results[0] == results[1]
    workers = sorted(i for i, _ip in instances_by_tag()[("payments", "worker")])
    clash = [w for w in warnings if "same name to several instances" in w]
    assert len(clash) == 2
    assert "payments-worker (%s, %s)" % tuple(workers) in clash[0]


def test_an_instance_no_entry_names_is_named_by_its_instance_id(source, fake_aws, monkeypatch):
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    warnings = []
    monkeypatch.setattr(plugin.display, "warning", warnings.append)
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), source(hostnames=["tag:erlang-node-name"]), cache=False)
    workers = [i for i, _ip in instances_by_tag()[("payments", "worker")]]
    # the two payments workers share erlang-node-name "api": instance ids; the others have no such tag
    assert sorted(inventory.hosts) == sorted(i for ids in instances_by_tag().values() for i, _ip in ids)
    assert any("no hostnames entry gives a name to 4 instance(s)" in w for w in warnings)
    assert any("api (%s, %s)" % tuple(sorted(workers)) in w for w in warnings)


def test_hostnames_dict_form_and_tag_variants():
    region, records = recorded_records()
    boot, = [r for r in records if r[ec2_records.REC_TAGS]["Name"] == "payments-boot_server"]
    get = ec2.hostname_getter
    assert get({"name": "private-ip-address", "prefix": "tag:erlang-cluster", "separator": "-"})(boot) == "payments-" + boot[ec2_records.REC_PRIVATE_IP]
    assert get({"name": "private-ip-address", "prefix": "tag:erlang-cluster"})(boot) == "payments_" + boot[ec2_records.REC_PRIVATE_IP]
    # a prefix without value: the name alone (as aws_ec2); a name without value: nothing
    assert get({"name": "instance-id", "prefix": "tag:nope"})(boot) == boot[ec2_records.REC_ID]
    assert get({"name": "tag:nope", "prefix": "instance-id"})(boot) is None
    assert get("tag:nope,erlang-role,Name")(boot) == "boot_server"
    assert get("tag:erlang-role=boot_server")(boot) == "erlang-role_boot_server"
    assert get("tag:erlang-role=worker")(boot) is None


def test_boot_server_host_follows_hostnames(source, fake_aws):
    _plugin, inventory = parse(source(hostnames=[{"name": "tag:erlang-role", "prefix": "tag:erlang-cluster"}, "instance-id"]))
    # payments: one boot server named payments_boot_server; its workers share payments_worker, so instance ids
    for host in hosts_of(inventory, "erlang_cluster_payments"):
        boot_host = inventory.get_host(host).vars["erlang_boot_server_host"]
        assert boot_host == "payments_boot_server"
        assert inventory.get_host(boot_host).vars["erlang_role"] == "boot_server"
    assert "payments_boot_server" in hosts_of(inventory, "erlang_boot_servers")


@pytest.mark.parametrize("hostnames, message", [
    (["private_ip_address"], "unknown hostnames entry 'private_ip_address'"),
    (["web-1"], "unknown hostnames entry 'web-1'"),
    (["tag:Name | lower"], "Jinja2 filters and templates are not supported"),
    (["tag:"], "an empty tag key"),
    ([{"prefix": "tag:env"}], "a hostnames dict needs `name`"),
    ([{"name": "instance-id", "sep": "-"}], "a hostnames dict needs `name`"),
    ([3], "hostnames entries are strings or dicts"),
])
def test_bad_hostnames(source, fake_aws, hostnames, message):
    with pytest.raises(AnsibleParserError, match=message):
        parse(source(hostnames=hostnames))
    assert fake_aws.calls == []


def test_assign_hostnames_settles_a_name_that_is_another_instances_id():
    # i-a is named "i-b" by its tag, i-b has no tag: i-b keeps its id, i-a falls back to its own
    records = [["i-a", None, None, None, None, "running", "t3.micro", "z", {"Name": "i-b"}],
               ["i-b", None, None, None, None, "running", "t3.micro", "z", {}]]
    names, unnamed, clashes = ec2.assign_hostnames([(r,) for r in records], ec2.hostname_getters(["tag:Name"]))
    assert names == {"i-a": "i-a", "i-b": "i-b"}
    assert unnamed == ["i-b"] and clashes == {"i-b": ["i-a", "i-b"]}


# -- hostvars_prefix / hostvars_suffix ---------------------------------------------------
def test_hostvars_prefix_and_suffix_rename_attributes_not_contract_vars(source, fake_aws):
    members = instances_by_tag()
    (boot_id, boot_ip), = members[("payments", "boot_server")]
    worker_id, worker_ip = members[("payments", "worker")][0]
    _plugin, inventory = parse(source(hostvars_prefix="aws_", hostvars_suffix="_x", keyed_groups=[{"key": "aws_ec2_instance_type_x", "prefix": "type"}]))
    hostvars = inventory.get_host(worker_id).vars
    # renamed
    assert hostvars["aws_ec2_state_x"] == "running" and "ec2_state" not in hostvars
    assert hostvars["aws_ec2_instance_type_x"] == "t3.micro" and "ec2_instance_type" not in hostvars
    assert hostvars["aws_ec2_availability_zone_x"] == "eu-west-1a" and "ec2_availability_zone" not in hostvars
    assert hostvars["aws_ec2_region_x"] == "eu-west-1" and hostvars["aws_ec2_private_ip_x"] == worker_ip
    # what roles and playbooks read keeps its name
    assert hostvars["ec2_private_ip"] == worker_ip and hostvars["ec2_region"] == "eu-west-1"
    assert hostvars["ec2_instance_id"] == worker_id and hostvars["ec2_tags"]["erlang-node-name"] == "api"
    assert hostvars["erlang_node"] == "api@" + worker_ip
    assert hostvars["erlang_boot_server_ip"] == boot_ip and hostvars["erlang_boot_server_host"] == boot_id
    assert hostvars["erlang_role"] == "worker" and hostvars["erlang_cluster"] == "payments"
    assert hostvars["ansible_host"] == worker_ip
    assert not [name for name in hostvars if name.startswith("aws_erlang") or name.startswith("aws_ansible")]
    # constructed options see the renamed variables
    assert worker_id in hosts_of(inventory, "type_t3_micro")


@pytest.mark.parametrize("options, message", [
    ({"hostvars_prefix": "aws-"}, "give invalid variable names"),
    ({"hostvars_suffix": " x"}, "give invalid variable names"),
    ({"hostvars_prefix": "1"}, "give invalid variable names"),
])
def test_bad_hostvars_prefix(source, fake_aws, options, message):
    with pytest.raises(AnsibleParserError, match=message):
        parse(source(**options))
    assert fake_aws.calls == []


def test_renames_never_take_a_contract_name(monkeypatch):
    monkeypatch.setattr(ec2, "ATTRIBUTE_VARS", ec2.ATTRIBUTE_VARS + ("ansible",))
    with pytest.raises(ValueError, match="give names the collection uses: ansible_host"):
        ec2.attribute_renames("", "_host")


# -- include_filters / exclude_filters -----------------------------------------------
def test_include_filters_add_hosts_beyond_filters(source, fake_aws):
    members = instances_by_tag()
    (boot_id, _ip), = members[("payments", "boot_server")]
    (batch_id, _ip), = members[("batch-jobs", "worker")]
    # filters alone: the payments boot server only
    _plugin, inventory = parse(source(filters={"instance-id": boot_id}))
    assert sorted(inventory.hosts) == [boot_id]
    _plugin, inventory = parse(source(filters={"instance-id": boot_id}, include_filters=[{"tag:Name": "batch-jobs-worker"}]))
    assert sorted(inventory.hosts) == sorted([boot_id, batch_id])
    # each entry is one more query per region: own filters + entry, without `filters`
    queries = fake_aws.clients["eu-west-1"].queries
    assert len(queries) == 2
    assert {"Name": "instance-id", "Values": [boot_id]} in queries[0]
    assert {"Name": "tag:Name", "Values": ["batch-jobs-worker"]} in queries[1]
    assert not [f for f in queries[1] if f["Name"] == "instance-id"]
    assert {"Name": "tag:erlang-role", "Values": ["boot_server", "worker"]} in queries[1]


def test_include_filters_keep_the_plugins_own_filters(source, fake_aws):
    boot_id, = [i for i, _ip in instances_by_tag()[("payments", "boot_server")]]
    # clusters applies to include queries too: batch-jobs is not in it
    _plugin, inventory = parse(source(clusters=["payments"], filters={"instance-id": boot_id},
                                      include_filters=[{"tag:Name": "batch-jobs-worker"}]))
    assert sorted(inventory.hosts) == [boot_id]


def test_exclude_filters_remove_hosts(source, fake_aws):
    members = instances_by_tag()
    all_ids = sorted(i for ids in members.values() for i, _ip in ids)
    twins = [i for i, _ip in members[("twins", "boot_server")]]
    (batch_id, _ip), = members[("batch-jobs", "worker")]
    _plugin, inventory = parse(source(exclude_filters=[{"tag:erlang-cluster": "twins"}, {"tag:Name": "batch-jobs-worker"}]))
    assert sorted(inventory.hosts) == sorted(set(all_ids) - set(twins) - {batch_id})
    assert "erlang_cluster_twins" not in inventory.groups
    # exclude wins over include
    _plugin, inventory = parse(source(include_filters=[{"tag:Name": "batch-jobs-worker"}], exclude_filters=[{"instance-id": batch_id}]))
    assert batch_id not in inventory.hosts and len(inventory.hosts) == len(all_ids) - 1


def test_exclude_filters_with_clusters_set(source, fake_aws):
    members = instances_by_tag()
    # the entry's tag:erlang-cluster replaces the plugin's in the exclude query (it only widens it)
    _plugin, inventory = parse(source(clusters=["payments", "twins"], exclude_filters=[{"tag:erlang-cluster": "twins"}]))
    assert sorted(inventory.hosts) == sorted(i for key, ids in members.items() if key[0] == "payments" for i, _ip in ids)
    exclude_query = fake_aws.clients["eu-west-1"].queries[1]
    assert [f for f in exclude_query if f["Name"] == "tag:erlang-cluster"] == [{"Name": "tag:erlang-cluster", "Values": ["twins"]}]


@pytest.mark.parametrize("options, message", [
    ({"include_filters": [{"tag:erlang-cluster": "x"}]}, "include_filters must not set tag:erlang-cluster"),
    ({"include_filters": [{"instance-state-name": "stopped"}]}, "include_filters must not set instance-state-name"),
    ({"include_filters": [{}]}, "every include_filters entry must be a non-empty dict"),
    ({"exclude_filters": ["tag:Name"]}, "every exclude_filters entry must be a non-empty dict"),
])
def test_bad_include_exclude_filters(source, fake_aws, options, message):
    with pytest.raises(AnsibleParserError, match=message):
        parse(source(**options))
    assert fake_aws.calls == []


def test_build_queries():
    own = {"tag-key": "erlang-cluster", "instance-state-name": ["running"]}
    includes, excludes = ec2_scan.build_queries(own, {"vpc-id": "v"}, [{"tag:a": "1"}], [{"instance-state-name": "pending", "tag:b": "2"}])
    assert includes == [
        [{"Name": "tag-key", "Values": ["erlang-cluster"]}, {"Name": "instance-state-name", "Values": ["running"]}, {"Name": "vpc-id", "Values": ["v"]}],
        [{"Name": "tag-key", "Values": ["erlang-cluster"]}, {"Name": "instance-state-name", "Values": ["running"]}, {"Name": "tag:a", "Values": ["1"]}],
    ]
    assert excludes == [[{"Name": "tag-key", "Values": ["erlang-cluster"]}, {"Name": "instance-state-name", "Values": ["pending"]},
                         {"Name": "tag:b", "Values": ["2"]}]]


# -- regions the account may not use ------------------------------------------------------
@pytest.mark.parametrize("code", ["OptInRequired", "AuthFailure", "UnauthorizedOperation"])
def test_disabled_region_is_skipped_with_a_warning(source, monkeypatch, code):
    fake = FakeAws(errors={"af-south-1": code})
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    plugin = inventory_loader.get("skunkworks.erlang_ec2.ec2")
    warnings = []
    monkeypatch.setattr(plugin.display, "warning", warnings.append)
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), source(regions=["eu-west-1", "af-south-1"]), cache=False)
    assert sorted(inventory.hosts) == sorted(i for ids in instances_by_tag().values() for i, _ip in ids)
    skipped = [w for w in warnings if "skipped 1 region(s) this account may not use" in w]
    assert len(skipped) == 1 and "af-south-1: ClientError" in skipped[0] and code in skipped[0]
    assert not [w for w in warnings if "PARTIAL" in w]


def test_another_region_error_still_fails(source, monkeypatch):
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(errors={"af-south-1": "OptInRequired", "ap-east-1": "InvalidParameterValue"}))
    with pytest.raises(AnsibleError, match=r"could not describe instances in 1 region\(s\).*ap-east-1: ClientError.*InvalidParameterValue"):
        parse(source(regions=["eu-west-1", "af-south-1", "ap-east-1"]))


def test_disabled_region_errors_fail_when_no_region_answers(source, monkeypatch):
    fake = FakeAws(errors={"af-south-1": "AuthFailure", "me-south-1": "AuthFailure"})
    fake.only_errors = True
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    with pytest.raises(AnsibleError, match=r"could not describe instances in 2 region\(s\)"):
        parse(source(regions=["af-south-1", "me-south-1"]))


def test_skip_disabled_regions_off_makes_them_errors(source, monkeypatch):
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(errors={"af-south-1": "OptInRequired"}))
    with pytest.raises(AnsibleError, match=r"af-south-1: ClientError.*OptInRequired"):
        parse(source(regions=["eu-west-1", "af-south-1"], skip_disabled_regions=False))


def test_a_region_with_a_disabled_and_another_error_fails(source, monkeypatch):
    clients = {"eu-west-1": RecordedEc2(recorded()[1])}
    bad = RecordedEc2([], error_code="OptInRequired")
    clients["af-south-1"] = bad
    includes, excludes = ec2_scan.build_queries({"tag-key": "erlang-cluster"}, {}, [{"tag:a": "1"}], [])
    orig = bad.paginate
    codes = iter(["OptInRequired", "InternalError"])

    def paginate(Filters, PaginationConfig):
        bad.error_code = next(codes)
        return orig(Filters, PaginationConfig)
    bad.paginate = paginate
    results, errors, skipped = ec2_scan.scan_regions(clients, includes, 1, excludes)
    assert sorted(results) == ["eu-west-1"] and skipped == {}
    assert "InternalError" in errors["af-south-1"]


def test_skipped_regions_are_cached(source, monkeypatch, tmp_path):
    fake = FakeAws(errors={"af-south-1": "OptInRequired"})
    monkeypatch.setattr(ec2_scan, "fetch", fake)
    path = source(regions=["eu-west-1", "af-south-1"], cache=True, cache_plugin="ansible.builtin.jsonfile",
                  cache_connection=str(tmp_path / "cache"))
    _plugin, cold = parse(path)
    _plugin, warm = parse(path)
    assert len(fake.calls) == 1
    assert sorted(warm.hosts) == sorted(cold.hosts)


def test_scan_registers_the_xml_reader_once_per_client_before_the_threads():
    clients = {"eu-west-1": RecordedEc2(recorded()[1])}
    includes, excludes = ec2_scan.build_queries({"tag-key": "erlang-cluster"}, {}, [{"tag:a": "1"}, {"tag:b": "2"}], [{"tag:c": "3"}])
    results, errors, skipped = ec2_scan.scan_regions(clients, includes, 8, excludes)
    assert len(clients["eu-west-1"].queries) == 4
    assert len(results["eu-west-1"]) == 6 and errors == {} and skipped == {}
    assert set(clients["eu-west-1"].meta.events.registered) == {("before-parse.ec2.DescribeInstances", "erlang_ec2.compact_response")}


# -- several boot servers, on the recorded shapes -------------------------------------
def pages_with_a_third_twin(ip="172.31.0.10", instance_id="i-000000000000000a1"):
    """The recording plus a copy of a twins boot server at `ip` (its id sorts before the others)."""
    region, pages = recorded()
    twin_id = instances_by_tag()[("twins", "boot_server")][0][0]
    third = json.loads(json.dumps(recorded_instance(twin_id)))
    third.update(InstanceId=instance_id, PrivateIpAddress=ip, PrivateDnsName="ip-%s.eu-west-1.compute.internal" % ip.replace(".", "-"))
    pages[-1]["Reservations"].append({"Instances": [third]})
    return pages


def test_three_boot_servers_are_listed_by_address_numerically_on_every_host(source, monkeypatch):
    twins = instances_by_tag()[("twins", "boot_server")]
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=pages_with_a_third_twin()))
    _plugin, inventory = parse(source(), cache=False)
    by_ip = dict((ip, i) for i, ip in twins + [("i-000000000000000a1", "172.31.0.10")])
    ips = ["172.31.0.8", "172.31.0.9", "172.31.0.10"]  # not the text order, not the instance id order
    assert sorted(by_ip) == sorted(ips)
    assert hosts_of(inventory, "erlang_cluster_twins") == sorted(by_ip.values())
    for host in hosts_of(inventory, "erlang_cluster_twins"):
        hostvars = inventory.get_host(host).vars
        assert hostvars["erlang_boot_server_ips"] == ips
        assert hostvars["erlang_boot_nodes"] == ["boot@" + ip for ip in ips]
        assert hostvars["erlang_boot_server_hosts"] == [by_ip[ip] for ip in ips]
        assert hostvars["erlang_boot_server_ip"] == "172.31.0.8" and hostvars["erlang_boot_server_host"] == by_ip["172.31.0.8"]
        assert "erlang_cluster_problem" not in hostvars
    # the other clusters are not mixed in
    payments_boot, = instances_by_tag()[("payments", "boot_server")]
    worker = instances_by_tag()[("payments", "worker")][0][0]
    assert inventory.get_host(worker).vars["erlang_boot_server_ips"] == [payments_boot[1]]


def test_boot_server_hosts_follow_hostnames(source, monkeypatch):
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=pages_with_a_third_twin()))
    _plugin, inventory = parse(source(hostnames=["private-ip-address"]), cache=False)
    ips = ["172.31.0.8", "172.31.0.9", "172.31.0.10"]
    for ip in ips:
        assert inventory.get_host(ip).vars["erlang_boot_server_hosts"] == ips
        assert inventory.get_host(ip).vars["erlang_boot_server_host"] == "172.31.0.8"


def test_the_boot_server_lists_do_not_depend_on_the_listing_order(source, monkeypatch):
    results = []
    for reverse in (False, True):
        pages = pages_with_a_third_twin()
        if reverse:
            pages = pages[::-1]
            for page in pages:
                page["Reservations"] = page["Reservations"][::-1]
        monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=pages))
        _plugin, inventory = parse(source(), cache=False)
        results.append(dict((name, [inventory.get_host(name).vars[k] for k in (
            "erlang_boot_server_ips", "erlang_boot_nodes", "erlang_boot_server_hosts")]) for name in inventory.hosts))
    assert results[0] == results[1]


def test_a_boot_server_without_a_private_ip_among_several_is_a_problem(source, monkeypatch):
    pages = pages_with_a_third_twin()
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] == "i-000000000000000a1":
                    del instance["PrivateIpAddress"]
    monkeypatch.setattr(ec2_scan, "fetch", FakeAws(pages=pages))
    _plugin, inventory = parse(source(), cache=False)
    for host in hosts_of(inventory, "erlang_cluster_twins"):
        hostvars = inventory.get_host(host).vars
        assert hostvars["erlang_cluster_problem"] == "boot server i-000000000000000a1 has no private IP address"
        assert hostvars["erlang_boot_server_ips"] == [] and hostvars["erlang_boot_server_ip"] is None
        assert "erlang_boot_server_host" not in hostvars
