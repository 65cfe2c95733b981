"""Run skunkworks.erlang_ec2.cluster_instances through ansible-playbook against the moto endpoint."""

import json

import boto3
import pytest

import playbook_runner
from aws_endpoint import FAKE_CREDENTIALS, client_env
from cluster_instances_helpers import REGION, PlaybookRun


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
        path = playbook_runner.write_play(tmp_path / ("play-%d.yml" % counter[0]), play)
        env = playbook_runner.ansible_env(client_env(clean_aws, REGION), ANSIBLE_LOCALHOST_WARNING="false",
                                          ANSIBLE_INVENTORY_UNPARSED_WARNING="false", **(extra_env or {}))
        # Failures are asserted by the tests.
        proc = playbook_runner.run_playbook(path, inventory="localhost,", check_mode=check, diff=diff, env=env, timeout=600)
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
