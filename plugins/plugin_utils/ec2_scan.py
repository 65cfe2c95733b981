# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS side of the skunkworks.erlang_ec2.ec2 inventory plugin.

Imported only when the plugin has to call AWS (never on a cache hit), so that a cache hit
does not even pay for importing boto3. Connection options (profile, keys, session token,
endpoint_url, assume_role_arn, aws_config, ...) are read by amazon.aws's AWSInventoryBase and
plugin_utils.botocore, exactly as amazon.aws.aws_ec2 reads them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from concurrent.futures import ThreadPoolExecutor
from xml.etree import ElementTree

try:
    import boto3
    import botocore
    import botocore.config
except ImportError:
    pass  # reported by AWSInventoryBase.require_aws_sdk()

from ansible.errors import AnsibleError

from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list
from ansible_collections.amazon.aws.plugins.plugin_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase

from ansible_collections.skunkworks.erlang_ec2.plugins.plugin_utils.ec2_records import REC_ID

# DescribeInstances' largest page.
PAGE_SIZE = 1000


def instance_record(instance):
    """The few fields the inventory uses, from one DescribeInstances instance dict (indexes: ec2_records)."""
    get = instance.get
    return [
        instance["InstanceId"],
        get("PrivateIpAddress"),
        get("PublicIpAddress"),
        get("PrivateDnsName") or None,
        get("PublicDnsName") or None,
        (get("State") or {}).get("Name"),
        get("InstanceType"),
        (get("Placement") or {}).get("AvailabilityZone"),
        {tag["Key"]: tag["Value"] for tag in get("Tags") or ()},
    ]


def records_from_pages(pages):
    """Compact records from DescribeInstances response pages (already compact when compact_response made them)."""
    records = []
    append = records.append
    for page in pages:
        compact = page.get(RECORDS_KEY)
        if compact is not None:
            records.extend(compact)
            continue
        for reservation in page.get("Reservations", ()):
            for instance in reservation.get("Instances", ()):
                append(instance_record(instance))
    return records


# The page key under which compact_response hands its records to the paginator.
RECORDS_KEY = "ErlangEc2Records"
# DescribeInstances' wire (EC2 query protocol) names of the fields an instance record keeps.
_XML_FIELDS = ("instanceId", "privateIpAddress", "ipAddress", "privateDnsName", "dnsName")


def _xml_instance_record(item, prefix):
    """instance_record() of one <instancesSet><item> element (tags in Clark notation: prefix + name)."""
    def text(*names):
        node = item
        for name in names:
            node = node.find(prefix + name)
            if node is None:
                return None
        return node.text or ""

    values = [text(name) for name in _XML_FIELDS]
    tags = {}
    for tag in item.iterfind(prefix + "tagSet/" + prefix + "item"):
        key, value = tag.find(prefix + "key"), tag.find(prefix + "value")
        if key is not None:
            tags[key.text or ""] = (value.text or "") if value is not None else None
    return [
        values[0], values[1], values[2], values[3] or None, values[4] or None,
        text("instanceState", "name"), text("instanceType"), text("placement", "availabilityZone"), tags,
    ]


def compact_response(response_dict, customized_response_dict, **kwargs):
    """botocore `before-parse.ec2.DescribeInstances` handler: keep only what the inventory uses.

    botocore turns every field of every instance into Python objects (timestamps through dateutil),
    most of the plugin's CPU time. This reads the few fields of instance_record() straight from the
    XML (C ElementTree), hands them over as the page's RECORDS_KEY, and leaves botocore a body with
    only the request id and the next token. Anything unexpected (an error, another protocol) is left
    to botocore untouched.
    """
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes) or not body.lstrip().startswith(b"<"):
        return
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return
    if not root.tag.endswith("DescribeInstancesResponse"):
        return
    prefix = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    path = "/".join(prefix + name for name in ("reservationSet", "item", "instancesSet", "item"))
    records = [_xml_instance_record(item, prefix) for item in root.iterfind(path)]
    kept = ElementTree.Element(root.tag)
    for name in ("requestId", "nextToken"):
        node = root.find(prefix + name)
        if node is not None:
            kept.append(node)
    customized_response_dict[RECORDS_KEY] = records
    response_dict["body"] = ElementTree.tostring(kept)


def build_filters(server_filters, user_filters):
    """EC2 filters: the plugin's own (tags, states) plus the user's `filters` option."""
    return ansible_dict_to_boto3_filter_list(server_filters) + ansible_dict_to_boto3_filter_list(user_filters or {})


def build_queries(server_filters, user_filters, include_filters=(), exclude_filters=()):
    """The DescribeInstances filter lists of one region: ([include queries], [exclude queries]).

    As amazon.aws.aws_ec2: the first include query is the plugin's own filters plus `filters`; every
    `include_filters` entry is one more query (the plugin's own filters plus that entry, without
    `filters`); every `exclude_filters` entry is a query whose instances are removed. An exclude query
    keeps the plugin's own filters only for the keys the entry does not set: that can only widen it,
    and what it matches outside the include queries' answer removes nothing.
    """
    includes = [build_filters(server_filters, user_filters)]
    includes += [build_filters(server_filters, entry) for entry in include_filters]
    excludes = []
    for entry in exclude_filters:
        merged = dict(server_filters)
        merged.update(entry)
        excludes.append(ansible_dict_to_boto3_filter_list(merged))
    return includes, excludes


def combine(included, excluded):
    """One region's records: those of every include query (each instance once), less the excluded ids."""
    drop = set(record[REC_ID] for records in excluded for record in records)
    seen = set()
    result = []
    for records in included:
        for record in records:
            instance_id = record[REC_ID]
            if instance_id not in seen and instance_id not in drop:
                seen.add(instance_id)
                result.append(record)
    return result


# DescribeInstances errors that mean "this account may not use this region" rather than a fault:
# a region it has not opted into (AuthFailure is what EC2 answers there; OptInRequired for some calls)
# or one an IAM/SCP policy denies.
REGION_UNAVAILABLE_CODES = frozenset(("OptInRequired", "AuthFailure", "UnauthorizedOperation"))


def region_unavailable(error):
    """Whether a botocore exception says the region is not available to the account."""
    response = getattr(error, "response", None) or {}
    return (response.get("Error") or {}).get("Code") in REGION_UNAVAILABLE_CODES


class AwsConnection(AWSInventoryBase):
    """amazon.aws's inventory plumbing (options, assume role, region discovery) for our plugin.

    It reads the options of the plugin that owns it, templated the way AWSInventoryBase
    templates them, and fails with AnsibleError like amazon.aws's plugins.
    """

    def __init__(self, plugin):
        super().__init__()
        self._plugin = plugin
        self.ansible_name = plugin.ansible_name
        self.loader = plugin.loader
        self.inventory = plugin.inventory

    @property
    def templar(self):
        return self._plugin.templar

    def get_options(self, *args):
        return self.TemplatedOptions(self.templar, self._plugin.get_options())

    def get_option(self, option, hostvars=None):
        return self.TemplatedOptions(self.templar, {option: self._plugin.get_option(option)}).get(option)

    def start(self):
        self.require_aws_sdk()
        self._set_frozen_credentials()  # AssumeRole, when assume_role_arn is set
        return self

    def regions(self):
        """The `regions` option, or every region DescribeRegions lists (as aws_ec2 does)."""
        return self._boto3_regions(service="ec2")

    def ec2_clients(self, regions, retries, max_pool_connections):
        """One EC2 client per region, all from ONE boto3 session.

        amazon.aws's boto3_conn builds a new session per client, which parses the EC2 service
        model again for every region (about 0.1 s of CPU each); clients of one session share it.
        Throttling (RequestLimitExceeded and friends) is retried per request by botocore's
        "standard" retry mode with exponential backoff and jitter, so a throttled page does not
        restart the whole pagination; `aws_config` from the options still wins.
        """
        region, endpoint_url, params = get_aws_connection_info(self)
        params = dict(params)
        params.update(self._frozen_credentials)
        profile = params.pop("profile_name", None)
        config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": retries + 1},
            max_pool_connections=max_pool_connections,
        )
        user_config = params.pop("aws_config", None)
        if user_config is not None:
            config = config.merge(user_config)
        try:
            session = boto3.session.Session(profile_name=profile)
            return dict(
                (name, session.client("ec2", region_name=name, endpoint_url=endpoint_url, config=config, **params))
                for name in regions
            )
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            self.fail_aws("Couldn't connect to AWS", exception=e)


def read_compact(client):
    """Have the client's DescribeInstances answers parsed by compact_response (once per client)."""
    client.meta.events.register("before-parse.ec2.DescribeInstances", compact_response, unique_id="erlang_ec2.compact_response")


def describe_region(client, filters):
    """Every matching instance of one region, as compact records."""
    read_compact(client)
    paginator = client.get_paginator("describe_instances")
    return records_from_pages(paginator.paginate(Filters=filters, PaginationConfig={"PageSize": PAGE_SIZE}))


def scan_regions(clients, includes, max_concurrency, excludes=()):
    """Run every query in every region concurrently (at most max_concurrency paginations at once).

    `includes` and `excludes` are lists of DescribeInstances filter lists (build_queries): a region's
    records are those of its include queries less those of its exclude queries (combine).
    Returns ({region: [record, ...]}, {region: error message}, {region: error message of a region
    the account may not use}); a region has either its complete list of records or one error, never
    a part of one. A region with both kinds of error counts as failed.
    """
    queries = [("include", query) for query in includes] + [("exclude", query) for query in excludes]
    regions = sorted(clients)
    tasks = [(region, kind, query) for region in regions for kind, query in queries]
    workers = max(1, min(max_concurrency, len(tasks)))
    for region in regions:
        # Before the threads: several queries of a region share its client, and registering is not atomic.
        read_compact(clients[region])

    def one(task):
        region, _kind, query = task
        try:
            return describe_region(clients[region], query), None, False
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            return None, "%s: %s" % (type(e).__name__, e), region_unavailable(e)

    if workers == 1:
        outcomes = [one(task) for task in tasks]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="erlang_ec2") as pool:
            outcomes = list(pool.map(one, tasks))
    answers = dict((region, {"include": [], "exclude": []}) for region in regions)
    failed, unavailable = {}, {}
    for (region, kind, _query), (records, error, denied) in zip(tasks, outcomes):
        if error is None:
            answers[region][kind].append(records)
        elif denied:
            unavailable.setdefault(region, error)
        else:
            failed.setdefault(region, error)
    results, errors, skipped = {}, {}, {}
    for region in regions:
        if region in failed:
            errors[region] = failed[region]
        elif region in unavailable:
            skipped[region] = unavailable[region]
        else:
            results[region] = combine(answers[region]["include"], answers[region]["exclude"])
    return results, errors, skipped


def fetch(plugin, server_filters, user_filters, retries, max_concurrency, include_filters=(), exclude_filters=()):
    """Connect with the plugin's options and scan its regions.

    Returns ({region: records}, {region: error}, {region: error of a region the account may not use}).
    """
    connection = AwsConnection(plugin).start()
    regions = connection.regions()
    if not regions:
        raise AnsibleError("no region to scan: set the `regions` option")
    clients = connection.ec2_clients(regions, retries, max_pool_connections=max(10, max_concurrency))
    includes, excludes = build_queries(server_filters, user_filters, include_filters, exclude_filters)
    return scan_regions(clients, includes, max_concurrency, excludes)
