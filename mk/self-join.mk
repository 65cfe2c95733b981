# self-join at boot (issue 6): node image, bootstrap, reconcile; end to end on localcloud.
# Uses the running localcloud (or starts it; never stops it: it is shared). About 10 minutes.
SELF_JOIN_REPORT ?= $(ROOT)/tests/output/self_join.jsonl

.PHONY: test-self-join

test-self-join: bootstrap ## self-join suite: bake an image, workers launched by the EC2 API join by themselves (localcloud)
	@mkdir -p $(dir $(SELF_JOIN_REPORT)) && rm -f $(SELF_JOIN_REPORT)
	SELF_JOIN_REPORT=$(SELF_JOIN_REPORT) $(PYTHON) -m pytest -p no:cacheprovider tests/integration/self_join -v -s
	@echo "timings: $(SELF_JOIN_REPORT)"

TEST_TARGETS += test-self-join

DEMO_SELF_JOIN_COUNT ?= 5

.PHONY: demo-self-join

demo-self-join: bootstrap ## after `make demo`: bake a node image, then grow the demo cluster by DEMO_SELF_JOIN_COUNT (5) workers that join by themselves
	@echo "==> 1/3 bake_image: a builder from $(DEMO_IMAGE_ID), the node_image role (cookie from $(DEMO_COOKIE)), an AMI, the builder terminated"
	@test "$$($(LOCALCLOUD_ENV); $(PYTHON) scripts/demo.py count $(DEMO_CLUSTER))" -gt 0 || { echo "no demo cluster: run make demo first" >&2; exit 1; }
	@# localcloud enforces security groups: the builder gets SSH from the controller (tests/integration/harness_group.py).
	$(LOCALCLOUD_ENV); $(DEMO_PLAYBOOK) skunkworks.erlang_ec2.bake_image -e bake_image_source_image_id=$(DEMO_IMAGE_ID) \
	  -e bake_image_key_name=localcloud -e bake_image_no_reboot=true \
	  -e "$$($(PYTHON) tests/integration/harness_group.py bake_image_security_group_ids)" | tee $(DEMO_DIR)/bake_image.log
	@echo "==> 2/3 cluster_instances join: self, count + $(DEMO_SELF_JOIN_COUNT): RunInstances only, no playbook against the new hosts"
	@$(LOCALCLOUD_ENV); ami=$$(sed -n 's/.*"AMI \(ami-[0-9a-f]*\) .*/\1/p' $(DEMO_DIR)/bake_image.log | tail -1); \
	  before=$$($(PYTHON) scripts/demo.py count $(DEMO_CLUSTER)); \
	  groups=$$($(PYTHON) scripts/demo.py groups $(DEMO_CLUSTER) worker) || exit 1; \
	  echo "node image $$ami; $$before workers now, in security groups $$groups"; \
	  ANSIBLE_PIPELINING=1 ansible localhost -m skunkworks.erlang_ec2.cluster_instances -a "{\"cluster\": \"$(DEMO_CLUSTER)\", \
	    \"role\": \"worker\", \"count\": $$((before + $(DEMO_SELF_JOIN_COUNT))), \"join\": \"self\", \"image_id\": \"$$ami\", \
	    \"instance_type\": \"t3.small\", \"key_name\": \"localcloud\", \"security_group_ids\": $$groups}" | sed -n '1p;/"launched"/,/\]/p'; \
	  echo "==> 3/3 every worker serves its status page and sees every other"; \
	  $(PYTHON) scripts/demo.py wait $(DEMO_CLUSTER) $$((before + $(DEMO_SELF_JOIN_COUNT)))
