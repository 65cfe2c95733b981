# Inventory plugin skunkworks.erlang_ec2.ec2: integration suite and benchmark.
# Unit tests (tests/unit/plugins/inventory) run under `make test-units`.
TEST_TARGETS += test-inventory

.PHONY: test-inventory bench-inventory bench-inventory-lean

test-inventory: bootstrap ## inventory plugin: ansible-inventory against a moto EC2 endpoint (pytest)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/inventory

# N=... on the command line (or in the environment) picks the instance counts, e.g. `make bench-inventory N=2000`.
BENCH_INVENTORY_HOSTS = $(if $(filter command line environment,$(origin N)),$(N),1000,10000)

bench-inventory: bootstrap ## benchmark: erlang_ec2.ec2 vs amazon.aws.aws_ec2 (heavy: cold/warm cache; lean: best of 3) (N=1000,10000)
	$(PYTHON) benchmarks/bench_inventory.py --hosts $(BENCH_INVENTORY_HOSTS)

# Ours against amazon.aws.aws_ec2 configured lean only (the issue's comparison: 1,012 hosts in 3 regions, best of 3).
BENCH_INVENTORY_LEAN_HOSTS = $(if $(filter command line environment,$(origin N)),$(N),1012)

bench-inventory-lean: bootstrap ## benchmark: erlang_ec2.ec2 cold vs a lean amazon.aws.aws_ec2 only (N=1012)
	$(PYTHON) benchmarks/bench_inventory.py --lean-only --hosts $(BENCH_INVENTORY_LEAN_HOSTS)
