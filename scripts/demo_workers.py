"""The demo cluster's workers as a user sees them: count them, or wait until they all serve /status.

Used by `make demo-self-join` (mk/self-join.mk) and `make demo-status` (mk/e2e.mk). Reads the EC2 API named by the environment
(`eval "$(python -m localcloud env)"`) and each worker's http://<ip>:8080/status (examples/hello_cluster).
  demo_workers.py count CLUSTER                  running workers of CLUSTER
  demo_workers.py status CLUSTER                 each running worker's status page
  demo_workers.py wait CLUSTER N [--bound S]     until N workers answer and each sees every other
"""

import argparse
import json
import sys
import time
import urllib.request

import boto3


def worker_ips(cluster, states=("pending", "running")):
    reply = boto3.client("ec2").describe_instances(Filters=[
        {"Name": "tag:erlang-cluster", "Values": [cluster]}, {"Name": "tag:erlang-role", "Values": ["worker"]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return sorted(i["PrivateIpAddress"] for r in reply["Reservations"] for i in r["Instances"] if i.get("PrivateIpAddress"))


def status_text(ip):
    with urllib.request.urlopen("http://%s:8080/status" % ip, timeout=3) as answer:
        return answer.read().decode()


def status(ip):
    """The worker's status document, or None while it does not serve one."""
    try:
        return json.loads(status_text(ip))
    except (OSError, ValueError):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("count").add_argument("cluster")
    sub.add_parser("status").add_argument("cluster")
    wait = sub.add_parser("wait")
    wait.add_argument("cluster")
    wait.add_argument("count", type=int)
    wait.add_argument("--bound", type=int, default=300, help="seconds to wait (default 300)")
    args = parser.parse_args()
    if args.command == "count":
        print(len(worker_ips(args.cluster)))
        return 0
    if args.command == "status":
        for ip in worker_ips(args.cluster, states=("running",)):
            print("  http://%s:8080/status -> %s" % (ip, status_text(ip)))
        return 0
    started, deadline = time.monotonic(), time.monotonic() + args.bound
    while True:
        ips = worker_ips(args.cluster)
        pages = {ip: status(ip) for ip in ips}
        nodes = set(p["node"] for p in pages.values() if p)
        joined = [ip for ip, p in pages.items() if p and nodes - {p["node"]} <= set(p["nodes"])]
        if len(ips) >= args.count and len(joined) == len(ips):
            for ip in ips:
                page = pages[ip]
                others = len(nodes - {page["node"]})
                print("  %s %s %s, sees %d other worker(s)" % (page["node"], page["release"], page["version"], others))
            print("%d workers serve their status page and see each other (%.1f s)" % (len(ips), time.monotonic() - started))
            return 0
        if time.monotonic() > deadline:
            print("after %d s: %d of %d workers joined: %s" % (args.bound, len(joined), max(args.count, len(ips)), sorted(joined)),
                  file=sys.stderr)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
