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


def describe_region(client, filters):
    """Every matching instance of one region, as compact records."""
    client.meta.events.register("before-parse.ec2.DescribeInstances", compact_response, unique_id="erlang_ec2.compact_response")
    paginator = client.get_paginator("describe_instances")
    return records_from_pages(paginator.paginate(Filters=filters, PaginationConfig={"PageSize": PAGE_SIZE}))


def scan_regions(clients, filters, max_concurrency):
    """Describe every region concurrently (at most max_concurrency at once).

    Returns ({region: [record, ...]}, {region: error message}); a region either has its
    complete list of records or an error, never a part of one.
    """
    results, errors = {}, {}
    regions = sorted(clients)
    workers = max(1, min(max_concurrency, len(regions)))

    def one(region):
        try:
            return region, describe_region(clients[region], filters), None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            return region, None, "%s: %s" % (type(e).__name__, e)

    if workers == 1:
        outcomes = [one(region) for region in regions]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="erlang_ec2") as pool:
            outcomes = list(pool.map(one, regions))
    for region, records, error in outcomes:
        if error is None:
            results[region] = records
        else:
            errors[region] = error
    return results, errors


def fetch(plugin, server_filters, user_filters, retries, max_concurrency):
    """Connect with the plugin's options and scan its regions; ({region: records}, {region: error})."""
    connection = AwsConnection(plugin).start()
    regions = connection.regions()
    if not regions:
        raise AnsibleError("no region to scan: set the `regions` option")
    clients = connection.ec2_clients(regions, retries, max_pool_connections=max(10, max_concurrency))
    return scan_regions(clients, build_filters(server_filters, user_filters), max_concurrency)
