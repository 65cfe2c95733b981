"""Self-join at boot, end to end on localcloud: instances launched by the EC2 API only join by themselves.

Tests run in file order and share one cluster (a baked image is expensive); each test says what
it leaves behind. Timings are printed (pytest -s) and written to the suite's report file, never asserted
beyond generous bounds that only keep a broken bootstrap from hanging the run.
"""

import json
import pathlib
import re
import time

from conftest import report
from localcloud_cluster import DEFAULT_LAYOUT as LAYOUT, JOIN_BOUND_SECONDS
from playbook_runner import parse_recap


def changed_by_host(stdout):
    """{host: changed count} from an ansible-playbook recap."""
    return {host: counts["changed"] for host, counts in parse_recap(stdout).items()}


def test_baked_image_has_no_cluster_address(cluster):
    """The image carries the units and the cookie file, but no boot server address nor worker settings."""
    assert cluster.image_id.startswith("ami-")
    report("bake_image_seconds", cluster.bake_seconds)
    # The bake printed the AMI, never the cookie.
    assert cluster.cookie not in cluster.bake_output
    image = cluster.ec2.describe_images(ImageIds=[cluster.image_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert tags.get("erlang-cluster") == cluster.name
    # No builder left running.
    builders = cluster.ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["erlang-ec2-builder"]},
                                                       {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert not [i for r in builders["Reservations"] for i in r["Instances"]
                if i["Tags"] and dict((t["Key"], t["Value"]) for t in i["Tags"]).get("erlang-ec2-builder", "").startswith("erlang-ec2-node-" + cluster.name)]


def test_three_workers_launched_by_api_join(cluster):
    """RunInstances with the contract's user data, no playbook: 3 workers join within the bound."""
    before = cluster.which_slaves()
    t0 = time.monotonic()
    workers = cluster.launch_workers(3)
    ips = [w["PrivateIpAddress"] for w in workers]
    joined = cluster.wait_joined(ips, t0)
    report("run_instances_to_joined_seconds_3_workers", joined)
    # Each worker put itself on the allow-list (the controller's add_slave), boots its release
    # from the boot server, and its bootstrap unit ended successfully.
    assert set(ips) <= cluster.which_slaves() - before
    bootstrap_ms = {}
    for ip in ips:
        assert cluster.bootstrap_state(ip) == "active"
        journal = cluster.bootstrap_journal(ip)
        assert "joined: worker@%s runs hello_cluster" % ip in journal
        bootstrap_ms[ip] = int(re.search(r"(\d+) ms since the bootstrap started", journal).group(1))
        env = cluster.ssh(ip, "cat %s" % LAYOUT["worker_env_file"]).stdout
        assert "ERLANG_NODE=worker@%s" % ip in env and "ERLANG_BOOT_SERVER_IP=%s" % cluster.boot_ip in env
        assert "ERLANG_BOOT_SERVER_IPS=%s" % cluster.boot_ip in env and 'ERLANG_LOADER_HOSTS="%s"' % cluster.boot_ip in env
        # The worker unit is the push path's unit, its variables filled from the bootstrap's settings: -hosts
        # one argument per boot server (an unbraced systemd variable is split at spaces).
        unit = cluster.ssh(ip, "systemctl show -p ExecStart --value %s" % LAYOUT["worker_unit"]).stdout
        assert "-hosts $ERLANG_LOADER_HOSTS " in unit, unit
        # Membership: the boot nodes and nothing that goes stale.
        args_file = cluster.ssh(ip, "cat %s" % LAYOUT["worker_args_file"]).stdout
        assert "sync_nodes_optional \"['%s']\"" % cluster.boot_node in args_file, args_file
        args = cluster.ssh(ip, "ps -u %s -o args" % LAYOUT["user"]).stdout
        assert "-name worker@%s" % ip in args and "-loader inet -hosts %s" % cluster.boot_ip in args, args
    report("bootstrap_unit_start_to_joined_ms_3_workers", bootstrap_ms)
    cluster.workers += ips


def test_five_at_once_make_one_cluster(cluster):
    """5 launched in one RunInstances: every worker (old and new) sees every other, one cluster."""
    t0 = time.monotonic()
    workers = cluster.launch_workers(5)
    ips = [w["PrivateIpAddress"] for w in workers]
    joined = cluster.wait_joined(ips + cluster.workers, t0)
    report("run_instances_to_joined_seconds_5_workers", {ip: joined[ip] for ip in ips})
    view = cluster.cluster_view()
    everyone = {"worker@%s" % ip for ip in ips + cluster.workers}
    for node in everyone:
        assert everyone - {node} <= view[node], (node, view[node])
    cluster.workers += ips


def test_cluster_instances_grows_the_cluster_from_the_image(cluster):
    """skunkworks.erlang_ec2.cluster_instances join=self count=+5 with the baked image: 5 new workers join by themselves."""
    count = len(cluster.workers) + 5
    args = json.dumps({"cluster": cluster.name, "role": "worker", "count": count, "join": "self", "image_id": cluster.image_id,
                       "instance_type": "t3.small", "subnet_ids": [cluster.subnet_id], "key_name": "localcloud",
                       "security_group_ids": cluster.security_group_ids, "endpoint_url": cluster.endpoint_url, "region": "us-east-1", "wait": True})
    t0 = time.monotonic()
    proc = cluster.ansible("skunkworks.erlang_ec2.cluster_instances", args)
    result = json.loads(proc.stdout.split(" => ", 1)[1])
    new = [i for i in result["instances"] if i["id"] in result["launched"]]
    assert len(new) == 5 and result["boot_server_ip"] == cluster.boot_ip
    assert cluster.cookie not in result["user_data"]
    cluster.launched += result["launched"]
    ips = [i["private_ip"] for i in new]
    joined = cluster.wait_joined(ips + cluster.workers, t0)
    report("cluster_instances_join_self_to_joined_seconds_5_workers", {ip: joined[ip] for ip in ips})
    cluster.workers += ips
    # Same count again: nothing launched (the module is idempotent on the self-join path too).
    proc = cluster.ansible("skunkworks.erlang_ec2.cluster_instances", args)
    again = json.loads(proc.stdout.split(" => ", 1)[1])
    assert again["changed"] is False and again["launched"] == []


def test_user_data_never_holds_the_cookie(cluster):
    """Neither the user data (EC2 API), the command lines (ps) nor the bootstrap's journal show the cookie."""
    for instance_id in cluster.launched:
        assert cluster.cookie not in cluster.user_data_of(instance_id)
    ip = cluster.workers[0]
    assert cluster.cookie not in cluster.ssh(ip, "ps -eo args").stdout
    assert cluster.cookie not in cluster.bootstrap_journal(ip)
    mode = cluster.ssh(ip, "sudo stat -c '%%a %%U' %s" % LAYOUT["cookie_file"]).stdout.split()
    assert mode == ["400", LAYOUT["user"]]


def test_refuses_foreign_user_data(cluster):
    """An instance of the image launched with someone else's user data fails visibly and joins nothing."""
    before = cluster.which_slaves()
    instance = cluster.run_instances(cluster.image_id, 1, "worker", "#cloud-config\npackages: [nginx]\n")[0]
    ip = instance["PrivateIpAddress"]
    try:
        cluster.wait_state([instance["InstanceId"]], "running")
        deadline = time.monotonic() + 90
        while cluster.bootstrap_state(ip) not in ("failed", "active") and time.monotonic() < deadline:
            time.sleep(1)
        assert cluster.bootstrap_state(ip) == "failed"
        assert "user data is not erlang-ec2 user data" in cluster.bootstrap_journal(ip)
        assert ip not in cluster.which_slaves() - before
    finally:
        cluster.terminate([instance["InstanceId"]])


def test_boot_server_restart_keeps_self_joined_workers(cluster):
    """No playbook ran since site: the boot server itself persisted every self-joined worker (its one
    allow-list file), so a restart of its unit allows exactly them again, and a worker's init:restart()
    still loads its code."""
    workers = set(cluster.workers)
    persisted = cluster.persisted_slaves()
    assert workers <= persisted
    # One file, the boot server's own (it runs as erlang), no second file beside it.
    assert cluster.allow_list_file_stat() == ("erlang", "erlang", "640")
    assert not cluster.legacy_joined_file_exists()
    first = cluster.workers[0]
    journal = cluster.bootstrap_journal(first)
    assert "erlang_ec2_boot_server:add_slave(%s) done" % first in journal and "not persisted" not in journal, journal
    t0 = time.monotonic()
    allowed = cluster.restart_boot_server()
    report("boot_server_restart_seconds", round(time.monotonic() - t0, 1))
    assert workers <= allowed, workers - allowed
    # Exactly the persisted list, nothing more (and the file is unchanged by the restart).
    assert allowed == persisted
    assert cluster.persisted_slaves() == persisted
    # The harm a forgotten address does: a restarting worker hangs in the inet loader.
    node = "worker@%s" % first
    app_controller = "rpc:call('%s', erlang, pid_to_list, [rpc:call('%s', erlang, whereis, [application_controller], 5000)], 5000)." % (node, node)
    before = cluster.boot_eval(app_controller)
    assert before and "<0." in before, before
    t0 = time.monotonic()
    assert cluster.boot_eval("rpc:call('%s', init, restart, [], 5000)." % node) == "{ok, ok}"
    deadline = time.monotonic() + JOIN_BOUND_SECONDS
    while True:
        status = cluster.boot_eval("element(1, rpc:call('%s', init, get_status, [], 5000))." % node)
        after = cluster.boot_eval(app_controller)
        if status == "{ok, started}" and after and "<0." in after and after != before:
            break
        assert time.monotonic() < deadline, "worker %s not back from init:restart(): %s %s" % (first, status, after)
        time.sleep(1)
    joined = cluster.wait_joined(cluster.workers, t0)
    report("worker_init_restart_after_boot_server_restart_seconds", joined[first])


def test_worker_waits_for_a_boot_server_that_comes_back(cluster):
    """Boot server down at launch: the bootstrap retries with backoff and joins once it is back.

    reconcile first persists the running workers, so that the restarted boot server allows them again
    and the new worker finds them through its allow-list: still one cluster afterwards.
    """
    cluster.ansible_playbook("skunkworks.erlang_ec2.reconcile", "-e", "cluster_name=%s" % cluster.name)
    assert cluster.persisted_slaves() == set(cluster.workers)
    # One file: the self-joined workers are in it, no file of joined workers beside it.
    assert not cluster.legacy_joined_file_exists()
    cluster.ssh(cluster.boot_ip, "sudo systemctl stop %s" % LAYOUT["boot_server_unit"])
    try:
        t0 = time.monotonic()
        instance = cluster.launch_workers(1, bootstrap_deadline="180")[0]
        ip = instance["PrivateIpAddress"]
        cluster.wait_state([instance["InstanceId"]], "running")
        deadline = time.monotonic() + 60
        # Down long enough for several attempts with growing backoff (0.5, 1, 2, 4 s).
        while "attempt 4," not in cluster.bootstrap_journal(ip) and time.monotonic() < deadline:
            time.sleep(1)
        journal = cluster.bootstrap_journal(ip)
        assert "boot server node %s does not answer" % cluster.boot_node in journal and "attempt 4," in journal, journal
        assert cluster.bootstrap_state(ip) == "activating"
    finally:
        cluster.ssh(cluster.boot_ip, "sudo systemctl start %s" % LAYOUT["boot_server_unit"])
    down_for = round(time.monotonic() - t0, 1)
    joined = cluster.wait_joined([ip] + cluster.workers, t0)
    report("boot_server_down_then_back", {"down_for_seconds": down_for, "joined_after_seconds": joined[ip]})
    assert cluster.bootstrap_state(ip) == "active"
    cluster.workers.append(ip)


def test_worker_fails_visibly_after_the_deadline(cluster):
    """Boot server down past the deadline: the bootstrap unit fails with the cause in the journal."""
    cluster.ssh(cluster.boot_ip, "sudo systemctl stop %s" % LAYOUT["boot_server_unit"])
    instance = None
    try:
        instance = cluster.launch_workers(1, bootstrap_deadline="20")[0]
        ip = instance["PrivateIpAddress"]
        cluster.wait_state([instance["InstanceId"]], "running")
        deadline = time.monotonic() + 150
        while cluster.bootstrap_state(ip) != "failed" and time.monotonic() < deadline:
            time.sleep(1)
        state = cluster.bootstrap_state(ip)
        journal = cluster.bootstrap_journal(ip)
        worker_state = cluster.ssh(ip, "systemctl is-active %s" % LAYOUT["worker_unit"], check=False).stdout.strip()
        processes = cluster.ssh(ip, "ps -ef --forest", check=False).stdout
    finally:
        cluster.ssh(cluster.boot_ip, "sudo systemctl start %s" % LAYOUT["boot_server_unit"])
        if instance is not None:
            cluster.terminate([instance["InstanceId"]])
    assert state == "failed", (state, journal, processes)
    assert "FAILED: boot server node %s does not answer" % cluster.boot_node in journal
    assert "gave up" in journal and "at the deadline" in journal
    # The worker was never started: it would hang in the loader.
    assert worker_state == "inactive"


def test_reconcile_removes_a_terminated_worker(cluster):
    """After workers are terminated, reconcile leaves exactly the running workers on the allow-list and in
    the persisted file: a restarted boot server allows none of the gone ones."""
    # The first worker: persisted by the reconcile of an earlier test. The last one joined by itself
    # after that reconcile: persisted by the boot server itself, still allowed after the restarts above.
    gone_main, gone_joined = cluster.workers.pop(0), cluster.workers.pop()
    assert gone_main in cluster.persisted_slaves()
    assert gone_joined in cluster.persisted_slaves() and not cluster.legacy_joined_file_exists()
    gone_ids = [i for i in cluster.launched if cluster.ec2.describe_instances(InstanceIds=[i])["Reservations"][0]["Instances"][0]
                .get("PrivateIpAddress") in (gone_main, gone_joined)]
    assert len(gone_ids) == 2, gone_ids
    cluster.terminate(gone_ids)
    cluster.wait_state(gone_ids, "terminated")
    assert {gone_main, gone_joined} <= cluster.which_slaves()
    # Check mode reports the change and makes none.
    check = cluster.ansible_playbook("skunkworks.erlang_ec2.reconcile", "--check", "--diff", "-e", "cluster_name=%s" % cluster.name)
    assert changed_by_host(check.stdout)[cluster.boot_id] > 0, check.stdout[-3000:]
    assert "-%s" % gone_main in check.stdout and "-%s" % gone_joined in check.stdout, check.stdout[-3000:]
    assert {gone_main, gone_joined} <= cluster.which_slaves()
    assert gone_main in cluster.persisted_slaves() and gone_joined in cluster.persisted_slaves()
    proc = cluster.ansible_playbook("skunkworks.erlang_ec2.reconcile", "-e", "cluster_name=%s" % cluster.name)
    assert cluster.which_slaves() == set(cluster.workers)
    assert cluster.persisted_slaves() == set(cluster.workers)
    assert not cluster.legacy_joined_file_exists()
    assert cluster.allow_list_file_stat() == ("erlang", "erlang", "640")
    assert cluster.cookie not in proc.stdout
    # Gone for good: a restart reads the file.
    assert cluster.restart_boot_server() == set(cluster.workers)
    # A second run changes nothing.
    again = cluster.ansible_playbook("skunkworks.erlang_ec2.reconcile", "-e", "cluster_name=%s" % cluster.name)
    assert changed_by_host(again.stdout) == {cluster.boot_id: 0, "localhost": 0}, again.stdout[-3000:]
    assert JOIN_BOUND_SECONDS > 0


def test_node_image_role_is_idempotent(cluster):
    """On a builder: a second run of node_image changes nothing; check mode of that run neither; the
    bootstrap unit is enabled but was not started (nothing to join on a builder)."""
    builder = cluster.ec2.run_instances(
        ImageId=cluster.erlang_ami(), MinCount=1, MaxCount=1, InstanceType="t3.small", KeyName="localcloud",
        SubnetId=cluster.subnet_id, SecurityGroupIds=cluster.security_group_ids,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "self-join-idempotence"}]}],
    )["Instances"][0]
    cluster.launched.append(builder["InstanceId"])
    ip = builder["PrivateIpAddress"]
    cluster.wait_state([builder["InstanceId"]], "running")
    play = str(pathlib.Path(__file__).with_name("node_image.yml"))
    conn = ["-i", "%s," % ip, "-e", "ansible_user=admin", "-e", "ansible_ssh_private_key_file=%s" % cluster.ssh_key,
            "-e", "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
            "-e", "ansible_python_interpreter=/usr/bin/python3"]
    first = cluster.ansible_playbook(play, *conn, inventory=False)
    assert changed_by_host(first.stdout)[ip] > 0
    check = cluster.ansible_playbook(play, "--check", "--diff", *conn, inventory=False)
    assert changed_by_host(check.stdout) == {ip: 0}, check.stdout[-3000:]
    second = cluster.ansible_playbook(play, *conn, inventory=False)
    assert changed_by_host(second.stdout) == {ip: 0}, second.stdout[-3000:]
    assert cluster.cookie not in first.stdout + second.stdout + check.stdout
    assert cluster.ssh(ip, "systemctl is-enabled %s" % LAYOUT["bootstrap_unit"]).stdout.strip() == "enabled"
    assert cluster.ssh(ip, "systemctl is-active %(bootstrap_unit)s %(worker_unit)s" % LAYOUT, check=False).stdout.split() == ["inactive", "inactive"]
    assert cluster.ssh(ip, "test -e %s" % LAYOUT["worker_env_file"], check=False).returncode == 1
    cluster.terminate([builder["InstanceId"]])
