"""node_cookie on real nodes, through Ansible: a rotation step by step, with new connections tried between the steps.

Three nodes (the boot server and two workers) move to a new cookie one at a time. After each step every pair of nodes
drops its connection and opens a new one: a switched node and an unswitched one still connect (the switched one kept
the old cookie for its unswitched peers), as do two switched ones. Once the final step has run on every node, the
old cookie is refused and the new one accepted. Each node's cookie file is a copy of its own (the session's cookie
file, which every node of the suite starts from, is never rewritten).
"""

import os
import secrets
import stat

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node

from conftest import run_command


def reconnect_all(env, cookies, names):
    """From each node (reached with the cookie it now answers to): drop the connection to every other, open it again."""
    results = {}
    for node in names:
        others = [other for other in names if other != node]
        body = ("[begin erlang:disconnect_node(N), timer:sleep(100), {atom_to_binary(N, utf8), net_kernel:connect_node(N)} end"
                " || N <- [%s]]" % ", ".join("'%s'" % other for other in others))
        with erlang_node.ErlangNode(node, run_command, cookie=cookies[node], timeout=10) as client:
            results[node] = dict((peer.decode(), ok) for peer, ok in client.call(body))
    return results


def answers(node, cookie):
    try:
        with erlang_node.ErlangNode(node, run_command, cookie=cookie, timeout=5) as client:
            return client.call("node()") == node
    except erlang_node.ErlangNodeError as exc:
        assert exc.kind == erlang_node.KIND_AUTH, exc.message
        return False


@pytest.fixture
def three(env, nodes, boot_server):
    """The boot server and two workers, all connected; a copy of the cookie file for each."""
    names = [boot_server]
    for name in ("wcookie1", "wcookie2"):
        node = nodes.start_worker(name)
        nodes.wait_started(node, 20)
        names.append(node)
    for node in names:
        nodes.call(node, "[net_kernel:connect_node(N) || N <- [%s]], ok" % ", ".join("'%s'" % n for n in names))
    files = {}
    for node in names:
        path = os.path.join(env.base, "cookie-%s" % node.split("@")[0])
        with open(env.cookie_file) as src:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            os.write(fd, src.read().encode())
            os.close(fd)
        files[node] = path
    return names, files


def step(ansible, env, node, names, files, new, which, check=False):
    args = {"node": node, "cookie_file": env.cookie_file, "new_cookie": new, "path": files[node],
            "peers": [n for n in names if n != node], "step": which, "timeout": 10}
    rc, result, output = ansible.run("node_cookie", args, check=check)
    assert rc == 0, output
    assert new not in output and env.cookie not in output
    return result


def test_a_rotation_keeps_every_pair_of_nodes_connecting(env, ansible, three):
    names, files = three
    boot, first, second = names
    new = "n" + secrets.token_hex(16)
    cookies = dict((node, env.cookie) for node in names)

    # Check mode first: it says what would happen and changes nothing.
    preview = step(ansible, env, boot, names, files, new, "switched", check=True)
    assert preview["changed"] is True and preview["switched"] is True and preview["file_changed"] is True
    assert answers(boot, env.cookie) and not answers(boot, new)
    with open(files[boot]) as handle:
        assert handle.read() == env.cookie

    switched = step(ansible, env, boot, names, files, new, "switched")
    assert switched["changed"] is True and switched["switched"] is True and switched["reached_with"] == "old"
    assert switched["pinned_old"] == sorted([first, second]) and switched["peers_told"] == []
    assert switched["answers_new_cookie"] is True and switched["file_changed"] is True
    with open(files[boot]) as handle:
        assert handle.read() == new
    assert stat.S_IMODE(os.stat(files[boot]).st_mode) == 0o400
    cookies[boot] = new
    assert reconnect_all(env, cookies, names) == {
        boot: {first: True, second: True}, first: {boot: True, second: True}, second: {boot: True, first: True}}

    switched = step(ansible, env, first, names, files, new, "switched")
    assert switched["pinned_old"] == [second] and switched["peers_told"] == [boot]
    cookies[first] = new
    assert all(all(ok.values()) for ok in reconnect_all(env, cookies, names).values())

    switched = step(ansible, env, second, names, files, new, "switched")
    assert switched["pinned_old"] == [] and switched["peers_told"] == sorted([boot, first])
    cookies[second] = new
    assert all(all(ok.values()) for ok in reconnect_all(env, cookies, names).values())

    # The final step drops every per-node cookie; then the old cookie is refused everywhere.
    removed = dict((node, step(ansible, env, node, names, files, new, "final")) for node in names)
    assert removed[boot]["pins_removed"] == sorted([first, second]) and removed[first]["pins_removed"] == [second]
    assert all(result["pins"] == [] for result in removed.values())
    assert all(all(ok.values()) for ok in reconnect_all(env, cookies, names).values())
    for node in names:
        assert answers(node, new) and not answers(node, env.cookie)

    # Again: nothing to do.
    for which in ("switched", "final"):
        again = step(ansible, env, first, names, files, new, which)
        assert again["changed"] is False and again["reached_with"] == "new", again


def test_a_node_not_running_gets_only_its_file(env, ansible, nodes, tmp_path):
    path = str(tmp_path / "cookie")
    new = "n" + secrets.token_hex(16)
    rc, result, output = ansible.run("node_cookie", {"node": "nobody@127.0.0.1", "cookie_file": env.cookie_file,
                                                     "new_cookie": new, "path": path})
    assert rc == 0, output
    assert result["running"] is False and "is not running" in result["reason"]
    assert result["changed"] is True and result["file_changed"] is True
    with open(path) as handle:
        assert handle.read() == new


def test_a_bad_new_cookie_is_refused_before_anything(env, ansible, nodes, boot_server, tmp_path):
    path = str(tmp_path / "cookie")
    rc, result, output = ansible.run("node_cookie", {"node": boot_server, "cookie_file": env.cookie_file,
                                                     "new_cookie": "two words", "path": path})
    assert rc != 0
    assert "new_cookie: the cookie must be 1-255 printable ASCII characters" in result["msg"]
    assert not os.path.exists(path)
    assert answers(boot_server, env.cookie)
