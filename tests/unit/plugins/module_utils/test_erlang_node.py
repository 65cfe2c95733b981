# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import stat

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node as en
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError


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
