"""The local files of a release (priv, vm.args) on real diskless workers over the real loader:
the manifest boot_script writes, erlang_ec2_local_files run in a VM booted from the boot server,
and node_restart refusing a node whose files are not in place."""

import os
import subprocess

from conftest import OTP_LIB, boot_server_ebin


def rebuild_manifest(env, ansible, vsn):
    out = env.release_dir(vsn)
    rc, result, output = ansible.run("boot_script", {
        "rel_file": os.path.join(out, "releases", vsn, "hello_cluster.rel"),
        "lib_dirs": [os.path.join(out, "lib"), OTP_LIB], "outdir": out})
    assert rc == 0, output
    return result


def local_files(env, action):
    """erlang_ec2_local_files in a VM booted from the boot server on 127.0.0.1, as the worker's script runs it
    (the module is served by the boot server from its own ebin directory)."""
    ebin = boot_server_ebin()
    return subprocess.run(
        ["timeout", "60", "erl", "-noshell", "-noinput", "-boot", "start_clean", "-loader", "inet", "-hosts", "127.0.0.1",
         "-pa", ebin, "-run", "erlang_ec2_local_files", "main", os.path.join(env.boot_root, "current", "hello_cluster"),
         env.boot_root, action], capture_output=True, text=True, env=env.node_env(), check=False)


def test_manifest_lists_priv_files_with_their_md5(env, ansible, boot_tree):
    priv = os.path.join(env.release_dir("2.0.0"), "lib", "hello_cluster-2.0.0", "priv", "data", "greeting.txt")
    os.makedirs(os.path.dirname(priv), exist_ok=True)
    with open(priv, "w") as handle:
        handle.write("hello\n")
    result = rebuild_manifest(env, ansible, "2.0.0")
    with open(result["local_files"]) as handle:
        manifest = "".join(handle.read().split())  # ~p wraps long terms
    assert '{local_files,1,"hello_cluster","2.0.0"}.' in manifest
    assert '{file,"%s",6,420,"b1946ac92492d2347c6235b4d2611184"}.' % priv in manifest  # size, 0644, md5 of "hello\n"
    assert os.path.join(OTP_LIB, "inets-") in manifest  # OTP's own priv files too (inets' runcgi.sh)
    again = rebuild_manifest(env, ansible, "2.0.0")
    assert again["changed"] is False


def test_restart_refused_while_a_file_is_missing_then_done(env, nodes, boot_server, ansible, node_args):
    priv = os.path.join(env.release_dir("2.0.0"), "lib", "hello_cluster-2.0.0", "priv", "data", "greeting.txt")
    os.makedirs(os.path.dirname(priv), exist_ok=True)
    with open(priv, "w") as handle:
        handle.write("hello\n")
    rebuild_manifest(env, ansible, "2.0.0")
    w1 = nodes.start_worker("w1")
    nodes.wait_started(w1, 20)
    before = nodes.call(w1, "whereis(application_controller)")
    env.switch_current("2.0.0")
    os.remove(priv)
    try:
        checked = local_files(env, "check")
        assert checked.returncode == 3 and "differs=%s" % priv in checked.stdout, (checked.stdout, checked.stderr)
        copied = local_files(env, "sync")  # the boot server lacks it too: a clear error, nothing half-written
        assert copied.returncode == 1 and "cannot read %s from the boot server" % priv in copied.stderr, copied.stderr
        assert not os.path.exists(priv + ".erlang-ec2-tmp")
        rc, result, output = ansible.run("node_restart", node_args(w1, expected_version="2.0.0", restart_timeout=30))
        assert rc != 0 and "refusing to restart %s" % w1 in result["msg"], output
        assert result["missing_local_files"] == [priv]
        assert nodes.call(w1, "whereis(application_controller)") == before, "the node must be untouched"
    finally:
        with open(priv, "w") as handle:
            handle.write("hello\n")
    assert local_files(env, "check").returncode == 0
    rc, result, output = ansible.run("node_restart", node_args(w1, expected_version="2.0.0", restart_timeout=30))
    assert rc == 0 and result["after"]["release_version"] == "2.0.0", output
