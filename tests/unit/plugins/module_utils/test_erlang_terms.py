# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal


@pytest.mark.parametrize("value, text", [
    (Atom("w@172.31.0.5"), "'w@172.31.0.5'"),
    (Atom("it's\\"), "'it\\'s\\\\'"),
    (u"say \"hi\"\n\u00e9", '<<"say \\"hi\\"\\x{A}\\x{E9}"/utf8>>'),
    (b"\x00\xff", "<<0,255>>"),
    ([1, (True, None), {Atom("k"): 2.5}], "[1, {true, undefined}, #{'k' => 2.5}]"),
    ((10, 0, 0, 1), "{10, 0, 0, 1}"),
])
def test_literal_quotes_every_value(value, text):
    assert literal(value) == text


def test_literal_refuses_unknown_types():
    with pytest.raises(TypeError):
        literal(object())
