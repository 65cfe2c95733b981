"""EC2 API throttling and 5xx during provision and the inventory.

moto cannot throttle, and real AWS is never used: a FAULT INJECTOR (the suite's one allowed mock: API throttling)
sits on loopback in front of localcloud's EC2 endpoint. It answers every other EC2 request (the 1st, 3rd, ...) with an
error instead of forwarding it, in turn 400 RequestLimitExceeded, 503 Unavailable and 400 Throttling, and forwards the
others unchanged. provision and ansible-inventory run against it (AWS_ENDPOINT_URL) and must still succeed, through
botocore's retries and the collection's AWSRetry, with the right result.
"""

import http.server
import json
import os
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request

from failures_lib import WORKERS, provision, refresh
from playbook_runner import BIN, ROOT

FAULTS = [
    (400, "RequestLimitExceeded", "Request limit exceeded."),
    (503, "Unavailable", "The service is unavailable. Please try again shortly."),
    (400, "Throttling", "Rate exceeded"),
]
EVERY = 2


class FaultInjector(http.server.ThreadingHTTPServer):
    """127.0.0.1:<port> -> upstream; one EC2 request (Action=...) in EVERY, from the first, is answered with the next of FAULTS."""

    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.url = "http://127.0.0.1:%d" % self.server_port
        self.lock = threading.Lock()
        self.seen = 0
        self.injected = {}  # (status, code) -> n
        self.forwarded = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def fault_for(self, body):
        if "Action" not in urllib.parse.parse_qs(body.decode("utf-8", "replace")):
            return None
        with self.lock:
            self.seen += 1
            if (self.seen - 1) % EVERY:
                self.forwarded += 1
                return None
            fault = FAULTS[((self.seen - 1) // EVERY) % len(FAULTS)]
            self.injected[fault[:2]] = self.injected.get(fault[:2], 0) + 1
            return fault


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.server.fault_for(body)
        if fault:
            status, code, message = fault
            data = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error>'
                    '</Errors><RequestID>fault-injector</RequestID></Response>' % (code, message)).encode()
            self._answer(status, {"Content-Type": "text/xml"}, data)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(self.server.upstream + self.path, data=body if self.command != "GET" else None,
                                         headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:  # nosec - loopback: localcloud's endpoint
                self._answer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            self._answer(error.code, dict(error.headers), error.read())

    def _answer(self, status, headers, data):
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def inventory(cluster, endpoint):
    env = dict(cluster.env, AWS_ENDPOINT_URL=endpoint)
    out = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", os.path.join(ROOT, "inventory"), "--list"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout)
    hosts = data["_meta"]["hostvars"]
    mine = {h: v for h, v in hosts.items() if _plain(v.get("erlang_cluster")) == cluster.name}
    return {h: (_plain(v.get("erlang_role")), _plain(v.get("ansible_host"))) for h, v in mine.items()}, out.stderr


def _plain(value):
    """ansible-inventory --list prints unsafe strings as {"__ansible_unsafe": "..."}."""
    return value.get("__ansible_unsafe") if isinstance(value, dict) else value


def test_ec2_throttling_and_5xx_during_provision_and_inventory(cluster, row):
    """EC2 API throttling and 5xx during provision and the inventory (fault injector on loopback)"""
    refresh(cluster)
    before = set(cluster.workers)
    expected, dummy = inventory(cluster, cluster.env["AWS_ENDPOINT_URL"])
    with FaultInjector(cluster.env["AWS_ENDPOINT_URL"]) as proxy:
        seen, stderr = inventory(cluster, proxy.url)
        assert seen == expected, (seen, expected)
        inventory_faults = sum(proxy.injected.values())
        # One worker more, through the injector: DescribeInstances, RunInstances, waiters all see faults.
        cluster.env["AWS_ENDPOINT_URL"], upstream = proxy.url, cluster.env["AWS_ENDPOINT_URL"]
        try:
            result = provision(cluster, WORKERS + 1)
        finally:
            cluster.env["AWS_ENDPOINT_URL"] = upstream
        assert result.rc == 0, result.tail(40)
        refresh(cluster)
        added = set(cluster.workers) - before
        assert len(cluster.workers) == WORKERS + 1 and len(added) == 1 and before <= set(cluster.workers), cluster.workers
        seen, stderr = inventory(cluster, proxy.url)
        assert {h for h, (role, ip) in seen.items() if role == "worker"} == set(cluster.workers), seen
        injected = dict(proxy.injected)
        assert inventory_faults > 0 and len(injected) == len(FAULTS), injected
        # The instance is a worker of the cluster now (provision's part); it leaves as it came, through the injector.
        ec2 = cluster.boto3("ec2")
        ec2.terminate_instances(InstanceIds=list(added))
        ec2.get_waiter("instance_terminated").wait(InstanceIds=list(added), WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        seen, stderr = inventory(cluster, proxy.url)
        assert seen == expected, (seen, expected)
        total = dict(proxy.injected)
    refresh(cluster)
    row.did = ("provision (+1 worker) and 3 ansible-inventory runs succeeded with %d of %d EC2 requests answered by errors (%s); "
               "inventory identical to an unfaulted one" % (sum(total.values()), proxy.seen,
                                                            ", ".join("%d %s x%d" % (s, c, n) for (s, c), n in sorted(total.items()))))
    row.close()
    row.check()
