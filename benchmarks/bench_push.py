"""Hot code push benchmark (make bench-push): not a test, prints figures measured in one run.

On a fresh localcloud cluster of N workers (cluster name push-bench-*) booted on hello_cluster 2.0.0:
  push    - the push playbook with 2.0.1 (a changed module, plus one new module), every worker's /status
            polled every 20 ms throughout (one thread per worker): wall time, polls, failed polls (must be 0);
  restart - for comparison, the same kind of change (2.0.2) by deploy (install, switch, rolling restart),
            polled the same way: wall time and failed polls.
Exits non-zero if the push saw a failed poll. --keep keeps the cluster.
"""

import argparse
import json
import os
import secrets
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PUSH_SUITE = os.path.join(HERE, "..", "tests", "integration", "push")
sys.path[:0] = [PUSH_SUITE, os.path.dirname(PUSH_SUITE)]

from conftest import LAYOUT, PushCluster, build, e2e  # noqa: E402  pylint: disable=wrong-import-position
from localcloud_cluster import StatusPoller  # noqa: E402  pylint: disable=wrong-import-position


def polled(cluster, playbook, release):
    """Run a playbook with every worker polled every 20 ms: (wall seconds, poller)."""
    poller = StatusPoller(cluster.workers.values(), interval=0.02)
    poller.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        cluster.playbook(playbook, extra={"%s_release" % playbook: release})
        wall = time.monotonic() - started
        time.sleep(0.5)
    finally:
        poller.stop()
    return wall, poller


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the cluster")
    args = parser.parse_args()
    env = e2e.localcloud_env()
    workdir = os.path.join(e2e.ROOT, ".state", "bench-push")
    os.makedirs(workdir, exist_ok=True)
    cluster = PushCluster(env, "push-bench-%s" % secrets.token_hex(3), workdir)
    cluster.boto3("ssm").put_parameter(Name=cluster.cookie_parameter, Type="SecureString", Value=secrets.token_urlsafe(32), Overwrite=True)
    try:
        releases = {"2.0.0": build(workdir, "2.0.0"), "2.0.1": build(workdir, "2.0.1", "one", loop_version=1),
                    "2.0.2": build(workdir, "2.0.2", "two", loop_version=2)}
        print("bench-push: provisioning %s with %d workers ..." % (cluster.name, args.workers), flush=True)
        cluster.provision(args.workers)  # as the tests do: the app port open to the controller (localcloud enforces groups)
        cluster.playbook("site", extra={"site_initial_release": releases["2.0.0"]})
        cluster.refresh()
        wall, poller = polled(cluster, "push", releases["2.0.1"])
        assert all(cluster.status(ip)["build"] == "one" for ip in cluster.workers.values())
        print("bench-push: push of 2.0.1 (hello_cluster changed, push_loop new) to %d workers: wall %.2f s (ansible-playbook), "
              "%d polls every 20 ms, %d failed" % (len(cluster.workers), wall, poller.polls, len(poller.failed)), flush=True)
        pushed = json.loads(cluster.ssh(cluster.boot_server_ip, "sudo tail -1 %s" % LAYOUT["rollout_log"]).stdout)
        print("bench-push: rollout log: %s" % pushed["message"], flush=True)
        rwall, rpoller = polled(cluster, "deploy", releases["2.0.2"])
        print("bench-push: the same kind of change by deploy (rolling restart) of 2.0.2: wall %.2f s, %d polls, %d failed "
              "(push/restart wall time %.2fx)" % (rwall, rpoller.polls, len(rpoller.failed), wall / rwall), flush=True)
        return 0 if not poller.failed else 1
    finally:
        if not args.keep:
            cluster.terminate()


if __name__ == "__main__":
    sys.exit(main())
