"""Fixtures shared by the integration suites (each suite adds its own conftest)."""

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
