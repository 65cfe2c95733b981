"""The status suite: one small cluster on localcloud (1 boot server + 2 workers) running hello_cluster 1.0.0.

The cluster helper is the e2e suite's (tests/integration/e2e/conftest.py), loaded under another module name.
Each test sets up what it needs (a stopped worker is started again by the test that stopped it).
"""

import importlib.util
import os
import secrets

import pytest

_E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e", "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_cluster_helpers", _E2E)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    env = e2e.localcloud_env()
    name = os.environ.get("STATUS_CLUSTER") or "stat-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("status"))
    c = e2e.Cluster(env, name, workdir)
    c.ensure_cookie()  # a kept cluster (STATUS_KEEP) keeps its cookie
    try:
        c.release = e2e.build_release(workdir, "1.0.0")
        c.provision(2)
        c.playbook("site", extra={"site_initial_release": c.release})
        c.refresh()
        yield c
    finally:
        c.end_session("status")
