"""The failure matrix's helpers (issue 13): one session cluster on localcloud, a poller on every worker, one row a scenario.

The cluster: the provision playbook (1 boot server, or FAILURES_BOOT_SERVERS when provision has
provision_boot_server_count), 3 workers, site with hello_cluster 1.0.0 (the e2e suite's helper, loaded
under another module name, as the status suite does). A poller GETs every worker's /status every 100 ms
for the whole session and keeps each answer (time, ip, version or None).

Each test is one scenario: it brings the fault, lets the collection act, heals the fault, then `row.close()`
measures its row (from the poller's samples of the scenario's time) and the `baseline` fixture puts the cluster
back (3 workers, all on 1.0.0, `current` 1.0.0, allow-list exactly the workers) and asserts it. The table is
printed at the end of the session and written to $FAILURES_MATRIX (default <pytest basetemp>/../failure-matrix.md).
"""

import importlib.util
import os
import re
import secrets
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_E2E = os.path.join(os.path.dirname(HERE), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers_failures", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT  # noqa: E402
from localcloud_cluster import StatusPoller, worker_status  # noqa: E402
from playbook_runner import ROOT  # noqa: E402

WORKERS = 3
BASE_VSN = "1.0.0"
POLL_INTERVAL = 0.1


def provision_has_boot_server_count():
    with open(os.path.join(ROOT, "playbooks", "provision.yml"), encoding="utf-8") as handle:
        return "provision_boot_server_count" in handle.read()


BOOT_SERVERS = int(os.environ.get("FAILURES_BOOT_SERVERS", "2")) if provision_has_boot_server_count() else 1


# ---------------------------------------------------------------------------------------------- the poller

class Poller(StatusPoller):
    """StatusPoller (one thread a worker) keeping every answer: samples [(monotonic, ip, version or None)].
    Workers can be added while it runs (a scenario's new instance); `watch` starts a thread for each."""

    def __init__(self, ips, interval=POLL_INTERVAL):
        super().__init__(ips, interval)
        self.samples = []
        self._threads = {}
        self._lock = threading.Lock()

    def poll_one(self, ip):
        while not self._halt.is_set() and ip in self.ips:
            status = worker_status(ip, timeout=1.0)
            with self._lock:
                self.samples.append((time.monotonic(), ip, status.get("version") if status else None))
            time.sleep(self.interval)

    def watch(self, ips):
        with self._lock:
            self.ips = sorted(set(ips))
        for ip in self.ips:
            if ip not in self._threads or not self._threads[ip].is_alive():
                self._threads[ip] = threading.Thread(target=self.poll_one, args=(ip,), daemon=True)
                self._threads[ip].start()

    def run(self):
        self.watch(self.ips)
        self._halt.wait()

    def window(self, start, end):
        with self._lock:
            return [s for s in self.samples if start <= s[0] <= end]


def down_intervals(samples, ip):
    """[(from, to)] in which `ip` did not answer (from its first failed poll to its next answer, or the end)."""
    out, since, last = [], None, None
    for when, who, version in samples:
        if who != ip:
            continue
        last = when
        if version is None and since is None:
            since = when
        elif version is not None and since is not None:
            out.append((since, when))
            since = None
    if since is not None:
        out.append((since, last))
    return out


def max_down_at_once(samples, ips):
    events = sorted([(a, 1) for ip in ips for a, b in down_intervals(samples, ip)] + [(b, -1) for ip in ips for a, b in down_intervals(samples, ip)],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for dummy, step in events:
        now += step
        most = max(most, now)
    return most


# ---------------------------------------------------------------------------------------------- a row

class Row:
    """One scenario's row. The test fills `did` (what the collection did), `reported` (the collection said so
    where nodes are left on two releases), `restarted` (workers the scenario restarts on purpose: their polls
    during their own restart are their restart's downtime, not requests lost) and `allowed_lost` (with why)."""

    def __init__(self, name, cluster, poller):
        self.name, self.cluster, self.poller = name, cluster, poller
        self.did, self.reported, self.restarted = "", False, set()
        self.allowed_lost, self.why_lost = 0, ""
        self.max_down_allowed = 1  # workers down at once (a scenario that stops a worker host allows one more)
        self.start, self.end, self.measured = time.monotonic(), None, None

    def close(self):
        """Measure the row now (the fault healed, before the baseline is restored)."""
        self.end = time.monotonic()
        ips = sorted(self.cluster.workers.values())
        samples = self.poller.window(self.start, self.end)
        final = {ip: worker_status(ip, timeout=2.0) for ip in ips}
        down_end = sorted(ip for ip, s in final.items() if s is None)
        versions = {ip: s["version"] for ip, s in final.items() if s}
        mixed = len(set(versions.values())) > 1
        # Lost: a failed poll of a worker the scenario did not restart, or a moment when no worker answered.
        lost = sum(1 for dummy, ip, v in samples if v is None and ip in ips and ip not in self.restarted)
        all_down = max_down_at_once(samples, ips) >= len(ips) and ips
        lost += 1 if all_down else 0
        self.measured = {
            "down_end": down_end, "mixed_unreported": (len(versions) if mixed and not self.reported else 0),
            "lost": lost, "polls": sum(1 for s in samples if s[1] in ips),
            "restart_polls_failed": sum(1 for dummy, ip, v in samples if v is None and ip in self.restarted),
            "max_down": max_down_at_once(samples, ips), "seconds": round(self.end - self.start, 1), "versions": versions,
        }
        return self.measured

    def check(self):
        m = self.measured
        assert m is not None, "the scenario did not measure its row"
        assert m["down_end"] == [], "nodes down at the end: %s" % m["down_end"]
        assert m["mixed_unreported"] == 0, "workers on several releases without a report: %s" % m["versions"]
        assert m["lost"] <= self.allowed_lost, "%d requests lost (allowed %d: %s)" % (m["lost"], self.allowed_lost, self.why_lost or "none")
        assert m["max_down"] <= self.max_down_allowed, "%d workers down at once" % m["max_down"]

    def markdown(self):
        m = self.measured or {}
        lost = "%s%s" % (m.get("lost", "?"), " (allowed %d: %s)" % (self.allowed_lost, self.why_lost) if self.allowed_lost else "")
        return "| %s | %s | %s | %s | %s | %s / %s | %s |" % (
            self.name, self.did.replace("|", "/"), len(m.get("down_end", [])) if m else "?", m.get("mixed_unreported", "?"), lost,
            m.get("polls", "?"), m.get("restart_polls_failed", "?"), m.get("seconds", "?"))


ROWS = []
HEADER = ("| scenario | what the collection did | nodes down at the end | nodes on a mixed release without a report "
          "| requests lost | polls / failed polls of a worker restarted on purpose | seconds |\n|---|---|---|---|---|---|---|")


def matrix_markdown():
    return "\n".join([HEADER] + [r.markdown() for r in ROWS]) + "\n"


# ---------------------------------------------------------------------------------------------- the cluster

def allow_list(cluster, boot_ip=None):
    """The persisted allow-list of a boot server (its one writer is the boot server itself)."""
    out = cluster.ssh(boot_ip or cluster.boot_server_ip, "sudo cat %s" % LAYOUT["allow_list_file"])
    assert out.returncode == 0, out.stderr
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip() and not line.startswith("#"))


def running_allow_list(cluster, boot_ip=None):
    out = cluster.ssh(boot_ip or cluster.boot_server_ip, "sudo %s eval '[inet:ntoa(Ip) || {_, Ip} <- erl_boot_server:which_slaves()]'"
                      % LAYOUT["node_command"])
    assert out.returncode == 0 and out.stdout.strip().startswith("["), out.stdout + out.stderr
    return sorted(re.findall(r"\d+\.\d+\.\d+\.\d+", out.stdout))


def current_release(cluster, boot_ip=None):
    out = cluster.ssh(boot_ip or cluster.boot_server_ip, "readlink %s" % LAYOUT["current_link"])
    assert out.returncode == 0, out.stderr
    return os.path.basename(out.stdout.strip())


def releases_listed(cluster, boot_ip=None):
    return cluster.ssh(boot_ip or cluster.boot_server_ip, "ls %s" % LAYOUT["releases_dir"]).stdout.split()


def versions(cluster):
    return {ip: (s or {}).get("version") for ip, s in ((ip, worker_status(ip, 2.0)) for ip in sorted(cluster.workers.values()))}


def snapshot(cluster):
    """What a refused or failed run must not change: allow-lists, `current`, releases, each worker's release."""
    return {"allow": {ip: allow_list(cluster, ip) for ip in cluster.boot_server_ips},
            "current": {ip: current_release(cluster, ip) for ip in cluster.boot_server_ips},
            "releases": {ip: releases_listed(cluster, ip) for ip in cluster.boot_server_ips},
            "workers": versions(cluster)}


def refresh(cluster):
    """e2e's refresh, and every boot server's IP (e2e keeps one)."""
    cluster.refresh()
    found = cluster.boto3("ec2").describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [cluster.name]},
                                                             {"Name": "tag:erlang-role", "Values": ["boot_server"]},
                                                             {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    boot = sorted((i["PrivateIpAddress"], i["InstanceId"]) for r in found["Reservations"] for i in r["Instances"])
    cluster.boot_server_ips = [ip for ip, dummy in boot]
    cluster.boot_server_ids = {ip: iid for ip, iid in boot}
    cluster.boot_server_ip = cluster.boot_server_ips[0] if cluster.boot_server_ips else None
    return cluster


def provision(cluster, workers=WORKERS):
    extra = {"provision_boot_server_count": BOOT_SERVERS} if BOOT_SERVERS != 1 else {}
    return cluster.playbook("provision", extra=dict(extra, provision_image_id=os.environ.get("E2E_IMAGE_ID", "ami-0deb120000000e71a"),
                                                    provision_ssh_cidr="172.31.0.1/32",
                                                    provision_key_name=cluster.env.get("LOCALCLOUD_KEY_NAME", "localcloud"),
                                                    provision_worker_count=workers))


def at_baseline(cluster):
    """'' when the cluster is at the suite's baseline, else what differs."""
    refresh(cluster)
    problems = []
    if len(cluster.workers) != WORKERS or len(cluster.boot_server_ips) != BOOT_SERVERS:
        return "%d workers, %d boot servers" % (len(cluster.workers), len(cluster.boot_server_ips))
    seen = versions(cluster)
    if any(v != BASE_VSN for v in seen.values()):
        problems.append("workers on %s" % seen)
    for ip in cluster.boot_server_ips:
        if cluster.ssh(ip, "test -L %s" % LAYOUT["current_link"]).returncode != 0:
            return "no release on boot server %s" % ip
        if current_release(cluster, ip) != BASE_VSN:
            problems.append("current on %s is %s" % (ip, current_release(cluster, ip)))
        if allow_list(cluster, ip) != sorted(cluster.workers.values()):
            problems.append("allow-list of %s is %s" % (ip, allow_list(cluster, ip)))
    return "; ".join(problems)


def restore(cluster, releases):
    """Back to the baseline with the playbooks users run, each only when needed."""
    problem = at_baseline(cluster)
    if not problem:
        return
    sys.stderr.write("failures: restoring the baseline (%s)\n" % problem)
    if len(cluster.workers) != WORKERS or len(cluster.boot_server_ips) != BOOT_SERVERS or problem.startswith("no release"):
        provision(cluster)
        cluster.playbook("site", extra={"site_initial_release": releases["v1"]})
        refresh(cluster)
    if any(current_release(cluster, ip) != BASE_VSN for ip in cluster.boot_server_ips) or any(v != BASE_VSN for v in versions(cluster).values()):
        cluster.playbook("deploy", extra={"deploy_release": releases["v1"], "rolling_restart_timeout": 90})
    cluster.playbook("reconcile")
    problem = at_baseline(cluster)
    assert not problem, "could not restore the baseline: %s" % problem


