"""The erlang role's cookie preflight (roles/erlang/tasks/preflight_cookie.yml), run on the controller alone:
the three cookie sources (erlang_cookie, erlang_cookie_ssm_parameter, erlang_cookie_controller_file and its
default ERLANG_EC2_COOKIE_FILE, what AWX's cookie credential sets), exactly one of them, and clear errors for a
cookie file that is missing, not a file, relative, empty or not a usable cookie. The cookie never shows in the
output. The SSM source reads a moto SSM endpoint on loopback (the aws_endpoint fixture)."""

import hashlib
import secrets
import sys

import pytest

import playbook_runner

# The preflight, then a check of the cookie it took (by its hash: the test never prints the cookie either).
PLAY = [{
    "name": "Cookie preflight",
    "hosts": "localhost",
    "gather_facts": False,
    "tasks": [
        {"name": "Run the erlang role's cookie preflight",
         "ansible.builtin.include_role": {"name": "skunkworks.erlang_ec2.erlang", "tasks_from": "preflight_cookie"}},
        {"name": "Check the cookie taken",
         "ansible.builtin.assert": {"that": ["(erlang_cookie_value | hash('sha256')) == expected_sha256"], "quiet": True},
         "no_log": True},
    ],
}]


@pytest.fixture
def preflight(tmp_path):
    play = playbook_runner.write_play(tmp_path / "preflight.yml", PLAY)

    def run(cookie_sha256="", env_file=None, vars_text="", **extra_vars):
        env = playbook_runner.ansible_env(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        env.pop("ERLANG_EC2_COOKIE_FILE", None)
        if env_file is not None:
            env["ERLANG_EC2_COOKIE_FILE"] = str(env_file)
        env.update(extra_vars.pop("env", {}))
        vars_file = playbook_runner.write_private(tmp_path / "vars.yml", vars_text or "{}\n")
        extra_vars["expected_sha256"] = cookie_sha256
        return playbook_runner.run_playbook(play, "-v", inventory="localhost,", env=env, vars_files=[vars_file],
                                            extra_vars=dict(extra_vars, ansible_connection="local",
                                                            ansible_python_interpreter=sys.executable))
    return run


def cookie_file(tmp_path, text, name="cookie"):
    return playbook_runner.write_private(tmp_path / name, text)


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def assert_failed(result, *needles, secret=None):
    out = result.stdout + result.stderr
    assert result.rc != 0, out
    for needle in needles:
        assert needle in out, out
    if secret:
        assert secret not in out


def test_controller_file_is_read_and_stripped(preflight, tmp_path):
    cookie = secrets.token_urlsafe(24)
    result = preflight(sha(cookie), erlang_cookie_controller_file=str(cookie_file(tmp_path, cookie + "\n")))
    assert result.rc == 0, result.stdout
    assert cookie not in result.stdout + result.stderr


def test_env_default_is_the_awx_credential_file(preflight, tmp_path):
    """AWX's credential sets ERLANG_EC2_COOKIE_FILE only: the role's default reads it."""
    cookie = secrets.token_urlsafe(24)
    result = preflight(sha(cookie), env_file=cookie_file(tmp_path, cookie + "\n"))
    assert result.rc == 0, result.stdout
    assert cookie not in result.stdout + result.stderr


def test_erlang_cookie_still_works(preflight):
    cookie = secrets.token_urlsafe(24)
    result = preflight(sha(cookie), vars_text="erlang_cookie: %s\n" % cookie)
    assert result.rc == 0, result.stdout
    assert cookie not in result.stdout + result.stderr


def test_ssm_parameter_still_works_and_conflicts_with_the_file(preflight, tmp_path, clean_aws):
    cookie = secrets.token_urlsafe(24)
    import boto3

    ssm = boto3.client("ssm", endpoint_url=clean_aws.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ssm.put_parameter(Name="/erlang-ec2/awx-preflight/cookie", Type="SecureString", Value=cookie)
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": clean_aws.url}
    result = preflight(sha(cookie), erlang_cookie_ssm_parameter="/erlang-ec2/awx-preflight/cookie", env=aws)
    assert result.rc == 0, result.stdout
    # The same with the AWX credential's file as well: two sources.
    other = secrets.token_urlsafe(24)
    result = preflight(sha(cookie), env_file=cookie_file(tmp_path, other), erlang_cookie_ssm_parameter="/erlang-ec2/awx-preflight/cookie", env=aws)
    assert_failed(result, "exactly one of", "given: erlang_cookie_ssm_parameter, erlang_cookie_controller_file", secret=other)
    assert cookie not in result.stdout + result.stderr


def test_two_sources_are_refused(preflight, tmp_path):
    cookie, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    result = preflight(sha(cookie), env_file=cookie_file(tmp_path, cookie), vars_text="erlang_cookie: %s\n" % other)
    assert_failed(result, "exactly one of", "given: erlang_cookie, erlang_cookie_controller_file", secret=cookie)
    assert other not in result.stdout + result.stderr


def test_no_source_is_refused(preflight):
    assert_failed(preflight(), "exactly one of", "given: none")


@pytest.mark.parametrize("case", ["missing", "directory", "relative"])
def test_cookie_file_that_is_not_a_file(preflight, tmp_path, case):
    path = {"missing": str(tmp_path / "no-such-cookie"), "directory": str(tmp_path), "relative": "cookie"}[case]
    if case == "relative":
        cookie_file(tmp_path, secrets.token_urlsafe(24))
    result = preflight(env_file=path)
    assert_failed(result, "must be the absolute path of a readable file on the controller", "%s is not" % path)


def test_empty_cookie_file(preflight, tmp_path):
    path = cookie_file(tmp_path, "\n")
    assert_failed(preflight(env_file=path), "Cannot read a cookie from %s" % path)


def test_cookie_file_of_two_lines_is_not_a_cookie(preflight, tmp_path):
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    result = preflight(env_file=cookie_file(tmp_path, "%s\n%s\n" % (first, second)))
    assert_failed(result, "1-255 printable ASCII characters", secret=first)
    assert second not in result.stdout + result.stderr
