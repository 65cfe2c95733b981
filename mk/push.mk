# Hot code push (issue 12): the push suite and its benchmark, on localcloud (1 boot server, 2 workers; about 5 minutes).
TEST_TARGETS += test-push
PUSH_BENCH_WORKERS ?= 3

.PHONY: test-push bench-push

test-push: bootstrap ## push suite: hot code push with 0 failed polls, refusals (old code, structural), revert, check/diff mode (localcloud)
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/integration/push

bench-push: bootstrap ## push of a changed module to N workers: wall time, and failed polls of every worker every 20 ms (must be 0)
	$(PYTHON) benchmarks/bench_push.py --workers $(PUSH_BENCH_WORKERS)
