"""Automatic rollback and health gates of the rolling restart (issue 12), on the session's cluster.

Each test starts from every worker serving v2 with `current` at v2 (ensure_v2 deploys it when needed), so the
tests do not depend on the order they, or the files, run in.
"""

import json
from concurrent.futures import ThreadPoolExecutor

from test_e2e import LAYOUT, Sampler, current_release, statuses

V2_BODY = r'"version": "2\.0\.0"'


def ensure_v2(cluster, releases):
    seen = statuses(cluster)
    if current_release(cluster) != "2.0.0" or not all(s and s["version"] == "2.0.0" for s in seen.values()):
        cluster.playbook("deploy", extra={"deploy_release": releases["v2"], "rolling_restart_timeout": 60})
    assert_all_on_v2_and_serving(cluster)


def assert_all_on_v2_and_serving(cluster):
    final = statuses(cluster)
    assert all(s and s["version"] == "2.0.0" for s in final.values()), final
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    assert all(set(s["nodes"]) >= nodes - {s["node"]} for s in final.values()), final
    assert current_release(cluster) == "2.0.0"


def last_rollout(cluster):
    out = cluster.ssh(cluster.boot_server_ip, "sudo tail -n 1 %s" % LAYOUT["rollout_log"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_rolled_back(cluster, result, words):
    """The run failed at the first worker, said why and which node it rolled back; all are on v2 and serving."""
    assert result.rc != 0
    words = (words,) if isinstance(words, str) else words
    assert "Rolling restart stopped at" in result.out and any(w in result.out for w in words), result.tail()
    assert_all_on_v2_and_serving(cluster)
    record = last_rollout(cluster)
    assert record["result"] == "rolled_back", record
    # The first worker (inventory order) failed and was rolled back; the others were not touched.
    first = record["nodes"][0]["node"]
    assert first in ["worker@%s" % ip for ip in cluster.workers.values()], record
    assert [(n["node"], n["action"]) for n in record["nodes"]] == [(first, "failed"), (first, "rolled_back")], record
    assert "Rolled back to 2.0.0" in result.out and "%s (rolled_back, unavailable" % first in result.out, result.tail()
    assert all(isinstance(n["unavailable_ms"], int) for n in record["nodes"]), record


def test_broken_release_is_rolled_back_by_default(cluster, releases):
    ensure_v2(cluster, releases)
    result = cluster.playbook("deploy", check=False, extra={"deploy_release": releases["v3"], "rolling_restart_timeout": 30})
    # Seen booting and then exiting: it fails at once; on a loaded machine the VM may exit before it ever
    # answers, and systemd keeps restarting it: then it fails at rolling_restart_timeout.
    assert_rolled_back(cluster, result, ("its VM exited", "did not answer again within 30s"))


def test_failing_url_health_check_stops_and_rolls_back(cluster, releases):
    """v1 does not answer the body the gate wants: the first node fails its gate, goes back to v2 (which passes)."""
    ensure_v2(cluster, releases)
    result = cluster.playbook("deploy", check=False, extra={
        "deploy_release": releases["v1"], "rolling_restart_timeout": 30, "rolling_restart_health_retries": 2,
        "rolling_restart_health_url": "http://{{ ansible_host }}:8080/status", "rolling_restart_health_body": V2_BODY})
    assert_rolled_back(cluster, result, "its body does not match")


def test_failing_mfa_health_check_stops_and_rolls_back(cluster, releases):
    """A gate that never passes: the rollback reports it on the node it restarts back, and still goes on."""
    ensure_v2(cluster, releases)
    result = cluster.playbook("deploy", check=False, extra={
        "deploy_release": releases["v1"], "rolling_restart_timeout": 30, "rolling_restart_health_retries": 2,
        "rolling_restart_health_delay": 0, "rolling_restart_health_mfa": {"module": "erlang", "function": "is_atom", "args": ["42"]}})
    assert_rolled_back(cluster, result, "erlang:is_atom(42) returned false")


def test_passing_gates_percentage_batches_and_bake_time(cluster, releases):
    """serial 67% of 3 workers: batches of 2 then 1, 2 s apart; both gates pass on every node."""
    ensure_v2(cluster, releases)
    count = len(cluster.workers)
    sampler = Sampler(cluster)
    sampler.start()
    try:
        result = cluster.playbook("rolling_restart", extra={
            "rolling_restart_serial": "67%", "rolling_restart_pause": 2,
            "rolling_restart_health_url": "http://{{ ansible_host }}:8080/status", "rolling_restart_health_body": V2_BODY,
            "rolling_restart_health_mfa": {"module": "erlang", "function": "is_atom", "args": ["hello_cluster"]}})
    finally:
        sampler.stop()
    assert_all_on_v2_and_serving(cluster)
    record = last_rollout(cluster)
    assert record["result"] == "ok" and [n["action"] for n in record["nodes"]] == ["restarted"] * count, record
    down = max(sum(1 for s in answers.values() if s is None) for dummy, answers in sampler.rounds)
    assert down <= max(1, count * 67 // 100), "more workers down at once than a batch"
    assert result.elapsed > 2


BAD_VALUES = [
    ({"rolling_restart_serial": "0"}, "rolling_restart_serial must be a positive number of nodes or a percentage"),
    ({"rolling_restart_serial": "150%"}, "rolling_restart_serial must be a positive number of nodes or a percentage"),
    ({"rolling_restart_pause": -1}, "rolling_restart_pause must be 0 or more seconds"),
    ({"rolling_restart_pause": "soon"}, "rolling_restart_pause"),
    ({"rolling_restart_rollback_on_failure": "maybe"}, "rolling_restart_rollback_on_failure"),
    ({"rolling_restart_health_url": "ftp://{{ ansible_host }}/status"}, "rolling_restart_health_url must be an http:// or https:// URL"),
    ({"rolling_restart_health_status": 700}, "rolling_restart_health_status must be an HTTP status code"),
    ({"rolling_restart_health_body": "("}, "health_body is not a valid regular expression"),
    ({"rolling_restart_health_mfa": {"module": "Foo", "function": "ok"}}, "health_mfa.module must be an Erlang atom name"),
    ({"rolling_restart_health_mfa": {"module": "erlang"}}, "function"),
    ({"rolling_restart_health_mfa": {"module": "erlang", "function": "is_atom", "args": ["X"]}}, "is not one Erlang term"),
    ({"rolling_restart_health_retries": 0}, "rolling_restart_health_retries must be at least 1"),
    ({"cluster_name": "no-such-cluster"}, "The inventory has no boot server in cluster no-such-cluster"),
]


def rollout_count(cluster):
    return int(cluster.ssh(cluster.boot_server_ip, "sudo cat %s 2>/dev/null | wc -l" % LAYOUT["rollout_log"]).stdout)


def test_bad_rolling_restart_values_are_refused_before_any_change(cluster):
    before, records = current_release(cluster), rollout_count(cluster)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: cluster.playbook("rolling_restart", check=False, extra=case[0]), BAD_VALUES))
    for (extra, words), result in zip(BAD_VALUES, results):
        assert result.rc != 0, extra
        assert words in result.out, (extra, result.tail())
        assert result.changed == 0, (extra, result.recap)
    assert current_release(cluster) == before and rollout_count(cluster) == records
    assert all(statuses(cluster).values())


def test_check_mode_changes_nothing(cluster):
    before, records = current_release(cluster), rollout_count(cluster)
    result = cluster.playbook("rolling_restart", "--check", extra={"rolling_restart_serial": "100%"})
    assert result.rc == 0, result.tail()
    assert "would restart" in result.out or result.changed > 0, result.tail()
    assert current_release(cluster) == before and rollout_count(cluster) == records
