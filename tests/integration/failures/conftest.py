"""Fixtures of the failure matrix (helpers and the design: failures_lib.py; docs/failures.md)."""

import os
import secrets

import pytest

from failures_lib import ROWS, WORKERS, Poller, Row, e2e, matrix_markdown, refresh, restore


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("releases"))
    return {"v1": e2e.build_release(workdir, "1.0.0"), "v2": e2e.build_release(workdir, "2.0.0"),
            "v3": e2e.build_release(workdir, "3.0.0", crash=True)}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, releases):
    env = e2e.localcloud_env()
    name = os.environ.get("FAILURES_CLUSTER") or "fail-%s" % secrets.token_hex(3)
    workdir = str(tmp_path_factory.mktemp("failures"))
    c = e2e.Cluster(env, name, workdir)
    c.ensure_cookie()
    c.worker_count = WORKERS
    try:
        restore(c, releases)  # provision + site for a new cluster; a kept one (FAILURES_KEEP) only what differs
        yield c
    finally:
        c.end_session("failures")


@pytest.fixture(scope="session")
def poller(cluster):
    p = Poller(sorted(cluster.workers.values()))
    p.start()
    yield p
    p.stop()


@pytest.fixture
def row(request, cluster, poller, releases):
    """The scenario's row (its name: the test's docstring's first line); then the baseline back, asserted."""
    refresh(cluster)
    poller.watch(cluster.workers.values())
    name = (request.function.__doc__ or request.function.__name__).strip().splitlines()[0]
    r = Row(name, cluster, poller)
    ROWS.append(r)
    yield r
    if r.measured is None:
        r.close()
    restore(cluster, releases)
    poller.watch(cluster.workers.values())


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    text = matrix_markdown()
    path = os.environ.get("FAILURES_MATRIX") or os.path.join(str(terminalreporter.config._tmp_path_factory.getbasetemp()), "failure-matrix.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    terminalreporter.write_sep("=", "failure matrix (%s)" % path)
    terminalreporter.write_line(text)
