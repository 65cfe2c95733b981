# The status playbook (issue 12): integration suite on localcloud, and the boot-storm benchmark.
TEST_TARGETS += test-status

STORM_WORKERS ?= 1,5,10,20

.PHONY: test-status bench-boot-storm

test-status: bootstrap ## status playbook on localcloud: 1 boot server + 2 workers, the table, a stopped worker, the last rollout
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/integration/status

bench-boot-storm: bootstrap ## benchmark: N diskless workers (STORM_WORKERS=1,5,10,20) booting at once from one boot server, vs N=1
	$(PYTHON) benchmarks/bench_boot_storm.py --workers $(STORM_WORKERS)
