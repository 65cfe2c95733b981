"""Boot-storm benchmark (make bench-boot-storm): N diskless workers booting at once from one boot server.

Not a test: prints figures measured in one run. One localcloud cluster (1 boot server + max(N) workers running
examples/hello_cluster 1.0.0) is provisioned once. For each N (default 1, 5, 10, 20): every worker is stopped
(systemctl stop), then N of them are started at the same instant (each host's `systemctl start` is armed over
SSH beforehand to fire at one wall-clock time, so SSH set-up is not measured), and the time from that instant
until all N are up is measured: up = the release answers on http://<ip>:8080/status with the expected version
(the app started, so the VM booted through the boot server's loader and `init` finished the boot script),
polled every 50 ms. The start includes the unit's own pre-start step (the local-files copy, itself a small
VM booted from the boot server), as a real boot does. Reported as a ratio against N=1.
"""

import argparse
import importlib.util
import os
import secrets
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from localcloud_cluster import worker_status  # noqa: E402  pylint: disable=wrong-import-position

_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers", os.path.join(ROOT, "tests", "integration", "e2e", "conftest.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
import layout  # noqa: E402  pylint: disable=wrong-import-position

UNIT = layout.DEFAULT_LAYOUT["worker_unit"]
VERSION = "1.0.0"


def parallel(function, items):
    """function(item) for every item at once, in threads; {item: result}."""
    results = {}
    threads = [threading.Thread(target=lambda item=item: results.__setitem__(item, function(item))) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def stop_all(cluster, ips, bound=120):
    outs = parallel(lambda ip: cluster.ssh(ip, "sudo systemctl stop %s" % UNIT), ips)
    bad = {ip: out.stderr for ip, out in outs.items() if out.returncode != 0}
    if bad:
        raise SystemExit("could not stop workers: %s" % bad)
    deadline = time.monotonic() + bound
    while any(parallel(lambda ip: worker_status(ip, 0.5) is not None, ips).values()):
        if time.monotonic() > deadline:
            raise SystemExit("workers still answer %d s after systemctl stop" % bound)
        time.sleep(0.5)


# Runs on the host (root): sleeps until the given wall-clock instant, then starts the unit without waiting.
ARMED_START = "sudo python3 -c 'import subprocess, time; time.sleep(max(0.0, %.3f - time.time())); " \
              "subprocess.run([\"systemctl\", \"start\", \"--no-block\", \"%s\"], check=True)'"


def storm(cluster, ips, bound=300):
    """Start every ip's worker at one instant; ({ip: seconds until up}, seconds until all up)."""
    fire_at = time.time() + 3.0 + 0.2 * len(ips)
    armed = threading.Thread(target=parallel, args=(lambda ip: cluster.ssh(ip, ARMED_START % (fire_at, UNIT)), ips))
    armed.start()
    up = {}
    while time.time() < fire_at:
        time.sleep(0.01)
    deadline = time.time() + bound
    while len(up) < len(ips):
        pending = [ip for ip in ips if ip not in up]
        answers = parallel(lambda ip: worker_status(ip, 0.5), pending)
        now = time.time()
        for ip, answer in answers.items():
            if answer and answer.get("version") == VERSION:
                up[ip] = now - fire_at
        if now > deadline:
            raise SystemExit("not all up after %d s: %d of %d" % (bound, len(up), len(ips)))
        time.sleep(0.05)
    armed.join(60)
    return up, max(up.values())


def provision(cluster, count):
    release = e2e.build_release(cluster.workdir, VERSION)
    print("bench-boot-storm: provisioning %s: 1 boot server + %d workers, site with hello_cluster %s ..." % (cluster.name, count, VERSION), flush=True)
    started = time.monotonic()
    cluster.provision(count)  # as the tests do: the app port open to the controller (localcloud enforces groups)
    cluster.playbook("site", extra={"site_initial_release": release})
    cluster.refresh()
    print("bench-boot-storm: cluster ready in %.0f s" % (time.monotonic() - started), flush=True)


def report(results, cluster):
    base = results[0][2]
    print()
    print("bench-boot-storm (localcloud, 1 boot server, OTP from Debian, one run; up = /status answers %s)" % VERSION)
    print("| workers booting at once | all up (s) | ratio vs N=1 | per worker median / max (s) |")
    print("|---:|---:|---:|---|")
    for count, up, all_up in results:
        print("| %d | %.2f | %.2fx | %.2f / %.2f |" % (count, all_up, all_up / base, statistics.median(up.values()), max(up.values())))
    print("Command: make bench-boot-storm STORM_WORKERS=%s (cluster %s)" % (",".join(str(r[0]) for r in results), cluster.name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,5,10,20", help="comma-separated worker counts")
    parser.add_argument("--cluster", default=os.environ.get("STORM_CLUSTER") or "storm-%s" % secrets.token_hex(3))
    parser.add_argument("--keep", action="store_true", help="keep the cluster (reused by a later run with the same --cluster)")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.workers.split(",") if n.strip())
    workdir = os.path.join(ROOT, ".state", "bench-boot-storm")
    os.makedirs(workdir, exist_ok=True)
    cluster = e2e.Cluster(e2e.localcloud_env(), args.cluster, workdir)
    ssm = cluster.boto3("ssm")
    try:
        ssm.get_parameter(Name=cluster.cookie_parameter)  # a kept cluster (--keep) keeps its cookie
    except ssm.exceptions.ParameterNotFound:
        ssm.put_parameter(Name=cluster.cookie_parameter, Type="SecureString", Value=secrets.token_urlsafe(32))
    try:
        provision(cluster, max(counts))
        ips = sorted(cluster.workers.values())
        results = []
        for count in counts:
            stop_all(cluster, ips)
            up, all_up = storm(cluster, ips[:count])
            print("bench-boot-storm: N=%d all up in %.2f s" % (count, all_up), flush=True)
            results.append((count, up, all_up))
        parallel(lambda ip: cluster.ssh(ip, "sudo systemctl start %s" % UNIT), ips)
        report(results, cluster)
    finally:
        if not args.keep:
            cluster.terminate()


if __name__ == "__main__":
    main()
