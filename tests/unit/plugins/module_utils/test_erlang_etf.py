# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_etf as etf
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom, decode_etf

# term_to_binary/1 output recorded on OTP 25.2.3 (erl -eval 'io:format("~w", [term_to_binary(T)])').
RECORDED = [
    ((Atom("atom"), Atom("hello")), [131, 104, 2, 100, 0, 4, 97, 116, 111, 109, 100, 0, 5, 104, 101, 108, 108, 111]),
    ((Atom("small_int"), 7), [131, 104, 2, 100, 0, 9, 115, 109, 97, 108, 108, 95, 105, 110, 116, 97, 7]),
    ((Atom("int"), -70000), [131, 104, 2, 100, 0, 3, 105, 110, 116, 98, 255, 254, 238, 144]),
    ((Atom("big"), -(1 << 70)), [131, 104, 2, 100, 0, 3, 98, 105, 103, 110, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 64]),
    ((Atom("float"), 1.5), [131, 104, 2, 100, 0, 5, 102, 108, 111, 97, 116, 70, 63, 248, 0, 0, 0, 0, 0, 0]),
    ((Atom("binary"), b"bin"), [131, 104, 2, 100, 0, 6, 98, 105, 110, 97, 114, 121, 109, 0, 0, 0, 3, 98, 105, 110]),
    ((Atom("string"), [115, 116, 114]), [131, 104, 2, 100, 0, 6, 115, 116, 114, 105, 110, 103, 107, 0, 3, 115, 116, 114]),
    ((Atom("list"), [1, Atom("a"), b""]),
     [131, 104, 2, 100, 0, 4, 108, 105, 115, 116, 108, 0, 0, 0, 3, 97, 1, 100, 0, 1, 97, 109, 0, 0, 0, 0, 106]),
    ((Atom("nested"), (Atom("a"), (Atom("b"), []))),
     [131, 104, 2, 100, 0, 6, 110, 101, 115, 116, 101, 100, 104, 2, 100, 0, 1, 97, 104, 2, 100, 0, 1, 98, 106]),
    ((Atom("map"), {Atom("k"): [Atom("v")]}),
     [131, 104, 2, 100, 0, 3, 109, 97, 112, 116, 0, 0, 0, 1, 100, 0, 1, 107, 108, 0, 0, 0, 1, 100, 0, 1, 118, 106]),
    ((Atom("bool"), [True, False, Atom("undefined")]),
     [131, 104, 2, 100, 0, 4, 98, 111, 111, 108, 108, 0, 0, 0, 3, 100, 0, 4, 116, 114, 117, 101, 100, 0, 5, 102, 97, 108, 115,
      101, 100, 0, 9, 117, 110, 100, 101, 102, 105, 110, 101, 100, 106]),
    ((Atom("unicode_atom"), Atom(u"caf\u00e9")),
     [131, 104, 2, 100, 0, 12, 117, 110, 105, 99, 111, 100, 101, 95, 97, 116, 111, 109, 100, 0, 4, 99, 97, 102, 233]),
]
PID = [131, 88, 100, 0, 13, 114, 101, 99, 64, 49, 50, 55, 46, 48, 46, 48, 46, 49, 0, 0, 0, 80, 0, 0, 0, 0, 107, 5, 111, 94]
REF = [131, 90, 0, 3, 100, 0, 13, 114, 101, 99, 64, 49, 50, 55, 46, 48, 46, 48, 46, 49, 107, 5, 111, 94, 0, 0, 248, 208, 163,
       220, 0, 2, 86, 146, 197, 100]
COMPRESSED = [131, 80, 0, 0, 0, 156, 120, 156, 203, 97, 96, 96, 144, 75, 97, 96, 202, 207, 30, 116, 68, 22, 0, 123, 101, 38, 117]


@pytest.mark.parametrize("expected, data", RECORDED, ids=[str(term[0]) for term, dummy in RECORDED])
def test_decodes_recorded_terms(expected, data):
    assert decode_etf(bytes(data)) == expected


def test_atoms_keep_their_type_and_booleans_become_bool():
    term = decode_etf(bytes(RECORDED[10][1]))
    assert isinstance(term[0], Atom) and term[1][0] is True and term[1][1] is False


def test_utf8_atoms():
    assert decode_etf(bytes([131, 119, 2]) + u"\u00e9".encode("utf-8")) == Atom(u"\u00e9")
    assert decode_etf(bytes([131, 118, 0, 2]) + u"\u00e9".encode("utf-8")) == Atom(u"\u00e9")


def test_pids_and_refs_are_opaque_strings():
    pid = decode_etf(bytes(PID))
    assert isinstance(pid, etf.Opaque) and pid == "<rec@127.0.0.1.80.0>"
    ref = decode_etf(bytes(REF))
    assert isinstance(ref, etf.Opaque) and ref.startswith("#Ref<rec@127.0.0.1.")


def test_compressed_terms():
    assert decode_etf(bytes(COMPRESSED)) == [Atom("ok")] * 30


@pytest.mark.parametrize("data, message", [
    (b"\x83", "truncated"),
    (b"\x82a\x01", "not an Erlang external term"),
    (b"\x83a\x01\x00", "trailing bytes"),
    (b"\x83l\x00\x00\x00\x01a\x01a\x02", "improper lists"),
    (b"\x83\x01", "unsupported external term tag 1"),
    (b"\x83m\x00\x00\x00\x05ab", "truncated"),
    (b"\x83P\x00\x00\x00\x09not-zlib", "compressed term"),
])
def test_rejects_malformed_input(data, message):
    with pytest.raises(etf.EtfError, match=message):
        decode_etf(data)


def test_to_text_makes_json_friendly_values():
    term = {Atom("name"): b"x", Atom("nodes"): (Atom("a@h"),), Atom("n"): 1}
    assert etf.to_text(term) == {"name": "x", "nodes": ["a@h"], "n": 1}
