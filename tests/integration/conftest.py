"""Fixtures shared by the integration suites (each suite adds its own conftest)."""

import os

import pytest

from aws_endpoint import AwsEndpoint


@pytest.fixture(scope="session")
def aws_endpoint():
    """A moto EC2/SSM endpoint on loopback for the whole session."""
    endpoint = AwsEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def clean_aws(aws_endpoint):
    """The session endpoint, emptied before the test."""
    aws_endpoint.reset()
    return aws_endpoint


@pytest.fixture(scope="session")
def endpoint_url():
    """The running localcloud's EC2 endpoint (started if needed, never stopped: it is shared), for the suites
    that run clusters on it (self_join, releases)."""
    if os.geteuid() != 0:
        pytest.skip("localcloud needs root")
    from localcloud_cluster import localcloud_endpoint_url  # imports localcloud: only for the suites that use it

    return localcloud_endpoint_url()
