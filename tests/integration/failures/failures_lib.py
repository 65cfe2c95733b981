"""The failure matrix's helpers (issue 13): one session cluster on localcloud, a poller on every worker, one row a scenario.

The cluster: the provision playbook (1 boot server, or FAILURES_BOOT_SERVERS when provision has
provision_boot_server_count), 3 workers, site with hello_cluster 1.0.0 (the e2e suite's helper, loaded
under another module name, as the status suite does). A poller GETs every worker's /status every 100 ms
for the whole session and keeps each answer (time, ip, version or None).

Each test is one scenario: it brings the fault, lets the collection act, heals the fault, then `row.close()`
measures its row (from the poller's samples of the scenario's time) and the `row` fixture repairs only what the
scenario left broken and asserts the baseline: 3 workers up on ONE release (1.0.0 or 2.0.0: a rollout scenario deploys
the other), `current` it on every boot server, the boot servers running and level, allow-lists exactly the workers. The table is
printed at the end of the session and written to $FAILURES_MATRIX (default <pytest basetemp>/../failure-matrix.md).
"""

import importlib.util
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
_E2E = os.path.join(os.path.dirname(HERE), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers_failures", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT  # noqa: E402
from localcloud_cluster import StatusPoller, worker_status  # noqa: E402
from playbook_runner import ROOT  # noqa: E402

WORKERS = 3
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
            # A worker that refuses fails both at once; one slow answer on a loaded machine (a tick of the poller
            # waiting on the CPU) is not a restart: down means no answer within 1 s and then none within 3 s.
            status = worker_status(ip, timeout=1.0) or worker_status(ip, timeout=3.0)
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

def ip_key(ip):
    return tuple(int(part) for part in ip.split("."))


def boot_state(cluster, boot_ip):
    """One SSH call: what must be equal on every boot server (releases, `current`, allow-list)."""
    out = cluster.ssh(boot_ip, "ls %s; echo ---; readlink %s || true; echo ---; sudo cat %s" % (
        LAYOUT["releases_dir"], LAYOUT["current_link"], LAYOUT["allow_list_file"]))
    assert out.returncode == 0, out.stderr
    releases, current, allow = out.stdout.split("---\n") if out.stdout.count("---\n") == 2 else ("", "", "")
    return {"releases": sorted(releases.split()), "current": os.path.basename(current.strip()),
            "allow_list": sorted(line.strip() for line in allow.splitlines() if line.strip() and not line.startswith("#"))}


def boot_states(cluster):
    """boot_state of every running boot server, read in parallel: {ip: state}."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(cluster.boot_server_ips, pool.map(lambda ip: boot_state(cluster, ip), cluster.boot_server_ips)))


def allow_list(cluster, boot_ip=None):
    """The persisted allow-list of a boot server (its one writer is the boot server itself)."""
    return boot_state(cluster, boot_ip or cluster.boot_server_ip)["allow_list"]


def running_allow_list(cluster, boot_ip=None):
    out = cluster.ssh(boot_ip or cluster.boot_server_ip, "sudo %s eval '[inet:ntoa(Ip) || {_, Ip} <- erl_boot_server:which_slaves()]'"
                      % LAYOUT["node_command"])
    assert out.returncode == 0 and out.stdout.strip().startswith("["), out.stdout + out.stderr
    return sorted(re.findall(r"\d+\.\d+\.\d+\.\d+", out.stdout))


def current_release(cluster, boot_ip=None):
    return boot_state(cluster, boot_ip or cluster.boot_server_ip)["current"]


def releases_listed(cluster, boot_ip=None):
    return boot_state(cluster, boot_ip or cluster.boot_server_ip)["releases"]


def versions(cluster):
    ips = sorted(cluster.workers.values())
    with ThreadPoolExecutor(max_workers=max(1, len(ips))) as pool:
        return dict(zip(ips, pool.map(lambda ip: (worker_status(ip, 2.0) or {}).get("version"), ips)))


def snapshot(cluster):
    """What a refused or failed run must not change: every boot server's releases, `current`, allow-list, and each
    worker's release."""
    return {"boot_servers": boot_states(cluster), "workers": versions(cluster)}


def level(states):
    """'' when every boot server holds the same state, else what differs."""
    distinct = {repr(s) for s in states.values()}
    return "" if len(distinct) <= 1 else "boot servers not level: %s" % states


def refresh(cluster):
    """e2e's refresh, every boot server's IP by address (e2e keeps one), and the cluster's stopped boot servers."""
    cluster.refresh()
    found = cluster.boto3("ec2").describe_instances(Filters=[{"Name": "tag:erlang-cluster", "Values": [cluster.name]},
                                                             {"Name": "tag:erlang-role", "Values": ["boot_server"]},
                                                             {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    boot = [(i["PrivateIpAddress"], i["InstanceId"], i["State"]["Name"]) for r in found["Reservations"] for i in r["Instances"]]
    running = sorted(((ip, iid) for ip, iid, state in boot if state in ("pending", "running")), key=lambda b: ip_key(b[0]))
    cluster.boot_server_ips = [ip for ip, dummy in running]
    cluster.boot_server_ids = {ip: iid for ip, iid, dummy in boot}
    cluster.stopped_boot_servers = sorted(iid for ip, iid, state in boot if state not in ("pending", "running"))
    cluster.boot_server_ip = cluster.boot_server_ips[0] if cluster.boot_server_ips else None
    return cluster


def provision(cluster, workers=WORKERS):
    extra = {"provision_boot_server_count": BOOT_SERVERS} if BOOT_SERVERS != 1 else {}
    # The e2e helper's variables (the app port from the controller for the pollers, on every run).
    return cluster.playbook("provision", extra=dict(extra, **cluster.provision_vars(workers)))


def set_state(cluster, instance_ids, state):
    """Stop (Force: localcloud stops the container, as EC2 loses a host) or start instances, and wait for it."""
    ec2 = cluster.boto3("ec2")
    if state == "stopped":
        ec2.stop_instances(InstanceIds=list(instance_ids), Force=True)
    else:
        ec2.start_instances(InstanceIds=list(instance_ids))
    ec2.get_waiter("instance_%s" % state).wait(InstanceIds=list(instance_ids), WaiterConfig={"Delay": 1, "MaxAttempts": 180})


def wait_until(what, predicate, bound=180, step=1.0):
    deadline = time.monotonic() + bound
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %d s" % (what, bound))
        time.sleep(step)


def boot_server_answers(cluster, ip):
    out = cluster.ssh(ip, "sudo %s --node boot eval 'is_pid(whereis(boot_server))'" % LAYOUT["node_command"])
    return out.returncode == 0 and out.stdout.strip() == "true"


def wait_level(cluster, bound=180):
    """Every boot server answers and holds the same releases, `current` and allow-list (a started one is levelled
    before it serves). Returns the common state."""
    refresh(cluster)
    for ip in cluster.boot_server_ips:
        wait_until("boot server %s answers" % ip, lambda ip=ip: boot_server_answers(cluster, ip), bound=bound, step=2)

    def states_when_level():
        found = boot_states(cluster)
        return found if not level(found) else None

    states = wait_until("boot servers level", states_when_level, bound=bound, step=2)
    return next(iter(states.values()))


def baseline_version(cluster):
    """The one release every worker runs at the baseline (None when they do not run one)."""
    seen = set(versions(cluster).values())
    return seen.pop() if len(seen) == 1 and None not in seen else None


def other_release(cluster, releases):
    """(tarball, version): the release a rollout scenario deploys, the one the workers do not run (1.0.0 or 2.0.0)."""
    return (releases["v1"], "1.0.0") if baseline_version(cluster) == "2.0.0" else (releases["v2"], "2.0.0")


def at_baseline(cluster):
    """'' when the cluster is at the suite's baseline, else what differs. The baseline: WORKERS workers up on ONE
    release, BOOT_SERVERS boot servers running and level, `current` that release on each, allow-lists exactly the workers."""
    refresh(cluster)
    if len(cluster.workers) != WORKERS or len(cluster.boot_server_ids) != BOOT_SERVERS:
        return "%d workers, %d boot servers" % (len(cluster.workers), len(cluster.boot_server_ids))
    if cluster.stopped_boot_servers:
        return "boot servers stopped: %s" % cluster.stopped_boot_servers
    for ip in cluster.boot_server_ips:  # a host a scenario rebooted answers SSH again first
        wait_until("boot server %s answers SSH" % ip, lambda ip=ip: cluster.ssh(ip, "true").returncode == 0, step=2)
    states = boot_states(cluster)
    if any(not s["current"] for s in states.values()):
        return "no release on a boot server: %s" % states
    seen = versions(cluster)
    problems = [p for p in [level(states)] if p]
    if len(set(seen.values())) != 1 or None in seen.values():
        problems.append("workers on %s" % seen)
    for ip, state in states.items():
        if state["current"] not in seen.values() or len(set(seen.values())) != 1:
            problems.append("current on %s is %s, workers on %s" % (ip, state["current"], sorted(set(map(str, seen.values())))))
        if state["allow_list"] != sorted(cluster.workers.values()):
            problems.append("allow-list of %s is %s" % (ip, state["allow_list"]))
    return "; ".join(problems)


def restore(cluster, releases):
    """Back to the baseline with the playbooks users run, each only when needed (a scenario that leaves the workers
    on the other release leaves the baseline as it is)."""
    problem = at_baseline(cluster)
    if not problem:
        return
    sys.stderr.write("failures: restoring the baseline (%s)\n" % problem)
    if cluster.stopped_boot_servers:
        set_state(cluster, cluster.stopped_boot_servers, "running")
        wait_level(cluster)
    refresh(cluster)
    if len(cluster.workers) != WORKERS or len(cluster.boot_server_ids) != BOOT_SERVERS or "no release" in at_baseline(cluster):
        provision(cluster)
        cluster.playbook("site", extra={"site_initial_release": releases["v1"]})
        refresh(cluster)
    states, seen = boot_states(cluster), versions(cluster)
    currents = {s["current"] for s in states.values()}
    if len(currents) != 1 or len(set(seen.values())) != 1 or None in seen.values() or currents != set(seen.values()):
        target = "v2" if currents == {"2.0.0"} else "v1"
        cluster.playbook("deploy", extra={"deploy_release": releases[target], "rolling_restart_timeout": 90})
    if at_baseline(cluster):
        cluster.playbook("reconcile")
    problem = at_baseline(cluster)
    assert not problem, "could not restore the baseline: %s" % problem
