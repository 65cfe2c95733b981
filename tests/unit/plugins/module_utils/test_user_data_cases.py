# -*- coding: utf-8 -*-
"""The shared user-data cases (user_data_cases.json) against the reference reader, cluster.parse_user_data.

The bootstrap escript reads the same cases in tests/integration/bootstrap/test_bootstrap_user_data.py.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import cluster

with open(os.path.join(os.path.dirname(__file__), "user_data_cases.json"), encoding="utf-8") as f:
    CASES = json.load(f)["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parse_user_data_case(case):
    if case.get("error"):
        with pytest.raises(cluster.ClusterContractError):
            cluster.parse_user_data(case["text"])
    else:
        assert cluster.parse_user_data(case["text"]) == case["result"]
        assert cluster.parse_user_data(case["text"].encode("utf-8")) == case["result"]


def test_the_cases_cover_every_outcome():
    assert {"ok", "not ours", "error"} == {
        "error" if c.get("error") else ("not ours" if c["result"] is None else "ok") for c in CASES}
