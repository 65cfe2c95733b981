"""Helpers for the inventory plugin suite: EC2 instances in the moto endpoint, ansible-inventory runs."""

import json
import os
import pathlib
import subprocess
import sys

import boto3
import pytest
import yaml

from aws_endpoint import client_env

ROOT = pathlib.Path(__file__).resolve().parents[3]
ANSIBLE_INVENTORY = str(pathlib.Path(sys.executable).with_name("ansible-inventory"))
AMI = "ami-12c6146b"  # one of moto's built-in images


def ec2_client(endpoint, region):
    return boto3.client(
        "ec2", region_name=region, endpoint_url=endpoint.url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def launch_instances(endpoint, region, cluster, role, count=1, tags=None, instance_type="t3.micro"):
    """Launch `count` instances tagged as members of `cluster`; returns their ids."""
    tag_list = [{"Key": "erlang-cluster", "Value": cluster}, {"Key": "erlang-role", "Value": role}]
    tag_list += [{"Key": k, "Value": v} for k, v in (tags or {}).items()]
    reply = ec2_client(endpoint, region).run_instances(
        ImageId=AMI,
        MinCount=count,
        MaxCount=count,
        InstanceType=instance_type,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )
    return sorted(i["InstanceId"] for i in reply["Instances"])


def unwrap(value):
    """ansible-inventory marks untrusted strings as {"__ansible_unsafe": ...}; the tests compare plain values."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.data = unwrap(json.loads(proc.stdout)) if proc.stdout.lstrip().startswith("{") else None

    @property
    def hostvars(self):
        return self.data["_meta"]["hostvars"]

    def group(self, name):
        return sorted(self.data.get(name, {}).get("hosts", []))

    @property
    def warnings(self):
        # Ansible wraps long warnings; join the lines back together.
        return " ".join(self.stderr.split())


class InventoryRunner:
    """Writes <tmp>/test.erlang_ec2.yml and runs `ansible-inventory -i` on it against the moto endpoint."""

    def __init__(self, endpoint, tmp_path):
        self.endpoint = endpoint
        self.tmp_path = tmp_path
        self.cache_dir = tmp_path / "cache"
        self.path = tmp_path / "test.erlang_ec2.yml"

    def config(self, **options):
        config = {"plugin": "skunkworks.erlang_ec2.ec2", "regions": ["us-east-1"]}
        config.update(options)
        return config

    def cached_config(self, **options):
        return self.config(cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(self.cache_dir), **options)

    def run(self, config, *args, env=None, name=None, raw=None):
        path = self.tmp_path / name if name else self.path
        path.write_text(raw if raw is not None else yaml.safe_dump(config))
        run_env = client_env(self.endpoint)
        run_env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".collections")
        run_env["ANSIBLE_NOCOLOR"] = "1"
        run_env["ANSIBLE_DEPRECATION_WARNINGS"] = "0"
        run_env["ANSIBLE_LOCAL_TEMP"] = str(self.tmp_path / "ansible-tmp")
        run_env.update(env or {})
        proc = subprocess.run(
            [ANSIBLE_INVENTORY, "-i", str(path)] + list(args or ["--list"]),
            env=run_env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=str(self.tmp_path),
        )
        return Result(proc)


@pytest.fixture
def inventory(clean_aws, tmp_path):
    return InventoryRunner(clean_aws, tmp_path)


@pytest.fixture
def ec2(clean_aws):
    return lambda region="us-east-1": ec2_client(clean_aws, region)


def pytest_configure(config):
    os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
    os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def launch(clean_aws):
    """launch(region, cluster, role, count=1, tags=None, instance_type=...) -> instance ids."""
    return lambda region, cluster, role, count=1, **kw: launch_instances(clean_aws, region, cluster, role, count, **kw)
