# Inventory plugin skunkworks.erlang_ec2.ec2: integration suite and benchmark.
# Unit tests (tests/unit/plugins/inventory) run under `make test-units`.
TEST_TARGETS += test-inventory

.PHONY: test-inventory bench-inventory

test-inventory: bootstrap ## inventory plugin: ansible-inventory against a moto EC2 endpoint (pytest)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/inventory

# N=... on the command line (or in the environment) picks the instance counts, e.g. `make bench-inventory N=2000`.
BENCH_INVENTORY_HOSTS = $(if $(filter command line environment,$(origin N)),$(N),1000,10000)

bench-inventory: bootstrap ## benchmark: erlang_ec2.ec2 vs amazon.aws.aws_ec2, cold/warm cache (N=1000,10000)
	$(PYTHON) benchmarks/bench_inventory.py --hosts $(BENCH_INVENTORY_HOSTS)
