"""A TLS cluster on localcloud (issue 14, docs/tls.md), driven by the playbooks as users run them with
-e erlang_distribution=tls: 1 boot server + 2 diskless workers, site with hello_cluster 1.0.0 built with ssl
(TLS=1), deploy 2.0.0 by rolling restart. Every node answers node_info over TLS, runs inet_tls_dist, and refuses
a plain TCP control call and a node presenting a certificate from another CA (with the cluster's cookie).

Needs localcloud (make test-tls-cluster); one cluster for the module, terminated at the end (TLS_CLUSTER_KEEP
keeps it). The cluster's CA is created by the erlang role on the controller, in the test's own directory.
"""

import base64
import importlib.util
import json
import os
import re
import secrets
import shlex
import subprocess

import pytest

import playbook_runner
from localcloud_cluster import StatusPoller, worker_status
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT as LAYOUT

_E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers_tls", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
_ROTATE = os.path.join(os.path.dirname(_E2E), "rotate_lib.py")
_rspec = importlib.util.spec_from_file_location("rotate_lib_tls", _ROTATE)
rotate_lib = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(rotate_lib)

TLS_DIR = "/etc/erlang-ec2/tls"  # the erlang role's default erlang_tls_dir


def build(workdir, vsn, build_tag=""):
    out = os.path.join(workdir, "dist")
    subprocess.run(["make", "-s", "-C", e2e.EXAMPLE, "tar", "VSN=" + vsn, "OUT=" + out, "TLS=1"] + (["BUILD=" + build_tag] if build_tag else []),
                   check=True, capture_output=True, timeout=120)
    return os.path.join(out, "hello_cluster-%s.tar.gz" % vsn)


def group(cluster):
    return "erlang_cluster_" + re.sub(r"[^A-Za-z0-9_]", "_", cluster.name)


def node_info(cluster, distribution):
    """node_info on every node of the cluster, run on the node's own host as root: {node: result} (a failed call's
    result too: its error kind)."""
    out = os.path.join(cluster.workdir, "node-info-%s" % secrets.token_hex(4))
    os.mkdir(out)
    play = [{"name": "node_info", "hosts": group(cluster), "gather_facts": False, "become": True, "tasks": [
        {"name": "Call the node", "skunkworks.erlang_ec2.node_info": {
            "node": "{{ erlang_node }}", "cookie_file": LAYOUT["cookie_file"], "distribution": distribution, "timeout": 20},
         "register": "info", "ignore_errors": True},
        {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ info | to_json }}", "dest": out + "/{{ erlang_node }}.json",
                                                             "mode": "0600"},
         "delegate_to": "localhost", "become": False},
    ]}]
    path = playbook_runner.write_play(os.path.join(out, "play.json"), play)
    playbook_runner.run_playbook(path, inventory=os.path.join(playbook_runner.ROOT, "inventory"), env=cluster.env, check=True,
                                 log=os.path.join(cluster.workdir, "ansible.log"))
    found = {}
    for name in os.listdir(out):
        if name.endswith(".json") and name != "play.json":
            with open(os.path.join(out, name)) as f:
                result = json.load(f)
            found[name[:-len(".json")]] = result
    assert len(found) == 3, found
    return found


def node_eval(cluster, ip, expression):
    """The node command's eval (erlang-ec2-node, TLS hidden node with the node's optfile) on the host at ip."""
    proc = cluster.ssh(ip, "sudo %s eval %s" % (LAYOUT["node_command"], shlex.quote(expression)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.sub(r"\s+", "", proc.stdout)


# Run as root on the boot server's host: a hidden TLS node with the cluster's cookie (a copy in a private HOME, never
# on a command line) and the optfile named by $2 pings node $1 and prints pong or pang. $2 = own: the host's own
# optfile (cluster certificate); $2 = other: a key and certificate for the same address from a CA made here, while
# still trusting the cluster's CA (so only the server's check of the client's certificate can refuse it).
PING_SCRIPT = r"""set -eu
target=$1; mode=$2; ip=$3
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT; mkdir -m 700 "$d/home"
cp {cookie} "$d/home/.erlang.cookie"; chmod 400 "$d/home/.erlang.cookie"
if [ "$mode" = own ]; then optfile={tls}/ssl_dist.conf; else
  cd "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=other-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout node.key -out node.csr -subj /CN=intruder 2>/dev/null
  printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" "$ip" > ext
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem -days 2 -extfile ext 2>/dev/null
  opts="{{certfile, \"$d/node.pem\"}}, {{keyfile, \"$d/node.key\"}}, {{cacertfile, \"{tls}/ca.pem\"}}, {{verify, verify_peer}}"
  printf '[{{server, [%s, {{fail_if_no_peer_cert, true}}]}}, {{client, [%s]}}].\n' "$opts" "$opts" > other.conf
  optfile=$d/other.conf
fi
HOME=$d/home TARGET=$target erl -name "tl2-probe-$$@$ip" -hidden -noshell -noinput -proto_dist inet_tls -ssl_dist_optfile "$optfile" \
  -eval 'io:format("~p~n", [net_adm:ping(list_to_atom(os:getenv("TARGET")))]), halt().'
""".format(cookie=LAYOUT["cookie_file"], tls=TLS_DIR)


def ping_from_boot_host(cluster, target, mode):
    script = base64.b64encode(PING_SCRIPT.encode()).decode()
    path = "/tmp/tl2-ping-%s.sh" % secrets.token_hex(4)
    proc = cluster.ssh(cluster.boot_server_ip, "echo %s | base64 -d > %s && sudo sh %s %s %s %s; rc=$?; rm -f %s; exit $rc"
                       % (script, path, path, target, mode, cluster.boot_server_ip, path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answers = [line for line in proc.stdout.splitlines() if line in ("pong", "pang")]
    assert len(answers) == 1, proc.stdout + proc.stderr
    return answers[0], proc.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = e2e.localcloud_env()
    workdir = str(tmp_path_factory.mktemp("tls-cluster"))
    c = e2e.Cluster(env, os.environ.get("TLS_CLUSTER") or "tl2-%s" % secrets.token_hex(3), workdir)
    c.ensure_cookie()
    c.tls = {"erlang_distribution": "tls", "erlang_tls_ca_dir": os.path.join(workdir, "ca")}  # the CA: the test's own
    try:
        c.v1, c.v2 = build(workdir, "1.0.0"), build(workdir, "2.0.0")
        c.provision(2, boot_servers=1)
        c.playbook("site", extra=dict(c.tls, site_initial_release=c.v1))
        c.refresh()
        c.info_v1 = node_info(c, "tls")
        c.deploy = c.playbook("deploy", extra=dict(c.tls, deploy_release=c.v2))
        yield c
    finally:
        c.end_session("tls_cluster")


def all_nodes(cluster):
    return ["boot@%s" % cluster.boot_server_ip] + ["worker@%s" % ip for ip in sorted(cluster.workers.values())]


def test_site_forms_the_cluster_on_v1_over_tls(cluster):
    assert sorted(cluster.info_v1) == sorted(all_nodes(cluster))
    for node, info in cluster.info_v1.items():
        assert info["reachable"], info
        # The boot server runs OTP's own boot, not the release; the workers run the release.
        assert info["release_version"] == "1.0.0" or node.startswith("boot@"), info
        assert sorted(info["connected_nodes"]) == sorted(set(all_nodes(cluster)) - {node}), info


def test_deploy_v2_rolls_every_worker_and_node_info_answers_everywhere(cluster):
    info = node_info(cluster, "tls")
    for node in all_nodes(cluster):
        assert info[node]["reachable"], info[node]
        assert info[node]["release_version"] == "2.0.0" or node.startswith("boot@"), info[node]
        assert sorted(info[node]["connected_nodes"]) == sorted(set(all_nodes(cluster)) - {node}), info[node]


def test_status_reads_every_node_over_tls(cluster):
    result = cluster.playbook("status", extra=cluster.tls)
    assert "Cluster %s: 3 node(s), 3 up, 0 not up" % cluster.name in result.out, result.tail()
    assert "rolling_restart hello_cluster 2.0.0 -> ok" in result.out, result.tail()


def test_every_node_runs_inet_tls_and_refuses_a_tcp_control_call(cluster):
    for ip in [cluster.boot_server_ip] + list(cluster.workers.values()):
        out = node_eval(cluster, ip, '{ok, [[P]]} = init:get_argument(proto_dist), {ok, I} = net_kernel:nodes_info(), '
                        '{P, lists:usort([element(4, proplists:get_value(address, A)) || {N, A} <- I, lists:member(N, nodes())])}.')
        assert out == '{"inet_tls",[tls]}', (ip, out)
    plain = node_info(cluster, "tcp")  # erl_call: inet_tcp_dist, with the right cookie
    for node in all_nodes(cluster):
        assert plain[node].get("failed") and plain[node]["error"]["kind"] == "auth", plain[node]


def test_a_node_with_a_certificate_from_another_ca_is_refused(cluster):
    worker = "worker@%s" % sorted(cluster.workers.values())[0]
    # The same host, cookie and command: only the certificate differs.
    assert ping_from_boot_host(cluster, worker, "own")[0] == "pong"
    answer, output = ping_from_boot_host(cluster, worker, "other")
    assert answer == "pang", output  # (ssl may also log the worker's alert: "Unknown CA")
    info = node_info(cluster, "tls")
    assert sorted(info[worker]["connected_nodes"]) == sorted(set(all_nodes(cluster)) - {worker}), info[worker]


CLIENT_MARK = "erlang-ec2-ctl-"     # the TLS client node's own name (module_utils/erlang_tls_client.py)


def client_nodes_on_controller(ips):
    """Live processes on this machine (the hosts' containers included) that are TLS client nodes of this cluster's
    hosts: their own name is erlang-ec2-ctl-<pid>-<hex>@<the host's address>."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    argv = handle.read().split(b"\0")
                with open("/proc/%s/stat" % entry) as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            if any(arg.startswith(CLIENT_MARK.encode()) and arg.split(b"@")[-1].decode() in ips for arg in argv):
                found.append((int(entry), b" ".join(argv)[:200]))
    return found


def test_no_tls_client_node_is_left_after_a_playbook(cluster):
    """status calls every node through the TLS client node (one per module process): none outlives its module,
    neither on the hosts nor on the controller."""
    result = cluster.playbook("status", extra=cluster.tls)
    assert "3 up, 0 not up" in result.out, result.tail()
    ips = [cluster.boot_server_ip] + list(cluster.workers.values())
    for ip in ips:
        proc = cluster.ssh(ip, "ps -eo pid,args | grep -F %s | grep -v grep || true" % CLIENT_MARK)
        assert proc.returncode == 0 and proc.stdout.strip() == "", (ip, proc.stdout, proc.stderr)
    assert client_nodes_on_controller(set(ips)) == []


def main_pids(cluster):
    """{ip: its unit's OS pid}: a restart of the node (a new VM) changes it."""
    units = {cluster.boot_server_ip: LAYOUT["boot_server_unit"]}
    units.update({ip: LAYOUT["worker_unit"] for ip in cluster.workers.values()})
    return {ip: cluster.ssh(ip, "systemctl show -p MainPID --value %s" % unit).stdout.strip() for ip, unit in units.items()}


def test_push_over_tls_loads_the_new_code_on_every_worker_with_no_restart(cluster):
    """push (code_push over TLS distribution) of a code-only change: every worker serves the new build, none
    restarted, and no request of a poller failed meanwhile."""
    tag = "pushed-over-tls-%s" % secrets.token_hex(3)
    release = build(cluster.workdir, "2.0.1", tag)
    before = main_pids(cluster)
    poller = StatusPoller(cluster.workers.values(), interval=0.05)
    poller.start()
    try:
        result = cluster.playbook("push", extra=dict(cluster.tls, push_release=release))
    finally:
        poller.stop()
    assert result.rc == 0, result.tail()
    assert main_pids(cluster) == before
    assert poller.polls > 0 and poller.failed == [], (poller.polls, poller.failed[:5])
    for ip in cluster.workers.values():
        assert (worker_status(ip, timeout=5) or {}).get("build") == tag, ip


def test_rotate_cookie_over_tls_moves_every_node_with_no_restart(cluster, tmp_path):
    """rotate_cookie on a TLS cluster: node_cookie's calls go over TLS; afterwards every node answers node_info over
    TLS with the new cookie (its cookie file) and refuses the old one, and no node restarted."""
    old = rotate_lib.ssm_cookie(cluster)
    before = main_pids(cluster)
    result = rotate_lib.rotate(cluster, str(tmp_path), extra=cluster.tls)
    assert result.rc == 0, result.tail(60)
    new = rotate_lib.ssm_cookie(cluster)
    assert new != old and main_pids(cluster) == before
    answers = node_info(cluster, "tls")
    assert all(info.get("reachable") for info in answers.values()), answers
    assert old not in result.stdout and new not in result.stdout
    # The old cookie is refused over TLS (node_info from each host, the cookie in a 0600 play file).
    play = [{"hosts": group(cluster), "gather_facts": False, "become": True, "tasks": [
        {"name": "old cookie", "skunkworks.erlang_ec2.node_info": {
            "node": "{{ erlang_node }}", "cookie": old, "distribution": "tls",
            "ssl_dist_optfile": TLS_DIR + "/ssl_dist.conf", "timeout": 20},
         "register": "with_old", "no_log": True,
         "failed_when": "(with_old.error | default({})).kind | default('') != 'auth'"}]}]
    path = playbook_runner.write_play(os.path.join(str(tmp_path), "old-cookie.json"), play)
    refused = playbook_runner.run_playbook(path, inventory=os.path.join(playbook_runner.ROOT, "inventory"), env=cluster.env,
                                           log=os.path.join(cluster.workdir, "ansible.log"))
    assert refused.rc == 0 and len(refused.recap) == 3, refused.tail()
