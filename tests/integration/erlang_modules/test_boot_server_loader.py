"""erlang_ec2_boot_server (the boot server role's loader module) on a real node, as the unit starts it.

The node runs `erl ... -s erlang_ec2_boot_server start <allow-list file>`; add_slave/1 is called
over distribution (erl_call), as the node image bootstrap calls it. Real files, no mocks.
"""

import shutil
import threading

import pytest

from conftest import Nodes, boot_server_ebin, erlang_node, run_command, wait_udp_4368_free

NODE = "loader@127.0.0.1"


@pytest.fixture(scope="module")
def ebin():
    return boot_server_ebin()


@pytest.fixture
def loader(env, ebin, cookie_watch, boot_server_lock, tmp_path):
    """Starts (and restarts) the loader node on an allow-list file in a fresh directory."""
    nodes = Nodes(env)
    allow_list = tmp_path / "boot_server_slaves"
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

    nodes.allow_list = allow_list
    nodes.joined = tmp_path / "boot_server_slaves.joined"
    nodes.restart = restart
    start()
    yield nodes
    nodes.kill_all()


def which_slaves(nodes):
    entries = nodes.call(NODE, "erl_boot_server:which_slaves()")
    return sorted(".".join(str(o) for o in ip) for mask, ip in entries)


def joined_lines(nodes):
    return [line for line in nodes.joined.read_text().splitlines() if line and not line.startswith("#")]


def add_slave(nodes, address):
    """add_slave/1 on the node; returns its result as decoded by the module utils (atoms are str)."""
    return nodes.call(NODE, "erlang_ec2_boot_server:add_slave(%s)" % address)


def test_add_slave_persists_in_the_joined_file(loader):
    # What the bootstrap checks before it uses the call.
    assert ["add_slave", 1] in [list(e) for e in loader.call(NODE, "erlang_ec2_boot_server:module_info(exports)")]
    assert which_slaves(loader) == ["10.0.0.1"]
    assert not loader.joined.exists()
    assert add_slave(loader, "{10,1,0,1}") == "ok"
    assert add_slave(loader, '"10.1.0.2"') == "ok"
    assert joined_lines(loader) == ["10.1.0.1", "10.1.0.2"]
    assert which_slaves(loader) == ["10.0.0.1", "10.1.0.1", "10.1.0.2"]
    # Again: still allowed, no second line; the Ansible-owned main file is never written.
    assert add_slave(loader, '"10.1.0.1"') == "ok"
    assert joined_lines(loader) == ["10.1.0.1", "10.1.0.2"]
    assert loader.allow_list.read_text() == "# written by Ansible\n10.0.0.1\nnot-an-address\n"


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
    assert sorted(joined_lines(loader)) == addresses

    burst = loader.call(NODE, """
        Self = self(),
        Pids = [spawn(fun() -> Self ! {self(), erlang_ec2_boot_server:add_slave({10,3,0,N})} end) || N <- lists:seq(1, 50)],
        [receive {P, R} -> R after 10000 -> timeout end || P <- Pids]""")
    assert burst == ["ok"] * 50
    lines = joined_lines(loader)
    want = addresses + ["10.3.0.%d" % n for n in range(1, 51)]
    # Every address landed on a line of its own (a racing duplicate would be harmless, but none is expected).
    assert sorted(set(lines)) == sorted(want)
    assert set(which_slaves(loader)) == set(want) | {"10.0.0.1"}


def test_a_restarted_node_allows_both_files(loader):
    for address in ("{10,4,0,1}", '"10.4.0.2"', '<<"10.4.0.3">>'):
        assert add_slave(loader, address) == "ok"
    # A hand edit without a final newline: the next append starts a line of its own.
    with open(str(loader.joined), "a") as handle:
        handle.write("10.4.0.4")
    assert add_slave(loader, '"10.4.0.5"') == "ok"
    assert joined_lines(loader) == ["10.4.0.1", "10.4.0.2", "10.4.0.3", "10.4.0.4", "10.4.0.5"]
    loader.restart()
    assert which_slaves(loader) == ["10.0.0.1", "10.4.0.1", "10.4.0.2", "10.4.0.3", "10.4.0.4", "10.4.0.5"]
    assert "boot server started with 6 allowed worker(s)" in loader.logs_text()


def test_bad_addresses_are_refused_and_nothing_is_written(loader):
    assert add_slave(loader, "{10,5,0,1}") == "ok"
    before = loader.joined.read_bytes()
    for address in ('"10.0.0.256"', '"worker.example"', '"::1"', "{10,0,0}", "{256,0,0,1}", "{a,b,c,d}", "42", '"10.0.0.1 "'):
        result = add_slave(loader, address)
        assert isinstance(result, tuple) and result[0] == "error" and result[1][0] == "bad_address", (address, result)
    assert loader.joined.read_bytes() == before
    assert which_slaves(loader) == ["10.0.0.1", "10.5.0.1"]


def test_an_unwritable_joined_file_is_an_error_and_the_node_keeps_running(loader):
    # Tests run as root, which writes through any mode: a directory in the file's place cannot be appended to.
    loader.joined.mkdir()
    result = add_slave(loader, '"10.6.0.1"')
    assert result[0] == "error" and result[1][0] == "not_persisted", result
    assert "".join(map(chr, result[1][1])) == str(loader.joined)
    assert result[1][2] == "eisdir"
    # Allowed all the same (the caller joins now; reconcile persists it later), and the failure is logged.
    assert which_slaves(loader) == ["10.0.0.1", "10.6.0.1"]
    assert loader.answers(NODE) and loader.call(NODE, "is_pid(whereis(boot_server))") is True
    assert "cannot persist it in %s" % loader.joined in loader.logs_text()
    # An unreadable joined file does not keep the boot server from starting on the main file.
    loader.restart()
    assert which_slaves(loader) == ["10.0.0.1"]
    assert "self-joined workers are not restored" in loader.logs_text()
    shutil.rmtree(str(loader.joined))
