# self-join at boot (issue 6): node image, bootstrap, reconcile; end to end on localcloud.
# Uses the running localcloud (or starts it; never stops it: it is shared). About 10 minutes.
SELF_JOIN_REPORT ?= $(ROOT)/tests/output/self_join.jsonl

.PHONY: test-self-join

test-self-join: bootstrap ## self-join suite: bake an image, workers launched by the EC2 API join by themselves (localcloud)
	@mkdir -p $(dir $(SELF_JOIN_REPORT)) && rm -f $(SELF_JOIN_REPORT)
	SELF_JOIN_REPORT=$(SELF_JOIN_REPORT) $(PYTHON) -m pytest -p no:cacheprovider tests/integration/self_join -v -s
	@echo "timings: $(SELF_JOIN_REPORT)"

TEST_TARGETS += test-self-join
