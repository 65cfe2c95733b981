"""Instance-role credentials from IMDS, SSM's LastModifiedUser, and the API listener hosts use.

localcloud's own IMDS handler and host API listener (localcloud.imds.Imds, localcloud.serve.HostApi) on
loopback over localcloud's patched moto, in a process of their own (imds_credentials_scenario.py): no daemon,
no root. What only the daemon adds (the listeners on 169.254.169.254 inside each network) is in docs/localcloud.md.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
ROLE = "erlang-worker"


@pytest.fixture(scope="module")
def seen():
    env = dict(os.environ, PYTHONPATH=str(REPO), AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)  # the scenario names its loopback endpoint and fake credentials itself
    proc = subprocess.run([sys.executable, str(HERE / "imds_credentials_scenario.py")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(REPO), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_launch_path_gives_every_instance_the_profile(seen):
    # RunInstances by name (2 instances), by ARN, through a launch template, and an Auto Scaling group's launch.
    assert len(seen["profiled"]) == 5
    assert seen["associated"] == seen["profiled"]
    assert seen["plain_id"] not in seen["associated"]
    assert seen["missing_profile_error"] == "InvalidParameterValue"  # a template naming no existing profile


def test_profiled_instance_gets_its_role_and_credentials(seen):
    assert seen["listing"][0] == 200 and "iam/" in seen["listing"][1].split("\n")
    assert seen["iam_listing"] == [200, "info\nsecurity-credentials/"]
    status, body = seen["info"]
    info = json.loads(body)
    assert status == 200 and info["Code"] == "Success"
    assert (info["InstanceProfileArn"], info["InstanceProfileId"]) == (seen["profile_arn"], seen["profile_id"])
    assert seen["roles"] == [200, ROLE]
    status, body = seen["credentials"]
    creds = json.loads(body)
    assert status == 200
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["Token"]
    assert creds["Expiration"] > creds["LastUpdated"]
    assert seen["region"] == [200, "us-east-1"]


def test_credentials_are_the_instance_role_session(seen):
    assert seen["caller"] == "arn:aws:sts::123456789012:assumed-role/%s/%s" % (ROLE, seen["profiled_id"])


def test_credentials_are_cached_and_renewed_before_expiration(seen):
    first, again, renewed = (json.loads(seen[k][1]) for k in ("credentials", "credentials_again", "credentials_refreshed"))
    assert again["AccessKeyId"] == first["AccessKeyId"]
    assert renewed["AccessKeyId"] != first["AccessKeyId"]  # the cached ones had 10 minutes left


def test_ssm_records_the_writer(seen):
    name = "/erlang/test/csr/" + seen["profiled_id"]
    assert seen["described_users"][name] == seen["caller"]
    assert seen["history_users"] == [seen["caller"], seen["caller"]]
    assert seen["described_users"]["/erlang/test/by-admin"] != seen["caller"]


def test_no_profile_no_iam(seen):
    assert seen["plain_iam"] == [404, 404, 404, 404]
    assert "iam/" not in seen["plain_listing"].split("\n")


def test_tokens_are_required_as_for_the_rest_of_imds(seen):
    assert seen["no_token"] == 401  # HttpTokens=required
    assert seen["other_source_token"] == 401  # a token is good only for the host it was given to


def _env(paths):
    from localcloud import cli

    return dict(line[len("export "):].split("=", 1) for line in cli.env_lines(paths) if line.startswith("export "))


def test_env_names_the_host_endpoint(tmp_path):
    sys.path.insert(0, str(REPO))
    from localcloud import config

    paths = config.Paths(tmp_path)
    assert _env(paths)["LOCALCLOUD_HOST_ENDPOINT_URL"] == "http://169.254.169.254:5050"  # what `up` will serve
    paths.info.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:5050", "host_endpoint_url": config.host_endpoint_url()}))
    assert _env(paths)["LOCALCLOUD_HOST_ENDPOINT_URL"] == "http://169.254.169.254:5050"
    paths.info.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:5050"}))  # a daemon from before it: no such endpoint
    assert _env(paths)["LOCALCLOUD_HOST_ENDPOINT_URL"] == "''"
