"""boot_script builds NAME.boot/NAME.script with systools, only when inputs change."""

import os
import shutil
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "hello_cluster")
OTP_LIB = subprocess.run(["erl", "-noshell", "-eval", "io:format(\"~s\", [code:lib_dir()]), halt()."],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout


def build(env, name, vsn, **extra):
    out = os.path.join(env.base, name)
    shutil.rmtree(out, ignore_errors=True)
    argv = ["make", "-s", "-C", EXAMPLE, "release", "VSN=" + vsn, "OUT=" + out] + ["%s=%s" % i for i in extra.items()]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return out


def args(out, vsn):
    return {"rel_file": os.path.join(out, "releases", vsn, "hello_cluster.rel"),
            "lib_dirs": [os.path.join(out, "lib"), OTP_LIB]}


def test_builds_once_then_reports_unchanged(env, ansible):
    out = build(env, "bs1", "4.0.0")
    rc, result, output = ansible.run("boot_script", args(out, "4.0.0"))
    assert rc == 0 and result["changed"] is True, output
    boot = os.path.join(out, "releases", "4.0.0", "hello_cluster.boot")
    assert result["boot"] == boot and os.path.getsize(boot) > 0
    assert result["release_version"] == "4.0.0"
    script = open(result["script"]).read()
    assert os.path.join(out, "lib", "hello_cluster-4.0.0", "ebin") in script, "local: absolute paths"
    mtime = os.stat(boot).st_mtime_ns
    rc, result, output = ansible.run("boot_script", args(out, "4.0.0"))
    assert rc == 0 and result["changed"] is False, output
    assert os.stat(boot).st_mtime_ns == mtime


def test_changed_app_file_rebuilds_and_check_mode_writes_nothing(env, ansible):
    out = build(env, "bs2", "4.1.0")
    rc, result, output = ansible.run("boot_script", args(out, "4.1.0"))
    assert rc == 0 and result["changed"], output
    app = os.path.join(out, "lib", "hello_cluster-4.1.0", "ebin", "hello_cluster.app")
    with open(app) as handle:
        text = handle.read()
    with open(app, "w") as handle:
        handle.write(text.replace("hello_cluster_http]", "hello_cluster_http, hello_cluster_extra]"))
    script = os.path.join(out, "releases", "4.1.0", "hello_cluster.script")
    before = open(script).read()
    rc, result, output = ansible.run("boot_script", args(out, "4.1.0"), check=True)
    assert rc == 0 and result["changed"] is True, output
    assert open(script).read() == before, "check mode wrote the script"
    rc, result, output = ansible.run("boot_script", args(out, "4.1.0"))
    assert rc == 0 and result["changed"] is True, output
    assert "hello_cluster_extra" in open(script).read()


def test_systools_errors_fail_clearly_and_write_nothing(env, ansible):
    out = build(env, "bs3", "4.2.0")
    app = os.path.join(out, "lib", "hello_cluster-4.2.0", "ebin", "hello_cluster.app")
    with open(app) as handle:
        text = handle.read()
    with open(app, "w") as handle:
        handle.write(text.replace("{registered,", "{not_registered,"))
    rc, result, output = ansible.run("boot_script", args(out, "4.2.0"))
    assert rc != 0
    assert "systools:make_script failed" in result["msg"] and "Missing parameter in .app file: registered" in result["msg"]
    assert not os.path.exists(os.path.join(out, "releases", "4.2.0", "hello_cluster.boot"))
    with open(app, "w") as handle:
        handle.write(text.replace('"4.2.0"', '"4.2.1"'))
    rc, result, output = ansible.run("boot_script", args(out, "4.2.0"))
    assert rc != 0 and "No valid version" in result["msg"]
    rc, result, output = ansible.run("boot_script", {"rel_file": os.path.join(out, "releases", "4.2.0", "hello_cluster.rel"),
                                                     "lib_dirs": [OTP_LIB]})
    assert rc != 0 and 'File not found: \\"hello_cluster.app\\"' in output or "hello_cluster.app" in result["msg"]


def test_bad_paths_are_refused(env, ansible):
    rc, result, output = ansible.run("boot_script", {"rel_file": "/nonexistent/x.rel", "lib_dirs": [OTP_LIB]})
    assert rc != 0 and "does not exist" in result["msg"]
    rc, result, output = ansible.run("boot_script", {"rel_file": "/etc/hostname", "lib_dirs": [OTP_LIB]})
    assert rc != 0 and "NAME.rel" in result["msg"]
