"""Run skunkworks.erlang_ec2.cluster_instances through ansible-playbook against the moto endpoint."""

import json
import os
import subprocess
import sys

import boto3
import pytest
import yaml

from aws_endpoint import FAKE_CREDENTIALS, client_env

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# The collection's module_utils (the user-data contract) for checks made by the tests themselves.
sys.path.insert(0, os.path.join(ROOT, ".collections"))
BIN = os.path.dirname(sys.executable)
REGION = "us-east-1"
IMAGE_ID = "ami-12c6146b"  # one of moto's built-in AMIs


class PlaybookRun:
    def __init__(self, proc, results):
        self.proc = proc
        self.rc = proc.returncode
        self.results = results  # the registered results of every task, in order

    @property
    def result(self):
        return self.results[-1]

    def __repr__(self):
        return "PlaybookRun(rc=%s)\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.proc.stdout[-6000:], self.proc.stderr[-3000:])


@pytest.fixture
def playbook(clean_aws, tmp_path):
    """run(tasks_args, check=False, diff=False, module=...) -> PlaybookRun.

    Each element of tasks_args becomes one task calling the module with those arguments;
    results are written by the playbook itself to a JSON file (no stdout parsing).
    """
    counter = [0]

    def run(*task_args, check=False, diff=False, module="skunkworks.erlang_ec2.cluster_instances", extra_env=None):
        counter[0] += 1
        out = tmp_path / ("results-%d.json" % counter[0])
        tasks = []
        for i, args in enumerate(task_args):
            tasks.append({"name": "task %d" % i, module: args, "register": "r%d" % i, "ignore_errors": True})
        tasks.append({
            "name": "save results",
            "ansible.builtin.copy": {
                "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(task_args))),
                "dest": str(out),
            },
            "check_mode": False,
            "diff": False,
        })
        play = [{
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "tasks": tasks,
        }]
        path = tmp_path / ("play-%d.yml" % counter[0])
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        env = client_env(clean_aws, REGION)
        env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(ROOT, ".collections")
        env["ANSIBLE_LOCALHOST_WARNING"] = "false"
        env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "false"
        env.update(extra_env or {})
        cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(path)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)  # failures are asserted by tests
        results = json.loads(out.read_text()) if out.exists() else []
        return PlaybookRun(proc, results)

    return run


@pytest.fixture
def ec2(clean_aws):
    """A boto3 client on the endpoint, for setting up and checking state in tests."""
    return boto3.client(
        "ec2", region_name=REGION, endpoint_url=clean_aws.url,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


def members(ec2, cluster, role=None, states=("pending", "running", "stopping", "stopped")):
    filters = [{"Name": "tag:erlang-cluster", "Values": [cluster]}, {"Name": "instance-state-name", "Values": list(states)}]
    if role:
        filters.append({"Name": "tag:erlang-role", "Values": [role]})
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found
