"""A hot code push reaches self-joined workers: the running ones load the pushed modules with no failed
request, and a worker restarted afterwards or added later by self-join boots the pushed release, because
the push switched `current` on the boot server (issue 12: "A worker restarted afterwards (and one added
by self-join) runs the pushed code").

Order-free on the session cluster: the test launches its own self-joined worker before the push, pushes a
release whose version differs from the running one (`current`), and terminates the workers it launched at
the end, so `cluster.workers` (the shared running workers) is what it was. The shared workers keep the
pushed code but still report the release they booted in GET /status "version".
"""

import json
import time

import playbook_runner
from localcloud_cluster import REPO, StatusPoller, run, worker_status

BUILD = "sjpush"  # what the pushed code answers as GET /status "build"


def current_version(cluster):
    """The release `current` points at on the boot server."""
    return cluster.ssh(cluster.boot_ip, "readlink %s" % cluster.layout["current_link"]).stdout.strip().rstrip("/").rsplit("/", 1)[-1]


def node_info(cluster, ip):
    """The node_info module's result for worker@IP, run on the boot server host (as push and rolling_restart do)."""
    args = json.dumps({"node": "worker@%s" % ip, "cookie_file": cluster.layout["cookie_file"]})
    proc = playbook_runner.run_adhoc("erlang_boot_servers", "skunkworks.erlang_ec2.node_info", args, "-b", "-o",
                                     inventory=cluster.inventory_file, env=cluster.env(), check=True)
    return json.loads(proc.stdout.split(" => ", 1)[1])


def wait_status(ip, version, bound=120):
    """GET /status of a worker once it answers `version`; the last answer (None if it never answered) after `bound` s."""
    deadline = time.monotonic() + bound
    status = worker_status(ip, timeout=1.0)
    while time.monotonic() < deadline and (status or {}).get("version") != version:
        time.sleep(0.5)
        status = worker_status(ip, timeout=1.0)
    return status


def test_push_reaches_running_restarted_and_newly_self_joined_workers(cluster, tmp_path):
    running = current_version(cluster)
    pushed = "2.0.7" if running != "2.0.7" else "2.0.8"
    tar = run(["make", "--no-print-directory", "-C", str(REPO / "examples/hello_cluster"), "tar", "VSN=%s" % pushed,
               "BUILD=%s" % BUILD, "OUT=%s" % tmp_path]).stdout.strip().splitlines()[-1]
    mine = []  # instance ids this test launched: terminated at the end
    try:
        # A self-joined worker of this test's own, running before the push (it is restarted below).
        t0 = time.monotonic()
        worker = cluster.launch_workers(1)[0]
        mine.append(worker["InstanceId"])
        own = worker["PrivateIpAddress"]
        cluster.wait_joined([own] + cluster.workers, t0)
        ips = cluster.workers + [own]
        before = {ip: worker_status(ip, timeout=5) for ip in ips}
        assert all(s and s.get("build") != BUILD for s in before.values()), before

        poller = StatusPoller(ips)
        poller.start()
        started = time.monotonic()
        try:
            push = cluster.ansible_playbook("skunkworks.erlang_ec2.push", "-e", "cluster_name=%s" % cluster.name,
                                            "-e", "push_release=%s" % tar)
        finally:
            poller.stop()
        print("push of %s to %d self-joined workers: %.1f s, %d polls" % (pushed, len(ips), time.monotonic() - started, poller.polls))
        assert cluster.cookie not in push.stdout
        assert poller.polls > 50 and poller.failed == [], (poller.polls, poller.failed[:5])
        assert current_version(cluster) == pushed
        # The running workers answer with the pushed code and still name the release they booted.
        for ip in ips:
            status = worker_status(ip, timeout=5)
            assert status and status["build"] == BUILD and status["version"] == before[ip]["version"], (ip, status)
            assert poller.builds[ip][-1] == BUILD, (ip, poller.builds[ip][-5:])
        info = node_info(cluster, own)
        assert (info["release_version"], info["booted_release_version"]) == (pushed, before[own]["version"]), info

        # A worker added later by self-join (RunInstances with the user data) and the own worker restarted
        # meanwhile both boot the pushed release from `current`, and join.
        t0 = time.monotonic()
        worker = cluster.launch_workers(1)[0]
        mine.append(worker["InstanceId"])
        new = worker["PrivateIpAddress"]
        cluster.ssh(own, "sudo systemctl restart %s" % cluster.layout["worker_unit"])
        for ip in (own, new):
            status = wait_status(ip, pushed)
            assert status and status["version"] == pushed and status["build"] == BUILD, (ip, status)
        joined = cluster.wait_joined([own, new] + cluster.workers, t0)
        print("restarted and new self-joined worker on %s and joined after: %s s" % (pushed, {ip: joined[ip] for ip in (own, new)}))
        for ip in (own, new):
            info = node_info(cluster, ip)
            assert info["release_version"] == info["booted_release_version"] == pushed, (ip, info)
    finally:
        if mine:
            cluster.terminate(mine)
            cluster.wait_state(mine, "terminated")
