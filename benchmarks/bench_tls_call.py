"""Cost of one control-layer call over TLS distribution vs erl_call (make bench-tls-call): not a test, prints
figures measured in one run.

Starts two local nodes (one inet_tcp_dist, one inet_tls_dist with a throw-away CA made here with `openssl`),
then times N calls of the same body through module_utils/erlang_node.py: `distribution=tcp` (erl_call) and
`distribution=tls` (the short-lived hidden erl node), alternating, and prints median, p90 and the ratio.
"""

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".collections"))

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_node  # noqa: E402  pylint: disable=wrong-import-position

HOST = "127.0.0.1"
BODY = "{node(), erlang:system_info(otp_release), length(erlang:processes())}"


def run_command(argv, data, environ_update):
    environ = dict(os.environ)
    environ.update(environ_update)
    proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, timeout=60, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_tls(base):
    """A CA and one certificate for 127.0.0.1 (IP and DNS, as the erlang role issues them); returns the optfile."""
    ca_key, ca_pem = os.path.join(base, "ca.key"), os.path.join(base, "ca.pem")
    key, csr, pem = os.path.join(base, "node.key"), os.path.join(base, "node.csr"), os.path.join(base, "node.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
            "-out", ca_pem, "-subj", "/CN=bench CA", "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=bench@%s" % HOST)
    ext = os.path.join(base, "ext.cnf")
    with open(ext, "w") as handle:
        handle.write("subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n" % (HOST, HOST))
    openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial", "-out", pem, "-days", "1",
            "-extfile", ext)
    optfile = os.path.join(base, "ssl_dist.conf")
    files = '{certfile, "%s"}, {keyfile, "%s"}, {cacertfile, "%s"}' % (pem, key, ca_pem)
    with open(optfile, "w") as handle:
        handle.write("[{server, [%s, {verify, verify_peer}, {fail_if_no_peer_cert, true}]},\n"
                     " {client, [%s, {verify, verify_peer}]}].\n" % (files, files))
    return optfile


def start(name, home, extra):
    argv = ["erl", "-name", "%s@%s" % (name, HOST), "-noshell", "-noinput"] + extra
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, HOME=home, ERL_CRASH_DUMP_SECONDS="0"))


def timed(client):
    started = time.monotonic()
    client.call(BODY)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls of each kind (default 20)")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="bench-tls-")
    os.chmod(base, 0o700)
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    cookie = "bench" + secrets.token_hex(16)
    cookie_file = os.path.join(home, ".erlang.cookie")
    fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    os.write(fd, cookie.encode())
    os.close(fd)
    suffix = secrets.token_hex(3)
    procs = []
    try:
        optfile = make_tls(base)
        procs.append(start("bench-tcp-" + suffix, home, []))
        procs.append(start("bench-tls-" + suffix, home, ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile]))
        tcp = erlang_node.ErlangNode("bench-tcp-%s@%s" % (suffix, HOST), run_command, cookie_file=cookie_file, timeout=10)
        tls = erlang_node.ErlangNode("bench-tls-%s@%s" % (suffix, HOST), run_command, cookie_file=cookie_file, timeout=10,
                                     distribution="tls", ssl_dist_optfile=optfile)
        deadline = time.monotonic() + 20
        while True:
            try:
                tcp.call("ok")
                tls.call("ok")
                break
            except erlang_node.ErlangNodeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        times = {"tcp": [], "tls": []}
        for dummy in range(args.calls):       # alternating: both kinds see the same machine load
            times["tcp"].append(timed(tcp))
            times["tls"].append(timed(tls))
        tcp.close()
        tls.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)

    def p90(values):
        return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]

    print("calls of each kind: %d (body: %s)" % (args.calls, BODY))
    print("%-28s %10s %10s" % ("", "median ms", "p90 ms"))
    for kind, label in (("tcp", "tcp (erl_call)"), ("tls", "tls (hidden erl node)")):
        print("%-28s %10.0f %10.0f" % (label, 1000 * statistics.median(times[kind]), 1000 * p90(times[kind])))
    print("ratio tls/tcp (median): %.1fx" % (statistics.median(times["tls"]) / statistics.median(times["tcp"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
