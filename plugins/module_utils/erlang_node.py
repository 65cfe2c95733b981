# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Call a running Erlang node through erl_call; the one layer every Erlang module uses.

- The cookie reaches erl_call only through a cookie FILE in a private temporary HOME
  (erl_call reads ``$HOME/.erlang.cookie`` when ``-c`` is absent): never a command line.
- The node evaluates ``base64:encode_to_string(term_to_binary(Result))`` so that results are
  decoded exactly (Erlang external term format, module_utils/erlang_etf.py) instead of parsing
  erl_call's printed terms.
- Every Erlang literal put into an expression is built by ``erlang_terms.literal()``.
- erl_call failures become ``ErlangNodeError`` with a ``kind`` and a clear message.
- TLS distribution (``distribution="tls"``, docs/tls.md): erl_call speaks only inet_tcp_dist, so a hidden ``erl``
  node with the given ``-ssl_dist_optfile``, one per module process and kept for its ErlangNode objects'
  lifetime (erlang_tls_client.py), evaluates the same wrapper on the node over erpc and answers what
  ``erl_call -e`` prints; the rest of this layer, and every module, is the same.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import math
import os
import re
import shutil
import socket
import struct
import tempfile
import time

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_tls_client
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import EtfError, decode_etf, to_text

# What erl_call accepts as a node name: name@host (host: DNS name or IPv4 address).
NODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}@[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
EPMD_PORT = 4369
COOKIE_FILE_NAME = ".erlang.cookie"
DISTRIBUTIONS = ("tcp", "tls")
DEFAULT_SSL_DIST_OPTFILE = "/etc/erlang-ec2/tls/ssl_dist.conf"   # roles/erlang: erlang_tls_dir/ssl_dist.conf

# Failure kinds, one per cause a caller may act on.
KIND_BAD_ARGUMENT = "bad_argument"
KIND_NO_COOKIE = "no_cookie"
KIND_UNREACHABLE = "unreachable"      # host down, or no epmd there
KIND_NOT_RUNNING = "not_running"      # host answers, node name not registered with epmd
KIND_AUTH = "auth"                    # node registered but refused us: wrong cookie
KIND_TIMEOUT = "timeout"
KIND_CONNECTION_LOST = "connection_lost"  # the node went away during the call
KIND_BADRPC = "badrpc"                # the expression raised on the node
KIND_SYNTAX = "syntax"
KIND_ERL_CALL = "erl_call"            # erl_call missing or failing otherwise
KIND_DECODE = "decode"
UNAVAILABLE_KINDS = (KIND_UNREACHABLE, KIND_NOT_RUNNING, KIND_TIMEOUT, KIND_CONNECTION_LOST)


class ErlangNodeError(Exception):
    """A call to a node failed; ``kind`` is one of the KIND_* constants."""

    def __init__(self, kind, message, details=None):
        super(ErlangNodeError, self).__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    def to_dict(self):
        return {"kind": self.kind, "message": self.message}


def ip_tuple(address):
    """'10.0.0.1' -> (10, 0, 0, 1) (callers validate the address first)."""
    return tuple(int(part) for part in address.split("."))


# ---------------------------------------------------------------------------
# Node names, epmd, cookie
# ---------------------------------------------------------------------------

def validate_node(node):
    if not isinstance(node, str) or not NODE_RE.match(node):
        raise ErlangNodeError(
            KIND_BAD_ARGUMENT,
            "invalid node name %r: expected name@host, e.g. worker@172.31.0.5 (name: letters, digits, '_' or '-')" % (node,),
        )
    name, host = node.split("@", 1)
    if ".." in host or host.endswith("."):
        raise ErlangNodeError(KIND_BAD_ARGUMENT, "invalid host part in node name %r" % (node,))
    return name, host


def name_flag(node):
    """-name for a host part with a dot (long names, e.g. an IP), -sname otherwise."""
    return "-name" if "." in validate_node(node)[1] else "-sname"


def epmd_lookup(host, name, timeout=2.0, port=None):
    """Ask epmd on host whether name is registered: True / False; raises OSError if epmd is unreachable."""
    port = port or int(os.environ.get("ERL_EPMD_PORT", EPMD_PORT))
    encoded = name.encode("utf-8")
    request = struct.pack(">HB", len(encoded) + 1, 122) + encoded   # PORT_PLEASE2_REQ
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request)
        reply = b""
        while len(reply) < 2:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    if len(reply) < 2 or reply[0:1] != b"w":
        raise OSError("unexpected epmd reply from %s" % host)
    return bytearray(reply)[1] == 0


def diagnose_connect_failure(node, timeout=2.0):
    """erl_call says only 'failed to connect' for every cause: ask epmd which one it is."""
    name, host = validate_node(node)
    try:
        registered = epmd_lookup(host, name, timeout=timeout)
    except (OSError, socket.error) as exc:
        return ErlangNodeError(
            KIND_UNREACHABLE,
            "node %s is not reachable: epmd on %s does not answer (%s); the host is down, unreachable, "
            "or runs no Erlang node" % (node, host, getattr(exc, "strerror", None) or exc),
        )
    if not registered:
        return ErlangNodeError(
            KIND_NOT_RUNNING,
            "node %s is not running: epmd on %s has no node named %r" % (node, host, name),
        )
    return ErlangNodeError(
        KIND_AUTH,
        "node %s is running but refused the connection: the cookie does not match the node's "
        "(check cookie/cookie_file), or the node runs TLS distribution, which refuses a plain TCP client "
        "(then set distribution: tls)" % node,
    )


def default_cookie_file():
    return os.path.join(os.path.expanduser("~"), COOKIE_FILE_NAME)


def check_cookie(cookie):
    """The cookie as Erlang's auth accepts it; the message never contains the cookie."""
    cookie = cookie.strip() if cookie is not None else ""
    if not cookie:
        raise ErlangNodeError(KIND_NO_COOKIE, "the cookie is empty")
    if any(not 0x21 <= ord(char) <= 0x7E for char in cookie) or len(cookie) > 255:
        raise ErlangNodeError(KIND_NO_COOKIE, "the cookie must be 1-255 printable ASCII characters without spaces")
    return cookie


def read_cookie_file(path):
    try:
        with open(path, "r") as handle:
            first_line = handle.readline()
    except (IOError, OSError) as exc:
        raise ErlangNodeError(
            KIND_NO_COOKIE,
            "cannot read cookie file %s (%s): set cookie or cookie_file" % (path, exc.strerror or exc),
        )
    return check_cookie(first_line)


# ---------------------------------------------------------------------------
# Calling a node
# ---------------------------------------------------------------------------

# Variable names unlikely to clash with a caller's body.
_WRAPPER = (
    "SkwResult__ = try {ok, begin %s end} catch SkwClass__:SkwReason__ -> "
    "{exception, SkwClass__, SkwReason__, unicode:characters_to_binary(io_lib:format(\"~0tp\", [SkwReason__]))} end, "
    "base64:encode_to_string(term_to_binary(SkwResult__)).\n"
)
_OUTPUT_RE = re.compile(r"^\{(ok|error),\s*(.*)\}\s*$", re.S)


def parse_erl_call_output(stdout):
    """erl_call -e prints {ok, Result} or {error, Message}; Result is our base64 string
    (printed as "..." or, when long, as a list of character codes)."""
    match = _OUTPUT_RE.match(stdout.strip())
    if not match:
        raise ErlangNodeError(KIND_DECODE, "unexpected erl_call output: %r" % stdout[:300])
    status, payload = match.group(1), match.group(2).strip()
    if status == "error":
        text = payload[1:-1] if payload.startswith('"') and payload.endswith('"') else payload
        text = text.replace('\\n', " ").replace('\\"', '"')
        text = re.sub(r"\s+", " ", text)
        if "syntax error" in text or "illegal" in text or "Incomplete form" in text:
            raise ErlangNodeError(KIND_SYNTAX, "the node could not parse the expression: %s" % text)
        raise ErlangNodeError(KIND_BADRPC, "evaluation failed on the node: %s" % text)
    if payload.startswith('"') and payload.endswith('"'):
        encoded = payload[1:-1]
    elif payload.startswith("[") and payload.endswith("]"):
        codes = payload[1:-1].split(",") if payload[1:-1].strip() else []
        try:
            encoded = "".join(chr(int(code)) for code in codes)
        except ValueError:
            raise ErlangNodeError(KIND_DECODE, "unexpected erl_call result (not a list of character codes)")
    else:
        raise ErlangNodeError(KIND_DECODE, "unexpected erl_call result: %r" % payload[:300])
    try:
        return decode_etf(base64.b64decode(encoded.encode("ascii"), validate=True))
    except (ValueError, TypeError, EtfError) as exc:
        raise ErlangNodeError(KIND_DECODE, "cannot decode the node's answer: %s" % exc)


class ErlangNode(object):
    """One node to call; ``with ErlangNode(...) as node: node.call(body)``.

    The private HOME holding the cookie copy lives as long as the object (until close()). With TLS the object
    holds the process's shared client node (erlang_tls_client.py) until close(); the last user stops it.
    """

    def __init__(self, node, runner, cookie=None, cookie_file=None, timeout=10, erl_call=None,
                 distribution="tcp", ssl_dist_optfile=None):
        """runner(argv, stdin_bytes, environ_update) -> (returncode, stdout, stderr): module_runner(module) in modules."""
        validate_node(node)
        self.runner = runner
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise ErlangNodeError(KIND_BAD_ARGUMENT, "timeout must be a whole number of seconds >= 1, got %r" % (timeout,))
        if distribution not in DISTRIBUTIONS:
            raise ErlangNodeError(KIND_BAD_ARGUMENT, "distribution must be one of %s, got %r" % (", ".join(DISTRIBUTIONS), distribution))
        self.node = node
        self.timeout = timeout
        self.distribution = distribution
        if distribution == "tls":
            self.ssl_dist_optfile = check_optfile(ssl_dist_optfile or DEFAULT_SSL_DIST_OPTFILE)
            self.erl = find_erl()
        else:
            self.erl_call = find_erl_call(erl_call)
        if cookie is not None:
            self._cookie = check_cookie(cookie)
        else:
            self._cookie = read_cookie_file(cookie_file or default_cookie_file())
        self._home = None
        self._tls = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _private_home(self):
        if self._home is None:
            home = tempfile.mkdtemp(prefix="erlang-node-")
            os.chmod(home, 0o700)
            path = os.path.join(home, COOKIE_FILE_NAME)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, self._cookie.encode("ascii"))
            finally:
                os.close(fd)
            self._home = home
        return self._home

    def __del__(self):
        # Safety net for callers that forget close(): the directory holds the cookie.
        self.close()

    def close(self):
        if getattr(self, "_home", None) is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if getattr(self, "_tls", None) is not None:
            # The shared TLS client stops with its last user.
            erlang_tls_client.release(self._tls)
            self._tls = None

    def run_erl_call(self, expression, timeout=None):
        """Run erl_call -e with expression on stdin (tls: the hidden client node): (returncode, stdout, stderr, seconds)."""
        timeout = timeout or self.timeout
        if self.distribution == "tls":
            return self.run_tls_client(expression, timeout)
        argv = [self.erl_call, "-R", name_flag(self.node), self.node, "-timeout", str(timeout), "-e"]
        started = time.monotonic()
        # erl_call enforces -timeout itself (alarm(), it dies of SIGALRM).
        returncode, stdout, stderr = self.runner(argv, expression.encode("utf-8"), {"HOME": self._private_home()})
        return returncode, stdout, stderr, time.monotonic() - started

    def run_tls_client(self, expression, timeout):
        """The TLS stand-in for erl_call -e: the process's shared hidden client node (erlang_tls_client.py)."""
        if self._tls is None:
            self._tls = erlang_tls_client.acquire(self.erl, self.ssl_dist_optfile, self._cookie, validate_node(self.node)[1])
        started = time.monotonic()
        try:
            returncode, stdout, stderr = erlang_tls_client.client(self._tls).request(self.node, expression, max(1, int(math.ceil(timeout))))
        except OSError as exc:
            raise ErlangNodeError(KIND_ERL_CALL, "cannot run the TLS client node %s: %s" % (self.erl, exc.strerror or exc))
        return returncode, stdout, stderr, time.monotonic() - started

    def tls_client(self):
        """The TLS client this object uses (erlang_tls_client.TlsClient), None before its first TLS call."""
        return erlang_tls_client.client(self._tls) if self._tls is not None else None

    def call(self, body, timeout=None):
        """Evaluate the Erlang expression sequence body on the node; returns the decoded result.

        Raises ErlangNodeError (kind badrpc, with details=(Class, Reason)) if it raises there.
        """
        timeout = timeout or self.timeout
        returncode, stdout, stderr, dummy = self.run_erl_call(_WRAPPER % body, timeout)
        if returncode != 0:
            raise self.map_failure(returncode, stdout, stderr, timeout)
        result = parse_erl_call_output(stdout)
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "ok":
            return result[1]
        if isinstance(result, tuple) and len(result) == 4 and result[0] == "exception":
            raise ErlangNodeError(
                KIND_BADRPC,
                "{badrpc, %s}: %s:%s" % (self.node, result[1], to_text(result[3])),
                details=(result[1], result[2]),
            )
        raise ErlangNodeError(KIND_DECODE, "unexpected answer shape from %s" % self.node)

    def map_failure(self, returncode, stdout, stderr, timeout):
        error = map_erl_call_failure(self.node, returncode, stdout, stderr, timeout)
        if self.distribution == "tls" and error.kind == KIND_AUTH:
            # Over TLS a refusal is the cookie or the certificate (another CA, a wrong name, no certificate).
            error = ErlangNodeError(
                KIND_AUTH,
                "node %s is running but refused the connection: the cookie does not match the node's, or the TLS "
                "handshake failed (a certificate not from the cluster's CA, or not for this address; check cookie/cookie_file "
                "and ssl_dist_optfile %s)" % (self.node, self.ssl_dist_optfile),
            )
        return error


def map_erl_call_failure(node, returncode, stdout, stderr, timeout):
    """Turn a failed erl_call run into an ErlangNodeError (as erl_call reports on OTP 25)."""
    text = (stderr + " " + stdout).strip()
    # -timeout is implemented with alarm(): erl_call dies of SIGALRM.
    if returncode in (-14, 142) or "Alarm clock" in text:
        return ErlangNodeError(KIND_TIMEOUT, "node %s did not answer within %ds" % (node, timeout))
    if "evaluating input failed" in text or "failed to send" in text or "failed to receive" in text:
        # The connection broke mid-call; erl_call echoes the whole input, which is not repeated here.
        return ErlangNodeError(KIND_CONNECTION_LOST, "the connection to node %s broke during the call (the node stopped or restarted)" % node)
    if "failed to connect to node" in text:
        return diagnose_connect_failure(node)
    if "ei_gethostbyname" in text:
        return ErlangNodeError(KIND_UNREACHABLE, "node %s is not reachable: cannot resolve host %r" % (node, node.split("@", 1)[1]))
    if "get_cookie" in text or "cookie" in text.lower():
        return ErlangNodeError(KIND_NO_COOKIE, "erl_call could not read the cookie file")
    return ErlangNodeError(KIND_ERL_CALL, "erl_call failed (exit %s): %s" % (returncode, text[:500] or "no output"))


def find_erl_call(path=None):
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ErlangNodeError(KIND_ERL_CALL, "erl_call %s is not an executable file" % path)
        return path
    found = shutil.which("erl_call")
    if not found:
        for candidate in ("/usr/bin/erl_call", "/usr/local/bin/erl_call"):
            if os.access(candidate, os.X_OK):
                return candidate
        raise ErlangNodeError(
            KIND_ERL_CALL,
            "erl_call not found on PATH: install Erlang (Debian: erlang-base) or set the erl_call option",
        )
    return found


def find_erl():
    found = shutil.which("erl")
    if not found:
        raise ErlangNodeError(KIND_ERL_CALL, "erl not found on PATH: TLS distribution needs erl and the ssl application "
                              "(Debian: erlang-base, erlang-ssl)")
    return found


def check_optfile(path):
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ErlangNodeError(KIND_BAD_ARGUMENT, "ssl_dist_optfile %s is not a readable file (erlang_distribution tls: the "
                              "node's optfile, written by the erlang role in erlang_tls_dir)" % path)
    return path


def module_runner(module):
    """A runner for ErlangNode that runs commands through AnsibleModule.run_command."""
    def run(argv, data, environ_update):
        try:
            return module.run_command(argv, data=data, binary_data=True, environ_update=environ_update,
                                      handle_exceptions=False)
        except OSError as exc:
            raise ErlangNodeError(KIND_ERL_CALL, "cannot run %s: %s" % (argv[0], exc.strerror or exc))
    return run


def node_from_params(params, runner):
    """An ErlangNode from the options of doc fragment skunkworks.erlang_ec2.erlang_node (``argument_spec()``)."""
    return ErlangNode(
        params["node"], runner, cookie=params.get("cookie"), cookie_file=params.get("cookie_file"),
        timeout=params.get("timeout") or 10, erl_call=params.get("erl_call"),
        distribution=params.get("distribution") or "tcp", ssl_dist_optfile=params.get("ssl_dist_optfile"),
    )


def failure_result(exc, msg=None):
    """The one shape of a module failure for an ErlangNodeError: msg (default its message) and error."""
    return dict(msg=msg or exc.message, error=exc.to_dict())


MUTUALLY_EXCLUSIVE = [("cookie", "cookie_file")]


def argument_spec():
    """The options of doc fragment skunkworks.erlang_ec2.erlang_node."""
    return dict(
        node=dict(type="str", required=True),
        cookie=dict(type="str", no_log=True),
        cookie_file=dict(type="path"),
        timeout=dict(type="int", default=10),
        erl_call=dict(type="path"),
        distribution=dict(type="str", default="tcp", choices=list(DISTRIBUTIONS)),
        ssl_dist_optfile=dict(type="path"),
    )
