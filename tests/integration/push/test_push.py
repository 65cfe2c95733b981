"""Hot code push on a real cluster (localcloud): the push playbook, its refusals, its revert, check and diff mode.

Every test brings the cluster to the release it starts from itself (`at_release`), so they run in any order.
"""

import json
import re
import time

from conftest import LAYOUT, REFUSE_MARKER
from localcloud_cluster import StatusPoller


def rollouts(cluster):
    out = cluster.ssh(cluster.boot_server_ip, "sudo cat %s" % LAYOUT["rollout_log"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_push_loads_the_changed_modules_with_no_failed_poll_and_restarted_workers_run_them(cluster, releases):
    cluster.at_release(releases, "2.0.0")
    before = cluster.md5s("hello_cluster")
    poller = StatusPoller(cluster.workers.values())
    poller.start()
    try:
        result = cluster.playbook("push", extra={"push_release": releases["2.0.1"]})
    finally:
        poller.stop()
    assert poller.polls > 50 and poller.failed == [], (poller.polls, poller.failed[:5])
    after = cluster.md5s("hello_cluster")
    assert all(after[ip] != before[ip] for ip in after), (before, after)
    assert len(set(after.values())) == 1
    assert cluster.md5s("push_loop") != {ip: "not_loaded" for ip in cluster.workers.values()}
    for ip in cluster.workers.values():
        status = cluster.status(ip)
        assert status["build"] == "one" and status["version"] == "2.0.0", status  # pushed code, booted release
        assert poller.builds[ip][0] == "" and poller.builds[ip][-1] == "one"
        info = cluster.node_info(ip)
        assert (info["release_name"], info["release_version"], info["booted_release_version"]) == ("hello_cluster", "2.0.1", "2.0.0"), info
        assert {"name": "hello_cluster", "version": "2.0.1"}.items() <= [a for a in info["applications"] if a["name"] == "hello_cluster"][0].items()
    assert cluster.current() == "2.0.1"
    log = rollouts(cluster)[-1]
    assert log["kind"] == "push" and log["result"] == "ok" and log["release_version"] == "2.0.1", log
    assert {n["node"]: n["action"] for n in log["nodes"]} == dict(
        [("worker@%s" % ip, "pushed") for ip in cluster.workers.values()] + [("boot@%s" % cluster.boot_server_ip, "skipped")]), log
    assert all("hello_cluster" in n["modules"] for n in log["nodes"] if n["action"] == "pushed")
    # The same push again changes nothing.
    again = cluster.playbook("push", extra={"push_release": releases["2.0.1"]})
    assert again.changed == 0, again.recap
    # A restarted worker boots the pushed code from `current`, and forgets the push marker.
    ip = sorted(cluster.workers.values())[0]
    cluster.ssh(ip, "sudo systemctl restart %s" % LAYOUT["worker_unit"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (cluster.status(ip) or {}).get("version") != "2.0.1":
        time.sleep(0.5)
    status = cluster.status(ip)
    assert status and status["version"] == "2.0.1" and status["build"] == "one", status
    assert cluster.md5s("hello_cluster")[ip] == after[ip]
    info = cluster.node_info(ip)
    assert info["release_version"] == info["booted_release_version"] == "2.0.1", info


def test_a_process_in_old_code_refuses_the_push_on_every_node_then_purge_kill_pushes(cluster, releases):
    cluster.at_release(releases, "2.0.1")
    ip = sorted(cluster.workers.values())[-1]
    # A process left in old code: it runs push_loop's loop, then the same module is loaded again over it.
    cluster.erl(ip, "P = push_loop:start(), {M, B, F} = code:get_object_code(push_loop), "
                    "{module, M} = code:load_binary(M, F, B), {erlang:check_old_code(M), erlang:check_process_code(P, M)}.")
    before = {m: cluster.md5s(m) for m in ("hello_cluster", "push_loop")}
    result = cluster.playbook("push", check=False, extra={"push_release": releases["2.0.2"]})
    assert result.rc != 0
    assert "worker@%s: processes still run old code of push_loop" % ip in result.stdout, result.tail()
    assert "nothing was changed on any node" in result.stdout
    assert {m: cluster.md5s(m) for m in before} == before
    assert cluster.current() == "2.0.1"
    assert all(cluster.status(i)["build"] == "one" for i in cluster.workers.values())
    # purge: kill kills that process and pushes.
    cluster.playbook("push", extra={"push_release": releases["2.0.2"], "push_purge": "kill"})
    assert all(cluster.status(i)["build"] == "two" for i in cluster.workers.values())
    assert "{ok, 2}" in cluster.erl(ip, "push_loop:version().")
    assert cluster.current() == "2.0.2"


def test_a_node_refusing_the_load_mid_push_leaves_every_node_on_the_old_code(cluster, releases):
    cluster.at_release(releases, "2.0.1")
    ip = sorted(cluster.workers.values())[0]
    before = {m: cluster.md5s(m) for m in ("hello_cluster", "push_loop")}
    cluster.ssh(ip, "sudo touch %s" % REFUSE_MARKER)  # push_loop's -on_load refuses on this node only
    try:
        poller = StatusPoller(cluster.workers.values())
        poller.start()
        try:
            result = cluster.playbook("push", check=False, extra={"push_release": releases["2.0.2"]})
        finally:
            poller.stop()
    finally:
        cluster.ssh(ip, "sudo rm -f %s" % REFUSE_MARKER)
    assert result.rc != 0
    assert "failed on worker@%s: push_loop: on_load_failure" % ip in result.stdout, result.tail()
    assert "every node is back on its previous code" in result.stdout
    assert poller.failed == [], poller.failed[:5]
    assert {m: cluster.md5s(m) for m in before} == before
    assert cluster.current() == "2.0.1"
    assert all(cluster.status(i)["build"] == "one" for i in cluster.workers.values())
    log = rollouts(cluster)[-1]
    actions = {n["node"]: n["action"] for n in log["nodes"]}
    assert log["result"] == "failed" and actions["worker@%s" % ip] == "failed", log
    assert set(a for n, a in actions.items() if n.startswith("worker@") and n != "worker@%s" % ip) == {"reverted"}, log


def test_check_and_diff_mode_list_the_modules_per_node_and_change_nothing(cluster, releases):
    cluster.at_release(releases, "2.0.1")
    before = cluster.md5s("hello_cluster")
    installed = cluster.ssh(cluster.boot_server_ip, "ls -l --time-style=full-iso %s" % LAYOUT["releases_dir"]).stdout
    result = cluster.playbook("push", "--check", "--diff", extra={"push_release": releases["2.0.2"]})
    for ip in cluster.workers.values():
        assert ("worker@%s hello_cluster" % ip) in result.stdout, result.tail()
        assert "worker@%s push_loop" % ip in result.stdout
    assert cluster.md5s("hello_cluster") == before
    assert cluster.current() == "2.0.1"
    assert cluster.ssh(cluster.boot_server_ip, "ls -l --time-style=full-iso %s" % LAYOUT["releases_dir"]).stdout == installed
    staged = cluster.ssh(cluster.boot_server_ip, "ls -d /tmp/*.erlang-push 2>/dev/null; true").stdout
    assert staged.strip() == "", staged  # the staging copy is removed


def test_structural_changes_are_refused_before_any_change_or_fall_back_to_a_rolling_restart(cluster, releases):
    cluster.at_release(releases, "2.0.1")
    # 2.0.0 has no push_loop: pushing it would remove a module.
    result = cluster.playbook("push", check=False, extra={"push_release": releases["2.0.0"]})
    assert result.rc != 0 and "module push_loop of hello_cluster removed" in result.stdout, result.tail()
    assert cluster.current() == "2.0.1"
    assert all(cluster.status(i)["build"] == "one" for i in cluster.workers.values())
    # push_allow_structural: no load; `current` switches and the workers restart onto the release.
    cluster.playbook("push", extra={"push_release": releases["2.0.0"], "push_allow_structural": True})
    assert cluster.current() == "2.0.0"
    assert [(s["version"], s["build"]) for s in map(cluster.status, cluster.workers.values())] == [("2.0.0", "")] * len(cluster.workers)
    assert set(cluster.md5s("push_loop").values()) == {"not_loaded"}


def test_status_prints_the_pushed_release_and_the_rollouts_the_playbooks_recorded(cluster, releases):
    # Real records: at_release deploys (a rolling restart records itself), then the push records itself.
    cluster.at_release(releases, "2.0.0")
    cluster.playbook("push", extra={"push_release": releases["2.0.1"]})
    result = cluster.playbook("status", extra={"status_rollouts": 2})
    assert result.changed == 0, result.recap
    lines = re.findall(r'^\s*"(.*)",?$', result.stdout, re.M)
    for ip in cluster.workers.values():
        row = [line for line in lines if line.startswith("worker@%s " % ip)]
        assert row and re.search(r"\bup\s+hello_cluster 2\.0\.1\s+all \d", row[0]), (ip, lines)
    headings = [line for line in lines if line.startswith("Rollout ")]
    assert any("rolling_restart hello_cluster 2.0.0 -> ok" in h for h in headings), headings
    assert any("push hello_cluster 2.0.1 -> ok" in h for h in headings), headings
    pushed = [line for line in lines if re.match(r"^\s+worker@\S+\s+pushed\s", line)]
    assert len(pushed) == len(cluster.workers), lines
