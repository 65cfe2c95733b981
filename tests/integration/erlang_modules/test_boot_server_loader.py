"""erlang_ec2_boot_server (the boot server role's loader module) on a real node, as the unit starts it.

The node runs `erl ... -s erlang_ec2_boot_server start <allow-list file>` and is that file's one writer:
add_slave/1, delete_slave/1 and set_slaves/1 are called over distribution (erl_call), as the node image
bootstrap and the boot_server_allow_list module call them. Real files, no mocks.
"""

import os
import shutil
import stat
import threading

import pytest

from conftest import ALLOW_LIST_NAME, Nodes, boot_server_ebin, erlang_node, run_command, wait_udp_4368_free

NODE = "loader@127.0.0.1"


@pytest.fixture(scope="module")
def ebin():
    return boot_server_ebin()


@pytest.fixture
def loader(env, ebin, cookie_watch, boot_server_lock, tmp_path):
    """Starts (and restarts) the loader node on an allow-list file in a fresh directory."""
    nodes = Nodes(env)
    allow_list = tmp_path / ALLOW_LIST_NAME
    allow_list.write_text("# written by Ansible\n10.0.0.1\nnot-an-address\n")

    def start():
        wait_udp_4368_free()
        nodes._start("loader", ["erl", "-name", NODE, "-noshell", "-noinput", "-pa", ebin,
                                "-s", "erlang_ec2_boot_server", "start", str(allow_list)])
        try:
            nodes.wait_for(NODE, "is_pid(whereis(boot_server))", 15)
        except AssertionError:
            raise AssertionError("the loader did not start: %s" % nodes.logs_text()[-2000:])

    def restart():
        nodes.kill("loader")
        start()

    def stop():
        nodes.kill("loader")

    nodes.allow_list = allow_list
    nodes.joined = tmp_path / (ALLOW_LIST_NAME + ".joined")
    nodes.restart = restart
    nodes.stop = stop
    nodes.start = start
    start()
    yield nodes
    nodes.kill_all()


def which_slaves(nodes):
    entries = nodes.call(NODE, "erl_boot_server:which_slaves()")
    return sorted(".".join(str(o) for o in ip) for mask, ip in entries)


def file_lines(nodes):
    return [line for line in nodes.allow_list.read_text().splitlines() if line and not line.startswith("#")]


def add_slave(nodes, address):
    """add_slave/1 on the node; returns its result as decoded by the module utils (atoms are str)."""
    return nodes.call(NODE, "erlang_ec2_boot_server:add_slave(%s)" % address)


def leftovers(nodes):
    """Files beside the allow-list other than itself (a temporary file left behind, a joined file)."""
    return sorted(p.name for p in nodes.allow_list.parent.iterdir() if p.name.startswith(nodes.allow_list.name) and p != nodes.allow_list)


def test_add_slave_persists_in_the_one_file(loader):
    # What the bootstrap checks before it uses the call, and the rest of the owner's interface.
    exports = [list(e) for e in loader.call(NODE, "erlang_ec2_boot_server:module_info(exports)")]
    assert ["add_slave", 1] in exports and ["delete_slave", 1] in exports and ["set_slaves", 1] in exports
    assert which_slaves(loader) == ["10.0.0.1"]
    # Rewritten by the boot server at start: its own file from now on, the bad line dropped.
    assert file_lines(loader) == ["10.0.0.1"]
    assert "not-an-address" not in loader.allow_list.read_text()
    assert add_slave(loader, "{10,1,0,1}") == "ok"
    assert add_slave(loader, '"10.1.0.2"') == "ok"
    assert file_lines(loader) == ["10.0.0.1", "10.1.0.1", "10.1.0.2"]
    assert which_slaves(loader) == ["10.0.0.1", "10.1.0.1", "10.1.0.2"]
    # Again: still allowed, no second line.
    assert add_slave(loader, '"10.1.0.1"') == "ok"
    assert file_lines(loader) == ["10.0.0.1", "10.1.0.1", "10.1.0.2"]
    # One file: no joined file, no temporary file left.
    assert not loader.joined.exists()
    assert leftovers(loader) == []


def test_add_and_delete_persist_atomically_with_mode_0640(loader):
    """Each change replaces the file by a rename (a new inode: never rewritten in place), mode 0640,
    owned by the boot server's user (the user the node runs as: root here, erlang under the role)."""
    node_uid = int(loader.call(NODE, 'list_to_integer(string:trim(os:cmd("id -u")))'))
    before = os.stat(str(loader.allow_list)).st_ino
    assert add_slave(loader, '"10.7.0.1"') == "ok"
    after_add = os.stat(str(loader.allow_list))
    assert after_add.st_ino != before
    assert stat.S_IMODE(after_add.st_mode) == 0o640 and after_add.st_uid == node_uid
    assert loader.call(NODE, 'erlang_ec2_boot_server:delete_slave("10.7.0.1")') == "ok"
    after_delete = os.stat(str(loader.allow_list))
    assert after_delete.st_ino != after_add.st_ino
    assert stat.S_IMODE(after_delete.st_mode) == 0o640 and after_delete.st_uid == node_uid
    assert file_lines(loader) == ["10.0.0.1"] and which_slaves(loader) == ["10.0.0.1"]
    # Deleting what is not there changes nothing, and says ok.
    assert loader.call(NODE, 'erlang_ec2_boot_server:delete_slave({10,7,0,1})') == "ok"
    assert os.stat(str(loader.allow_list)).st_ino == after_delete.st_ino
    assert leftovers(loader) == []


def test_set_slaves_makes_the_list_exactly_these(loader):
    loader.call(NODE, "erl_boot_server:add_subnet({255,255,0,0}, {172,31,0,0})")
    assert add_slave(loader, '"10.8.0.1"') == "ok"
    assert loader.call(NODE, 'erlang_ec2_boot_server:set_slaves(["10.8.0.2", {10,8,0,3}, <<"10.8.0.2">>])') == "ok"
    assert which_slaves(loader) == ["10.8.0.2", "10.8.0.3"]
    assert file_lines(loader) == ["10.8.0.2", "10.8.0.3"]
    # One bad address: refused, nothing changed.
    result = loader.call(NODE, 'erlang_ec2_boot_server:set_slaves(["10.8.0.4", "worker.example"])')
    assert result[0] == "error" and result[1][0] == "bad_address", result
    assert which_slaves(loader) == ["10.8.0.2", "10.8.0.3"] and file_lines(loader) == ["10.8.0.2", "10.8.0.3"]
    assert loader.call(NODE, "erlang_ec2_boot_server:set_slaves([])") == "ok"
    assert which_slaves(loader) == [] and file_lines(loader) == []


def test_five_concurrent_add_slave_calls_all_land(loader):
    """5 callers at once, each its own hidden node (as 5 workers' bootstraps), then a burst of 50 on the node."""
    addresses = ["10.2.0.%d" % i for i in range(1, 6)]
    results = {}
    barrier = threading.Barrier(len(addresses))

    def call(address):
        client = erlang_node.ErlangNode(NODE, run_command, cookie_file=loader.env.cookie_file, timeout=10)
        with client:
            barrier.wait()
            results[address] = client.call('erlang_ec2_boot_server:add_slave("%s")' % address)

    threads = [threading.Thread(target=call, args=(a,)) for a in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == dict((a, "ok") for a in addresses)
    assert sorted(file_lines(loader)) == sorted(addresses + ["10.0.0.1"])

    burst = loader.call(NODE, """
        Self = self(),
        Pids = [spawn(fun() -> Self ! {self(), erlang_ec2_boot_server:add_slave({10,3,0,N})} end) || N <- lists:seq(1, 50)],
        [receive {P, R} -> R after 10000 -> timeout end || P <- Pids]""")
    assert burst == ["ok"] * 50
    lines = file_lines(loader)
    want = addresses + ["10.3.0.%d" % n for n in range(1, 51)]
    # Every address landed on a line of its own, once: one writer, no lost update.
    assert sorted(lines) == sorted(set(lines)) == sorted(want + ["10.0.0.1"])
    assert set(which_slaves(loader)) == set(want) | {"10.0.0.1"}
    assert leftovers(loader) == []


def test_a_restarted_node_allows_exactly_the_persisted_list(loader):
    for address in ("{10,4,0,1}", '"10.4.0.2"', '<<"10.4.0.3">>', '"10.4.0.4"'):
        assert add_slave(loader, address) == "ok"
    assert loader.call(NODE, 'erlang_ec2_boot_server:delete_slave("10.4.0.2")') == "ok"
    persisted = file_lines(loader)
    assert persisted == ["10.0.0.1", "10.4.0.1", "10.4.0.3", "10.4.0.4"]
    loader.restart()
    assert which_slaves(loader) == persisted
    assert file_lines(loader) == persisted
    assert "boot server started with 4 allowed worker(s)" in loader.logs_text()


def test_an_old_joined_file_is_folded_in_once_and_removed(loader):
    """Upgrade from the two-file layout: the joined file's addresses join the file, the joined file goes."""
    loader.stop()
    loader.allow_list.write_text("# written by Ansible\n10.0.0.1\n")
    # A hand edit without a final newline, and a bad line: read all the same.
    loader.joined.write_text("# joined\n10.9.0.1\nbad\n10.9.0.2")
    loader.start()
    assert which_slaves(loader) == ["10.0.0.1", "10.9.0.1", "10.9.0.2"]
    assert file_lines(loader) == ["10.0.0.1", "10.9.0.1", "10.9.0.2"]
    assert not loader.joined.exists()
    assert "folded %s into %s" % (loader.joined, loader.allow_list) in loader.logs_text()
    loader.restart()
    assert which_slaves(loader) == ["10.0.0.1", "10.9.0.1", "10.9.0.2"]


def test_bad_addresses_are_refused_and_nothing_is_written(loader):
    assert add_slave(loader, "{10,5,0,1}") == "ok"
    before = loader.allow_list.read_bytes()
    for address in ('"10.0.0.256"', '"worker.example"', '"::1"', "{10,0,0}", "{256,0,0,1}", "{a,b,c,d}", "42", '"10.0.0.1 "'):
        result = add_slave(loader, address)
        assert isinstance(result, tuple) and result[0] == "error" and result[1][0] == "bad_address", (address, result)
        result = loader.call(NODE, "erlang_ec2_boot_server:delete_slave(%s)" % address)
        assert isinstance(result, tuple) and result[0] == "error" and result[1][0] == "bad_address", (address, result)
    assert loader.allow_list.read_bytes() == before
    assert which_slaves(loader) == ["10.0.0.1", "10.5.0.1"]


def test_an_unwritable_file_is_an_error_and_the_node_keeps_running(loader):
    # Tests run as root, which writes through any mode: a directory in the file's place cannot be replaced.
    loader.allow_list.unlink()
    loader.allow_list.mkdir()
    result = add_slave(loader, '"10.6.0.1"')
    assert result[0] == "error" and result[1][0] == "not_persisted", result
    assert "".join(map(chr, result[1][1])) == str(loader.allow_list)
    assert result[1][2] == "eisdir"
    # Allowed all the same (the caller joins now), and the failure is logged.
    assert which_slaves(loader) == ["10.0.0.1", "10.6.0.1"]
    assert loader.answers(NODE) and loader.call(NODE, "is_pid(whereis(boot_server))") is True
    assert "cannot persist the allow-list in %s" % loader.allow_list in loader.logs_text()
    assert leftovers(loader) == []
    # Writable again: the next change writes the whole list, the one not persisted before included.
    loader.allow_list.rmdir()
    assert add_slave(loader, '"10.6.0.1"') == "ok"
    assert file_lines(loader) == ["10.0.0.1", "10.6.0.1"]


def test_an_unreadable_joined_file_does_not_stop_the_boot_server(loader):
    loader.stop()
    loader.joined.mkdir()
    loader.start()
    assert which_slaves(loader) == ["10.0.0.1"]
    assert "self-joined workers are not restored" in loader.logs_text()
    assert loader.joined.is_dir()
    shutil.rmtree(str(loader.joined))
