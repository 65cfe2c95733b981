"""The demo flow as a test: provision, site, deploy v2 by a serial rolling restart, a broken v3.

Tests run in file order against one session cluster (each step builds on the previous one). The story starts
from the cluster as site leaves it; `story_start` brings the shared cluster back to that state with the
playbooks users run when another file ran on it first, so the files do not depend on the order they run in.
"""

import os
import pathlib
import re
import shlex
import shutil
import tarfile
import tempfile
import threading
import time

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT

ALLOW_LIST_FILE = LAYOUT["allow_list_file"]


def statuses(cluster):
    return {ip: cluster.status(ip) for ip in cluster.workers.values()}


def current_release(cluster):
    result = cluster.ssh(cluster.boot_server_ip, "readlink %s" % LAYOUT["current_link"])
    assert result.returncode == 0, result.stderr
    return os.path.basename(result.stdout.strip())


class Sampler(threading.Thread):
    """Polls every worker's /status concurrently, in rounds, until stopped."""

    def __init__(self, cluster, interval=0.05):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.rounds = []  # (monotonic time, {ip: status or None})
        self._halt = threading.Event()

    def run(self):
        ips = list(self.cluster.workers.values())
        while not self._halt.is_set():
            answers = {}
            threads = [threading.Thread(target=lambda ip=ip: answers.__setitem__(ip, self.cluster.status(ip, timeout=1.0))) for ip in ips]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.rounds.append((time.monotonic(), answers))
            time.sleep(self.interval)

    def stop(self):
        self._halt.set()
        self.join(10)


def releases_on_boot_server(cluster):
    return cluster.ssh(cluster.boot_server_ip, "ls %s" % LAYOUT["releases_dir"]).stdout.split()


@pytest.fixture(scope="module", autouse=True)
def story_start(cluster, releases):
    """The story's first state: the session's worker_count workers, every one serving v1, `current` at v1 (as site left it).

    Another file may have used the session's cluster first (test_rollout.py leaves it on v2), and
    test_decommission below removes a worker for good: provision + site add the missing workers, deploy v1
    rolls every worker back to v1. Each runs only when needed (a fresh cluster costs nothing here).
    """
    if len(cluster.refresh().workers) < cluster.worker_count:
        cluster.provision(cluster.worker_count)
        cluster.playbook("site", extra={"site_initial_release": releases["v1"]})
        cluster.refresh()
    seen = statuses(cluster)
    if current_release(cluster) != "1.0.0" or not all(s and s["version"] == "1.0.0" for s in seen.values()):
        cluster.playbook("deploy", extra={"deploy_release": releases["v1"], "rolling_restart_timeout": 60})
    seen = statuses(cluster)
    assert len(seen) == cluster.worker_count and all(s and s["version"] == "1.0.0" for s in seen.values()), seen
    assert current_release(cluster) == "1.0.0"


def test_cluster_formed(cluster):
    assert len(cluster.workers) == 3
    seen = statuses(cluster)
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    for ip, status in seen.items():
        assert status is not None, "worker %s does not answer" % ip
        assert status["version"] == "1.0.0"
        assert status["node"] == "worker@%s" % ip
        assert set(status["nodes"]) >= nodes - {status["node"]}, status
    assert current_release(cluster) == "1.0.0"


def test_an_unprivileged_user_on_a_worker_cannot_read_the_cookie_through_the_boot_server(cluster):
    """sudo -u nobody erl -loader inet -hosts <boot server> on a worker host: the release tree is served,
    the cookie is not, nor a file reached by `..` or by a symlink inside the served tree."""
    cookie = LAYOUT["cookie_file"]
    link = LAYOUT["releases_dir"] + "/escape-link"
    assert cluster.ssh(cluster.boot_server_ip, "sudo ln -sfn %s %s" % (cookie, link)).returncode == 0
    # The cookie reached by `..` from the release root.
    dotdot = LAYOUT["release_root"] + "/.." * LAYOUT["release_root"].count("/") + cookie
    paths = [LAYOUT["current_link"] + "/hello_cluster.boot", cookie, "/etc/shadow", dotdot, link]
    program = ("R = fun(T) when is_tuple(T) -> element(1, T); (A) -> A end, "
               "[io:format(\"GET ~s ~s~n\", [F, R(erl_prim_loader:get_file(F))]) || F <- [%s]], halt()."
               % ", ".join('\"%s\"' % p for p in paths))
    worker = sorted(cluster.workers.values())[0]
    try:
        out = cluster.ssh(worker, "cd /tmp && sudo -u nobody env HOME=/tmp timeout -s KILL 60 erl -noshell -noinput -loader inet "
                                  "-hosts %s -eval %s" % (cluster.boot_server_ip, shlex.quote(program))).stdout
    finally:
        cluster.ssh(cluster.boot_server_ip, "sudo rm -f %s" % link)
    answers = dict(line.split()[1:3] for line in out.splitlines() if line.startswith("GET "))
    assert answers.get(paths[0]) == "ok", out
    for path in paths[1:]:
        assert answers.get(path) == "error", (path, out)
    journal = cluster.ssh(cluster.boot_server_ip, "sudo journalctl -u %s --no-pager -o cat" % LAYOUT["boot_server_unit"]).stdout
    assert "outside the served roots, refused" in journal


def test_site_again_changes_nothing(cluster):
    result = cluster.playbook("site")
    assert result.changed == 0, result.recap


def test_check_mode_changes_nothing(cluster, releases):
    before, listed = statuses(cluster), releases_on_boot_server(cluster)
    result = cluster.playbook("deploy", "--check", extra={"deploy_release": releases["v2"]})
    assert result.rc == 0, result.tail()
    assert current_release(cluster) == "1.0.0"
    assert releases_on_boot_server(cluster) == listed
    after = statuses(cluster)
    assert {ip: s["version"] for ip, s in after.items()} == {ip: s["version"] for ip, s in before.items()}


def test_incompatible_release_is_refused_before_any_change(cluster, releases, tmp_path):
    # A release naming an ERTS the cluster does not run.
    src = tmp_path / "bad"
    with tarfile.open(releases["v2"]) as tar:
        tar.extractall(src, filter="data")  # nosec - our own build
    shutil.move(str(src / "releases" / "2.0.0"), str(src / "releases" / "2.0.1"))
    rel = src / "releases" / "2.0.1" / "hello_cluster.rel"
    rel.write_text(rel.read_text().replace('"2.0.0"}', '"2.0.1"}', 1).replace('{erts,"13.1.5"}', '{erts,"99.0"}').replace('{erts, "13.1.5"}', '{erts,"99.0"}'))
    listed = releases_on_boot_server(cluster)
    # A TMPDIR of the test's own, short: ansible-playbook's local RPC socket lives there (a Unix socket path
    # has at most 107 characters).
    with tempfile.TemporaryDirectory(prefix="e2e-") as controller_tmp:
        result = cluster.playbook("deploy", check=False, extra={"deploy_release": str(src)}, environ={"TMPDIR": controller_tmp})
        # The controller's scratch copy of the tarball is removed on a refusal too.
        scratch_left = list(pathlib.Path(controller_tmp).glob("*.erlang-release"))
    assert result.rc != 0
    assert "ERTS 99.0" in result.out, result.tail()
    assert current_release(cluster) == "1.0.0"
    assert releases_on_boot_server(cluster) == listed and "2.0.1" not in listed
    assert scratch_left == []


def test_release_shapes_the_cluster_cannot_run_are_refused_before_any_change(cluster, releases, tmp_path):
    """A bundled ERTS other than the cluster's (include_erts), and a relx vm.args.src (start-script substitution)."""
    for name, change, message in [
        ("erts", lambda root: (root / "erts-99.0" / "bin").mkdir(parents=True), "bundles erts-99.0 (include_erts)"),
        ("src", lambda root: (root / "releases" / "2.0.0" / "vm.args.src").write_text("-sname ${NAME}\n"), "vm.args.src"),
    ]:
        src = tmp_path / name
        with tarfile.open(releases["v2"]) as tar:
            tar.extractall(src, filter="data")  # nosec - our own build
        change(src)
        listed = releases_on_boot_server(cluster)
        result = cluster.playbook("deploy", check=False, extra={"deploy_release": str(src)})
        assert result.rc != 0 and message in result.out, result.tail()
        assert current_release(cluster) == "1.0.0"
        assert releases_on_boot_server(cluster) == listed


def test_rolling_deploy_v2_keeps_the_cluster_serving(cluster, releases):
    sampler = Sampler(cluster)
    sampler.start()
    try:
        result = cluster.playbook("deploy", extra={"deploy_release": releases["v2"]})
    finally:
        sampler.stop()
    rounds = sampler.rounds
    assert len(rounds) > 20, "too few samples to judge availability"
    down_per_round = [sum(1 for s in answers.values() if s is None) for dummy, answers in rounds]
    assert max(down_per_round) <= 1, "more than one worker unavailable at once"
    for ip in cluster.workers.values():
        versions = [answers[ip]["version"] for dummy, answers in rounds if answers.get(ip)]
        assert versions[0] == "1.0.0" and versions[-1] == "2.0.0", (ip, versions[:3], versions[-3:])
        # The node moved once, from v1 to v2 (no flapping back).
        assert "1.0.0" not in versions[versions.index("2.0.0"):]
    final = statuses(cluster)
    assert all(s and s["version"] == "2.0.0" for s in final.values()), final
    nodes = {"worker@%s" % ip for ip in cluster.workers.values()}
    assert all(set(s["nodes"]) >= nodes - {s["node"]} for s in final.values()), final
    assert current_release(cluster) == "2.0.0"
    cluster.deploy_v2 = result


def test_broken_release_stops_at_the_first_node(cluster, releases):
    """rolling_restart_rollback_on_failure: false keeps stop-at-first-failure (the default rolls back:
    test_rollout.py)."""
    extra = {"deploy_release": releases["v3"], "rolling_restart_timeout": 40, "rolling_restart_rollback_on_failure": False}
    result = cluster.playbook("deploy", check=False, extra=extra)
    assert result.rc != 0
    assert "Rolling restart stopped at" in result.out, result.tail()
    assert "Not rolled back (rolling_restart_rollback_on_failure is false)" in result.out, result.tail()
    assert current_release(cluster) == "3.0.0"
    final = statuses(cluster)
    on_v2 = [ip for ip, s in final.items() if s and s["version"] == "2.0.0"]
    assert len(on_v2) == 2, final
    broken = [ip for ip in final if ip not in on_v2]
    assert len(broken) == 1
    # The failing node's state and journal are reported.
    assert LAYOUT["worker_unit"] in result.out and "Journal" in result.out


def test_rollback_restores_v2(cluster):
    # current points at v3 after the failed rollout; rollback switches to previous (v2) and rolls.
    before = statuses(cluster)
    # Check mode first: reports the switch, changes nothing (no link switched, no node restarted).
    checked = cluster.playbook("rollback", "--check", extra={"rolling_restart_timeout": 60})
    assert current_release(cluster) == "3.0.0", checked.tail()
    assert {ip: s and s["version"] for ip, s in statuses(cluster).items()} == {ip: s and s["version"] for ip, s in before.items()}
    cluster.playbook("rollback", extra={"rolling_restart_timeout": 60}, check=False)
    final = statuses(cluster)
    assert current_release(cluster) == "2.0.0"
    assert all(s and s["version"] == "2.0.0" for s in final.values()), final


def running_allow_list(cluster):
    """The boot server's running allow-list, as it reports it (erlang-ec2-node on the boot server host)."""
    out = cluster.ssh(cluster.boot_server_ip, "sudo /usr/local/bin/erlang-ec2-node eval "
                      "'[inet:ntoa(Ip) || {_, Ip} <- erl_boot_server:which_slaves()]'")
    assert out.returncode == 0 and out.stdout.strip().startswith("["), out.stdout + out.stderr
    return sorted(re.findall(r"\d+\.\d+\.\d+\.\d+", out.stdout))


def test_decommission_removes_a_worker_for_good(cluster):
    host, ip = sorted(cluster.workers.items())[-1]
    ec2 = cluster.boto3("ec2")
    # Check mode first: the worker keeps running, serving and allowed.
    cluster.playbook("decommission", "--check", extra={"decommission_hosts": [host]})
    assert ec2.describe_instances(InstanceIds=[host])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert cluster.status(ip)
    assert ip in cluster.ssh(cluster.boot_server_ip, "sudo cat %s" % ALLOW_LIST_FILE).stdout.split()
    assert ip in running_allow_list(cluster)
    cluster.playbook("decommission", extra={"decommission_hosts": [host]})
    lines = cluster.ssh(cluster.boot_server_ip, "sudo cat %s" % ALLOW_LIST_FILE).stdout.splitlines()
    allowed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert allowed, "could not read the persisted allow-list"
    assert ip not in allowed
    # Gone from the running list too, and the file is still the boot server's own (its one writer).
    assert ip not in running_allow_list(cluster)
    assert cluster.ssh(cluster.boot_server_ip, "sudo stat -c '%%U %%G %%a' %s" % ALLOW_LIST_FILE).stdout.split() == ["erlang", "erlang", "640"]
    assert cluster.ssh(cluster.boot_server_ip, "sudo test -e %s" % LAYOUT["joined_allow_list_file"]).returncode != 0
    state = ec2.describe_instances(InstanceIds=[host])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")
    remaining = cluster.refresh().workers
    assert host not in remaining
    assert all(cluster.status(other) for other in remaining.values())
    assert sorted(allowed) == sorted(remaining.values())
    assert running_allow_list(cluster) == sorted(remaining.values())
