"""The demo cluster's helpers, as a user would do these steps by hand (used by mk/e2e.mk and mk/self-join.mk).

Reads the AWS API named by the environment (`eval "$(python -m localcloud env)"`) and each worker's
http://<ip>:8080/status (examples/hello_cluster).
  demo.py count CLUSTER                  running workers of CLUSTER
  demo.py status CLUSTER                 each running worker's status page
  demo.py wait CLUSTER N [--bound S]     until N workers answer and each sees every other
  demo.py cookie-create PARAMETER        a random SSM SecureString cookie, unless PARAMETER exists (never printed)
  demo.py cookie-delete PARAMETER        delete the cookie parameter, if it exists
  demo.py deregister-images CLUSTER      deregister the node images baked for CLUSTER (make demo-self-join)
  demo.py groups CLUSTER ROLE            the security groups of CLUSTER's running ROLE instances (JSON list)
"""

import argparse
import json
import os
import secrets
import sys
import time
import urllib.request

import boto3

# The collection's own address order (module_utils/cluster.py), from the checkout's collection path (make bootstrap).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".collections"))
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.cluster import sort_by_address  # noqa: E402


def role_ips(cluster, role, states=("pending", "running")):
    reply = boto3.client("ec2").describe_instances(Filters=[
        {"Name": "tag:erlang-cluster", "Values": [cluster]}, {"Name": "tag:erlang-role", "Values": [role]},
        {"Name": "instance-state-name", "Values": list(states)}])
    ips = [i["PrivateIpAddress"] for r in reply["Reservations"] for i in r["Instances"] if i.get("PrivateIpAddress")]
    return sort_by_address(ips)


def worker_ips(cluster, states=("pending", "running")):
    return role_ips(cluster, "worker", states)


def status_text(ip):
    with urllib.request.urlopen("http://%s:8080/status" % ip, timeout=3) as answer:
        return answer.read().decode()


def status(ip):
    """The worker's status document, or None while it does not serve one."""
    try:
        return json.loads(status_text(ip))
    except (OSError, ValueError):
        return None


def count(args):
    print(len(worker_ips(args.cluster)))
    return 0


def show_status(args):
    print("  boot servers: %s" % (", ".join(role_ips(args.cluster, "boot_server", states=("running",))) or "none running"))
    for ip in worker_ips(args.cluster, states=("running",)):
        print("  http://%s:8080/status -> %s" % (ip, status_text(ip)))
    return 0


def wait(args):
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


def parameter_exists(ssm, name):
    return name in [p["Name"] for page in ssm.get_paginator("describe_parameters").paginate() for p in page["Parameters"]]


def cookie_create(args):
    ssm = boto3.client("ssm")
    if not parameter_exists(ssm, args.parameter):
        ssm.put_parameter(Name=args.parameter, Type="SecureString", Value=secrets.token_urlsafe(32))
    return 0


def cookie_delete(args):
    ssm = boto3.client("ssm")
    if parameter_exists(ssm, args.parameter):
        ssm.delete_parameter(Name=args.parameter)
    return 0


def deregister_images(args):
    ec2 = boto3.client("ec2")
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:erlang-cluster", "Values": [args.cluster]},
                                                           {"Name": "tag:erlang-ec2-image", "Values": ["node"]}])["Images"]
    for image in images:
        print("deregister node image", image["ImageId"])
        ec2.deregister_image(ImageId=image["ImageId"])
    return 0


def groups(args):
    """For instances added outside provision (make demo-self-join): the groups provision gave their peers."""
    reply = boto3.client("ec2").describe_instances(Filters=[
        {"Name": "tag:erlang-cluster", "Values": [args.cluster]}, {"Name": "tag:erlang-role", "Values": [args.role]},
        {"Name": "instance-state-name", "Values": ["running"]}])
    found = sorted(set(g["GroupId"] for r in reply["Reservations"] for i in r["Instances"] for g in i["SecurityGroups"]))
    if not found:
        print("no running %s of cluster %s has a security group" % (args.role, args.cluster), file=sys.stderr)
        return 1
    print(json.dumps(found))
    return 0


def parser():
    top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    for name, func, arg in (("count", count, "cluster"), ("status", show_status, "cluster"),
                            ("cookie-create", cookie_create, "parameter"), ("cookie-delete", cookie_delete, "parameter"),
                            ("deregister-images", deregister_images, "cluster")):
        command = sub.add_parser(name)
        command.add_argument(arg)
        command.set_defaults(func=func)
    command = sub.add_parser("groups")
    command.add_argument("cluster")
    command.add_argument("role", choices=("worker", "boot_server"))
    command.set_defaults(func=groups)
    command = sub.add_parser("wait")
    command.add_argument("cluster")
    command.add_argument("count", type=int)
    command.add_argument("--bound", type=int, default=300, help="seconds to wait (default 300)")
    command.set_defaults(func=wait)
    return top


def main():
    args = parser().parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
