"""API requests to launch 50 instances and to re-run unchanged: cluster_instances vs amazon.aws.ec2_instance.

Both run in the same test against the same moto endpoint; the figures are printed (pytest -s)
and written to tests/output/cluster_instances_requests.json.
"""

import json
import os

from cluster_instances_helpers import IMAGE_ID, ROOT, members

N = 50


def summary(counts):
    by_action = {}
    for (region, action), n in counts.items():
        by_action[action] = by_action.get(action, 0) + n
    return {"total": sum(by_action.values()), "by_action": dict(sorted(by_action.items()))}


def measure(playbook, endpoint, task, module):
    endpoint.reset_counts()
    launch = playbook(task, module=module)
    assert launch.rc == 0 and launch.result["changed"] is True, launch
    launch_counts = summary(endpoint.counts())
    endpoint.reset_counts()
    rerun = playbook(task, module=module)
    assert rerun.rc == 0 and rerun.result["changed"] is False, rerun
    return launch_counts, summary(endpoint.counts())


def test_requests_for_launch_of_50_and_unchanged_rerun(playbook, clean_aws, ec2):
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"])[:3]
    ours_task = {"cluster": "bench-ours", "role": "worker", "count": N, "image_id": IMAGE_ID, "instance_type": "t3.micro",
                 "subnet_ids": subnets}
    ours_launch, ours_rerun = measure(playbook, clean_aws, ours_task, "skunkworks.erlang_ec2.cluster_instances")
    theirs_task = {
        "image_id": IMAGE_ID, "instance_type": "t3.micro", "exact_count": N, "state": "running", "wait": True,
        "filters": {"tag:erlang-cluster": "bench-aws", "tag:erlang-role": "worker"},
        "tags": {"erlang-cluster": "bench-aws", "erlang-role": "worker", "erlang-node-name": "worker"},
    }
    theirs_launch, theirs_rerun = measure(playbook, clean_aws, theirs_task, "amazon.aws.ec2_instance")
    assert len(members(ec2, "bench-ours")) == N and len(members(ec2, "bench-aws")) == N

    figures = {
        "instances": N, "subnets_ours": len(subnets),
        "cluster_instances": {"launch": ours_launch, "unchanged_rerun": ours_rerun},
        "amazon.aws.ec2_instance exact_count": {"launch": theirs_launch, "unchanged_rerun": theirs_rerun},
    }
    out = os.path.join(ROOT, "tests", "output")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cluster_instances_requests.json"), "w") as f:
        json.dump(figures, f, indent=2)
    print("\n" + json.dumps(figures, indent=2))

    # Ours: one DescribeInstances, one RunInstances per subnet, then the wait's polls (moto has
    # instances running at once, so the first poll ends it); nothing else.
    assert ours_launch["by_action"].get("RunInstances") == len(subnets)
    assert set(ours_launch["by_action"]) == {"DescribeInstances", "RunInstances"}
    assert ours_launch["by_action"]["DescribeInstances"] <= 2
    assert ours_rerun == {"total": 1, "by_action": {"DescribeInstances": 1}}
    # and far fewer than the module we replace, measured in this same run
    assert ours_launch["total"] * 10 < theirs_launch["total"]
    assert ours_rerun["total"] * 10 < theirs_rerun["total"]
