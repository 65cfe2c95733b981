# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.modules import boot_server_allow_list as bss

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


PARAMS = dict(state="present", exclusive=False)


def test_changes_go_through_the_owner_of_the_persisted_file():
    """erlang_ec2_boot_server runs: one call per change to it, which persists; never erl_boot_server's own."""
    add = bss.change_expression(True, PARAMS, ["10.0.0.3"], ["10.0.0.3"], [])
    assert add.startswith("SkwDone = [{SkwA, erlang_ec2_boot_server:add_slave(SkwA)} || SkwA <- [{10, 0, 0, 3}]], ")
    exact = bss.change_expression(True, dict(PARAMS, exclusive=True), ["10.0.0.2", "10.0.0.3"], ["10.0.0.3"],
                                  [((255, 255, 0, 0), (172, 31, 0, 0))])
    assert exact.startswith("SkwDone = [{set, erlang_ec2_boot_server:set_slaves([{10, 0, 0, 2}, {10, 0, 0, 3}])}], ")
    gone = bss.change_expression(True, dict(PARAMS, state="absent"), ["10.0.0.9"], [], [((255, 255, 255, 255), (10, 0, 0, 9))])
    assert "erlang_ec2_boot_server:delete_slave(SkwA)" in gone and "{{255, 255, 255, 255}, {10, 0, 0, 9}}" in gone
    for expression in (add, exact, gone):
        assert "erl_boot_server:add_slave" not in expression and "delete_subnet" not in expression
        assert expression.endswith("{SkwDone, erl_boot_server:which_slaves()}")


def test_a_plain_erl_boot_server_is_changed_in_memory():
    expression = bss.change_expression(False, dict(PARAMS, exclusive=True), ["10.0.0.3"], ["10.0.0.3"],
                                       [((255, 255, 0, 0), (172, 31, 0, 0))])
    assert "erlang_ec2_boot_server" not in expression
    assert "erl_boot_server:delete_subnet(SkwM, SkwA)" in expression and "erl_boot_server:add_slave(SkwA)" in expression
