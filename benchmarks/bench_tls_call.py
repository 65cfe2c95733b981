"""Cost of one control-layer call over TLS distribution vs erl_call (make bench-tls-call): not a test, prints
figures measured in one run.

Starts two local nodes (one inet_tcp_dist, one inet_tls_dist with a throw-away CA made here with `openssl`),
then times calls of the same body through module_utils/erlang_node.py, in one run:

- `tcp`: erl_call, one process per call (N calls);
- `tls` first call: a new ErlangNode, one call, close(): the hidden client node starts (VM boot, `ssl` loading,
  TLS handshake) and stops each time (--first calls);
- `tls` later calls: N calls on one ErlangNode, whose client node is already running and connected;

tcp and tls calls alternating, so that both see the same machine load. Prints median, p90, the ratios and the
client node's resident memory.
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


def timed(call):
    started = time.monotonic()
    call()
    return time.monotonic() - started


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            return int([line.split()[1] for line in handle if line.startswith("VmRSS:")][0])
    except (OSError, IndexError, ValueError):
        return None


def first_call(node, cookie_file, optfile):
    with erlang_node.ErlangNode(node, run_command, cookie_file=cookie_file, timeout=10, distribution="tls",
                                ssl_dist_optfile=optfile) as client:
        client.call(BODY)


def wait_up(tcp, tls_node, cookie_file, optfile):
    deadline = time.monotonic() + 20
    while True:
        try:
            tcp.call("ok")
            first_call(tls_node, cookie_file, optfile)
            return
        except erlang_node.ErlangNodeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def measure(args, home, cookie_file, optfile, suffix):
    """{kind: [seconds]} and the client node's RSS in kB."""
    tcp_node, tls_node = "bench-tcp-%s@%s" % (suffix, HOST), "bench-tls-%s@%s" % (suffix, HOST)
    tcp = erlang_node.ErlangNode(tcp_node, run_command, cookie_file=cookie_file, timeout=10)
    wait_up(tcp, tls_node, cookie_file, optfile)
    times = {"tcp": [], "first": [], "later": []}
    for dummy in range(args.first):
        times["tcp"].append(timed(lambda: tcp.call(BODY)))
        times["first"].append(timed(lambda: first_call(tls_node, cookie_file, optfile)))
    with erlang_node.ErlangNode(tls_node, run_command, cookie_file=cookie_file, timeout=10, distribution="tls",
                                ssl_dist_optfile=optfile) as tls:
        tls.call("ok")
        for dummy in range(args.calls):
            times["tcp"].append(timed(lambda: tcp.call(BODY)))
            times["later"].append(timed(lambda: tls.call(BODY)))
        rss = rss_kb(tls.tls_client().pid())
    tcp.close()
    return times, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="erl_call calls and later TLS calls (default 50)")
    parser.add_argument("--first", type=int, default=10, help="TLS first calls, each with a new client node (default 10)")
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
        times, rss = measure(args, home, cookie_file, optfile, suffix)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    report(args, times, rss)
    return 0


def report(args, times, rss):
    def p90(values):
        return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]

    median = dict((kind, statistics.median(values)) for kind, values in times.items())
    print("tcp calls: %d, tls first calls: %d, tls later calls: %d (body: %s)" % (
        len(times["tcp"]), args.first, args.calls, BODY))
    print("%-40s %10s %10s" % ("", "median ms", "p90 ms"))
    for kind, label in (("tcp", "tcp (erl_call)"), ("first", "tls first call (client node starts)"),
                        ("later", "tls later calls (client node running)")):
        print("%-40s %10.1f %10.1f" % (label, 1000 * median[kind], 1000 * p90(times[kind])))
    print("ratio tls first call / tcp (median): %.1fx" % (median["first"] / median["tcp"]))
    print("ratio tls later call / tcp (median): %.2fx" % (median["later"] / median["tcp"]))
    print("ratio tls first call / later call (median): %.0fx" % (median["first"] / median["later"]))
    print("client node resident memory: %s" % ("%d MB" % (rss // 1024) if rss else "unknown"))


if __name__ == "__main__":
    sys.exit(main())
