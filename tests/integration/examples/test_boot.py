"""Each release booted from disk by its own start script on loopback; GET /status."""

import hashlib
import json
import os

import pytest

from conftest import VERSIONS, http_get


def status(release):
    answer = http_get(release.port, "/status")
    assert answer is not None and answer[0] == 200, answer
    return json.loads(answer[1])


def started_status(run_release, app, vsn):
    """Start APP VSN from its tarball; (release, /status) once what every example reports is checked."""
    release = run_release(app, vsn)
    body = status(release)
    print("\n%s %s /status: %s" % (app, vsn, json.dumps(body, sort_keys=True)))
    assert body["release"] == app
    assert body["version"] == vsn and body["app_version"] == vsn
    assert body["node"].startswith(release.sname + "@")
    assert body["nodes"] == []
    return release, body


@pytest.mark.parametrize("vsn", VERSIONS)
def test_rebar3_release_from_disk(run_release, vsn):
    release, body = started_status(run_release, "hello_rebar3", vsn)
    assert body["nif"]["version"] == vsn
    assert body["nif"]["add"] == 42
    assert os.path.realpath(body["nif"]["path"]) == os.path.realpath(
        os.path.join(release.root, "lib", "hello_rebar3-" + vsn, "priv"))
    assert body["priv"] == "Hello from hello_rebar3 " + vsn
    assert body["crypto"]["sha256"] == hashlib.sha256(body["priv"].encode()).hexdigest()
    assert body["ssl"] is True
    assert "tlsv1.2" in body["tls_versions"]
    # vm.args: +S 1:1, +A 8, -kernel net_setuptime 11
    assert body["schedulers"] == 1 and body["schedulers_online"] == 1
    assert body["async_threads"] == 8
    assert body["vm_args_kernel"] == {"net_setuptime": 11}
    assert http_get(release.port, "/nope")[0] == 404


@pytest.mark.parametrize("vsn", VERSIONS)
def test_elixir_release_from_disk(run_release, vsn):
    release, body = started_status(run_release, "hello_elixir", vsn)
    assert body["crypto"]["sha256"] == hashlib.sha256(vsn.encode()).hexdigest()
    assert body["protocol"] == ["release hello_elixir " + vsn, "integer 42"]
    assert body["consolidated"] is True
    assert body["elixir"].startswith("1.")
    assert http_get(release.port, "/nope")[0] == 404
