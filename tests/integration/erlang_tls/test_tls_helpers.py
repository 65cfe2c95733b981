"""The erlang role's helper scripts with erlang_distribution tls, installed by the role's own helpers.yml into a
private directory, run against a real TLS node: the health check the units run (wait_node.sh, erl_call
replaced by a hidden TLS node) and the node command (ping, eval, rpc)."""

import os
import shutil
import subprocess
import tempfile

import pytest

import playbook_runner
from conftest import INTERPRETER, node_of


@pytest.fixture(scope="module")
def helpers(issued):
    """helpers.yml with tls, the TLS directory of node b (the scripts present b's certificate)."""
    base = os.path.join(issued.base, "helpers")
    layout = {"user": "root", "group": "root", "home": issued.home, "cookie_file": issued.cookie_file,
              "helpers_dir": base, "helpers_bin_dir": os.path.join(base, "bin"),
              "wait_node_script": os.path.join(base, "wait_node.sh"), "node_command": os.path.join(base, "bin", "erlang-node")}
    play = [{"hosts": "localhost", "gather_facts": False, "vars": {
        "erlang_distribution": "tls", "erlang_tls_dir": issued.node_dir("b"), "erlang_layout": layout,
        "erlang_dist_port_min": 9100, "erlang_dist_port_max": 9155},
        "tasks": [{"name": "helpers", "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang", "tasks_from": "helpers"}}]}]
    workdir = tempfile.mkdtemp(dir=issued.base, prefix="play-")
    playbook = playbook_runner.write_play(os.path.join(workdir, "play.yml"), play)
    env = playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    proc = playbook_runner.run_playbook(playbook, "-c", "local", inventory="localhost,", extra_vars=INTERPRETER, env=env,
                                        timeout=300, merge_stderr=True)
    shutil.rmtree(workdir, ignore_errors=True)
    assert proc.rc == 0, proc.tail()
    return layout


def run(argv, issued, timeout):
    env = dict(os.environ, HOME=issued.home)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                          timeout=timeout, check=False)


def test_wait_node_script_checks_a_tls_node(nodes, issued, helpers):
    with open(helpers["wait_node_script"]) as handle:
        script = handle.read()
    assert "erl_call -name" not in script and "-proto_dist inet_tls" in script
    a = nodes.start("a")
    proc = run([helpers["wait_node_script"], a], issued, 60)
    assert proc.returncode == 0, proc.stderr
    proc = run([helpers["wait_node_script"], a, "erlang whereis [code_server]", "<*>"], issued, 60)
    assert proc.returncode == 0, proc.stderr
    # A node that does not run: it keeps polling (the unit's start timeout is the deadline).
    with pytest.raises(subprocess.TimeoutExpired):
        run([helpers["wait_node_script"], node_of("nobody")], issued, 4)


def test_node_command_over_tls(nodes, issued, helpers):
    a = nodes.start("a")
    command = helpers["node_command"]
    proc = run([command, "--node", a, "ping"], issued, 60)
    assert proc.returncode == 0 and proc.stdout.strip() == "pong", proc.stderr
    proc = run([command, "--node", a, "eval", "node()."], issued, 60)
    assert proc.returncode == 0 and proc.stdout.strip() == "'%s'" % a, proc.stderr
    proc = run([command, "--node", a, "rpc", "erlang", "length", "[1,2,3]"], issued, 60)
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    # A node from another CA does not answer it.
    x = nodes.start("x")
    proc = run([command, "--node", x, "--timeout", "15", "ping"], issued, 60)
    assert proc.returncode == 1 and proc.stdout.strip() == "pang"
