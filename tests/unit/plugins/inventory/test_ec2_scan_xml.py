# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ec2_scan.compact_response reads the same records from DescribeInstances' XML as botocore's parser gives."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

import pytest

botocore = pytest.importorskip("botocore")
import botocore.parsers  # noqa: E402
import botocore.session  # noqa: E402

from ansible_collections.skunkworks.erlang_ec2.plugins.plugin_utils import ec2_scan  # noqa: E402

# The XML namespace of EC2's answers, as botocore's service model names it (a name, not an address called).
NS = botocore.session.get_session().get_service_model("ec2").metadata["xmlNamespace"].rstrip("/") + "/"

INSTANCE = """
<item>
  <instanceId>{id}</instanceId>
  <imageId>ami-1</imageId>
  <instanceState><code>16</code><name>{state}</name></instanceState>
  <privateDnsName>{private_dns}</privateDnsName>
  <dnsName>{public_dns}</dnsName>
  <instanceType>t3.micro</instanceType>
  <launchTime>2026-11-30T09:00:00.000Z</launchTime>
  <placement><availabilityZone>eu-west-1a</availabilityZone><tenancy>default</tenancy></placement>
  {private_ip}
  {public_ip}
  <networkInterfaceSet><item><privateIpAddress>10.9.9.9</privateIpAddress>
    <attachment><attachTime>2026-11-30T09:00:00.000Z</attachTime></attachment></item></networkInterfaceSet>
  <tagSet>{tags}</tagSet>
</item>"""


def instance(id, state="running", private_dns="ip-10-0-0-1.ec2.internal", public_dns="", private_ip="10.0.0.1", public_ip=None, tags=()):
    return INSTANCE.format(
        id=id, state=state, private_dns=private_dns, public_dns=public_dns,
        private_ip="<privateIpAddress>%s</privateIpAddress>" % private_ip if private_ip else "",
        public_ip="<ipAddress>%s</ipAddress>" % public_ip if public_ip else "",
        tags="".join("<item><key>%s</key><value>%s</value></item>" % kv if kv[1] is not None else "<item><key>%s</key><value/></item>" % kv[0]
                     for kv in tags),
    )


def body(instances, next_token=None, ns=NS):
    reservations = "".join("<item><reservationId>r-%d</reservationId><instancesSet>%s</instancesSet></item>" % (n, "".join(group))
                           for n, group in enumerate(instances))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse%s><requestId>req-1</requestId>'
        "<reservationSet>%s</reservationSet>%s</DescribeInstancesResponse>"
        % (' xmlns="%s"' % ns if ns else "", reservations, "<nextToken>%s</nextToken>" % next_token if next_token else "")
    ).encode("utf-8")


@pytest.fixture(scope="module")
def output_shape():
    return botocore.session.get_session().get_service_model("ec2").operation_model("DescribeInstances").output_shape


def parse(response_dict, shape):
    parsed = botocore.parsers.create_parser("ec2").parse(response_dict, shape)
    return parsed


def both_ways(raw, shape):
    plain = {"status_code": 200, "headers": {}, "body": raw}
    by_botocore = ec2_scan.records_from_pages([parse(copy.deepcopy(plain), shape)])
    customized = {}
    fast = dict(plain)
    ec2_scan.compact_response(response_dict=fast, customized_response_dict=customized)
    page = parse(fast, shape)
    page.update(customized)
    return by_botocore, ec2_scan.records_from_pages([page]), page


CASES = [
    [[instance("i-1", tags=[("erlang-cluster", "demo"), ("erlang-role", "boot_server")], public_ip="3.3.3.3", public_dns="ec2-3.compute")],
     [instance("i-2", tags=[("erlang-cluster", "demo"), ("erlang-role", "worker"), ("empty", None)], private_ip="10.0.0.2"),
      instance("i-3", state="stopped", private_dns="", private_ip=None, tags=[])]],
    [],
]


@pytest.mark.parametrize("ns", [NS, None])
@pytest.mark.parametrize("instances", CASES)
def test_compact_records_equal_botocores(output_shape, instances, ns):
    by_botocore, fast, page = both_ways(body(instances, ns=ns), output_shape)
    assert fast == by_botocore
    assert len(fast) == sum(len(group) for group in instances)
    assert "Reservations" not in page or not page["Reservations"]


def test_next_token_survives_for_the_paginator(output_shape):
    _by_botocore, fast, page = both_ways(body(CASES[0], next_token="tok-2"), output_shape)
    assert page["NextToken"] == "tok-2"
    assert [record[0] for record in fast] == ["i-1", "i-2", "i-3"]


@pytest.mark.parametrize("response", [
    {"status_code": 400, "headers": {}, "body": b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"},
    {"status_code": 200, "headers": {}, "body": b"not xml"},
    {"status_code": 200, "headers": {}, "body": b"<Other/>"},
])
def test_anything_else_is_left_to_botocore(response):
    before = copy.deepcopy(response)
    customized = {}
    ec2_scan.compact_response(response_dict=response, customized_response_dict=customized)
    assert response == before and customized == {}
