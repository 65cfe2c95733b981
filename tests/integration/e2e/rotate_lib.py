"""Helpers of the rotate_cookie tests (test_rotate_cookie*.py), on the e2e session's cluster."""

import json
import os
import subprocess

import playbook_runner
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT


def ssm_cookie(cluster):
    return cluster.boto3("ssm").get_parameter(Name=cluster.cookie_parameter, WithDecryption=True)["Parameter"]["Value"]


def rotate(cluster, workdir, new_cookie=None, *args, extra=None):
    """rotate_cookie as users run it; a given cookie goes in a 0600 vars file (-e @file), never on the command line.
    `extra`: more extra variables (no secret)."""
    vars_files = []
    if new_cookie is not None:
        vars_files.append(playbook_runner.write_private(os.path.join(workdir, "new-cookie.yml"),
                                                        "rotate_cookie_new_cookie: %s\n" % json.dumps(new_cookie)))
    return playbook_runner.run_playbook(
        "skunkworks.erlang_ec2.rotate_cookie", *args, inventory=os.path.join(playbook_runner.ROOT, "inventory"),
        vars_files=vars_files, extra_vars=dict({"cluster_name": cluster.name, "erlang_cookie_ssm_parameter": cluster.cookie_parameter}, **(extra or {})),
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
    play = [{"hosts": "erlang_boot_servers:erlang_workers:&%s" % cluster_group(cluster), "gather_facts": False, "become": True,
             "tasks": tasks}]
    path = playbook_runner.write_play(os.path.join(workdir, "check-cookies.yml"), play)
    return playbook_runner.run_playbook(path, inventory=os.path.join(playbook_runner.ROOT, "inventory"), env=cluster.env,
                                        log=os.path.join(cluster.workdir, "ansible.log"))


def cluster_group(cluster):
    return "erlang_cluster_%s" % cluster.name.replace("-", "_")


def node_eval(cluster, ip, node, cookie, expression):
    """erl_call on the node's host with a cookie of the test's own: cookie and expression go on stdin (the cookie
    into a private temporary HOME, by the shell's builtins), never on a command line. Returns erl_call's output."""
    script = ('d=$(mktemp -d) && read -r c && printf %s "$c" > "$d/.erlang.cookie" && chmod 400 "$d/.erlang.cookie" && '
              'HOME="$d" erl_call -name ' + node + ' -timeout 10 -e; rc=$?; rm -rf "$d"; exit $rc')
    proc = subprocess.run(["ssh", "-i", cluster.env["LOCALCLOUD_SSH_KEY"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "LogLevel=ERROR", "admin@%s" % ip, "sudo sh -c '%s'" % script],
                          input="%s\n%s\n" % (cookie, expression), capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.strip()
