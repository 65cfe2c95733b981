"""Constants of the TLS self-join tests (one place: the conftest and both test files)."""

REGION = "eu-west-1"
CLUSTER = "tj1"
PREFIX = "/erlang-ec2"
