# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import stat

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node as en
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import Atom, ErlangNodeError, decode_etf

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
    assert isinstance(pid, en.Opaque) and pid == "<rec@127.0.0.1.80.0>"
    ref = decode_etf(bytes(REF))
    assert isinstance(ref, en.Opaque) and ref.startswith("#Ref<rec@127.0.0.1.")


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
    with pytest.raises(en.EtfError, match=message):
        decode_etf(data)


@pytest.mark.parametrize("value, text", [
    (Atom("w@172.31.0.5"), "'w@172.31.0.5'"),
    (Atom("it's\\"), "'it\\'s\\\\'"),
    (u"say \"hi\"\n\u00e9", '<<"say \\"hi\\"\\x{A}\\x{E9}"/utf8>>'),
    (b"\x00\xff", "<<0,255>>"),
    ([1, (True, None), {Atom("k"): 2.5}], "[1, {true, undefined}, #{'k' => 2.5}]"),
    ((10, 0, 0, 1), "{10, 0, 0, 1}"),
])
def test_literal_quotes_every_value(value, text):
    assert en.literal(value) == text


def test_literal_refuses_unknown_types():
    with pytest.raises(TypeError):
        en.literal(object())


@pytest.mark.parametrize("node, flag", [("w@172.31.0.5", "-name"), ("boot@host.example", "-name"), ("w@localhost", "-sname")])
def test_name_flag_follows_the_host_part(node, flag):
    assert en.name_flag(node) == flag


@pytest.mark.parametrize("node", ["worker", "w@", "@h", "w@h@x", "w x@h", "w@h..x", "w@-h", "w@h;rm", u"w@h\u00e9", ""])
def test_bad_node_names(node):
    with pytest.raises(ErlangNodeError) as info:
        en.validate_node(node)
    assert info.value.kind == en.KIND_BAD_ARGUMENT


def payload(term_bytes):
    return base64.b64encode(bytes(term_bytes)).decode()


def test_parse_output_string_and_long_list_forms():
    ok_tuple = [131, 104, 2, 100, 0, 2, 111, 107, 97, 7]   # {ok, 7}
    encoded = payload(ok_tuple)
    assert en.parse_erl_call_output('{ok, "%s"}' % encoded) == (Atom("ok"), 7)
    as_list = "[" + ", ".join(str(ord(c)) for c in encoded) + "]"
    assert en.parse_erl_call_output("{ok, %s}\n" % as_list) == (Atom("ok"), 7)


@pytest.mark.parametrize("stdout, kind", [
    ('{error, "*** syntax error before: \'end\'"}', en.KIND_SYNTAX),
    ('{error, "Incomplete form (missing .<cr>)??"}', en.KIND_SYNTAX),
    ('{error, "*** eval: {\'EXIT\',{undef,[{nomod,f,[],[]}]}}"}', en.KIND_BADRPC),
    ("{ok, #Bin<1,2,3>}", en.KIND_DECODE),
    ("garbage", en.KIND_DECODE),
    ('{ok, "not base64!"}', en.KIND_DECODE),
])
def test_parse_output_errors(stdout, kind):
    with pytest.raises(ErlangNodeError) as info:
        en.parse_erl_call_output(stdout)
    assert info.value.kind == kind


# erl_call outputs recorded on OTP 25.2.3 (stdout+stderr, exit status).
@pytest.mark.parametrize("returncode, stderr, epmd, kind, words", [
    (-14, "", None, en.KIND_TIMEOUT, "did not answer within 3s"),
    (142, "Alarm clock", None, en.KIND_TIMEOUT, "did not answer within 3s"),
    (1, "erl_call: failed to connect to node w1@127.0.0.1\n", False, en.KIND_NOT_RUNNING, "is not running"),
    (1, "erl_call: failed to connect to node w1@127.0.0.1\n", True, en.KIND_AUTH, "cookie does not match"),
    (1, "erl_call: failed to connect to node w1@127.0.0.1\n", OSError(111, "Connection refused"), en.KIND_UNREACHABLE,
     "epmd on 127.0.0.1 does not answer"),
    (1, "erl_call: can't ei_gethostbyname(no-such-host.invalid)\n", None, en.KIND_UNREACHABLE, "cannot resolve"),
    (1, "<ERROR> get_cookie: can't open cookie fileerl_call: can't create C node (null); 0\n", None, en.KIND_NO_COOKIE, "cookie file"),
    (1, "erl_call: evaluating input failed: SkwResult__ = try ...", None, en.KIND_CONNECTION_LOST, "broke during the call"),
    (2, "something new", None, en.KIND_ERL_CALL, "something new"),
])
def test_maps_recorded_erl_call_failures(monkeypatch, returncode, stderr, epmd, kind, words):
    def fake_epmd(host, name, timeout=2.0, port=None):
        if isinstance(epmd, Exception):
            raise epmd
        return epmd
    monkeypatch.setattr(en, "epmd_lookup", fake_epmd)
    error = en.map_erl_call_failure("w1@127.0.0.1", returncode, "", stderr, 3)
    assert error.kind == kind
    assert words in error.message
    if kind in (en.KIND_NOT_RUNNING, en.KIND_UNREACHABLE, en.KIND_TIMEOUT, en.KIND_CONNECTION_LOST):
        assert kind in en.UNAVAILABLE_KINDS


class Recorder(object):
    """A runner standing in for erl_call: records what it was given, answers {ok, ok}."""

    def __init__(self, stdout=None, returncode=0, stderr=""):
        self.calls = []
        self.stdout = stdout if stdout is not None else '{ok, "%s"}' % payload([131, 104, 2, 100, 0, 2, 111, 107, 100, 0, 2, 111, 107])
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv, data, environ_update):
        home = environ_update["HOME"]
        cookie_path = os.path.join(home, ".erlang.cookie")
        with open(cookie_path) as handle:
            cookie = handle.read()
        self.calls.append(dict(argv=argv, data=data, home=home, cookie=cookie,
                               home_mode=stat.S_IMODE(os.stat(home).st_mode),
                               cookie_mode=stat.S_IMODE(os.stat(cookie_path).st_mode)))
        return self.returncode, self.stdout, self.stderr


def fake_erl_call(tmp_path):
    path = tmp_path / "erl_call"
    path.write_text(u"#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def test_cookie_goes_to_a_private_home_never_to_argv(tmp_path):
    runner = Recorder()
    node = en.ErlangNode("w1@10.0.0.5", runner, cookie="Secret-Cookie-123\n", timeout=4, erl_call=fake_erl_call(tmp_path))
    assert node.call("ok") == "ok"
    call = runner.calls[0]
    assert call["argv"][1:] == ["-R", "-name", "w1@10.0.0.5", "-timeout", "4", "-e"]
    assert "Secret-Cookie-123" not in " ".join(call["argv"]) and "-c" not in call["argv"]
    assert b"Secret-Cookie-123" not in call["data"]
    assert call["cookie"] == "Secret-Cookie-123"
    assert call["home_mode"] == 0o700 and call["cookie_mode"] == 0o400
    assert call["data"].endswith(b".\n") and b"term_to_binary" in call["data"]
    node.close()
    assert not os.path.exists(call["home"])


def test_private_home_is_removed_even_without_close(tmp_path):
    runner = Recorder()
    node = en.ErlangNode("w@h", runner, cookie="c", erl_call=fake_erl_call(tmp_path))
    node.call("ok")
    home = runner.calls[0]["home"]
    del node
    assert not os.path.exists(home)


def test_cookie_file_is_read_and_missing_one_is_clear(tmp_path):
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(u"FromFile\n")
    runner = Recorder()
    with en.ErlangNode("w@h", runner, cookie_file=str(cookie_file), erl_call=fake_erl_call(tmp_path)) as node:
        node.call("ok")
    assert runner.calls[0]["cookie"] == "FromFile"
    with pytest.raises(ErlangNodeError) as info:
        en.ErlangNode("w@h", runner, cookie_file=str(tmp_path / "missing"), erl_call=fake_erl_call(tmp_path))
    assert info.value.kind == en.KIND_NO_COOKIE and "cannot read cookie file" in info.value.message


@pytest.mark.parametrize("cookie", ["", "   ", "has space", u"caf\u00e9", "x" * 256])
def test_bad_cookies_are_refused_without_echoing_them(tmp_path, cookie):
    with pytest.raises(ErlangNodeError) as info:
        en.ErlangNode("w@h", Recorder(), cookie=cookie, erl_call=fake_erl_call(tmp_path))
    assert info.value.kind == en.KIND_NO_COOKIE
    if cookie.strip():
        assert cookie not in info.value.message


def test_exceptions_on_the_node_are_badrpc(tmp_path):
    # {exception, error, boom, <<"boom">>}
    term = [131, 104, 4, 100, 0, 9] + list(b"exception") + [100, 0, 5] + list(b"error") + [100, 0, 4] + list(b"boom") + [109, 0, 0, 0, 4] + list(b"boom")
    runner = Recorder(stdout='{ok, "%s"}' % payload(term))
    with en.ErlangNode("w@h", runner, cookie="c", erl_call=fake_erl_call(tmp_path)) as node:
        with pytest.raises(ErlangNodeError) as info:
            node.call("erlang:error(boom)")
    assert info.value.kind == en.KIND_BADRPC
    assert info.value.message == "{badrpc, w@h}: error:boom"
    assert info.value.details == (Atom("error"), Atom("boom"))


def test_bad_timeout_and_missing_erl_call(tmp_path):
    with pytest.raises(ErlangNodeError, match="timeout"):
        en.ErlangNode("w@h", Recorder(), cookie="c", timeout=0, erl_call=fake_erl_call(tmp_path))
    with pytest.raises(ErlangNodeError, match="not an executable"):
        en.ErlangNode("w@h", Recorder(), cookie="c", erl_call=str(tmp_path / "nope"))


def test_to_text_makes_json_friendly_values():
    term = {Atom("name"): b"x", Atom("nodes"): (Atom("a@h"),), Atom("n"): 1}
    assert en.to_text(term) == {"name": "x", "nodes": ["a@h"], "n": 1}
