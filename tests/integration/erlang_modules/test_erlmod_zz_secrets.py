"""Runs last (file order): the cookie never showed up anywhere during the suite."""

import os


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
