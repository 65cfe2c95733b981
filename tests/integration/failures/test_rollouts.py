"""Hosts lost and boot servers down around a rollout (deploy: install, switch `current`, rolling restart), with 2 boot
servers: the first (acting) or the second boot server host lost mid-rollout, a deploy while one is unreachable, a
broken release rolled back automatically, the only answering boot server lost, a worker host lost. A host is lost the
way EC2 loses it (StopInstances, Force: localcloud stops its container) once the first worker answers on the new
release, and started again afterwards. Each rollout deploys the release the workers do not run (1.0.0 or 2.0.0):
the baseline is either, so nothing is rolled back between scenarios."""

import re
import threading
import time

import pytest

from failures_lib import (BOOT_SERVERS, LAYOUT, boot_server_answers, boot_states, other_release, refresh, set_state, versions, wait_level,
                          wait_until)
from localcloud_cluster import worker_status

ROLLING_TIMEOUT = 45
# Bake time between two restarts where the fault must land inside the rollout (a host's stop takes a few seconds).
FAULT_PAUSE = 2

needs_2 = pytest.mark.skipif(BOOT_SERVERS < 2, reason="needs 2 boot servers (FAILURES_BOOT_SERVERS)")


class Background(threading.Thread):
    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as exc:  # pylint: disable=broad-except  # re-raised by the test
            self.error = exc


def wait_first_on(poller, since, version, job, bound=300):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if any(v == version and t >= since for t, ip, v in poller.window(since, time.monotonic())):
            return True
        assert job.is_alive(), "the deploy ended before any worker answered on %s: %s" % (version, job.error or job.result.tail(40))
        time.sleep(0.2)
    raise AssertionError("no worker answered on %s within %d s" % (version, bound))


def deploy(cluster, release, **extra):
    return cluster.playbook("deploy", check=False, extra=dict({"deploy_release": release, "rolling_restart_timeout": ROLLING_TIMEOUT}, **extra))


def joined(cluster):
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    seen = [worker_status(ip, 2.0) for ip in cluster.workers.values()]
    return all(s and set(s["nodes"]) >= nodes - {s["node"]} for s in seen)


def deploy_then_stop(cluster, poller, row, release, vsn, instance_ids, **deploy_vars):
    """Deploy `release` in the background; once the first worker answers `vsn`, stop the instances (EC2 StopInstances,
    as EC2 loses a host); the deploy's result once it ends."""
    job = Background(lambda: deploy(cluster, release, **deploy_vars))
    job.start()
    wait_first_on(poller, row.start, vsn, job)
    set_state(cluster, instance_ids, "stopped")
    job.join(900)
    assert job.error is None, job.error
    return job.result


def close_level_row(cluster, row, vsn, did):
    """The boot server that was down is level again (`current` vsn, the allow-list exactly the workers); the row closed."""
    state = wait_level(cluster)
    assert state["current"] == vsn and state["allow_list"] == sorted(cluster.workers.values()), state
    row.did = did
    row.close()
    row.check()


@needs_2
@pytest.mark.parametrize("lost", ["first", "second"])
def test_boot_server_host_lost_mid_rollout(cluster, releases, poller, row, lost):
    """a boot server host stopped during a rolling restart (2 boot servers)"""
    refresh(cluster)
    row.name = "a boot server host stopped during a rolling restart (2 boot servers; the %s, %s)" % (
        lost, "the acting one" if lost == "first" else "not acting")
    row.restarted = set(cluster.workers.values())
    victim, keep = (cluster.boot_server_ips[0], cluster.boot_server_ips[1]) if lost == "first" else cluster.boot_server_ips[1::-1]
    victim_id, keep_id = cluster.boot_server_ids[victim], cluster.boot_server_ids[keep]
    release, vsn = other_release(cluster, releases)
    result = deploy_then_stop(cluster, poller, row, release, vsn, [victim_id], rolling_restart_pause=FAULT_PAUSE)
    assert result.rc == 0, result.tail(40)
    # Every worker on the new release, re-joined; `current` switched on the one left.
    assert set(versions(cluster).values()) == {vsn}
    assert joined(cluster)
    assert boot_states(refresh(cluster))[keep]["current"] == vsn
    # The lost host is not counted failed or unreachable: skipped, or the rollout moved on.
    assert result.recap.get(victim_id, {}).get("unreachable", 0) == 0 and result.recap.get(victim_id, {}).get("failed", 0) == 0, result.recap
    if lost == "first":
        # The acting boot server was lost: the second resumed, without restarting the workers already moved.
        assert "was lost during the rolling restart" in result.out and "%s resumes it" % keep_id in result.out, result.tail(40)
    set_state(cluster, [victim_id], "running")
    close_level_row(cluster, row, vsn, "deploy %s finished on the other boot server%s (all on %s, never 2 workers down); the stopped "
                    "one, started again, came back level (releases, current, allow-list)"
                    % (vsn, " (it resumed the rollout)" if lost == "first" else "", vsn))


@needs_2
def test_deploy_while_a_boot_server_is_unreachable(cluster, releases, poller, row):
    """a deploy while a boot server host is unreachable (in the inventory, not answering)"""
    refresh(cluster)
    row.restarted = set(cluster.workers.values())
    first = cluster.boot_server_ips[0]
    first_id = cluster.boot_server_ids[first]
    release, vsn = other_release(cluster, releases)
    # EC2 still says running (the inventory lists it), but its boot server and sshd are stopped: an impaired host.
    cluster.ssh(first, "sudo systemctl stop %s; sudo systemctl stop ssh.socket ssh.service" % LAYOUT["boot_server_unit"])
    try:
        assert cluster.ssh(first, "true").returncode != 0
        # No SSH connection kept from an earlier run: an unreachable host must look unreachable.
        # (ControlPath=none: a master connection of an earlier run would outlive sshd's stop.)
        result = deploy(cluster, release, ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                        "-o ControlMaster=no -o ControlPath=none")
    finally:
        cluster.boto3("ec2").reboot_instances(InstanceIds=[first_id])
        time.sleep(3)  # the reboot under way before the next SSH tries
    assert result.rc == 0, result.tail(40)
    assert "WARNING: boot server %s" % first_id in result.out and "is skipped" in result.out, result.tail(40)
    assert result.recap[first_id]["unreachable"] == 0 and result.recap[first_id]["changed"] == 0, result.recap
    assert set(versions(cluster).values()) == {vsn}
    close_level_row(cluster, row, vsn, "deploy %s skipped the unreachable boot server with a warning (not counted unreachable) and "
                    "finished on the other; rebooted, it came back level" % vsn)


@needs_2
def test_broken_release_rolled_back_on_both_boot_servers(cluster, releases, poller, row):
    """a broken release (its VM exits at start): automatic rollback, `current` back on both boot servers"""
    refresh(cluster)
    row.restarted = set(cluster.workers.values())
    before = boot_states(cluster)
    vsn = next(iter(before.values()))["current"]
    result = deploy(cluster, releases["v3"], rolling_restart_timeout=20)
    assert result.rc != 0 and "Rolling restart stopped at" in result.out, result.tail(40)
    stopped_at = re.search(r"Rolling restart stopped at[^\n]*", result.out).group(0)
    state = wait_level(cluster, bound=20)
    assert state["current"] == vsn and "3.0.0" in state["releases"], state
    assert set(versions(cluster).values()) == {vsn}
    row.did = "deploy 3.0.0 stopped at the first worker and rolled it back: `current` %s again on every boot server, every worker on %s (%s)" % (
        vsn, vsn, stopped_at.strip()[:120])
    row.close()
    row.check()


# When every boot server was down and they start again together, each serves its own state until it sees a peer: then
# (nodeup) it levels from the newest, so `current` and the allow-list agree within a few seconds.
def test_boot_server_host_stopped_during_rollout_with_1(cluster, releases, poller, row):
    """a boot server host stopped during a rolling restart (1 boot server answering)"""
    refresh(cluster)
    row.restarted = set(cluster.workers.values())
    row.max_down_allowed = 2  # the node that hangs in its loader while a rolled-back one restarts
    victim, others = cluster.boot_server_ips[0], cluster.boot_server_ips[1:]
    ids = [cluster.boot_server_ids[ip] for ip in cluster.boot_server_ips]
    release, vsn = other_release(cluster, releases)
    try:
        if others:  # several boot servers: all but one stopped first (the deploy starts with one down)
            set_state(cluster, [cluster.boot_server_ids[ip] for ip in others], "stopped")
        result = deploy_then_stop(cluster, poller, row, release, vsn, [cluster.boot_server_ids[victim]],
                                  rolling_restart_pause=FAULT_PAUSE, rolling_restart_timeout=20)
        # While no boot server answers, the workers that did not restart keep serving.
        serving = [ip for ip, s in ((ip, worker_status(ip, 2.0)) for ip in cluster.workers.values()) if s]
    finally:
        set_state(cluster, ids, "running")
    # Both boot servers start at once: `current` and the allow-list must agree; the release lists may not (a release the
    # lost one pruned at its switch is still on the one stopped before): reported in the row, levelled by the next
    # deploy or reconcile (the fixture's restore).
    refresh(cluster)
    for ip in cluster.boot_server_ips:
        wait_until("boot server %s answers" % ip, lambda ip=ip: boot_server_answers(cluster, ip))

    def states_when_level():
        found = boot_states(cluster)
        return found if len({(v["current"], tuple(v["allow_list"])) for v in found.values()}) == 1 else None

    states = wait_until("current and allow-list level", states_when_level, bound=120, step=2)
    releases_differ = len({tuple(v["releases"]) for v in states.values()}) > 1
    # The worker that hung in its loader finishes booting once a boot server answers again.
    wait_until("every worker answers", lambda: all(versions(cluster).values()), bound=240)
    seen = versions(cluster)
    assert result.rc != 0, "the rollout cannot finish without a boot server"
    assert len(serving) >= len(cluster.workers) - 1, serving
    stopped_at = re.search(r"Rolling restart stopped at[^\n]*", result.out)
    assert stopped_at and "Each worker, read on its own host" in result.out, result.tail(40)
    unreachable = re.search(r"(UNREACHABLE|Data could not be sent to remote host)[^\n]*", result.out)
    row.reported = bool(stopped_at)
    row.did = "deploy rc=%d (%s); %d of %d workers served while no boot server answered; workers end on %s after it came back%s" % (
        result.rc, (stopped_at or unreachable).group(0)[:140] if (stopped_at or unreachable) else "no message", len(serving),
        len(cluster.workers), ", ".join(sorted(set(map(str, seen.values())))),
        "; boot servers back with the same current and allow-list%s" % (", not the same releases (%s)" % {ip: v["releases"] for ip, v in states.items()}
                                                                        if releases_differ else ", releases"))
    row.close()
    row.check()


def test_worker_host_stopped_mid_rollout(cluster, releases, poller, row):
    """a worker host stopped mid-rollout"""
    refresh(cluster)
    row.restarted = set(cluster.workers.values())
    row.max_down_allowed = 2  # the stopped worker, and the one the rollout restarts
    victim_id, victim = sorted(cluster.workers.items(), key=lambda kv: kv[1])[-1]
    release, vsn = other_release(cluster, releases)
    try:
        result = deploy_then_stop(cluster, poller, row, release, vsn, [victim_id], rolling_restart_timeout=20)
    finally:
        set_state(cluster, [victim_id], "running")
    # Started again, the worker boots from the boot server's `current`.
    wait_until("the stopped worker serves again", lambda: worker_status(victim, 2.0), bound=240)
    seen = versions(cluster)
    stopped_at = re.search(r"(Rolling restart stopped at|UNREACHABLE)[^\n]*", result.out)
    row.reported = result.rc != 0 and bool(stopped_at)
    row.did = "deploy %s rc=%d (%s); the stopped worker, started again, booted %s; workers on %s" % (
        vsn, result.rc, (stopped_at.group(0)[:120] if stopped_at else "no report"), seen[victim], ", ".join(sorted(set(map(str, seen.values())))))
    row.close()
    row.check()
