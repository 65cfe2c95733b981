"""A diskless worker (-loader inet, -mode embedded, as worker.service runs it) booting hello_cluster from a boot
server, both on TLS distribution with role-issued certificates. The release must hold ssl (docs/tls.md): one
with it boots and joins; one without it cannot start distribution at all."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import HOST, ROOT, name_of, node_of
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node
import local_erl
import playbook_runner

EXAMPLE = os.path.join(ROOT, "examples", "hello_cluster")
BOOT_SERVER_MODULES = ("erlang_ec2_boot_server", "erlang_ec2_loader_server", "erlang_ec2_local_files")
TLS_APPS = ("crypto", "asn1", "public_key", "ssl")
BOOT = node_of("boot")


def otp_lib():
    return subprocess.run(["erl", "-noshell", "-eval", "io:format(\"~s\", [code:lib_dir()]), halt()."],
                          stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout


def add_apps_to_rel(rel_file, apps):
    """The .rel with apps added (at the OTP's versions), before hello_cluster."""
    script = ("{ok, [{release, R, E, Apps}]} = file:consult(\"%s\"), "
              "Extra = [begin ok = application:load(A), {A, element(3, lists:keyfind(A, 1, application:loaded_applications()))} end "
              "|| A <- [%s]], "
              "{Otp, Own} = lists:partition(fun({A, _}) -> A =/= hello_cluster end, Apps), "
              "ok = file:write_file(\"%s\", io_lib:format(\"~p.~n\", [{release, R, E, Otp ++ Extra ++ Own}])), halt()."
              % (rel_file, ", ".join(apps), rel_file))
    subprocess.run(["erl", "-noshell", "-eval", script], check=True)


def build(tls, name, with_ssl):
    """hello_cluster 1.0.0 in tls.base/<name> with a boot file made by the boot_script module."""
    out = os.path.join(tls.base, name, "releases", "1.0.0")
    subprocess.run(["make", "-s", "-C", EXAMPLE, "release", "VSN=1.0.0", "OUT=" + out, "SYNC_NODES=" + BOOT],
                   check=True, stdout=subprocess.DEVNULL)
    rel = os.path.join(out, "releases", "1.0.0", "hello_cluster.rel")
    if with_ssl:
        add_apps_to_rel(rel, TLS_APPS)
    shutil.copy(os.path.join(out, "releases", "1.0.0", "sys.config"), os.path.join(out, "sys.config"))
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{"name": "boot", "skunkworks.erlang_ec2.boot_script": {
        "rel_file": rel, "lib_dirs": [os.path.join(out, "lib"), otp_lib()], "outdir": out}}]}]
    path = playbook_runner.write_play(os.path.join(tls.base, name + "-boot.yml"), play)
    env = playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    proc = playbook_runner.run_playbook(path, "-c", "local", inventory="localhost,",
                                        extra_vars={"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                        env=env, timeout=300, merge_stderr=True)
    assert proc.rc == 0, proc.tail()
    root = os.path.join(tls.base, name)
    os.symlink(out, os.path.join(root, "current"))
    return root


@pytest.fixture(scope="module")
def boot_lock():
    with local_erl.boot_server_lock():
        yield


@pytest.fixture(scope="module")
def trees(issued):
    for name in ("boot", "w1", "w2"):
        proc = issued.issue(name)
        assert proc.rc == 0, proc.tail()
    return {"ssl": build(issued, "with-ssl", True), "plain": build(issued, "without-ssl", False)}


def start_boot_server(nodes, tls, root):
    ebin = os.path.join(tls.base, "boot-ebin")
    os.makedirs(ebin, exist_ok=True)
    subprocess.run(["erlc", "-o", ebin] + [os.path.join(ROOT, "roles", "boot_server", "files", m + ".erl") for m in BOOT_SERVER_MODULES],
                   check=True)
    allow = os.path.join(tls.base, "allow-" + os.path.basename(root))
    with open(allow, "w") as handle:
        handle.write("%s\n" % HOST)
    # As boot_server.service starts it, plus the TLS flags.
    argv = ["erl", "-name", BOOT, "-noshell", "-noinput", "-proto_dist", "inet_tls", "-ssl_dist_optfile", tls.optfile("boot"),
            "-pa", ebin, "-erlang_ec2_root", root, "-erlang_ec2_root", ebin, "-s", "erlang_ec2_boot_server", "start", allow]
    nodes.procs["boot"] = subprocess.Popen(argv, stdout=open(os.path.join(tls.base, "boot.log"), "ab"), stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=dict(os.environ, HOME=tls.home, ERL_CRASH_DUMP_SECONDS="0"))
    wait_true(nodes, BOOT, "is_pid(whereis(boot_server))", tls.optfile("w2"), 30)


def ssl_dist_opts(directory):
    """The optfile's options as worker.service gives them (-ssl_dist_opt): a diskless node would read an optfile
    through its boot loader, from the boot server."""
    opts = []
    for side in ("server", "client"):
        opts += ["%s_certfile" % side, os.path.join(directory, "node.pem"), "%s_keyfile" % side, os.path.join(directory, "node.key"),
                 "%s_cacertfile" % side, os.path.join(directory, "ca.pem"), "%s_verify" % side, "verify_peer",
                 "%s_secure_renegotiate" % side, "true"]
    return opts + ["server_fail_if_no_peer_cert", "true"]


def start_worker(nodes, tls, name, root):
    current = os.path.join(root, "current")
    # As worker.service starts it, plus the TLS flags.
    argv = ["erl", "-name", node_of(name), "-noshell", "-noinput", "-loader", "inet", "-hosts", HOST, "-mode", "embedded",
            "-boot", os.path.join(current, "hello_cluster"), "-config", os.path.join(current, "sys"),
            "-proto_dist", "inet_tls", "-ssl_dist_opt"] + ssl_dist_opts(tls.node_dir(name)) + ["-hello_cluster", "http_port", "0"]
    log = os.path.join(tls.base, name + ".log")
    nodes.procs[name] = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, HOME=tls.home, ERL_CRASH_DUMP_SECONDS="0"))
    return node_of(name), log


def wait_true(nodes, node, body, optfile, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            if nodes.call(node, body, optfile) is True:
                return
        except erlang_node.ErlangNodeError as exc:
            last = exc.message
        time.sleep(0.3)
    raise AssertionError("%s: %s not true within %ss (%s)" % (node, body, seconds, last))


def test_diskless_worker_with_ssl_in_its_release_boots_and_joins_over_tls(nodes, issued, trees, boot_lock):
    start_boot_server(nodes, issued, trees["ssl"])
    worker, log = start_worker(nodes, issued, "w1", trees["ssl"])
    try:
        wait_true(nodes, worker, "init:get_status() =:= {started, started}", issued.optfile("w2"), 60)
    except AssertionError as exc:
        with open(log, "rb") as handle:
            raise AssertionError("%s\nworker log: %s" % (exc, handle.read()[-3000:].decode("utf-8", "replace")))
    apps = nodes.call(worker, "[atom_to_binary(A) || {A, _, _} <- application:which_applications()]", issued.optfile("w2"))
    assert b"hello_cluster" in apps and b"ssl" in apps
    # Its code came from the boot server (inet loader), and it joined the boot server over TLS by itself.
    assert nodes.call(worker, "element(1, erl_prim_loader:get_path()) =/= error andalso init:get_argument(loader) =:= {ok, [[\"inet\"]]}",
                      issued.optfile("w2")) is True
    wait_true(nodes, worker, "lists:member('%s', nodes())" % BOOT, issued.optfile("w2"), 20)


def test_diskless_worker_without_ssl_in_its_release_cannot_start_tls(nodes, issued, trees, boot_lock):
    start_boot_server(nodes, issued, trees["plain"])
    worker, log = start_worker(nodes, issued, "w1", trees["plain"])
    proc = nodes.procs["w1"]
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    with open(log, "rb") as handle:
        text = handle.read().decode("utf-8", "replace")
    assert "inet_tls" in text and "not supported" in text, text[-2000:]
    assert not erlang_node.epmd_lookup(HOST, name_of("w1"))
