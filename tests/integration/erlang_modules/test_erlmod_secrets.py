"""The cookie never shows up anywhere: not on a command line, in Ansible's output or logs, nor in a file left behind.

Self-contained (any file order): the module fixture `cookie_used` first runs here every way a module gets the
cookie (the cookie file, a play variable, the ad-hoc quick-start form); the checks then cover those runs and
whatever other tests ran before. The conftest's `cookie_never_leaked` checks the whole session at its end.
"""

import os

import pytest

from conftest import BOOT_NODE, Nodes


@pytest.fixture(scope="module", autouse=True)
def cookie_used(env, boot_tree, cookie_watch, boot_server_lock, ansible):
    """A boot server node, reached through the modules with the cookie in each way they take it."""
    nodes = Nodes(env)
    env.switch_current("1.0.0")
    try:
        nodes.start_boot_server(allow=["127.0.0.1"])
        rc, result, output = ansible.run("node_info", {"node": BOOT_NODE, "cookie_file": env.cookie_file, "timeout": 5})
        assert rc == 0 and result["reachable"] is True, output
        rc, result, output = ansible.run("node_info", {"node": BOOT_NODE, "cookie": "{{ cluster_cookie }}", "timeout": 5},
                                         extra_vars={"cluster_cookie": env.cookie}, verbosity=3, callback="default")
        assert rc == 0 and '"reachable": true' in output, output
        rc, output = ansible.adhoc("node_info", "node=%s cookie_file=%s" % (BOOT_NODE, env.cookie_file), verbosity=3)
        assert rc == 0 and '"reachable": true' in output, output
    finally:
        nodes.kill_all()


def test_cookie_never_on_a_command_line(env, cookie_watch):
    assert cookie_watch.scans > 10, "the /proc scanner did not run"
    assert cookie_watch.hits == []


def test_cookie_never_in_ansible_output_or_logs(env):
    assert env.outputs, "no Ansible run was recorded"
    for output in env.outputs:
        assert env.cookie not in output
    assert os.path.exists(env.ansible_log)
    with open(env.ansible_log) as handle:
        assert env.cookie not in handle.read()
    for name in os.listdir(env.logs):
        with open(os.path.join(env.logs, name), "rb") as handle:
            assert env.cookie.encode() not in handle.read(), name


def test_cookie_files_are_private(env):
    assert os.stat(env.cookie_file).st_mode & 0o777 == 0o400
    assert os.stat(env.home).st_mode & 0o777 == 0o700


def test_modules_leave_no_cookie_copy_behind(env):
    leftovers = [name for name in os.listdir(env.module_tmp) if name.startswith("erlang-node-")]
    assert leftovers == []
