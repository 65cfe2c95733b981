"""Benchmark: skunkworks.erlang_ec2.ec2 against amazon.aws.aws_ec2, same hosts and groups.

Run with `make bench-inventory` (N=1000,10000 by default; `make bench-inventory N=2000`).
N tagged instances (clusters of 100: 1 boot server + 99 workers) spread over 3 regions of a moto
EC2 endpoint on loopback; `ansible-inventory --list` runs with each plugin, with a cold cache
(flushed) and a warm cache (jsonfile), plus an `ansible-inventory -i localhost, --list` baseline
(Ansible's own start-up). Reported per run: wall time and the ansible-inventory process's own CPU
time (user+sys from os.wait4; the moto server runs in this process and is not counted).
Results go to stdout as a markdown table. Not a test: nothing here asserts a time.

Two amazon.aws.aws_ec2 configurations are measured:
- heavy: aws_ec2 made to give exactly our hosts, groups and hostvars (instance-id hostnames, every hostvar
  composed, cached like ours); checked to give the same output;
- lean: aws_ec2 as a user would configure it for the same groups, without caching: `hostnames:
  [private-ip-address]`, a tag filter, keyed groups by role and cluster, `ansible_host` composed; checked to give
  the same hosts in the same role and cluster groups (by address). Compared with our cold run (the only
  way ours queries AWS), best of --repeat runs each (the issue's "best of 3").
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import boto3  # noqa: E402
import yaml  # noqa: E402

from aws_endpoint import AwsEndpoint, client_env  # noqa: E402

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
CLUSTER_SIZE = 100
AMI = "ami-12c6146b"
ANSIBLE_INVENTORY = str(pathlib.Path(sys.executable).with_name("ansible-inventory"))

OURS = "skunkworks.erlang_ec2.ec2"
THEIRS = "amazon.aws.aws_ec2"
LEAN = "amazon.aws.aws_ec2 (lean)"
FILE_NAMES = {OURS: "x.erlang_ec2.yml", THEIRS: "x.aws_ec2.yml", LEAN: "x-lean.aws_ec2.yml"}


def ec2_client(endpoint, region):
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint.url, aws_access_key_id="testing", aws_secret_access_key="testing")


def populate(endpoint, total):
    """`total` instances over REGIONS: RunInstances by 1,000, then CreateTags by cluster."""
    per_region = [total // len(REGIONS) + (1 if i < total % len(REGIONS) else 0) for i in range(len(REGIONS))]
    cluster_number = 0
    for region, count in zip(REGIONS, per_region):
        client = ec2_client(endpoint, region)
        ids = []
        while len(ids) < count:
            batch = min(1000, count - len(ids))
            reply = client.run_instances(
                ImageId=AMI,
                MinCount=batch,
                MaxCount=batch,
                InstanceType="t3.micro",
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "erlang-role", "Value": "worker"}]}],
            )
            ids.extend(i["InstanceId"] for i in reply["Instances"])
        for start in range(0, len(ids), CLUSTER_SIZE):
            members = ids[start:start + CLUSTER_SIZE]
            client.create_tags(Resources=members, Tags=[{"Key": "erlang-cluster", "Value": "c%04d" % cluster_number}])
            client.create_tags(Resources=members[:1], Tags=[{"Key": "erlang-role", "Value": "boot_server"}])
            cluster_number += 1
    return cluster_number


def configs(cache_dir):
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_timeout": 3600}
    # moto renders a whole region's instances in one response (it pages by reservation) and, busy with
    # 10,000 of them, can take longer than botocore's 60 s read timeout; aws_ec2 has no option to raise it.
    ours = dict(plugin=OURS, regions=REGIONS, cache_connection=str(cache_dir / "ours"), aws_config={"read_timeout": 900}, **cache)
    theirs = dict(
        plugin=THEIRS,
        regions=REGIONS,
        cache_connection=str(cache_dir / "theirs"),
        filters={
            "tag-key": "erlang-cluster",
            "tag:erlang-role": ["boot_server", "worker"],
            "instance-state-name": ["pending", "running"],
        },
        hostnames=["instance-id"],
        groups={
            "erlang_boot_servers": "ec2_tags['erlang-role'] == 'boot_server'",
            "erlang_workers": "ec2_tags['erlang-role'] == 'worker'",
        },
        keyed_groups=[{"key": "ec2_tags['erlang-cluster']", "prefix": "erlang_cluster"}],
        compose={
            "ansible_host": "private_ip_address",
            "erlang_cluster": "ec2_tags['erlang-cluster']",
            "erlang_role": "ec2_tags['erlang-role']",
            "erlang_node": "ec2_tags.get('erlang-node-name', 'boot' if ec2_tags['erlang-role'] == 'boot_server' else 'worker')"
            " ~ '@' ~ private_ip_address",
            "ec2_instance_id": "instance_id",
            "ec2_region": "placement.region",
            "ec2_private_ip": "private_ip_address",
        },
        **cache
    )
    return {OURS: ours, THEIRS: theirs, LEAN: lean_config()}


def lean_config():
    """aws_ec2 as a user would configure it for the same groups (no cache, no hostvars beyond ansible_host)."""
    return dict(
        plugin=THEIRS,
        regions=REGIONS,
        filters={"tag-key": "erlang-cluster"},
        hostnames=["private-ip-address"],
        keyed_groups=[{"key": "tags['erlang-role']", "prefix": "role"}, {"key": "tags['erlang-cluster']", "prefix": "cluster"}],
        compose={"ansible_host": "private_ip_address"},
    )


def lean_shape(path, ours=False):
    """{role or cluster group: sorted addresses} from our output (by ansible_host) or the lean aws_ec2's (by hostname)."""
    data = json.loads(pathlib.Path(path).read_text())
    hostvars = data.get("_meta", {}).get("hostvars", {})

    def plain(value):
        return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value

    rename = {"erlang_boot_servers": "role_boot_server", "erlang_workers": "role_worker"}
    groups = {}
    for name, body in data.items():
        if ours and (name in rename or name.startswith("erlang_cluster_")):
            key = rename.get(name) or "cluster_" + name[len("erlang_cluster_"):]
            groups[key] = sorted(plain(hostvars[host]["ansible_host"]) for host in body.get("hosts", []))
        elif not ours and name.startswith(("role_", "cluster_")):
            groups[name] = sorted(body.get("hosts", []))
    return groups


# Builds the inventory like ansible-inventory does, without printing it: what the plugin costs.
PARSE_ONLY = (
    "import sys\n"
    "from ansible.plugins.loader import init_plugin_loader\n"
    "init_plugin_loader()\n"
    "from ansible.parsing.dataloader import DataLoader\n"
    "from ansible.inventory.manager import InventoryManager\n"
    "InventoryManager(DataLoader(), sources=[sys.argv[1]])\n"
)


def run(args, env, out_path, command=None):
    """Run ansible-inventory (or `command`); (wall seconds, child CPU seconds user+sys)."""
    with open(out_path, "w") as out, open(str(out_path) + ".err", "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen((command or [ANSIBLE_INVENTORY]) + args, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RunFailed("ansible-inventory %s failed after %.0f s:\n%s" % (" ".join(args), wall, pathlib.Path(str(out_path) + ".err").read_text()[-2000:]))
    return wall, usage.ru_utime + usage.ru_stime


class RunFailed(Exception):
    pass


def shape(path):
    """Hosts, the groups both plugins make, and the per-host vars both set (for the same-output check)."""
    data = json.loads(pathlib.Path(path).read_text())
    hostvars = data.get("_meta", {}).get("hostvars", {})
    groups = {name: sorted(body.get("hosts", [])) for name, body in data.items() if name.startswith("erlang_")}

    def plain(value):
        return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value

    keys = ("ansible_host", "erlang_cluster", "erlang_role", "erlang_node", "ec2_instance_id", "ec2_region", "ec2_private_ip")
    per_host = {host: tuple(plain(hostvars[host].get(k)) for k in keys) for host in hostvars}
    return per_host, groups


def median_run(repeat, args, env, out_path, command=None):
    results = [run(args, env, out_path, command) for _attempt in range(repeat)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def bench(endpoint, total, repeat, work, lean_only=False):
    endpoint.reset()
    started = time.perf_counter()
    clusters = populate(endpoint, total)
    print("populated %d instances (%d clusters, %d regions) in %.1f s" % (total, clusters, len(REGIONS), time.perf_counter() - started), file=sys.stderr)
    env = client_env(endpoint)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
               ANSIBLE_DEPRECATION_WARNINGS="false", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")
    rows = {}
    rows["baseline"] = median_run(repeat, ["-i", "localhost,", "--list"], env, work / "baseline.json")
    parse_only = [sys.executable, "-c", PARSE_ONLY]
    rows["parse baseline"] = median_run(repeat, ["localhost,"], env, work / "parse-baseline.out", parse_only)
    outputs = {}
    for plugin, config in configs(work / "cache").items():
        if lean_only and plugin == THEIRS:
            continue
        name = FILE_NAMES[plugin]
        path = work / name
        if plugin == LEAN:
            path.write_text(yaml.safe_dump(config))
            continue
        path.write_text(yaml.safe_dump(config))
        out = work / (name + ".json")
        endpoint.reset_counts()
        try:
            rows[(plugin, "cold")] = run(["-i", str(path), "--list", "--flush-cache"], env, out)
        except RunFailed as e:
            print(e, file=sys.stderr)
            rows[(plugin, "failed")] = str(e).splitlines()[0]
            continue
        cold_calls = endpoint.calls()
        outputs[plugin] = shape(out)
        endpoint.reset_counts()
        rows[(plugin, "warm")] = median_run(repeat, ["-i", str(path), "--list"], env, out)
        rows[(plugin, "calls")] = (cold_calls, endpoint.calls() / float(repeat))
        rows[(plugin, "parse")] = median_run(repeat, [str(path)], env, work / (name + ".parse.out"), parse_only)
        if shape(out) != outputs[plugin]:
            sys.exit("%s: warm-cache output differs from the cold one" % plugin)
    # Runs are best of `repeat` up to 2,000 hosts, one each above (a cold run of 10,000 takes minutes).
    lean_comparison(rows, env, work, total, repeat if total <= 2000 else 1)
    if lean_only or len(outputs) < 2:
        return rows
    ours_hosts, ours_groups = outputs[OURS]
    theirs_hosts, theirs_groups = outputs[THEIRS]
    same = ours_hosts == theirs_hosts and ours_groups == theirs_groups and len(ours_hosts) == total
    if not same:
        sys.exit("the two plugins do not produce the same hosts/groups/hostvars (%d vs %d hosts)" % (len(ours_hosts), len(theirs_hosts)))
    return rows


def lean_comparison(rows, env, work, total, repeat):
    """Best of `repeat` runs: ours cold (--flush-cache) against the lean aws_ec2 (no cache); same groups checked."""
    ours_path, lean_path = work / FILE_NAMES[OURS], work / FILE_NAMES[LEAN]
    try:
        ours = [run(["-i", str(ours_path), "--list", "--flush-cache"], env, work / "lean-ours.json") for _attempt in range(repeat)]
        lean = [run(["-i", str(lean_path), "--list"], env, work / "lean.json") for _attempt in range(repeat)]
    except RunFailed as e:
        print(e, file=sys.stderr)
        rows[(LEAN, "failed")] = str(e).splitlines()[0]
        return
    ours_groups, lean_groups = lean_shape(work / "lean-ours.json", ours=True), lean_shape(work / "lean.json")
    if ours_groups != lean_groups or sum(len(v) for k, v in lean_groups.items() if k.startswith("role_")) != total:
        sys.exit("the lean aws_ec2 does not give the same hosts in the same role and cluster groups")
    rows[(LEAN, "ours")] = min(ours, key=lambda r: r[1]), [r[1] for r in ours]
    rows[(LEAN, "lean")] = min(lean, key=lambda r: r[1]), [r[1] for r in lean]


def lean_table(results):
    lines = [
        "| hosts | erlang_ec2.ec2 cold wall s | CPU s | aws_ec2 lean wall s | CPU s | CPU ratio (ours/lean) | CPU of each run (ours; lean) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for total, rows in results:
        if (LEAN, "failed") in rows:
            lines.append("| %d | lean FAILED: %s | | | | | |" % (total, rows[(LEAN, "failed")].replace("|", "/")))
            continue
        (ow, oc), ours_cpus = rows[(LEAN, "ours")]
        (lw, lc), lean_cpus = rows[(LEAN, "lean")]
        lines.append("| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %s; %s |" % (
            total, ow, oc, lw, lc, oc / lc, " ".join("%.2f" % c for c in ours_cpus), " ".join("%.2f" % c for c in lean_cpus)))
    return "\n".join(lines)


def table(results, repeat):
    lines = [
        "| hosts | run | %s wall s | %s CPU s | amazon.aws.aws_ec2 wall s | aws_ec2 CPU s | CPU ratio (ours/aws_ec2) | AWS requests (ours / aws_ec2) |"
        % ("erlang_ec2.ec2", "erlang_ec2.ec2"),
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for total, rows in results:
        base_wall, base_cpu = rows["baseline"]
        failed = [(plugin, rows[(plugin, "failed")]) for plugin in (OURS, THEIRS) if (plugin, "failed") in rows]
        if failed:
            for plugin, reason in failed:
                lines.append("| %d | %s FAILED: %s | | | | | | |" % (total, plugin, reason.replace("|", "/")))
            continue
        for phase in ("cold", "warm"):
            ow, oc = rows[(OURS, phase)]
            tw, tc = rows[(THEIRS, phase)]
            calls = (rows[(OURS, "calls")][0], rows[(THEIRS, "calls")][0]) if phase == "cold" else (rows[(OURS, "calls")][1], rows[(THEIRS, "calls")][1])
            lines.append(
                "| %d | %s cache | %.2f | %.2f | %.2f | %.2f | %.2f | %g / %g |" % (total, phase, ow, oc, tw, tc, oc / tc, calls[0], calls[1])
            )
        ow, oc = rows[(OURS, "warm")]
        tw, tc = rows[(THEIRS, "warm")]
        lines.append(
            "| %d | warm minus baseline (`-i localhost,` %.2f s wall, %.2f s CPU) | %.2f | %.2f | %.2f | %.2f | %.2f | |"
            % (total, base_wall, base_cpu, ow - base_wall, oc - base_cpu, tw - base_wall, tc - base_cpu, (oc - base_cpu) / max(tc - base_cpu, 1e-9))
        )
        pbw, pbc = rows["parse baseline"]
        (ow, oc), (tw, tc) = rows[(OURS, "parse")], rows[(THEIRS, "parse")]
        lines.append(
            "| %d | warm, the plugin alone: inventory built without --list output, minus the same for `localhost,` (%.2f s wall, %.2f s CPU) "
            "| %.2f | %.2f | %.2f | %.2f | %.2f | |"
            % (total, pbw, pbc, ow - pbw, oc - pbc, tw - pbw, tc - pbc, (oc - pbc) / max(tc - pbc, 1e-9))
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default=os.environ.get("N") or "1000,10000", help="comma-separated instance counts (env N)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT") or 3), help="warm-cache and baseline runs per figure (median)")
    parser.add_argument("--lean-only", action="store_true", help="only ours against the lean aws_ec2 (skip the heavy configuration)")
    options = parser.parse_args()
    totals = [int(n) for n in options.hosts.split(",") if n.strip()]
    endpoint = AwsEndpoint().start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
            for total in totals:
                work = pathlib.Path(tmp) / str(total)
                work.mkdir()
                results.append((total, bench(endpoint, total, options.repeat, work, options.lean_only)))
                if not options.lean_only:
                    print(table(results[-1:], options.repeat), file=sys.stderr)  # progress: this N's rows
                print(lean_table(results[-1:]), file=sys.stderr)
    finally:
        endpoint.stop()
    command = "make bench-inventory%s N=%s" % ("-lean" if options.lean_only else "", ",".join(map(str, totals)))
    print("Command: `%s` (%d regions, clusters of %d, moto %s on loopback; cold = --flush-cache, warm = median of %d;"
          " CPU = the ansible-inventory process's user+sys)\n" % (command, len(REGIONS), CLUSTER_SIZE, _moto_version(), options.repeat))
    if not options.lean_only:
        print(table(results, options.repeat))
    print("\nAgainst amazon.aws.aws_ec2 configured lean (hostnames: [private-ip-address], a tag filter, keyed groups by role"
          " and cluster, ansible_host composed; no cache), same hosts in the same groups; best of %d runs each"
          " (one above 2,000 hosts):\n" % options.repeat)
    print(lean_table(results))


def _moto_version():
    import moto

    return moto.__version__


if __name__ == "__main__":
    main()
