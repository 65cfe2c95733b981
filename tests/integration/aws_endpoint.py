"""A real EC2 API endpoint for tests: moto's server over HTTP on loopback.

A thin WSGI layer in front of moto counts requests by (region, Action) and can answer
a given Action with a throttling error a set number of times. Throttling is injected
because moto cannot be made to throttle: it is the one thing here that is simulated.
Nothing here ever talks to real AWS: clients get `url` as their endpoint_url and fake
credentials.
"""

import collections
import os
import re
import threading
import urllib.parse
import urllib.request

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}

_REGION_RE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")

THROTTLE_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    "<Message>Request limit exceeded.</Message></Error></Errors>"
    "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
)


class AwsEndpoint:
    """moto on 127.0.0.1:<random port>, with request counting and fault injection."""

    def __init__(self, host="127.0.0.1", port=0):
        self._app = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.Lock()
        self._counts = collections.Counter()
        self._faults = {}  # (region or None, action) -> [remaining, status, body]
        self._server = make_server(host, port, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.url = "http://%s:%d" % (host, self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------
    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def reset(self):
        """Wipe moto's state (all services, all regions) and the counters."""
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()  # nosec - loopback only
        self.reset_counts()
        with self._lock:
            self._faults.clear()

    # -- counting --------------------------------------------------------
    def reset_counts(self):
        with self._lock:
            self._counts.clear()

    def counts(self):
        """Counter of {(region, action): n} since the last reset_counts()."""
        with self._lock:
            return collections.Counter(self._counts)

    def calls(self, action=None, region=None):
        return sum(n for (r, a), n in self.counts().items() if (action is None or a == action) and (region is None or r == region))

    def mutating_calls(self):
        return sum(n for (r, a), n in self.counts().items() if not a.startswith(("Describe", "Get", "List")))

    # -- fault injection -------------------------------------------------
    def throttle(self, action, times, region=None, status=503, body=THROTTLE_BODY):
        """Answer the next `times` requests for `action` (in `region`, or any) with a throttling error."""
        with self._lock:
            self._faults[(region, action)] = [times, status, body]

    def fail(self, action, times, region=None, status=500, code="InternalError", message="injected failure"):
        body = THROTTLE_BODY.replace("RequestLimitExceeded", code).replace("Request limit exceeded.", message)
        self.throttle(action, times, region=region, status=status, body=body)

    # -- WSGI ------------------------------------------------------------
    def _wsgi(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self._app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else {}
        params.update(urllib.parse.parse_qs(environ.get("QUERY_STRING", "")))
        action = (params.get("Action") or [None])[0]
        if action is None:  # JSON protocols (e.g. SSM) carry the action in X-Amz-Target
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            action = target.rsplit(".", 1)[-1] if target else environ.get("REQUEST_METHOD", "?")
        match = _REGION_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else None
        with self._lock:
            self._counts[(region, action)] += 1
            fault = self._faults.get((region, action)) or self._faults.get((None, action))
            if fault and fault[0] > 0:
                fault[0] -= 1
                status, fault_body = fault[1], fault[2].encode()
            else:
                fault = None
        if fault:
            start_response("%d Error" % status, [("Content-Type", "text/xml"), ("Content-Length", str(len(fault_body)))])
            return [fault_body]
        environ["wsgi.input"] = _Body(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._app(environ, start_response)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


class _Body:
    def __init__(self, data):
        import io

        self._io = io.BytesIO(data)

    def read(self, *args):
        return self._io.read(*args)

    def readline(self, *args):
        return self._io.readline(*args)

    def __iter__(self):
        return iter(self._io)


def client_env(endpoint, region="us-east-1"):
    """Environment for a subprocess (ansible-playbook, ansible-inventory) that must use `endpoint` only."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("AWS_"):
            del env[key]
    env.update(FAKE_CREDENTIALS)
    env.update(
        AWS_ENDPOINT_URL=endpoint.url,
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return env
