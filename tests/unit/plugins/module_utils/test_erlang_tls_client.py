# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The framing between the control layer and its TLS client node, the line reader, and the sharing of clients
(module_utils/erlang_tls_client.py). The client node itself runs in tests/integration/erlang_tls."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import stat
import threading
import time

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_tls_client as tc

TAG = "skw-tls-0123abcd"


def reply(request_id, status, stdout, stderr, tag=TAG):
    """A reply line as the client node writes it (CLIENT's Answer)."""
    fields = [tag, str(request_id), str(status), base64.b64encode(stdout.encode("utf-8")).decode(),
              base64.b64encode(stderr.encode("utf-8")).decode()]
    return (" ".join(fields) + "\n").encode("ascii")


def test_request_line_carries_the_expression_in_base64():
    line = tc.encode_request(7, "w1@10.0.0.5", 30, 'X = "héllo €",\n{ok, X}.\n')
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.count(b" ") == 3
    request_id, timeout, node, encoded = line.rstrip(b"\n").split(b" ")
    assert (request_id, timeout, node) == (b"7", b"30", b"w1@10.0.0.5")
    assert base64.b64decode(encoded, validate=True).decode("utf-8") == 'X = "héllo €",\n{ok, X}.\n'


def test_request_line_of_an_empty_expression():
    assert tc.encode_request(0, "a@h", 1, "") == b"0 1 a@h \n"


@pytest.mark.parametrize("request_id, node, timeout", [
    (-1, "a@h", 1), ("1", "a@h", 1), (1, "a@h", 0), (1, "a@h", 1.5), (1, "", 1), (1, "a b@h", 1), (1, "a@h\n", 1),
])
def test_request_line_refuses_what_would_break_the_frame(request_id, node, timeout):
    with pytest.raises(ValueError):
        tc.encode_request(request_id, node, timeout, "ok")


def test_reply_line_is_decoded():
    stdout = '{ok, "g2gCZAACb2tkAAJvaw=="}\n'
    assert tc.parse_reply(reply(3, 0, stdout, ""), TAG) == (3, 0, stdout, "")
    assert tc.parse_reply(reply(4, 142, "", "Alarm clock\n"), TAG) == (4, 142, "", "Alarm clock\n")
    assert tc.parse_reply(reply(5, 0, '{error, "é"}', "").replace(b"\n", b"\r\n"), TAG) == (5, 0, '{error, "é"}', "")


@pytest.mark.parametrize("line", [
    b"\n",
    b"noise printed by the node\n",
    reply(1, 0, "x", "", tag="skw-tls-other"),                 # another client's tag, or a fake one
    reply(1, 0, "x", "")[:-1] + b" extra\n",                 # too many fields
    TAG.encode() + b" 1 0 AAAA\n",                           # too few
    TAG.encode() + b" one 0 AA== AA==\n",                    # id not a number
    TAG.encode() + b" 1 zero AA== AA==\n",
    TAG.encode() + b" 1 0 not-base64! AA==\n",
    TAG.encode() + b" 1 0 QUJD AA=\n",                       # bad padding
])
def test_other_lines_are_not_replies(line):
    assert tc.parse_reply(line, TAG) is None


def test_acknowledgement_line():
    assert tc.parse_ack((TAG + " 12 ack\n").encode(), TAG) == 12
    assert tc.parse_ack((TAG + " 12 ack\r\n").encode(), TAG) == 12
    for line in (b"skw-tls-other 12 ack\n", (TAG + " x ack\n").encode(), (TAG + " 12 nack\n").encode(),
                 (TAG + " -1 ack\n").encode(), (TAG + " 12\n").encode(), reply(12, 0, "", "")):
        assert tc.parse_ack(line, TAG) is None
    assert tc.parse_reply((TAG + " 12 ack\n").encode(), TAG) is None


def test_line_reader_joins_partial_writes_and_splits_chunks():
    read_fd, write_fd = os.pipe()
    try:
        reader = tc.LineReader(read_fd)
        os.write(write_fd, b"first ha")
        assert reader.readline(time.monotonic() + 0.2) is None          # no whole line yet
        os.write(write_fd, b"lf\nsecond\nthi")
        deadline = time.monotonic() + 2
        assert reader.readline(deadline) == b"first half\n"
        assert reader.readline(deadline) == b"second\n"
        os.write(write_fd, b"rd\n")
        assert reader.readline(deadline) == b"third\n"
        os.write(write_fd, b"unterminated")
        os.close(write_fd)
        write_fd = None
        assert reader.readline(deadline) == b"unterminated"            # what is left at end of file
        assert reader.readline(deadline) == b""
    finally:
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)


def test_line_reader_deadline_is_kept():
    read_fd, write_fd = os.pipe()
    try:
        started = time.monotonic()
        assert tc.LineReader(read_fd).readline(started + 0.3) is None
        assert 0.25 < time.monotonic() - started < 2
        assert tc.LineReader(read_fd).readline(started - 1) is None
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_write_all_writes_more_than_a_pipe_holds():
    read_fd, write_fd = os.pipe()
    data = os.urandom(1024 * 1024)
    received = []

    def drain():
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return
            received.append(chunk)
    thread = threading.Thread(target=drain)
    thread.start()
    tc.write_all(write_fd, data)
    os.close(write_fd)
    thread.join(10)
    os.close(read_fd)
    assert b"".join(received) == data


def test_private_home_holds_only_the_cookie(tmp_path, monkeypatch):
    monkeypatch.setattr(tc.tempfile, "tempdir", str(tmp_path))
    home = tc.private_home("Secret-Cookie-1")
    try:
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        path = os.path.join(home, ".erlang.cookie")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
        with open(path) as handle:
            assert handle.read() == "Secret-Cookie-1"
        assert os.listdir(home) == [".erlang.cookie"]
    finally:
        os.chmod(os.path.join(home, ".erlang.cookie"), 0o600)
        tc.shutil.rmtree(home)


def test_clients_are_shared_per_settings_and_stopped_by_the_last_release(monkeypatch):
    stopped = []
    monkeypatch.setattr(tc.TlsClient, "stop", lambda self, kill=False: stopped.append(self))
    monkeypatch.setattr(tc, "_CLIENTS", {})
    first = tc.acquire("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-1", "10.0.0.5")
    second = tc.acquire("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-1", "10.0.0.6")
    assert first == second and tc.client(first).names == "longnames" and tc.client(first).own_host == "10.0.0.5"
    other_cookie = tc.acquire("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-2", "10.0.0.5")
    other_optfile = tc.acquire("/usr/bin/erl", "/tmp/other.conf", "cookie-1", "10.0.0.5")
    short = tc.acquire("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-1", "worker1")
    assert len({first, other_cookie, other_optfile, short}) == 4
    assert tc.client(short).names == "shortnames" and "." not in tc.client(short).own_host
    shared = tc.client(first)
    tc.release(first)
    assert stopped == [] and tc.client(second) is shared
    tc.release(second)
    assert stopped == [shared] and first not in tc._CLIENTS
    tc.release(second)                                          # once too often: nothing
    assert stopped == [shared]
    tc.stop_all()
    assert len(stopped) == 4 and tc._CLIENTS == {}


def test_a_client_is_not_started_before_its_first_request():
    client = tc.TlsClient("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-1", "longnames", "10.0.0.5")
    assert (client.alive(), client.pid(), client.starts, client.home) == (False, None, 0, None)
    client.stop()                                               # stopping a client never started is harmless
    assert client.home is None


def test_a_missing_erl_is_an_os_error_and_leaves_no_home(tmp_path, monkeypatch):
    monkeypatch.setattr(tc.tempfile, "tempdir", str(tmp_path))
    client = tc.TlsClient(str(tmp_path / "no-erl"), "/etc/tls/ssl_dist.conf", "cookie-1", "longnames", "10.0.0.5")
    with pytest.raises(OSError):
        client.request("a@10.0.0.5", "ok.", 5)
    assert client.home is None and os.listdir(str(tmp_path)) == [] and not client.alive()


def test_a_call_while_another_is_in_flight_gets_a_spare_client(monkeypatch):
    """One request at a time per VM: a concurrent caller claims an idle spare, else a new one; stop() stops all."""
    client = tc.TlsClient("/usr/bin/erl", "/etc/tls/ssl_dist.conf", "cookie-1", "longnames", "10.0.0.5")
    assert client.claim() is client
    spare = client.claim()
    assert spare is not client and client.spares() == [spare]
    assert (spare.erl, spare.optfile, spare.names, spare.own_host) == (client.erl, client.optfile, client.names, client.own_host)
    third = client.claim()
    assert third not in (client, spare) and client.spares() == [spare, third]
    spare._busy.release()
    assert client.claim() is spare and len(client.spares()) == 2    # an idle spare is reused
    for claimed in (client, spare, third):
        claimed._busy.release()
    assert client.claim() is client
    client._busy.release()
    stopped = []
    monkeypatch.setattr(tc.TlsClient, "stop_vm", lambda self, kill=False: stopped.append(self))
    client.stop()
    assert stopped == [client, spare, third] and client.spares() == []
