"""A release nobody here wrote: jiffy (a C/C++ JSON NIF, fetched from its public repository) in a tiny app,
built offline by scripts/build-third-party-release.sh, through site then deploy (v1 with jiffy 1.1.1, v2 with
jiffy 1.1.2: the NIF's priv path changes with the upgrade).

A manual check, not run by `make test`: the library's source must be fetched first (the project cannot ship
it). Build both tarballs into a directory and point THIRD_PARTY_RELEASES at it:
    scripts/build-third-party-release.sh <jiffy git mirror> 1.1.1 1.0.0 /tmp/third-party-releases
    scripts/build-third-party-release.sh <jiffy git mirror> 1.1.2 2.0.0 /tmp/third-party-releases
    THIRD_PARTY_RELEASES=/tmp/third-party-releases .venv/bin/python -m pytest tests/integration/releases -k third_party
"""

import os
import secrets

import pytest

from conftest import PLAIN_AMI_NAME, ReleaseCluster

RELEASES = os.environ.get("THIRD_PARTY_RELEASES", "")

pytestmark = pytest.mark.skipif(not RELEASES, reason="manual check: set THIRD_PARTY_RELEASES (see the module's doc)")


@pytest.fixture(scope="module")
def jiffy_cluster(endpoint_url, cookie, tmp_path_factory):
    c = ReleaseCluster(endpoint_url, tmp_path_factory.mktemp("jiffy"), "reljf%s" % secrets.token_hex(2), cookie)
    c.write_files()
    try:
        c.launch(PLAIN_AMI_NAME, 2)
        yield c
    finally:
        if not os.environ.get("RELEASES_KEEP"):
            c.cleanup()


def test_jiffy_release_site_then_deploy(jiffy_cluster):
    c = jiffy_cluster
    c.playbook("site", "-e", "site_initial_release=%s" % os.path.join(RELEASES, "hello_jiffy-1.0.0.tar.gz"))
    for status in c.wait_status(c.pushed, "1.0.0").values():
        assert status["roundtrip"] is True and status["jiffy_vsn"] == "1.1.1", status
        assert status["nif_path"].startswith(c.layout["releases_dir"] + "/1.0.0/lib/jiffy-1.1.1/priv"), status
    c.playbook("deploy", "-e", "deploy_release=%s" % os.path.join(RELEASES, "hello_jiffy-2.0.0.tar.gz"))
    for status in c.wait_status(c.pushed, "2.0.0", bound=30).values():
        assert status["roundtrip"] is True and status["jiffy_vsn"] == "1.1.2", status
