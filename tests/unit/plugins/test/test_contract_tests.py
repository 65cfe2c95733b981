# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.test import contract as contract_tests

TESTS = contract_tests.TestModule().tests()


@pytest.mark.parametrize("value, ok", [
    ("demo", True), ("0a", True), ("a_b-c", True), ("a" * 63, True),
    ("", False), ("Demo", False), ("-demo", False), ("_demo", False), ("a" * 64, False), ("de mo", False),
    (None, False), (7, False),
])
def test_cluster_name(value, ok):
    assert TESTS["cluster_name"](value) is ok


@pytest.mark.parametrize("value, ok", [
    ("worker", True), ("W", True), ("a_b-1", True), ("a" * 64, True),
    ("", False), ("1worker", False), ("_w", False), ("a" * 65, False), ("w@10.0.0.1", False), ("w.x", False),
    (None, False),
])
def test_node_name_part(value, ok):
    assert TESTS["node_name"](value) is ok


@pytest.mark.parametrize("value, host, ok", [
    ("worker@10.0.0.5", "10.0.0.5", True),
    ("worker@10.0.0.5", "10.0.0.6", False),
    ("worker@10.0.0.50", "10.0.0.5", False),
    ("worker@10x0.0.5", "10.0.0.5", False),
    ("1worker@10.0.0.5", "10.0.0.5", False),
    ("worker", "10.0.0.5", False),
    ("worker@10.0.0.5", True, True),
    ("worker@10.0.0.256", True, False),
    ("worker@host", True, False),
    ("worker@10.0.0.5@x", True, False),
    ("@10.0.0.5", True, False),
])
def test_node_name_with_host(value, host, ok):
    assert TESTS["node_name"](value, host=host) is ok


@pytest.mark.parametrize("value, ok", [
    ("10.0.0.1", True), ("255.255.255.255", True), ("0.0.0.0", True),
    ("256.0.0.1", False), ("10.0.0", False), ("10.0.0.01", False), ("10.0.0.1 ", False), ("a.b.c.d", False),
    (None, False),
])
def test_ipv4(value, ok):
    assert TESTS["ipv4"](value) is ok


def test_reject_keeps_only_bad_nodes():
    nodes = ["worker@10.0.0.5", "bad", "w@999.0.0.1"]
    assert [n for n in nodes if not TESTS["node_name"](n, host=True)] == ["bad", "w@999.0.0.1"]
