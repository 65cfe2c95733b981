# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.modules import boot_server_slave as bss

WHICH = [((255, 255, 255, 255), (10, 0, 0, 2)), ((255, 255, 255, 255), (10, 0, 0, 10)), ((255, 255, 0, 0), (172, 31, 0, 0))]


def test_which_slaves_entries_are_addresses_or_subnets():
    entries = bss.decode_slaves(WHICH)
    assert bss.sorted_entries(entries) == ["10.0.0.2", "10.0.0.10", "172.31.0.0/16"]
    assert entries["172.31.0.0/16"] == ((255, 255, 0, 0), (172, 31, 0, 0))


@pytest.mark.parametrize("addresses, state, exclusive, to_add, to_remove", [
    (["10.0.0.2"], "present", False, [], []),
    (["10.0.0.3", "10.0.0.2", "10.0.0.3"], "present", False, ["10.0.0.3"], []),
    (["10.0.0.2"], "present", True, [], ["10.0.0.10", "172.31.0.0/16"]),
    (["10.0.0.10", "10.0.0.9"], "absent", False, [], ["10.0.0.10"]),
    (["10.0.0.9"], "absent", False, [], []),
])
def test_plan(addresses, state, exclusive, to_add, to_remove):
    current = bss.decode_slaves(WHICH)
    assert bss.plan(current, addresses, state, exclusive) == (to_add, to_remove)


class FailJson(Exception):
    pass


class FakeModule(object):
    def fail_json(self, **kwargs):
        raise FailJson(kwargs)


def test_hostnames_and_ipv6_are_refused_before_any_call():
    with pytest.raises(FailJson) as info:
        bss.validate_addresses(FakeModule(), ["10.0.0.1", "host.example", "::1", "1.2.3"])
    result = info.value.args[0]
    assert result["invalid_addresses"] == ["host.example", "::1", "1.2.3"]
    assert "silently ignores" in result["msg"] and "Nothing was changed" in result["msg"]


def test_addresses_get_one_spelling():
    assert bss.validate_addresses(FakeModule(), ["10.0.0.1", "172.31.0.5"]) == ["10.0.0.1", "172.31.0.5"]
