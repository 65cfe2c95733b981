"""rotate_cookie on the session's running cluster (issue 14): every node moves to a new cookie with no restart.

While a poller reads every worker's /status, rotate_cookie moves the cluster to a generated cookie (stored in the
cluster's SSM parameter). Then: every node accepts the new cookie and refuses the old one, no node restarted (the
unit's OS pid and the node's application controller are the ones from before), the poller saw no failed request,
the cookie files hold the new cookie (0400, the service user's), `site` changes nothing and restarts nothing, and no
cookie was printed. A module fixture puts the session's original cookie back afterwards (rotate_cookie again, with
the cookie given from a 0600 vars file), so the other files of the session find the cluster as they expect.
"""

import json
import os

import pytest

import playbook_runner
from localcloud_cluster import StatusPoller
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT


def ssm_cookie(cluster):
    return cluster.boto3("ssm").get_parameter(Name=cluster.cookie_parameter, WithDecryption=True)["Parameter"]["Value"]


def rotate(cluster, workdir, new_cookie=None, *args):
    """rotate_cookie as users run it; a given cookie goes in a 0600 vars file (-e @file), never on the command line."""
    vars_files = []
    if new_cookie is not None:
        vars_files.append(playbook_runner.write_private(os.path.join(workdir, "new-cookie.yml"),
                                                        "rotate_cookie_new_cookie: %s\n" % json.dumps(new_cookie)))
    return playbook_runner.run_playbook(
        "skunkworks.erlang_ec2.rotate_cookie", *args, inventory=os.path.join(playbook_runner.ROOT, "inventory"),
        vars_files=vars_files, extra_vars={"cluster_name": cluster.name, "erlang_cookie_ssm_parameter": cluster.cookie_parameter},
        env=cluster.env, log=os.path.join(cluster.workdir, "ansible.log"))


def nodes_of(cluster):
    """{ip: (node name, unit)} of every node of the cluster."""
    found = {ip: ("boot@%s" % ip, LAYOUT["boot_server_unit"]) for ip in cluster.boot_servers.values()}
    found.update({ip: ("worker@%s" % ip, LAYOUT["worker_unit"]) for ip in cluster.workers.values()})
    return found


def identity(cluster, ip, node, unit):
    """(unit's OS pid, the node's application controller): both change with a restart (init:restart/0 changes the
    second). Asked with erl_call as the service user, whose cookie file it reads (never a command-line cookie)."""
    pid = cluster.ssh(ip, "systemctl show -p MainPID --value %s" % unit).stdout.strip()
    proc = cluster.ssh(ip, "echo 'pid_to_list(whereis(application_controller)).' | sudo -u %s env HOME=%s erl_call -name %s -timeout 10 -e"
                       % (LAYOUT["user"], LAYOUT["home"], node))
    return pid, proc.stdout.strip()


def identities(cluster):
    return {ip: identity(cluster, ip, node, unit) for ip, (node, unit) in nodes_of(cluster).items()}


def check_cookies(cluster, workdir, new_cookie, old_cookie):
    """From every node's host (node_info, as the playbooks call nodes): the new cookie is accepted, the old refused.
    The cookies are in the play file (0600), not on a command line."""
    tasks = [
        {"name": "new", "skunkworks.erlang_ec2.node_info": {"node": "{{ erlang_node }}", "cookie": new_cookie},
         "register": "with_new", "failed_when": "not with_new.reachable"},
        {"name": "old", "skunkworks.erlang_ec2.node_info": {"node": "{{ erlang_node }}", "cookie": old_cookie},
         "register": "with_old", "failed_when": "(with_old.error | default({})).kind | default('') != 'auth'"},
    ]
    play = [{"hosts": "erlang_boot_servers:erlang_workers:&%s" % cluster.group, "gather_facts": False, "become": True,
             "tasks": tasks}]
    path = playbook_runner.write_play(os.path.join(workdir, "check-cookies.yml"), play)
    return playbook_runner.run_playbook(path, inventory=os.path.join(playbook_runner.ROOT, "inventory"), env=cluster.env,
                                        log=os.path.join(cluster.workdir, "ansible.log"))


@pytest.fixture(scope="module")
def rotated(cluster, tmp_path_factory):
    """rotate_cookie (a generated cookie) run once on the session's cluster while a poller reads every worker; what
    the tests look at. The original cookie is put back at the end (rotate_cookie with it given)."""
    workdir = str(tmp_path_factory.mktemp("rotate"))
    cluster.refresh()
    cluster.group = "erlang_cluster_%s" % cluster.name.replace("-", "_")
    original = ssm_cookie(cluster)
    try:
        before = identities(cluster)
        poller = StatusPoller(cluster.workers.values(), interval=0.05)
        poller.start()
        try:
            result = rotate(cluster, workdir)
        finally:
            poller.stop()
        yield {"workdir": workdir, "old": original, "new": ssm_cookie(cluster), "before": before, "poller": poller,
               "result": result}
    finally:
        if ssm_cookie(cluster) != original:
            restored = rotate(cluster, workdir, original)
            assert restored.rc == 0, restored.tail()
            assert ssm_cookie(cluster) == original


def test_every_node_moves_to_the_new_cookie_with_no_restart_and_no_failed_request(cluster, rotated):
    result, old_cookie, new_cookie = rotated["result"], rotated["old"], rotated["new"]
    assert result.rc == 0, result.tail(80)
    assert new_cookie != old_cookie
    # No restart, and no request lost while the nodes changed cookie.
    before, poller = rotated["before"], rotated["poller"]
    assert all(pid and ac.startswith("{ok,") for pid, ac in before.values()), before
    assert poller.polls > 0 and poller.failed == [], (poller.polls, poller.failed[:10])
    assert identities(cluster) == before

    # Every node accepts a new connection made with the new cookie and refuses the old one.
    checked = check_cookies(cluster, rotated["workdir"], new_cookie, old_cookie)
    assert checked.rc == 0, checked.tail(60)
    assert len(checked.recap) == len(nodes_of(cluster)), checked.recap

    # The cookie files hold the new cookie, 0400, owned by the service user (what restarts read).
    for ip in nodes_of(cluster):
        stat = cluster.ssh(ip, "sudo stat -c '%%U %%G %%a' %s" % LAYOUT["cookie_file"]).stdout.split()
        assert stat == [LAYOUT["user"], LAYOUT["group"], "400"], (ip, stat)
        assert cluster.ssh(ip, "sudo cat %s" % LAYOUT["cookie_file"]).stdout == new_cookie, ip

    # Neither cookie was printed.
    for text in (result.stdout, result.stderr, checked.stdout, checked.stderr):
        assert new_cookie not in text and old_cookie not in text


def test_the_same_cookie_again_changes_nothing(cluster, rotated):
    again = rotate(cluster, rotated["workdir"], rotated["new"])
    assert again.rc == 0 and again.changed == 0, again.recap
    assert rotated["new"] not in again.stdout


def test_site_after_the_rotation_changes_and_restarts_nothing(cluster, rotated):
    before = identities(cluster)
    result = cluster.playbook("site")
    assert result.changed == 0, result.recap
    assert identities(cluster) == before
    assert rotated["new"] not in result.stdout
