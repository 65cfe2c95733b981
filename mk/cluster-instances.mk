# cluster_instances: the provisioning module, driven through ansible-playbook against moto on loopback.
.PHONY: test-cluster-instances bench-cluster-instances

test-cluster-instances: bootstrap ## cluster_instances through ansible-playbook on a moto endpoint (includes the request-count comparison)
	$(PYTHON) -m pytest -p no:cacheprovider tests/integration/cluster_instances -v

bench-cluster-instances: bootstrap ## API requests to launch 50 instances and re-run unchanged: cluster_instances vs amazon.aws.ec2_instance
	$(PYTHON) -m pytest -p no:cacheprovider -s -q tests/integration/cluster_instances/test_request_counts.py

TEST_TARGETS += test-cluster-instances
