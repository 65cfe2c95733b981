"""Run skunkworks.erlang_ec2.cluster_instances through ansible-playbook against the moto endpoint."""

import json
import os
import subprocess

import boto3
import pytest
import yaml

from aws_endpoint import FAKE_CREDENTIALS, client_env
from cluster_instances_helpers import BIN, REGION, ROOT, PlaybookRun


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
