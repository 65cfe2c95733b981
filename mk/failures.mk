# The failure matrix (issue 13): one cluster on localcloud (provision + site, 3 workers, hello_cluster 1.0.0), a
# poller on every worker, one scenario a test, one row each; the table is printed and written to FAILURES_MATRIX.
TEST_TARGETS += test-failures

FAILURES_MATRIX ?= $(ROOT)/tests/output/failure-matrix.md

.PHONY: test-failures

test-failures: bootstrap ## failure matrix on localcloud: faults (boot server, workers, EC2 API, disk, releases, bad input) with a poller; prints the table
	@mkdir -p $(dir $(FAILURES_MATRIX))
	FAILURES_MATRIX=$(FAILURES_MATRIX) $(PYTHON) -m pytest -v -rsx --durations=0 -p no:cacheprovider -p no:xdist tests/integration/failures
