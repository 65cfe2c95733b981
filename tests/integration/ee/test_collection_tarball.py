"""The Galaxy tarball (`ansible-galaxy collection build`, what `make build` and `make ee` ship) holds the collection
and nothing of the checkout's local state: no localcloud state (its SSH key pair), no caches, no private key at all.
Built here from the checkout as it is after the other suites ran, so .state and the caches exist (CI)."""

import os
import re
import subprocess
import sys
import tarfile

import pytest

PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# What the collection is (galaxy.yml's build_ignore leaves out the rest); anything else at the top is a leak.
SHIPPED = {"FILES.json", "MANIFEST.json", "README.md", "changelogs", "docs", "extensions", "inventory", "meta",
           "playbooks", "plugins", "roles", "tests", ".ansible-lint", ".ansible-lint-ignore", "requirements.txt",
           "requirements-dev.txt", "requirements-matrix-2.17.txt"}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("galaxy-build"))
    galaxy = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--output-path", out, ROOT], check=True, capture_output=True, timeout=300)
    found = [name for name in os.listdir(out) if name.endswith(".tar.gz")]
    assert len(found) == 1, found
    with tarfile.open(os.path.join(out, found[0])) as archive:
        yield archive


def test_only_the_collection_is_shipped(tarball):
    tops = {member.name.split("/", 1)[0] for member in tarball.getmembers()}
    assert tops <= SHIPPED, sorted(tops - SHIPPED)
    assert not [m.name for m in tarball.getmembers() if "__pycache__" in m.name or m.name.startswith("tests/output")]


def test_no_private_key_is_shipped(tarball):
    leaked = []
    for member in tarball.getmembers():
        if member.isfile():
            body = tarball.extractfile(member).read()
            if PEM_PRIVATE_KEY.search(body):
                leaked.append(member.name)
    # Test code may hold a key it makes up: none does today; any hit is worth a look.
    assert leaked == [], leaked
