# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TLS stand-in for ``erl_call -e``: one long-lived hidden ``erl`` node per module process (docs/tls.md).

erl_call speaks only inet_tcp_dist. With ``distribution: tls`` the control layer (erlang_node.py) sends each
expression to a hidden ``erl -proto_dist inet_tls`` node over its stdin and reads back what ``erl_call -e`` would
have printed, so that erlang_node.py maps results and failures exactly as for erl_call.

- One client per (erl, optfile, cookie, long/short names) in this process, shared by the ErlangNode objects
  that use it and stopped when the last of them closes (``acquire``/``release``), or at exit. A module that
  talks to N nodes (cluster_restart) runs one VM, not N, and pays the VM start and ``ssl`` loading once.
- The cookie is in ``.erlang.cookie`` of a private HOME (0700, file 0400), as for erl_call: never on argv/env.
- Framing, one line per message (``encode_request``, ``parse_ack``, ``parse_reply``):
  request ``<id> <timeout s> <node> <base64 of the UTF-8 expression>``;
  acknowledgement ``<tag> <id> ack`` as soon as the client has read it (a client that dies before that did not
  run the request, which is then sent again to a new client; after it, the call fails as erl_call's would);
  reply ``<tag> <id> <exit status> <base64 of stdout> <base64 of stderr>``. The tag is random per client and
  every other line the VM prints on stdout (logger, output of the evaluated code) is skipped.
- Timeouts: the client kills a call at its timeout and answers ``Alarm clock`` (as erl_call's alarm()), then
  drops that connection, so the next call starts clean; if the client itself does not answer within the
  timeout plus GRACE seconds it is killed. A dead client is started again on the next call.
- The client halts when its stdin closes, so it cannot outlive this process, even one killed with SIGKILL.
- One request at a time per VM. A call made while another thread's call is in flight (cluster_restart's plan
  calls its nodes at once) goes to a spare VM, started on first need and kept until the client stops: serial
  callers run one VM, N concurrent callers N.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import base64
import binascii
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

COOKIE_FILE_NAME = ".erlang.cookie"
ERROR_FILE_NAME = "client.err"
GRACE = 10          # seconds past a call's timeout before the client itself is presumed wedged
STOP_WAIT = 3       # seconds for the client to halt on stdin EOF before SIGKILL

# Plain arguments: OWN_NAME NAMES TAG. Answers in erl_call's own words, so map_erl_call_failure applies.
CLIENT = r"""
[OwnName, Names, Tag] = init:get_plain_arguments(),
case net_kernel:start([list_to_atom(OwnName), list_to_atom(Names)]) of
    {ok, _} -> ok;
    {error, StartError} ->
        io:format(standard_error, "erl_call: cannot start the TLS client node: ~tp~n", [StartError]), erlang:halt(1)
end,
ok = io:setopts(standard_io, [binary]),
Parse = fun(Source) ->
    case erl_scan:string(unicode:characters_to_list(Source)) of
        {ok, Tokens, _} ->
            case erl_parse:parse_exprs(Tokens) of
                {ok, Parsed} -> {ok, Parsed};
                {error, {_, PMod, PDesc}} -> {error, ["syntax error: ", PMod:format_error(PDesc)]}
            end;
        {error, {_, SMod, SDesc}, _} -> {error, ["illegal token: ", SMod:format_error(SDesc)]}
    end
end,
Eval = fun(NodeName, Source, TimeoutMs) ->
    Node = binary_to_atom(NodeName, utf8),
    case Parse(Source) of
        {error, Text} -> {0, io_lib:format("{error, ~p}~n", [lists:flatten(Text)]), ""};
        {ok, Exprs} ->
            case net_kernel:connect_node(Node) of
                true ->
                    try erpc:call(Node, erl_eval, exprs, [Exprs, erl_eval:new_bindings()], TimeoutMs) of
                        {value, Value, _} -> {0, ["{ok, ", $", Value, $", "}\n"], ""}
                    catch
                        error:{erpc, timeout} -> {142, "", "Alarm clock\n"};
                        error:{erpc, noconnection} -> {1, "", ["erl_call: failed to receive the answer of ", NodeName, "\n"]};
                        Class:Reason ->
                            {0, io_lib:format("{error, ~p}~n", [lists:flatten(io_lib:format("~p: ~tp", [Class, Reason]))]), ""}
                    end;
                _ -> {1, "", ["erl_call: failed to connect to node ", NodeName, "\n"]}
            end
    end
end,
Answer = fun(Line) ->
    [Id, TimeoutText, NodeName, Encoded] = binary:split(string:trim(Line), <<" ">>, [global]),
    ok = io:put_chars(standard_io, ["\n", Tag, " ", Id, " ack\n"]),
    TimeoutMs = binary_to_integer(TimeoutText) * 1000,
    {Pid, Ref} = spawn_monitor(fun() -> exit({answer, Eval(NodeName, base64:decode(Encoded), TimeoutMs)}) end),
    {Status, Out, Err} =
        receive
            {'DOWN', Ref, process, Pid, {answer, Result}} -> Result;
            {'DOWN', Ref, process, Pid, Crash} -> {1, "", io_lib:format("erl_call: the TLS client failed: ~tp~n", [Crash])}
        after TimeoutMs ->
            exit(Pid, kill),
            receive {'DOWN', Ref, process, Pid, _} -> ok end,
            {142, "", "Alarm clock\n"}
        end,
    % A timed-out call may sit on a half-open connection: the next call to that node connects afresh.
    Status =:= 142 andalso erlang:disconnect_node(binary_to_atom(NodeName, utf8)),
    B64 = fun(Chars) -> base64:encode(unicode:characters_to_binary(Chars)) end,
    ["\n", Tag, " ", Id, " ", integer_to_list(Status), " ", B64(Out), " ", B64(Err), "\n"]
end,
Serve = fun Serve() ->
    case io:get_line(standard_io, "") of
        Line when is_binary(Line) ->
            Reply = try Answer(Line)
                    catch C:R:S -> io:format(standard_error, "erl_call: bad request to the TLS client: ~tp~n", [{C, R, S}]),
                                   erlang:halt(2)
                    end,
            ok = io:put_chars(standard_io, Reply),
            Serve();
        _ -> erlang:halt(0)
    end
end,
Serve().
"""


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------

def encode_request(request_id, node, timeout, expression):
    """The request line for the client: b'<id> <timeout> <node> <base64 of expression>\\n'.

    node must be a validated node name (no spaces); timeout whole seconds >= 1.
    """
    if not isinstance(request_id, int) or request_id < 0:
        raise ValueError("request id must be a whole number >= 0")
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError("timeout must be a whole number of seconds >= 1")
    if not node or any(char.isspace() for char in node):
        raise ValueError("node name must be non-empty and without spaces")
    encoded = base64.b64encode(expression.encode("utf-8")).decode("ascii")
    return ("%d %d %s %s\n" % (request_id, timeout, node, encoded)).encode("ascii")


def parse_ack(line, tag):
    """The id of an acknowledgement line ('<tag> <id> ack': the client has read that request), else None."""
    fields = line.rstrip(b"\r\n").split(b" ")
    if len(fields) != 3 or fields[0] != tag.encode("ascii") or fields[2] != b"ack" or not fields[1].isdigit():
        return None
    return int(fields[1])


def parse_reply(line, tag):
    """A reply line -> (id, exit status, stdout, stderr); None for a line that is not a reply with this tag."""
    fields = line.rstrip(b"\r\n").split(b" ")
    if len(fields) != 5 or fields[0] != tag.encode("ascii"):
        return None
    try:
        request_id, status = int(fields[1]), int(fields[2])
        stdout = base64.b64decode(fields[3], validate=True).decode("utf-8", "replace")
        stderr = base64.b64decode(fields[4], validate=True).decode("utf-8", "replace")
    except (ValueError, binascii.Error):
        return None
    return request_id, status, stdout, stderr


class LineReader(object):
    """Whole lines from a file descriptor, with a deadline (select; no thread)."""

    def __init__(self, fd):
        self.fd = fd
        self.buffer = b""

    def readline(self, deadline):
        """The next line (with its newline); b"" at end of file; None if the deadline passes first."""
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, dummy, dummy = select.select([self.fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line + b"\n"


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def private_home(cookie):
    """A new private HOME (0700) holding the cookie in .erlang.cookie (0400), as erl_call reads it."""
    home = tempfile.mkdtemp(prefix="erlang-tls-client-")
    os.chmod(home, 0o700)
    fd = os.open(os.path.join(home, COOKIE_FILE_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, cookie.encode("ascii"))
    finally:
        os.close(fd)
    return home


# ---------------------------------------------------------------------------
# The client node
# ---------------------------------------------------------------------------

class TlsClient(object):
    """One hidden erl node; request() is erl_call -e's (exit status, stdout, stderr) for one expression."""

    def __init__(self, erl, optfile, cookie, names, own_host):
        self.erl = erl
        self.optfile = optfile
        self._cookie = cookie
        self.names = names
        self.own_host = own_host
        self.proc = None
        self.home = None
        self.reader = None
        self.tag = None
        self.last_id = 0
        self.starts = 0
        self._busy = threading.Lock()       # held for the whole of a call on this VM
        self._spares = []                   # more clients with the same settings, for concurrent calls
        self._spares_lock = threading.Lock()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """A new client VM (the previous one, if any, stopped first). Raises OSError if erl cannot run."""
        self.stop_vm()
        self.home = private_home(self._cookie)
        self.tag = "skw-tls-" + uuid.uuid4().hex
        own = "erlang-ec2-ctl-%d-%s@%s" % (os.getpid(), uuid.uuid4().hex[:8], self.own_host)
        # logger_level warning: ssl's handshake notices stay out of stdout (other lines are skipped anyway).
        argv = [self.erl, "-noshell", "-hidden", "-kernel", "logger_level", "warning",
                "-proto_dist", "inet_tls", "-ssl_dist_optfile", self.optfile,
                "-eval", CLIENT, "-extra", own, self.names, self.tag]
        environ = dict(os.environ, HOME=self.home, ERL_CRASH_DUMP_SECONDS="0")
        with open(os.path.join(self.home, ERROR_FILE_NAME), "wb") as errors:
            try:
                # Not run_command: the client lives across calls and talks over its stdin and stdout.
                self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=ansible-bad-function
                                             stderr=errors, env=environ, close_fds=True, bufsize=0)
            except OSError:
                self.stop_vm()
                raise
        self.reader = LineReader(self.proc.stdout.fileno())
        self.starts += 1

    def send(self, node, expression, timeout):
        """Send one request, starting the client if it is not running: (id, whether the client is new)."""
        fresh = not self.alive()
        if fresh:
            self.start()
        self.last_id += 1
        try:
            write_all(self.proc.stdin.fileno(), encode_request(self.last_id, node, timeout, expression))
        except OSError:
            pass            # it died: wait_reply sees the end of its stdout
        return self.last_id, fresh

    def request(self, node, expression, timeout):
        """(exit status, stdout, stderr) as erl_call -e's for expression evaluated on node within timeout.

        Thread-safe: this VM if no call is in flight on it, else an idle spare, else a new spare.
        """
        client = self.claim()
        try:
            return client.request_here(node, expression, timeout)
        finally:
            client._busy.release()

    def claim(self):
        """This client or a spare, its lock held by the caller."""
        if self._busy.acquire(False):
            return self
        with self._spares_lock:
            for spare in self._spares:
                if spare._busy.acquire(False):
                    return spare
            spare = TlsClient(self.erl, self.optfile, self._cookie, self.names, self.own_host)
            spare._busy.acquire()
            self._spares.append(spare)
            return spare

    def spares(self):
        return list(self._spares)

    def request_here(self, node, expression, timeout):
        """request() on this VM; the caller holds its lock."""
        while True:
            request_id, fresh = self.send(node, expression, timeout)
            answer, acknowledged = self.wait_reply(request_id, time.monotonic() + timeout + GRACE)
            if answer is not None:
                return answer
            if acknowledged or fresh:
                return self.died(acknowledged)
            # A client that died before it read the request (killed between calls; SIGKILL takes a moment to
            # close its pipes) did not run it: once more with a new client.
            self.stop_vm()

    def wait_reply(self, request_id, deadline):
        """(answer, acknowledged): answer None if the client exits first; a timeout's if it does not answer."""
        acknowledged = False
        while True:
            line = self.reader.readline(deadline)
            if line is None:
                self.stop_vm(kill=True)
                return (142, "", "Alarm clock (the TLS client node did not answer; stopped)"), acknowledged
            if line == b"":
                return None, acknowledged
            acknowledged = acknowledged or parse_ack(line, self.tag) == request_id
            reply = parse_reply(line, self.tag)
            if reply is not None and reply[0] == request_id:
                return reply[1:], True

    def died(self, acknowledged):
        """The answer for a client that exited (it is stopped; the next call starts another)."""
        try:
            status = self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:       # its stdout closed, yet it runs: make sure it is gone
            self.proc.send_signal(signal.SIGKILL)
            status = self.proc.wait()
        errors = self.errors()
        self.stop_vm()
        when = "during the call" if acknowledged else "before it read the call"
        return status or 1, "", "the TLS client node (erl) exited %s: %s" % (when, errors or "no output")

    def errors(self):
        try:
            with open(os.path.join(self.home, ERROR_FILE_NAME), "rb") as handle:
                return handle.read(2000).decode("utf-8", "replace").strip()
        except (IOError, OSError, TypeError):
            return ""

    def stop(self):
        """This VM and every spare (the client's last user is done)."""
        with self._spares_lock:
            spares, self._spares = self._spares, []
        for client in [self] + spares:
            client.stop_vm()

    def stop_vm(self, kill=False):
        """Close stdin (the client halts by itself), SIGKILL at once (kill) or after STOP_WAIT, remove the HOME."""
        proc, self.proc, self.reader = self.proc, None, None
        if proc is not None:
            if kill and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except (IOError, OSError):
                    pass
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def pid(self):
        return self.proc.pid if self.alive() else None


# ---------------------------------------------------------------------------
# One client per process and key, shared by the ErlangNode objects that use it
# ---------------------------------------------------------------------------

_CLIENTS = {}


def client_key(erl, optfile, cookie, host):
    """Clients are shared only when everything the handshake uses is the same."""
    return (erl, optfile, cookie, "longnames" if "." in host else "shortnames")


def acquire(erl, optfile, cookie, host):
    """The shared client for these settings (created, not started, if new); release(key) when done: the key."""
    key = client_key(erl, optfile, cookie, host)
    entry = _CLIENTS.get(key)
    if entry is None:
        # Long names: the target's own host part is a valid host for a name (the name is not checked by TLS).
        own_host = host if key[3] == "longnames" else socket.gethostname().split(".")[0]
        entry = _CLIENTS[key] = [TlsClient(erl, optfile, cookie, key[3], own_host), 0]
    entry[1] += 1
    return key


def client(key):
    return _CLIENTS[key][0]


def release(key):
    """One user fewer; the last one stops the client."""
    entry = _CLIENTS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _CLIENTS[key]
        entry[0].stop()


def stop_all():
    """Every client of this process (at exit: a module that forgot close() leaves no erl behind)."""
    while _CLIENTS:
        dummy, entry = _CLIENTS.popitem()
        entry[0].stop()


atexit.register(stop_all)
