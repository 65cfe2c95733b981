"""Membership that is always current, and several boot servers (issue 13), on the session cluster.

1. The issue's flow: a worker configured by site (pushed) and self-joined workers, the boot server restarted,
   then rolling_restart: every worker is restarted and sees every other. The pushed worker's contact list is
   the boot node alone (nothing frozen by the last playbook); the boot server's membership keeper re-connects
   the mesh after its restart.
2. Two boot servers: with the first one's host stopped (EC2 StopInstances), a self-joined worker (user data naming
   both) and a pushed worker (site) boot and join; the stopped one, started again, is level with the other (its
   allow-list holds the new workers). With its boot server unit stopped instead (host up, still in the inventory),
   the worker role skips it, says so, and starts the worker from the other; with no boot server answering it fails
   and starts nothing.

Order-free: each test terminates what it launched (the second boot server too, then site rewrites the first one's
peers), so `cluster.workers` (the session's running self-joined workers) and the single boot server are as they
were; self-joined workers a test launched for itself are added to `cluster.workers`.
"""

import json
import pathlib
import re
import time

from conftest import report
from localcloud_cluster import JOIN_BOUND_SECONDS
from playbook_runner import parse_recap
from plugins.module_utils import cluster as contract

WORKER_PLAY = str(pathlib.Path(__file__).with_name("worker.yml"))


def boot_eval_on(cluster, ip, expression):
    """An Erlang expression on the boot node at `ip` (erl_call as the service user); None when it does not answer."""
    proc = cluster.ssh(ip, "sudo -u %s env HOME=%s erl_call -name %s -R -timeout 10 -e"
                       % (cluster.layout["user"], cluster.layout["home"], contract.node_id("boot", ip)),
                       check=False, timeout=30, stdin=expression + "\n")
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out.startswith("{ok,") else None


def allow_list_on(cluster, ip):
    out = boot_eval_on(cluster, ip, 'lists:flatten(lists:join(",", [inet:ntoa(A) || {_, A} <- erl_boot_server:which_slaves()])).')
    match = re.search(r'"(.*)"', out or "")
    return set(a for a in match.group(1).split(",") if a) if match else set()


def app_controllers(cluster, ips):
    """{ip: pid of the worker's application_controller}: a new pid after init:restart/0."""
    out = {}
    for ip in ips:
        node = "worker@%s" % ip
        out[ip] = cluster.boot_eval("rpc:call('%s', erlang, pid_to_list, [rpc:call('%s', erlang, whereis, [application_controller], 5000)], 5000)."
                                    % (node, node))
    return out


def mark_self_joined(cluster, instance_ids):
    """Tag as cluster_instances join=self does, so that site leaves them to their image."""
    if instance_ids:
        cluster.ec2.create_tags(Resources=list(instance_ids), Tags=[{"Key": contract.TAG_JOIN, "Value": contract.JOIN_SELF}])


def launch_pushed_worker(cluster):
    """A worker from the plain Erlang image (no bootstrap): site configures it."""
    return cluster.run_instances(cluster.erlang_ami(), 1, contract.ROLE_WORKER, cluster.worker_user_data())[0]


def self_joined_ids(cluster):
    reply = cluster.ec2.describe_instances(Filters=[
        {"Name": "tag:erlang-cluster", "Values": [cluster.name]}, {"Name": "tag:erlang-role", "Values": ["worker"]},
        {"Name": "image-id", "Values": [cluster.image_id]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]


def site(cluster, *args, check=True):
    mark_self_joined(cluster, self_joined_ids(cluster))
    proc = cluster.ansible_playbook("skunkworks.erlang_ec2.site", "-e", "cluster_name=%s" % cluster.name, *args, check=check)
    assert cluster.cookie not in proc.stdout
    return proc


def test_pushed_and_self_joined_workers_restart_after_a_boot_server_restart(cluster):
    started = time.monotonic()
    pushed = None
    try:
        if len(cluster.workers) < 2:
            t0 = time.monotonic()
            ips = [w["PrivateIpAddress"] for w in cluster.launch_workers(2 - len(cluster.workers))]
            cluster.wait_joined(ips + cluster.workers, t0)
            cluster.workers += ips
        pushed = launch_pushed_worker(cluster)
        pushed_ip = pushed["PrivateIpAddress"]
        cluster.wait_state([pushed["InstanceId"]], "running")
        site(cluster)
        everyone = [pushed_ip] + cluster.workers
        cluster.wait_joined(everyone, time.monotonic())
        # The pushed worker's contact list: the boot node, not the workers that site saw (they go stale).
        args_file = cluster.ssh(pushed_ip, "cat %s" % cluster.layout["worker_args_file"]).stdout
        assert "sync_nodes_optional \"['%s']\"" % cluster.boot_node in args_file, args_file

        # The boot server restarted: it comes back with no connection; its keeper re-connects every allowed worker.
        cluster.restart_boot_server()
        cluster.wait_joined(everyone, time.monotonic(), bound=60)
        before = app_controllers(cluster, everyone)
        assert all(pid and "<0." in pid for pid in before.values()), before

        t0 = time.monotonic()
        proc = cluster.ansible_playbook("skunkworks.erlang_ec2.rolling_restart", "-e", "cluster_name=%s" % cluster.name)
        restart_seconds = round(time.monotonic() - t0, 1)
        assert cluster.cookie not in proc.stdout
        # Every worker restarted (init:restart/0: a new application controller) and sees every other.
        after = app_controllers(cluster, everyone)
        assert all(after[ip] and after[ip] != before[ip] for ip in everyone), (before, after)
        view = cluster.cluster_view()
        nodes = {"worker@%s" % ip for ip in everyone}
        for node in nodes:
            assert nodes - {node} <= view.get(node, set()), (node, view.get(node))
        report("issue13_flow", {"workers": len(everyone), "rolling_restart_seconds": restart_seconds,
                                "test_seconds": round(time.monotonic() - started, 1)})
    finally:
        if pushed is not None:
            cluster.terminate([pushed["InstanceId"]])
            cluster.wait_state([pushed["InstanceId"]], "terminated")


def test_a_worker_added_while_a_boot_server_is_down_boots_and_joins(cluster, tmp_path):
    started = time.monotonic()
    first_ip, first_id, first_node = cluster.boot_ip, cluster.boot_id, cluster.boot_node
    second = cluster.run_instances(cluster.erlang_ami(), 1, contract.ROLE_BOOT_SERVER,
                                   contract.render_user_data(cluster.name, contract.ROLE_BOOT_SERVER, "boot"))[0]
    mine = [second["InstanceId"]]  # terminated at the end
    second_ip = second["PrivateIpAddress"]
    ips = sorted([first_ip, second_ip], key=contract.ipv4_sort_key)
    down_ip, up_ip = ips[0], ips[1]  # the first of the list is the one down: no reader may rely on it
    down_id = first_id if down_ip == first_ip else second["InstanceId"]
    try:
        cluster.wait_state([second["InstanceId"]], "running")
        t0 = time.monotonic()
        site(cluster)
        report("issue13_site_two_boot_servers_seconds", round(time.monotonic() - t0, 1))
        assert allow_list_on(cluster, second_ip) >= set(cluster.workers)

        # The lowest-addressed boot server's host stopped (EC2 StopInstances): the inventory no longer lists it.
        cluster.ec2.stop_instances(InstanceIds=[down_id])
        cluster.wait_state([down_id], "stopped")
        cluster.boot_ip, cluster.boot_node = up_ip, contract.node_id("boot", up_ip)  # the views below ask the one up
        t0 = time.monotonic()
        user_data = contract.render_user_data(cluster.name, contract.ROLE_WORKER, "worker", boot_server_ips=ips)
        joined_self = cluster.run_instances(cluster.image_id, 1, contract.ROLE_WORKER, user_data)[0]
        pushed = launch_pushed_worker(cluster)
        mine += [joined_self["InstanceId"], pushed["InstanceId"]]
        self_ip, pushed_ip = joined_self["PrivateIpAddress"], pushed["PrivateIpAddress"]
        cluster.wait_state([pushed["InstanceId"], joined_self["InstanceId"]], "running")
        site(cluster)
        joined = cluster.wait_joined([self_ip, pushed_ip] + cluster.workers, t0)
        journal = cluster.bootstrap_journal(self_ip)
        assert "skipped boot servers: boot@%s does not answer" % down_ip in journal, journal
        assert "add_slave(%s) done on boot@%s" % (self_ip, up_ip) in journal, journal
        env = cluster.ssh(self_ip, "cat %s" % cluster.layout["worker_env_file"]).stdout
        assert "ERLANG_BOOT_SERVER_IPS=%s" % ",".join(ips) in env and 'ERLANG_LOADER_HOSTS="%s"' % " ".join(ips) in env, env
        assert "-hosts %s -" % " ".join(ips) in cluster.ssh(self_ip, "ps -u %s -o args" % cluster.layout["user"]).stdout
        assert {self_ip, pushed_ip} <= allow_list_on(cluster, up_ip)
        report("issue13_added_while_a_boot_server_is_down_seconds", {"self_joined": joined[self_ip], "pushed_by_site": joined[pushed_ip]})

        # Back: levelled from the other before it serves, so it allows the workers added meanwhile.
        cluster.ec2.start_instances(InstanceIds=[down_id])
        cluster.wait_state([down_id], "running")
        deadline = time.monotonic() + JOIN_BOUND_SECONDS
        while not {self_ip, pushed_ip} <= allow_list_on(cluster, down_ip):
            assert time.monotonic() < deadline, "boot server %s back but not level: %s" % (down_ip, allow_list_on(cluster, down_ip))
            time.sleep(2)
        assert allow_list_on(cluster, down_ip) == allow_list_on(cluster, up_ip)

        # The worker role itself, on the pushed worker, with the boot server unit of the first stopped (the host
        # answers, the inventory lists it): skipped and named, the worker restarted with -hosts naming both.
        cluster.ssh(down_ip, "sudo systemctl stop %s" % cluster.layout["boot_server_unit"])
        limit = ["--limit", pushed["InstanceId"]]
        first = cluster.ansible_playbook(WORKER_PLAY, *limit)
        assert "skipped (not answering): boot@%s" % down_ip in first.stdout, first.stdout[-4000:]
        assert parse_recap(first.stdout)[pushed["InstanceId"]]["failed"] == 0
        unit = cluster.ssh(pushed_ip, "systemctl show -p ExecStart --value %s" % cluster.layout["worker_unit"]).stdout
        assert "-hosts %s " % " ".join(ips) in unit, unit
        cluster.wait_joined([pushed_ip] + cluster.workers, time.monotonic())
        again = cluster.ansible_playbook(WORKER_PLAY, *limit)
        assert parse_recap(again.stdout)[pushed["InstanceId"]]["changed"] == 0, again.stdout[-4000:]
        check = cluster.ansible_playbook(WORKER_PLAY, "--check", *limit)
        assert parse_recap(check.stdout)[pushed["InstanceId"]]["changed"] == 0, check.stdout[-4000:]

        # No boot server answers (the worker pointed at the stopped one only): a clear failure, nothing started.
        pid = cluster.ssh(pushed_ip, "systemctl show -p MainPID --value %s" % cluster.layout["worker_unit"]).stdout.strip()
        refused = cluster.ansible_playbook(WORKER_PLAY, *limit, "-e", json.dumps({
            "worker_boot_server_ips": [down_ip], "worker_boot_nodes": ["boot@%s" % down_ip],
            "worker_boot_server_hosts": [down_id]}), check=False)
        assert refused.returncode != 0 and "no boot server answered" in refused.stdout, refused.stdout[-4000:]
        assert cluster.ssh(pushed_ip, "systemctl show -p MainPID --value %s" % cluster.layout["worker_unit"]).stdout.strip() == pid
        assert "-hosts %s " % " ".join(ips) in cluster.ssh(
            pushed_ip, "systemctl show -p ExecStart --value %s" % cluster.layout["worker_unit"]).stdout
        cluster.ssh(down_ip, "sudo systemctl start %s" % cluster.layout["boot_server_unit"])
        report("issue13_two_boot_servers_test_seconds", round(time.monotonic() - started, 1))
    finally:
        cluster.boot_ip, cluster.boot_id, cluster.boot_node = first_ip, first_id, first_node
        if first_id == down_id:  # the session's boot server: running and serving again, whatever failed above
            state = cluster.ec2.describe_instances(InstanceIds=[down_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
            if state != "running":
                cluster.wait_state([down_id], "stopped")
                cluster.ec2.start_instances(InstanceIds=[down_id])
                cluster.wait_state([down_id], "running")
            cluster.ssh(first_ip, "sudo systemctl start %s" % cluster.layout["boot_server_unit"], check=False)
        cluster.terminate(mine)
        cluster.wait_state(mine, "terminated")
        # Back to one boot server: site rewrites its peers (none), reconcile drops the terminated workers.
        site(cluster)
        cluster.ansible_playbook("skunkworks.erlang_ec2.reconcile", "-e", "cluster_name=%s" % cluster.name)
