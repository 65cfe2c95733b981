"""Two boot servers and the playbooks (issue 13): a boot server host lost in the middle of a deploy's rolling
restart, the first (acting) one or the second, and a deploy while one is already down.

Its own cluster (1 boot server is the session's cluster, the other files): provisioned with 2 boot servers and
E2E_BOOT_SERVER_WORKERS workers (3), site with v1. A host is lost the way EC2 loses it: StopInstances (localcloud
stops the container). A poller reads every worker's /status throughout: never two workers down at once. Each test
starts with both boot servers running and level, so the tests do not depend on the order they run in.
"""

import os
import secrets
import threading
import time

import pytest

from conftest import Cluster, localcloud_env
from test_e2e import LAYOUT, Sampler, statuses

WORKERS = int(os.environ.get("E2E_BOOT_SERVER_WORKERS", "3"))
# Bake time between two batches: the lost host's shutdown (up to 10 s) falls inside the rollout, not after it.
PAUSE = 6


@pytest.fixture(scope="module")
def pair(tmp_path_factory, releases):
    env = localcloud_env()
    name = os.environ.get("E2E_BOOT_SERVERS_CLUSTER") or "e2e-bs-%s" % secrets.token_hex(3)
    c = Cluster(env, name, str(tmp_path_factory.mktemp("e2e-boot-servers")))
    c.worker_count = WORKERS
    c.ensure_cookie()
    try:
        c.provision(WORKERS, boot_servers=2)
        c.playbook("site", extra={"site_initial_release": releases["v1"]})
        c.refresh()
        assert len(c.boot_servers) == 2 and len(c.workers) == WORKERS, (c.boot_servers, c.workers)
        c.all_boot_servers = dict(c.boot_servers)  # kept while one is stopped (refresh lists running instances)
        yield c
    finally:
        c.end_session("e2e")


def boot_state(c, ip):
    """What must be equal on every boot server: releases, current, previous, allow-list."""
    out = c.ssh(ip, "ls %s; echo ---; readlink %s; echo ---; readlink %s; echo ---; sudo sort %s" % (
        LAYOUT["releases_dir"], LAYOUT["current_link"], LAYOUT["previous_link"], LAYOUT["allow_list_file"]))
    assert out.returncode == 0, out.stderr
    releases, current, previous, allow = (part.split() for part in out.stdout.split("---"))
    return {"releases": sorted(releases), "current": [os.path.basename(p) for p in current],
            "previous": [os.path.basename(p) for p in previous], "allow_list": sorted(allow)}


def ec2_wait(c, state, instance_id):
    c.boto3("ec2").get_waiter("instance_%s" % state).wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 2, "MaxAttempts": 90})


def start_boot_server(c, instance_id):
    ip = c.all_boot_servers[instance_id]
    c.boto3("ec2").start_instances(InstanceIds=[instance_id])
    ec2_wait(c, "running", instance_id)
    deadline = time.monotonic() + 180
    while c.ssh(ip, "systemctl is-active --quiet %s" % LAYOUT["boot_server_unit"]).returncode != 0:
        assert time.monotonic() < deadline, "boot server %s did not start again" % ip
        time.sleep(2)


def assert_level(c, bound=120):
    """Both boot servers hold the same state (a restarted one is levelled before it serves)."""
    first, second = c.all_boot_servers.values()
    deadline = time.monotonic() + bound
    while True:
        states = boot_state(c, first), boot_state(c, second)
        if states[0] == states[1]:
            return states[0]
        assert time.monotonic() < deadline, "boot servers not level: %s" % (states,)
        time.sleep(3)


@pytest.fixture()
def both_up(pair):
    running = pair.refresh().boot_servers
    for instance_id in pair.all_boot_servers:
        if instance_id not in running:
            start_boot_server(pair, instance_id)
    assert_level(pair)
    return pair


def deploy_losing(c, release, version, lose):
    """Deploy `release`; once the first worker serves `version`, stop boot server `lose` (instance id). Returns the
    run and the poller's rounds."""
    sampler = Sampler(c)
    sampler.start()
    done = {}
    run = threading.Thread(target=lambda: done.setdefault("result", c.playbook(
        "deploy", check=False, extra={"deploy_release": release, "rolling_restart_pause": PAUSE, "rolling_restart_timeout": 120})))
    run.start()
    try:
        deadline = time.monotonic() + 600
        while not any(s and s["version"] == version for s in statuses(c).values()):
            assert run.is_alive() and time.monotonic() < deadline, "no worker reached %s: %s" % (version, done)
            time.sleep(0.2)
        c.boto3("ec2").stop_instances(InstanceIds=[lose])
        run.join(900)
    finally:
        sampler.stop()
    ec2_wait(c, "stopped", lose)
    return done["result"], sampler.rounds


def assert_served_throughout(c, rounds, version):
    assert len(rounds) > 20, "too few samples to judge availability"
    down_per_round = [sum(1 for s in answers.values() if s is None) for dummy, answers in rounds]
    assert max(down_per_round) <= 1, "more than one worker unavailable at once"
    final = statuses(c)
    assert all(s and s["version"] == version for s in final.values()), final
    nodes = {"worker@%s" % ip for ip in c.workers.values()}
    assert all(set(s["nodes"]) >= nodes - {s["node"]} for s in final.values()), final


def other_version(c):
    return "1.0.0" if all(s and s["version"] == "2.0.0" for s in statuses(c).values()) else "2.0.0"


@pytest.mark.parametrize("lost", [0, 1], ids=["first-boot-server-lost", "second-boot-server-lost"])
def test_deploy_finishes_when_a_boot_server_host_is_lost_mid_rollout(both_up, releases, lost):
    c = both_up
    version = other_version(c)
    ids = list(c.all_boot_servers)
    lose, keep = ids[lost], ids[1 - lost]
    result, rounds = deploy_losing(c, releases["v2" if version == "2.0.0" else "v1"], version, lose)
    assert result.rc == 0, result
    assert_served_throughout(c, rounds, version)
    assert boot_state(c, c.all_boot_servers[keep])["current"] == [version]
    # The lost host is not counted unreachable: it was skipped (or the rollout moved on), the run succeeded.
    assert result.recap[lose]["unreachable"] == 0 and result.recap[lose]["failed"] == 0, result.recap
    if lost == 0:
        # The acting boot server was lost: the second resumed, without restarting the workers already moved.
        assert "was lost during the rolling restart" in result.out and "%s resumes it" % keep in result.out, result.tail()
    start_boot_server(c, lose)
    state = assert_level(c)
    assert state["current"] == [version]
    assert set(state["allow_list"]) >= set(c.workers.values())


def take_down(c, instance_id, how):
    """`stopped`: EC2 StopInstances (the inventory then lists only the other). `unreachable`: EC2 still says running,
    the inventory lists it, but its boot server and sshd are stopped (an impaired host): the playbooks skip it."""
    ip = c.all_boot_servers[instance_id]
    if how == "stopped":
        c.boto3("ec2").stop_instances(InstanceIds=[instance_id])
        ec2_wait(c, "stopped", instance_id)
    else:
        c.ssh(ip, "sudo systemctl stop %s; sudo systemctl stop ssh.socket ssh.service" % LAYOUT["boot_server_unit"])
        assert c.ssh(ip, "true").returncode != 0


def bring_back(c, instance_id, how):
    if how == "stopped":
        start_boot_server(c, instance_id)
        return
    c.boto3("ec2").reboot_instances(InstanceIds=[instance_id])
    deadline = time.monotonic() + 180
    while c.ssh(c.all_boot_servers[instance_id], "systemctl is-active --quiet %s" % LAYOUT["boot_server_unit"]).returncode != 0:
        assert time.monotonic() < deadline, "boot server %s did not come back" % instance_id
        time.sleep(2)


@pytest.mark.parametrize("how", ["stopped", "unreachable"])
def test_deploy_while_a_boot_server_is_down(both_up, releases, how):
    c = both_up
    version = other_version(c)
    first = list(c.all_boot_servers)[0]
    take_down(c, first, how)
    sampler = Sampler(c)
    sampler.start()
    try:
        # No SSH connection kept from an earlier run: an unreachable host must look unreachable.
        result = c.playbook("deploy", check=False, extra={
            "deploy_release": releases["v2" if version == "2.0.0" else "v1"],
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=no"})
    finally:
        sampler.stop()
    assert result.rc == 0, result
    if how == "unreachable":
        # In the inventory but not answering: skipped, said so, and not counted unreachable.
        assert "WARNING: boot server %s" % first in result.out and "is skipped" in result.out, result.tail()
        assert result.recap[first]["unreachable"] == 0 and result.recap[first]["changed"] == 0, result.recap
    else:
        # A stopped instance is not in the inventory at all (pending and running instances only).
        assert first not in result.recap, result.recap
    assert_served_throughout(c, sampler.rounds, version)
    bring_back(c, first, how)
    assert assert_level(c)["current"] == [version]
