# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleLookupError
from ansible.template import Templar
from ansible.parsing.dataloader import DataLoader

from ansible_collections.skunkworks.erlang_ec2.plugins.lookup.host_layout import LookupModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT, host_layout


def lookup(variables):
    module = LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader(), variables=variables))
    return module.run([], variables=variables)


def test_no_override_gives_the_default_layout():
    assert lookup({"unrelated": "x"}) == [DEFAULT_LAYOUT]


def test_the_four_root_variables_move_the_layout():
    got = lookup({"erlang_home": "/data/h", "erlang_release_root": "/data/r", "erlang_user": "svc", "erlang_group": "svcs"})
    assert got == [host_layout(home="/data/h", release_root="/data/r", user="svc", group="svcs")]


def test_a_bad_root_is_a_lookup_error():
    with pytest.raises(AnsibleLookupError, match="host_layout: layout root home"):
        lookup({"erlang_home": "relative"})
