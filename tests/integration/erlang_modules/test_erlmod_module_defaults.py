"""module_defaults on the action group group/skunkworks.erlang_ec2.erlang: cookie_file and timeout set once
for a play that uses every module of the group (the members are read from meta/runtime.yml, so a module
added to the group without a task here fails the test).

Ansible runs with a HOME that has no .erlang.cookie: a task only reaches a node if the group's default
cookie_file reached the module.
"""

import json
import os
import shutil
import tempfile

import yaml

import playbook_runner
from conftest import INTERPRETER, ROOT

TIMEOUT = 7   # not any module's default, so seeing it in a task's invocation shows the default applied


def group_members():
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        return yaml.safe_load(handle)["action_groups"]["erlang"]


def push_dir(env, vsn):
    """A release directory as code_push reads it (the boot server role's layout: NAME.rel beside lib/),
    made from the suite's shared tree without changing it."""
    tree = env.release_dir(vsn)
    pushed = tempfile.mkdtemp(dir=env.base, prefix="push-%s-" % vsn)
    shutil.copy(os.path.join(tree, "releases", vsn, "hello_cluster.rel"), pushed)
    os.symlink(os.path.join(tree, "lib"), os.path.join(pushed, "lib"))
    return pushed


def tasks_for(env, boot_server, worker):
    release = push_dir(env, "1.0.0")
    current = os.path.join(env.boot_root, "current")
    return {
        "node_info": {"node": worker},
        "boot_server_allow_list": {"node": boot_server, "addresses": ["127.0.0.1"]},
        "boot_server_slave": {"node": boot_server, "addresses": ["127.0.0.1"]},
        "boot_server_level": {"node": boot_server},
        "cluster_status": {"node": boot_server, "cluster": "defaults", "workers": [worker]},
        "code_push": {"node": boot_server, "old_dir": release, "new_dir": release, "nodes": [worker]},
        "cluster_restart": {"nodes": [{"node": worker}], "expected_version": "1.0.0", "plan": True,
                            "current_link": current, "check_local_files": False},
        "node_restart": {"node": worker, "expected_version": "1.0.0", "restart_timeout": 30},
        # The cookie it already has: reached with the group's cookie_file, nothing changes.
        "node_cookie": {"node": worker, "new_cookie": env.cookie},
    }


def run_play(env, tasks, defaults):
    """One play on localhost, HOME without a cookie; returns (rc, {module: result}, output)."""
    workdir = tempfile.mkdtemp(dir=env.base, prefix="defaults-")
    home = os.path.join(workdir, "home")
    os.mkdir(home, 0o700)
    play = {"hosts": "localhost", "gather_facts": False,
            "tasks": [{"name": module, "skunkworks.erlang_ec2." + module: args, "register": "result_" + module,
                       "ignore_errors": True}
                      for module, args in tasks.items()]}
    # Registered results keep `invocation` (the callback drops it below -vvv): what each module was given.
    results_file = os.path.join(workdir, "results.json")
    registered = "{%s}" % ", ".join("'%s': result_%s" % (module, module) for module in tasks)
    play["tasks"].append({"name": "results", "ansible.builtin.copy": {
        "content": "{{ %s | to_json }}" % registered, "dest": results_file, "mode": "0600"}})
    if defaults:
        play["module_defaults"] = {"group/skunkworks.erlang_ec2.erlang": defaults}
    playbook = playbook_runner.write_play(os.path.join(workdir, "play.yml"), [play])
    environ = playbook_runner.ansible_env(HOME=home, TMPDIR=env.module_tmp, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                                          ANSIBLE_INJECT_INVOCATION="True",
                                          ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    proc = playbook_runner.run_playbook(playbook, "-c", "local", inventory="localhost,", extra_vars=INTERPRETER,
                                        env=environ, timeout=300, merge_stderr=True)
    env.outputs.append(proc.stdout)
    with open(results_file) as handle:
        return proc.returncode, json.load(handle), proc.stdout


def test_cookie_file_and_timeout_once_for_every_module_of_the_group(env, nodes, boot_server):
    worker = nodes.start_worker("wdefaults")
    nodes.wait_started(worker, 20)
    tasks = tasks_for(env, boot_server, worker)
    assert sorted(tasks) == sorted(group_members()), "every module of the erlang group needs a task here"

    rc, results, output = run_play(env, tasks, {"cookie_file": env.cookie_file, "timeout": TIMEOUT})
    assert rc == 0, output
    for module, result in results.items():
        assert not result.get("failed"), "%s: %s" % (module, result.get("msg"))
        assert result["invocation"]["module_args"]["timeout"] == TIMEOUT, module
        assert result["invocation"]["module_args"]["cookie_file"] == env.cookie_file, module
    assert results["node_info"]["reachable"] is True
    assert results["node_restart"]["after"]["release_version"] == "1.0.0"
    assert env.cookie not in output


def test_without_the_group_defaults_the_same_play_cannot_reach_a_node(env, nodes, boot_server):
    """The control: the first test passes only because the defaults reached each module."""
    worker = nodes.start_worker("wnodefaults")
    nodes.wait_started(worker, 20)
    tasks = tasks_for(env, boot_server, worker)
    del tasks["node_restart"]   # nothing to learn from failing a restart
    rc, results, output = run_play(env, tasks, None)
    assert rc == 0, output   # ignore_errors: the play goes on to write every result
    for module, result in results.items():
        assert result.get("failed") is True, "%s ran without a cookie: %s" % (module, result)
        assert "cannot read cookie file" in result["msg"], "%s: %s" % (module, result["msg"])
