"""A rolling deploy reaches self-joined workers too: their diskless nodes re-fetch the new release from
the boot server at init:restart(), one at a time, like pushed workers.

Runs on the same session cluster as the other self_join files, in any order (its workers all joined by
themselves): another file may have moved `current` (test_self_join_push.py pushes a release), so the test
deploys a version that differs from `current` and from what every worker runs.
"""

import json
import time
import urllib.request

from localcloud_cluster import REPO, run


def running_workers(cluster):
    reply = cluster.ec2.describe_instances(Filters=[
        {"Name": "tag:erlang-cluster", "Values": [cluster.name]}, {"Name": "tag:erlang-role", "Values": ["worker"]},
        {"Name": "instance-state-name", "Values": ["running"]}])
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def status_page(ip):
    with urllib.request.urlopen("http://%s:8080/status" % ip, timeout=5) as answer:
        return json.loads(answer.read().decode())


def test_deploy_rolls_self_joined_workers_to_the_new_release(cluster, tmp_path):
    workers = running_workers(cluster)
    if len(workers) < 2:  # this file run alone: two workers launched by the API, as in test_self_join.py
        t0 = time.monotonic()
        ips = [w["PrivateIpAddress"] for w in cluster.launch_workers(2)]
        cluster.wait_joined(ips + cluster.workers, t0)
        cluster.workers += ips
        workers = running_workers(cluster)
    # Every worker of this suite joined by itself (node image bootstrap); none was configured by a playbook.
    before = {w["PrivateIpAddress"]: status_page(w["PrivateIpAddress"])["version"] for w in workers}
    current = cluster.ssh(cluster.boot_ip, "readlink %s" % cluster.layout["current_link"]).stdout.strip().rsplit("/", 1)[-1]
    target = "2.0.0" if current != "2.0.0" else "2.0.1"
    assert before and target not in before.values(), (current, before)
    tar = run(["make", "--no-print-directory", "-C", str(REPO / "examples/hello_cluster"), "tar", "VSN=%s" % target,
               "OUT=%s" % tmp_path]).stdout.strip().splitlines()[-1]
    deploy = cluster.ansible_playbook("skunkworks.erlang_ec2.deploy", "-e", "cluster_name=%s" % cluster.name,
                                      "-e", "deploy_release=%s" % tar)
    assert cluster.cookie not in deploy.stdout
    after = {ip: status_page(ip) for ip in before}
    assert set(page["version"] for page in after.values()) == {target}, after
    nodes = set(page["node"] for page in after.values())
    for page in after.values():
        assert nodes - {page["node"]} <= set(page["nodes"]), page
