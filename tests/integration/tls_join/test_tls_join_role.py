"""The roles' side of TLS self-join, with material the roles make (no hand-made PKI): the erlang role's tls tasks
make the cluster CA and a boot server's node certificate, tls_issuer.yml its intermediate (pathlen 0, 0400 key,
idempotent); the script signs a worker's CSR with it against moto on loopback; a boot node running the role's
optfile and the self-joined worker connect over inet_tls_dist. And a node image (erlang_tls_node_cert false)
gets the CA certificate and the optfile, never a key."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import local_erl  # noqa: E402
import playbook_runner  # noqa: E402
import test_tls_join as tj  # noqa: E402
from tls_join_env import make_ca  # noqa: E402

HOST = "127.0.0.1"


def run_role(base, tasks_from, tls_dir, extra=None):
    play_vars = {"erlang_distribution": "tls", "erlang_cluster": tj.CLUSTER, "erlang_tls_ca_dir": os.path.join(base, "ca"),
                 "erlang_tls_dir": tls_dir, "erlang_tls_node_ip": HOST, "erlang_node": "tjboot@" + HOST,
                 "erlang_layout": {"user": "root", "group": "root"}}
    play_vars.update(extra or {})
    tasks = [{"name": t, "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang", "tasks_from": t}}
             for t in tasks_from]
    play = [{"hosts": "localhost", "gather_facts": False, "vars": play_vars, "tasks": tasks}]
    workdir = tempfile.mkdtemp(dir=base, prefix="play-")
    playbook = playbook_runner.write_play(os.path.join(workdir, "play.yml"), play)
    env = playbook_runner.ansible_env(ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    proc = playbook_runner.run_playbook(playbook, "-c", "local", inventory="localhost,",
                                        extra_vars={"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                        env=env, timeout=300, merge_stderr=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return proc


@pytest.fixture(scope="module")
def role_pki():
    base = tempfile.mkdtemp(prefix="tls-join-role-")
    os.chmod(base, 0o700)
    boot = os.path.join(base, "boot")
    first = run_role(base, ["tls", "tls_issuer"], boot)
    assert first.rc == 0, first.tail()
    second = run_role(base, ["tls", "tls_issuer"], boot)
    yield base, boot, first, second
    shutil.rmtree(base, ignore_errors=True)


def out(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False).stdout


def test_the_boot_server_gets_a_pathlen0_intermediate_from_the_cluster_ca(role_pki):
    base, boot, first, second = role_pki
    key, pem, ca = (os.path.join(boot, n) for n in ("issuer.key", "issuer.pem", "ca.pem"))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o400
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o444
    info = out("x509", "-in", pem, "-noout", "-text")
    assert "CA:TRUE, pathlen:0" in info and "Certificate Sign, CRL Sign" in info
    assert "erlang-ec2 issuer %s %s" % (tj.CLUSTER, HOST) in out("x509", "-in", pem, "-noout", "-subject")
    assert ": OK" in out("verify", "-CAfile", ca, pem)
    enddays = out("x509", "-in", pem, "-noout", "-checkend", str(29 * 86400)), \
        out("x509", "-in", pem, "-noout", "-checkend", str(31 * 86400))
    assert "will not expire" in enddays[0] and "will expire" in enddays[1]  # 30 days
    # Idempotent: the second run keeps the intermediate; the key is in neither run's output.
    assert second.changed == 0, second.tail()
    with open(key) as f:
        body = "".join(f.read().splitlines()[1:-1])
    assert body not in (first.stdout + second.stdout).replace("\n", "")
    assert "TLS issuer" in first.stdout


def test_a_node_image_gets_the_ca_and_optfile_but_no_key(role_pki, tmp_path):
    base = role_pki[0]
    image = str(tmp_path / "image")
    proc = run_role(base, ["tls"], image, {"erlang_tls_node_cert": False})
    assert proc.rc == 0, proc.tail()
    assert sorted(os.listdir(image)) == ["ca.pem", "ssl_dist.conf"]


def test_role_made_issuer_signs_and_the_worker_joins_a_role_configured_node(role_pki, aws, tmp_path):
    base, boot = role_pki[:2]
    iid, ip = aws.launch(ip=HOST)
    wdir = str(tmp_path / "w")
    os.makedirs(wdir)
    worker = subprocess.Popen(tj.script(aws, "request", "--cluster", tj.CLUSTER, "--tls-dir", wdir, "--ca-file",
                                        os.path.join(boot, "ca.pem"), "--node-name", "tjworker", "--instance-id", iid,
                                        "--ip", ip, "--deadline", "20"),
                              env=aws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tj.wait_for_parameter(aws, tj.path("csr", iid))
    issued = subprocess.run(tj.script(aws, "issue", "--cluster", tj.CLUSTER, "--issuer-cert", os.path.join(boot, "issuer.pem"),
                                      "--issuer-key", os.path.join(boot, "issuer.key"), "--no-check-writer"),
                            env=aws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    assert issued.returncode == 0, issued.stderr
    assert worker.wait(30) == 0, worker.stderr.read()
    dummy, home, dummy = local_erl.private_cookie_home(str(tmp_path))
    worker_conf = tj.optfile(str(tmp_path), "worker", os.path.join(wdir, "node.pem"), os.path.join(wdir, "node.key"),
                             os.path.join(boot, "ca.pem"))
    boot_conf = os.path.join(boot, "ssl_dist.conf")  # the role's own optfile
    proc = subprocess.Popen(["erl", "-name", "tjboot@" + HOST, "-noshell", "-noinput", "-proto_dist", "inet_tls",
                             "-ssl_dist_optfile", boot_conf], env=dict(os.environ, HOME=home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        assert tj.ping(home, "tjworker", worker_conf, "tjboot@" + HOST)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_a_pathlen0_cluster_ca_is_refused_before_any_change(tmp_path):
    """A CA made before self-join (pathlen 0) cannot sign an issuer: the role says so and writes nothing."""
    base = str(tmp_path)
    make_ca(base, "old", pathlen0=True)
    boot = os.path.join(base, "boot")
    os.makedirs(boot)
    proc = run_role(base, ["tls_issuer"], boot, {"erlang_tls_ca_cert_file": os.path.join(base, "old.pem"),
                                                 "erlang_tls_ca_key_file": os.path.join(base, "old.key")})
    assert proc.rc != 0
    assert "has pathlen:0: it cannot sign the boot servers' issuers" in proc.stdout, proc.tail()
    assert os.listdir(boot) == []


@pytest.mark.parametrize("source", [{"erlang_tls_ca_cert_ssm_parameter": "/c/ca", "erlang_tls_ca_key_ssm_parameter": "/c/key"},
                                    {"erlang_tls_ca_secret": "c-ca"}])
def test_a_cluster_ca_from_aws_is_refused_by_the_issuer_before_any_change(tmp_path, source):
    """Signing the intermediate with a CA held in memory is not built: said before anything is read or written."""
    boot = str(tmp_path / "boot")
    os.makedirs(boot)
    proc = run_role(str(tmp_path), ["tls_issuer"], boot, source)
    assert proc.rc != 0
    assert "a CA from SSM or Secrets Manager cannot sign the boot servers' issuers yet" in proc.stdout, proc.tail()
    assert os.listdir(boot) == [] and not os.path.exists(str(tmp_path / "ca"))
