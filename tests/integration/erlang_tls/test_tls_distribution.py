"""TLS distribution: role-issued certificates, nodes that form a cluster, the control layer over TLS, and
refusals (another CA, plain TCP, another cookie)."""

import os
import stat
import subprocess

import playbook_runner
import pytest

from conftest import HOST, node_info_play, node_of, run_command
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node


def pem_text(path):
    return subprocess.run(["openssl", "x509", "-in", path, "-noout", "-text"], stdout=subprocess.PIPE,
                          check=True, universal_newlines=True).stdout


def test_role_issues_key_and_certificate_for_the_node(issued):
    node_dir = issued.node_dir("a")
    key = os.stat(os.path.join(node_dir, "node.key"))
    assert stat.S_IMODE(key.st_mode) == 0o400
    assert stat.S_IMODE(os.stat(node_dir).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(os.path.join(issued.ca_dir("cluster"), "ca.key")).st_mode) == 0o400
    text = pem_text(os.path.join(node_dir, "node.pem"))
    assert "IP Address:%s" % HOST in text and "DNS:%s" % HOST in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    # Signed by the cluster's CA, not by the other one.
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(issued.ca_dir("cluster"), "ca.pem"),
                             os.path.join(node_dir, "node.pem")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert verify.returncode == 0, verify.stdout
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(issued.ca_dir("other"), "ca.pem"),
                             os.path.join(node_dir, "node.pem")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert verify.returncode != 0
    with open(issued.optfile("a")) as handle:
        optfile = handle.read()
    assert "{verify, verify_peer}" in optfile and "{fail_if_no_peer_cert, true}" in optfile


def test_role_keeps_a_valid_certificate_and_never_prints_keys(issued):
    with open(os.path.join(issued.node_dir("a"), "node.pem")) as handle:
        before = handle.read()
    proc = issued.issue("a")
    assert proc.rc == 0 and proc.changed == 0, proc.tail()
    with open(os.path.join(issued.node_dir("a"), "node.pem")) as handle:
        assert handle.read() == before
    for name, ca in (("a", "cluster"), ("x", "other")):
        with open(os.path.join(issued.node_dir(name), "node.key")) as handle:
            body = "".join(line for line in handle.read().splitlines() if "-----" not in line)
        assert body[:40] and not [out for out in issued.outputs if body[:40] in out]
    with open(os.path.join(issued.ca_dir("cluster"), "ca.key")) as handle:
        body = "".join(line for line in handle.read().splitlines() if "-----" not in line)
    assert not [out for out in issued.outputs if body[:40] in out]


def test_role_reissues_a_certificate_from_another_ca(issued):
    """A node dir holding a certificate of the other CA gets one from the cluster's CA."""
    proc = issued.issue("moved", ca="other")
    assert proc.rc == 0, proc.tail()
    proc = issued.issue("moved", ca="cluster")
    assert proc.rc == 0 and proc.changed > 0, proc.tail()
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(issued.ca_dir("cluster"), "ca.pem"),
                             os.path.join(issued.node_dir("moved"), "node.pem")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert verify.returncode == 0, verify.stdout


def test_role_refuses_half_a_user_ca(issued):
    proc = issued.issue("half", extra_vars={"erlang_tls_ca_cert_file": os.path.join(issued.ca_dir("cluster"), "ca.pem")})
    assert proc.rc != 0
    assert "go together" in proc.out
    assert not os.path.exists(issued.node_dir("half"))


def test_role_uses_the_users_ca(issued):
    ca_dir = issued.ca_dir("cluster")
    proc = issued.issue("own", ca="unused", extra_vars={"erlang_tls_ca_cert_file": os.path.join(ca_dir, "ca.pem"),
                                                        "erlang_tls_ca_key_file": os.path.join(ca_dir, "ca.key")})
    assert proc.rc == 0, proc.tail()
    assert not os.path.exists(issued.ca_dir("unused"))
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(ca_dir, "ca.pem"),
                             os.path.join(issued.node_dir("own"), "node.pem")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert verify.returncode == 0, verify.stdout


def test_nodes_of_the_cluster_ca_connect_and_answer_the_control_layer(nodes, issued):
    a = nodes.start("a")
    b = nodes.start("b")
    # The control layer over TLS (b's own certificate), with erl_call's result decoding.
    assert nodes.call(a, "{node(), lists:seq(1, 3), <<\"x\">>}", issued.optfile("b")) == (a, [1, 2, 3], b"x")
    # a connects to b over TLS: both present certificates of the cluster's CA.
    assert nodes.call(a, "net_adm:ping('%s')" % b, issued.optfile("b")) == "pong"
    assert nodes.call(b, "lists:member('%s', nodes())" % a, issued.optfile("a")) is True
    # The connection is TLS distribution.
    assert nodes.call(a, "[list_to_binary(P) || [P] <- element(2, init:get_argument(proto_dist))]", issued.optfile("a")) == [b"inet_tls"]


def test_control_layer_failure_kinds_over_tls(nodes, issued):
    a = nodes.start("a")
    with nodes.client(a, issued.optfile("b"), ) as client:
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("erlang:error(boom)")
        assert raised.value.kind == erlang_node.KIND_BADRPC and raised.value.details[1] == "boom"
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("1 +")
        assert raised.value.kind == erlang_node.KIND_SYNTAX
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("receive after 10000 -> ok end", timeout=1)
        assert raised.value.kind == erlang_node.KIND_TIMEOUT
    with nodes.client(node_of("nobody"), issued.optfile("b")) as client:
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("ok")
        assert raised.value.kind == erlang_node.KIND_NOT_RUNNING
    with pytest.raises(erlang_node.ErlangNodeError) as raised:
        erlang_node.ErlangNode(a, run_command, cookie_file=issued.cookie_file, distribution="tls",
                               ssl_dist_optfile=os.path.join(issued.base, "missing.conf"))
    assert raised.value.kind == erlang_node.KIND_BAD_ARGUMENT and "missing.conf" in raised.value.message
    with pytest.raises(erlang_node.ErlangNodeError) as raised:
        erlang_node.ErlangNode(a, run_command, cookie_file=issued.cookie_file, distribution="quic")
    assert raised.value.kind == erlang_node.KIND_BAD_ARGUMENT


def test_a_node_with_a_certificate_from_another_ca_is_refused(nodes, issued):
    a = nodes.start("a")
    x = nodes.start("x")     # its own CA is the other one: it trusts only that one
    assert nodes.call(a, "net_adm:ping('%s')" % x, issued.optfile("b")) == "pang"
    # x trusting the cluster's CA but still holding the other CA's certificate: a's server side refuses it.
    trusting = os.path.join(issued.base, "x-trusting.conf")
    with open(issued.optfile("x")) as handle:
        text = handle.read()
    with open(trusting, "w") as handle:
        handle.write(text.replace(os.path.join(issued.node_dir("x"), "ca.pem"), os.path.join(issued.node_dir("a"), "ca.pem")))
    nodes.start("y", optfile=trusting)
    assert nodes.call(a, "lists:member('%s', nodes())" % node_of("y"), issued.optfile("b")) is False
    # A control call presenting the other CA's certificate is refused as well.
    with nodes.client(a, trusting) as client:
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("ok")
    assert raised.value.kind == erlang_node.KIND_AUTH and "certificate" in raised.value.message
    others = "[N || N <- nodes(connected), not lists:prefix(\"erlang-ec2-ctl-\", atom_to_list(N))]"
    assert nodes.call(a, others, issued.optfile("b")) == []


def test_a_plain_tcp_node_is_refused(nodes, issued):
    a = nodes.start("a")
    plain = nodes.start("plain", tls=False)
    # TCP to TLS: the plain node (called with erl_call) cannot reach a.
    with erlang_node.ErlangNode(plain, run_command, cookie_file=issued.cookie_file, timeout=10) as client:
        assert client.call("net_adm:ping('%s')" % a) == "pang"
    # TLS to TCP: a cannot reach the plain node (the handshake times out: net_setuptime, 7 s).
    with nodes.client(a, issued.optfile("b")) as client:
        assert client.call("net_adm:ping('%s')" % plain, timeout=20) == "pang"
    # erl_call (TCP distribution) cannot reach a TLS node either.
    with erlang_node.ErlangNode(a, run_command, cookie_file=issued.cookie_file, timeout=3) as client:
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("ok")
    # The right cookie: the message names TLS as the other cause, so the user is not sent after the cookie.
    assert raised.value.kind == erlang_node.KIND_AUTH and "distribution: tls" in raised.value.message, raised.value.message


def test_a_wrong_cookie_is_refused_over_tls(nodes, issued):
    a = nodes.start("a")
    with erlang_node.ErlangNode(a, run_command, cookie="not-the-cookie", distribution="tls", ssl_dist_optfile=issued.optfile("b")) as client:
        with pytest.raises(erlang_node.ErlangNodeError) as raised:
            client.call("ok")
    assert raised.value.kind == erlang_node.KIND_AUTH


def test_node_info_module_over_tls(nodes, issued):
    """A module (node_info) through Ansible with distribution tls: the one switch in erlang_node.py."""
    a = nodes.start("a")
    proc, result = node_info_play(issued, a, issued.optfile("b"))
    assert result["reachable"] is True and result["node"] == a and result["otp_release"], result
    assert issued.cookie not in proc.out


def test_role_refuses_an_unknown_distribution_before_any_change(issued):
    """The role's argument spec: erlang_distribution is tcp or tls; anything else stops the role at its start."""
    play = [{"hosts": "localhost", "gather_facts": False, "vars": {"erlang_distribution": "quic", "erlang_cookie": "unused-cookie"},
             "tasks": [{"name": "erlang", "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang"}}]}]
    path = playbook_runner.write_play(os.path.join(issued.base, "bad.yml"), play)
    env = playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    proc = playbook_runner.run_playbook(path, "-c", "local", inventory="localhost,",
                                        extra_vars={"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                        env=env, timeout=300, merge_stderr=True)
    assert proc.rc != 0
    assert "erlang_distribution" in proc.out and "quic" in proc.out and "tcp, tls" in proc.out, proc.tail()
    assert proc.changed == 0


def test_the_cookie_never_reaches_a_command_line_over_tls(nodes, issued):
    """While TLS calls run, every process's command line and environment is scanned: the cookie is never there
    (the hidden client node reads it from the private HOME's .erlang.cookie, as erl_call does)."""
    import threading
    a = nodes.start("a")
    needle = issued.cookie.encode()
    hits, scans, stop = [], [0], threading.Event()

    def scan():
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for name in ("cmdline", "environ"):
                    try:
                        with open("/proc/%s/%s" % (pid, name), "rb") as handle:
                            if needle in handle.read():
                                hits.append((pid, name))
                    except OSError:
                        pass
            scans[0] += 1
            stop.wait(0.02)

    watcher = threading.Thread(target=scan, daemon=True)
    watcher.start()
    try:
        for dummy in range(3):
            assert nodes.call(a, "node()", issued.optfile("b")) == a
    finally:
        stop.set()
        watcher.join(5)
    assert scans[0] > 3 and hits == []


def test_check_mode_before_the_ca_exists_reports_and_creates_nothing(issued):
    """--check on a cluster whose CA is not made yet: the run succeeds, says what it would create (the CA, the node's
    key and certificate) and writes nothing, neither the CA on the controller nor the node's files."""
    proc = issued.issue("fresh", ca="not-yet", check=True)
    assert proc.rc == 0, proc.tail()
    assert proc.changed > 0, proc.tail()
    assert not os.path.exists(issued.ca_dir("not-yet")) and not os.path.exists(issued.node_dir("fresh"))
    # With the CA made (a real run), check mode on a second node previews it with the real CA, and still writes nothing.
    assert issued.issue("fresh", ca="not-yet").rc == 0
    again = issued.issue("fresh2", ca="not-yet", check=True)
    assert again.rc == 0 and again.changed > 0 and not os.path.exists(issued.node_dir("fresh2")), again.tail()


def test_the_created_ca_is_never_remade_when_its_inputs_change(issued):
    """A run that names the cluster otherwise (bake_image once ran without erlang_cluster) keeps the CA as made: the
    same certificate, so every certificate it signed still chains to it, and nothing changes."""
    path = os.path.join(issued.ca_dir("cluster"), "ca.pem")
    with open(path) as handle:
        before = handle.read()
    proc = issued.issue("a", extra_vars={"erlang_cluster": "another-name"})
    assert proc.rc == 0 and proc.changed == 0, proc.tail()
    with open(path) as handle:
        assert handle.read() == before
