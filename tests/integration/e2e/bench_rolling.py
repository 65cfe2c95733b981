"""Rolling-restart benchmark (make bench-rolling): not a test, prints figures measured in one run.

On a fresh localcloud cluster of N workers running v1:
  bare   - one node restarted alone with node_restart (init:restart/0 until back and re-joined), timed by the
           module (elapsed_ms) and its unavailability seen from /status polling; repeated on each worker
  rolling- the rolling_restart playbook over all N nodes (wall time), with every node's /status polled
           throughout to measure each node's unavailability.
Reports rolling wall time / (N x median bare restart) and per-node unavailability / bare unavailability.
"""

import argparse
import json
import os
import secrets
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # this suite's conftest, and tests/integration (playbook_runner)

from conftest import ROOT, Cluster, build_release, localcloud_env  # noqa: E402  pylint: disable=wrong-import-position
from playbook_runner import run_adhoc, run_playbook, write_play  # noqa: E402  pylint: disable=wrong-import-position
from test_e2e import LAYOUT, Sampler  # noqa: E402  pylint: disable=wrong-import-position


def unavailability(rounds, ip):
    """Longest stretch (seconds) during which ip did not answer, from sampler rounds."""
    longest, start = 0.0, None
    for when, answers in rounds:
        if answers.get(ip) is None:
            start = when if start is None else start
        elif start is not None:
            longest, start = max(longest, when - start), None
    return longest


def adhoc_restart(cluster, host, node):
    proc = run_adhoc(host, "skunkworks.erlang_ec2.node_restart",
                     json.dumps({"node": node, "cookie_file": LAYOUT["cookie_file"], "restart_timeout": 120}),
                     "--become", "-o", inventory=os.path.join(ROOT, "inventory"), env=cluster.env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split("=>", 1)[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the cluster")
    parser.add_argument("--name", default="bench-%s" % secrets.token_hex(3), help="cluster name (default bench-<random>)")
    parser.add_argument("--existing", action="store_true", help="measure the running cluster NAME (no provision, no site, kept)")
    args = parser.parse_args()
    env = localcloud_env()
    workdir = os.path.join(ROOT, ".state", "bench-rolling")
    os.makedirs(workdir, exist_ok=True)
    cluster = Cluster(env, args.name, workdir)
    try:
        if not args.existing:
            provision(cluster, workdir, args.workers)
        cluster.refresh()
        # Bare restarts: one node alone, each worker once.
        bare_elapsed, bare_down = [], []
        for host, ip in sorted(cluster.workers.items()):
            sampler = Sampler(cluster)
            sampler.start()
            result = adhoc_restart(cluster, host, "worker@%s" % ip)
            time.sleep(0.5)
            sampler.stop()
            bare_elapsed.append(result["elapsed_ms"] / 1000.0)
            bare_down.append(unavailability(sampler.rounds, ip))
        bare = statistics.median(bare_elapsed)
        bare_unavailable = statistics.median(bare_down)
        # The rolling restart playbook over all nodes.
        sampler = Sampler(cluster)
        sampler.start()
        rolling = cluster.playbook("rolling_restart")
        time.sleep(0.5)
        sampler.stop()
        per_node = {ip: unavailability(sampler.rounds, ip) for ip in sorted(cluster.workers.values())}
        n = len(cluster.workers)
        print()
        print("bench-rolling (%d workers, localcloud, OTP from Debian, one run)" % n)
        print("  bare restart-to-rejoined of one node (node_restart elapsed), median of %d: %.2f s  %s"
              % (n, bare, " ".join("%.2f" % x for x in bare_elapsed)))
        print("  bare unavailability (/status polling), median: %.2f s  %s" % (bare_unavailable, " ".join("%.2f" % x for x in bare_down)))
        print("  rolling_restart playbook wall time: %.2f s = %.2fx the bare sum (%d x %.2f s = %.2f s)"
              % (rolling.elapsed, rolling.elapsed / (n * bare), n, bare, n * bare))
        for ip, down in per_node.items():
            print("  %-15s unavailable %.2f s during the rolling restart = %.2fx the bare unavailability"
                  % (ip, down, down / bare_unavailable if bare_unavailable else float("nan")))
        breakdown(cluster, workdir, rolling.elapsed)
    finally:
        if not (args.keep or args.existing):
            cluster.terminate()


def breakdown(cluster, workdir, wall):
    """Where the wall time goes: the driver's per-node restart-to-back times (rollout log), and the fixed
    cost of ansible-playbook itself (an empty play with the same inventory)."""
    line = cluster.ssh(cluster.boot_server_ip, "sudo tail -n 1 %s" % LAYOUT["rollout_log"]).stdout
    try:
        restarts = sum(n["elapsed_ms"] for n in json.loads(line)["nodes"]) / 1000.0
    except (ValueError, KeyError, TypeError):
        print("  (no rollout log line with per-node elapsed_ms: a collection without the driver)")
        return
    play = write_play(os.path.join(workdir, "empty.yml"), [{"hosts": "localhost", "gather_facts": False, "tasks": []}])
    empty = run_playbook(play, inventory=os.path.join(ROOT, "inventory"), env=cluster.env, check=True).elapsed
    print("  of which: restart-to-back of every node in the run (rollout log elapsed_ms) %.2f s; the rest %.2f s, "
          "including ansible-playbook start-up with the inventory (an empty play) %.2f s" % (restarts, wall - restarts, empty))


def provision(cluster, workdir, workers):
    cluster.ensure_cookie()
    v1 = build_release(workdir, "1.0.0")
    print("bench-rolling: provisioning %s with %d workers ..." % (cluster.name, workers), flush=True)
    cluster.provision(workers)  # the app port from the controller too: /status is polled
    cluster.playbook("site", extra={"site_initial_release": v1})


if __name__ == "__main__":
    main()
