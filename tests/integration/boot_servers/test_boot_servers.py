"""Several boot servers kept equal (docs/boot_servers.md): levelling before serving, the level module, the
membership keeper. Real containers on localcloud, real erl; see conftest.py for the session's cluster."""

import json
import os
import re
import time

import playbook_runner
from conftest import INTERVAL, LOADER_OPEN, e2e, line_index, wait_for


def other_than(pair, ip):
    return [b for b in pair.boot_ips if b != ip][0]


def test_new_boot_server_levelled_at_first_start(pair):
    """The second boot server's first start (from the role) copied the first's releases, links and allow-list
    before its loader opened, and the role's run left the two equal."""
    first, second = pair.state(pair.first), pair.state(pair.second)
    assert first["current"] == "1.0.0"
    assert second == first
    assert pair.worker_ips[0] in second["allow_list"]
    lines = pair.journal(pair.second, 0)  # its first start is the first in its journal
    assert line_index(lines, "copied release 1.0.0") < line_index(lines, LOADER_OPEN)
    # Owned like the role's own installs once the role's level task ran (as root).
    owners = pair.sh(pair.second, "sudo stat -c %U:%G /srv/erlang-ec2/releases/1.0.0 /srv/erlang-ec2/releases/1.0.0/hello_cluster.boot").stdout.split()
    assert owners == ["root:root", "root:root"]


def peers_file(pair, ip):
    out = pair.sh(ip, "sudo stat -c '%U:%G %a' /var/lib/erlang-ec2/boot_server_peers && sudo grep -v '^#' /var/lib/erlang-ec2/boot_server_peers").stdout
    lines = out.split("\n")
    return lines[0], [line for line in lines[1:] if line]


def test_peers_file_names_the_others_and_a_change_does_not_restart(pair):
    """Each boot server's peers file names the other (service user's, 0640). A change of it (here a third,
    unreachable peer) is read at the next use, without a restart."""
    for ip in pair.boot_ips:
        assert peers_file(pair, ip) == ("erlang:erlang 640", ["boot@%s" % other_than(pair, ip)])
        assert pair.erl(ip, "erlang_ec2_boot_server:peers()") == ["boot@%s" % other_than(pair, ip)]
    ip, other = pair.first, "boot@%s" % other_than(pair, pair.first)
    pid = pair.main_pid(ip)
    gone = "boot@172.31.255.254"
    try:
        pair.configure("--limit", pair.host_of(ip), extra={"boot_server_peers": [other, gone]})
        assert peers_file(pair, ip)[1] == [other, gone]
        assert pair.erl(ip, "erlang_ec2_boot_server:peers()") == sorted([other, gone])
        assert pair.main_pid(ip) == pid
    finally:
        pair.configure("--limit", pair.host_of(ip))
    assert pair.erl(ip, "erlang_ec2_boot_server:peers()") == [other]
    assert pair.main_pid(ip) == pid


def test_release_and_allow_list_changed_while_down_are_adopted_before_serving(pair, releases):
    """(a) and (b): a release installed and made current on one boot server while the other is stopped, and an
    allow-list entry added there; the stopped one starts with them before its loader answers."""
    up, down = pair.first, pair.second
    before = pair.state(up)
    vsn = "2.1.0" if before["current"] != "2.1.0" else "2.0.0"
    extra_ip = "172.31.254.%d" % (int(time.time()) % 200 + 10)
    pair.systemctl(down, "stop")
    try:
        pair.configure("--limit", pair.host_of(up), extra={
            "boot_server_release": releases[vsn], "boot_server_allow_list": pair.worker_ips + [extra_ip]})
        changed = pair.state(up)
        assert changed["current"] == vsn and changed["previous"] == before["current"]
        assert extra_ip in changed["allow_list"]
        since = pair.now(down)
    finally:
        pair.systemctl(down, "start")
    assert pair.state(down) == pair.state(up)
    lines = pair.journal(down, since)
    opened = line_index(lines, LOADER_OPEN)
    assert line_index(lines, "copied release %s" % vsn) < opened
    assert line_index(lines, "now points at release %s" % vsn) < opened
    assert line_index(lines, "adopting the allow-list of 'boot@%s'" % up) < opened


def test_allow_list_change_while_down_is_adopted(pair):
    """(b) alone: an address added through the first's own set_slaves/1 while the second is stopped."""
    up, down = pair.first, pair.second
    extra_ip = "172.31.253.%d" % (int(time.time()) % 200 + 10)
    pair.systemctl(down, "stop")
    try:
        wanted = pair.state(up)["allow_list"] + [extra_ip]
        assert pair.erl(up, "erlang_ec2_boot_server:set_slaves(%s)" % json.dumps(wanted)) == "ok"
    finally:
        pair.systemctl(down, "start")
    assert extra_ip in pair.state(down)["allow_list"]
    assert pair.state(down)["allow_list"] == pair.state(up)["allow_list"]


def test_no_peer_answering_serves_own_state(pair):
    """(c): the first stopped, the second restarted: it serves its own state and says so."""
    up, down = pair.second, pair.first
    own = pair.state(up)
    pair.systemctl(down, "stop")
    try:
        since = pair.now(up)
        t0 = time.monotonic()
        pair.systemctl(up, "restart")
        restart_s = time.monotonic() - t0
        assert pair.state(up) == own
        lines = pair.journal(up, since)
        assert line_index(lines, "no peer boot server answered") < line_index(lines, LOADER_OPEN)
        assert restart_s < 10 + 20, restart_s  # the level timeout bounds the wait
    finally:
        pair.systemctl(down, "start")
    assert pair.state(down) == pair.state(up)


def test_keeper_reconnects_every_worker_after_a_restart(pair):
    """(d): within two keeper intervals of its restart, the boot server is connected to every live worker."""
    ip = pair.second
    workers = ["worker@%s" % w for w in pair.worker_ips]
    pair.systemctl(ip, "restart")
    t0 = time.monotonic()
    seen = wait_for(lambda: set(workers) <= set(pair.erl(ip, "nodes()")), 2 * INTERVAL + 5)
    elapsed = time.monotonic() - t0
    assert seen, "boot@%s is connected to %s, not to every worker %s" % (ip, pair.erl(ip, "nodes()"), workers)
    assert elapsed <= 2 * INTERVAL, elapsed
    # global's mesh through the boot server: the peer boot server too.
    assert "boot@%s" % other_than(pair, ip) in pair.erl(ip, "nodes()")


def mesh(pair, ip, members):
    """{member: the nodes it is connected to}, read through boot@ip."""
    listed = ",".join("'%s'" % m for m in members)
    return dict(pair.erl(ip, "[{atom_to_binary(M), [atom_to_binary(N) || N <- case rpc:call(M, erlang, nodes, [], 10000) of "
                             "L when is_list(L) -> L; _ -> [] end]} || M <- [%s]]" % listed))


def test_mesh_heals_after_a_connection_is_cut(pair):
    """prevent_overlapping_partitions stays OTP's default (true): when a connection between two workers drops,
    global may drop more to keep its view consistent; the boot servers' keeper re-connects every worker and global's
    full mesh follows, within a few keeper intervals, with no restart."""
    first, second = ["worker@%s" % w for w in pair.worker_ips[:2]]
    boot_nodes = ["boot@%s" % ip for ip in pair.boot_ips]
    members = ["worker@%s" % w for w in pair.worker_ips] + boot_nodes
    assert pair.erl(pair.first, "atom_to_binary(rpc:call('%s', application, get_env, "
                                "[kernel, prevent_overlapping_partitions, true], 10000))" % first) == "true"
    pids = {ip: pair.sh(ip, "pgrep -f 'beam.*-name %s' | head -1" % ("worker@" + ip)).stdout.strip() for ip in pair.worker_ips}
    assert pair.erl(pair.first, "rpc:call('%s', erlang, disconnect_node, ['%s'], 10000)" % (first, second)) is True
    t0 = time.monotonic()

    def whole():
        seen = mesh(pair, pair.first, members)
        return all(set(members) - {m} <= set(seen.get(m, [])) for m in members)

    assert wait_for(whole, 4 * INTERVAL + 10), "the mesh did not heal: %s" % mesh(pair, pair.first, members)
    healed_s = time.monotonic() - t0
    print("mesh whole again %.1f s after the cut" % healed_s)
    assert healed_s <= 4 * INTERVAL + 10, healed_s
    # Healed by re-connecting, not by restarting anything.
    assert {ip: pair.sh(ip, "pgrep -f 'beam.*-name %s' | head -1" % ("worker@" + ip)).stdout.strip() for ip in pair.worker_ips} == pids


def test_level_module_check_mode_then_apply_then_nothing(pair):
    """(e): a difference made on the first only (current switched back as the role switches, an allow-list
    entry through set_slaves); check mode on the second reports it and changes nothing, the real run
    levels it, the next run reports changed=0."""
    source, target = pair.first, pair.second
    state = pair.state(source)
    assert state["previous"] not in (None, "undefined")
    new_current, new_previous = state["previous"], state["current"]
    extra_ip = "172.31.252.%d" % (int(time.time()) % 200 + 10)
    root = "/srv/erlang-ec2"
    pair.sh(source, "sudo sh -c 'ln -sfn {r}/releases/{p} {r}/.p && mv -T {r}/.p {r}/previous && "
            "ln -sfn {r}/releases/{c} {r}/.c && mv -T {r}/.c {r}/current'".format(r=root, p=new_previous, c=new_current))
    assert pair.erl(source, "erlang_ec2_boot_server:set_slaves(%s)" % json.dumps(state["allow_list"] + [extra_ip])) == "ok"
    before = pair.state(target)

    checked = pair.adhoc_level(target, "--check", "--diff")
    assert checked.rc == 0, checked.tail()
    assert '"changed": true' in checked.out and extra_ip in checked.out
    assert pair.state(target) == before

    applied = pair.adhoc_level(target)
    assert applied.rc == 0 and '"changed": true' in applied.out, applied.tail()
    assert pair.state(target) == pair.state(source)
    assert pair.state(target)["current"] == new_current

    again = pair.adhoc_level(target)
    assert again.rc == 0 and '"changed": false' in again.out, again.tail()


def test_role_second_run_changes_nothing(pair):
    """site/reconcile's part on the boot servers: a second run of the roles reports changed=0 on both."""
    pair.configure()
    second = pair.configure()
    recap = playbook_runner.parse_recap(second.out)
    assert recap and all(host["changed"] == 0 and host["failed"] == 0 for host in recap.values()), second.tail()
    assert pair.state(pair.first) == pair.state(pair.second)


def status_lines(out):
    """The status playbook's table: the debug task's msg lines, without JSON quoting."""
    return [json.loads('"%s"' % m.group(1)) for m in (re.match(r'^\s+"(.*)",?$', raw) for raw in out.splitlines()) if m]


def test_status_lists_every_boot_server_with_the_release_it_serves(pair):
    """The status playbook reads the cluster from the acting boot server: the other boot server is a row too, with
    the release its own `current` points at, and every node counts it among its peers."""
    result = playbook_runner.run_playbook(
        os.path.join(e2e.ROOT, "playbooks", "status.yml"), inventory=os.path.join(e2e.ROOT, "inventory"),
        extra_vars={"cluster_name": pair.name}, env=pair.env, log=os.path.join(pair.workdir, "ansible.log"))
    assert result.rc == 0, result.tail()
    lines = status_lines(result.out)
    workers = len([line for line in lines if line.startswith("worker@")])
    total = len(pair.boot_ips) + workers
    assert any("%d node(s), %d up, 0 not up" % (total, total) in line for line in lines), "\n".join(lines)
    for ip in pair.boot_ips:
        found = [line.split() for line in lines if line.startswith("boot@%s " % ip)]
        assert len(found) == 1, "\n".join(lines)
        served = pair.state(ip)["current"]
        assert found[0][1:6] == ["boot", "server", "up", "hello_cluster", served], "\n".join(lines)
        assert found[0][6] == "all", "\n".join(lines)  # no MISSING: every listed node, the other boot server too
