# End-to-end: the demo, its test, molecule scenarios and the rolling-restart benchmark (issue #5).
# All of them run on localcloud (python -m localcloud up): EC2 API on loopback, hosts are podman containers.
TEST_TARGETS += test-e2e test-molecule

DEMO_CLUSTER   ?= demo
DEMO_WORKERS   ?= 3
# Boot servers of the demo cluster: 2, so that one can be lost (docs/boot_servers.md); 1 is the article's design.
DEMO_BOOT_SERVERS ?= 2
DEMO_IMAGE_ID  ?= ami-0deb120000000e71a
DEMO_DIR       := $(ROOT)/.state/demo
DEMO_COOKIE    := /erlang-ec2/$(DEMO_CLUSTER)/cookie
# Run a playbook as users do, against the demo inventory (localcloud's env is eval'ed first).
DEMO_PLAYBOOK   = ANSIBLE_PIPELINING=1 ansible-playbook -i $(ROOT)/inventory -e cluster_name=$(DEMO_CLUSTER) -e erlang_cookie_ssm_parameter=$(DEMO_COOKIE)
# make demo ERLANG_DISTRIBUTION=tls: a TLS cluster (docs/tls.md): every playbook gets -e erlang_distribution=tls and
# the releases hold ssl (hello_cluster TLS=1). With tcp (the default) the demo's commands are unchanged.
ERLANG_DISTRIBUTION ?= tcp
DEMO_DIST_ARGS  = $(if $(filter tls,$(ERLANG_DISTRIBUTION)),-e erlang_distribution=tls)
DEMO_TAR_ARGS   = $(if $(filter tls,$(ERLANG_DISTRIBUTION)),TLS=1)
LOCALCLOUD_ENV  = eval "$$($(PYTHON) -m localcloud env)"
BENCH_WORKERS  ?= 3
# More options for bench_rolling.py, e.g. --name roll-bench (cluster name), --existing (measure a running cluster).
BENCH_ROLLING_ARGS ?=

.PHONY: demo demo-down test-e2e test-molecule bench-rolling

demo: bootstrap ## the README's first command: localcloud, 2 boot servers (DEMO_BOOT_SERVERS) + 3 workers, v1 then a rolling upgrade to v2 (ERLANG_DISTRIBUTION=tls: over TLS)
	$(if $(filter-out tcp tls,$(ERLANG_DISTRIBUTION)),$(error ERLANG_DISTRIBUTION must be tcp or tls, got '$(ERLANG_DISTRIBUTION)'))
	@echo "==> 1/7 localcloud: a local EC2 API whose instances are podman hosts"
	$(PYTHON) -m localcloud up
	@echo "==> 2/7 build the example releases v1 and v2 (examples/hello_cluster, rebar3 tar shape)"
	@mkdir -p $(DEMO_DIR)
	$(MAKE) -s -C examples/hello_cluster tar VSN=1.0.0 OUT=$(DEMO_DIR) $(DEMO_TAR_ARGS)
	$(MAKE) -s -C examples/hello_cluster tar VSN=2.0.0 OUT=$(DEMO_DIR) $(DEMO_TAR_ARGS)
	@echo "==> 3/7 the cluster cookie: a random SSM SecureString parameter $(DEMO_COOKIE) (never printed)"
	@$(LOCALCLOUD_ENV); $(PYTHON) scripts/demo.py cookie-create $(DEMO_COOKIE)
	@echo "==> 4/7 provision: security group, $(DEMO_BOOT_SERVERS) boot server(s) and $(DEMO_WORKERS) workers"
	$(LOCALCLOUD_ENV); $(DEMO_PLAYBOOK) $(DEMO_DIST_ARGS) skunkworks.erlang_ec2.provision -e provision_image_id=$(DEMO_IMAGE_ID) \
	  -e provision_ssh_cidr=172.31.0.1/32 -e provision_key_name=localcloud -e provision_worker_count=$(DEMO_WORKERS) \
	  -e provision_boot_server_count=$(DEMO_BOOT_SERVERS) -e '{"provision_extra_rules": [{"proto": "tcp", "ports": ["8080"], "cidr_ip": "172.31.0.1/32", "rule_desc": "hello_cluster HTTP status page, from the controller (make demo-status)"}]}'
	@echo "==> 5/7 site: Erlang/OTP + cookie everywhere, the boot servers with v1 (level), workers registered on each then started"
	$(LOCALCLOUD_ENV); $(DEMO_PLAYBOOK) $(DEMO_DIST_ARGS) skunkworks.erlang_ec2.site -e site_initial_release=$(DEMO_DIR)/hello_cluster-1.0.0.tar.gz
	@$(MAKE) -s demo-status
	@echo "==> 6/7 deploy v2: install beside v1, switch current, serial rolling restart (init:restart/0)"
	$(LOCALCLOUD_ENV); $(DEMO_PLAYBOOK) $(DEMO_DIST_ARGS) skunkworks.erlang_ec2.deploy -e deploy_release=$(DEMO_DIR)/hello_cluster-2.0.0.tar.gz
	@echo "==> 7/7 every worker on v2"
	@$(MAKE) -s demo-status
	@echo
	@echo "Where to look:"
	@echo "  eval \"\$$(.venv/bin/python -m localcloud env)\"; export ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS)"
	@echo "  .venv/bin/ansible-inventory -i inventory --graph          # the dynamic inventory"
	@echo "  make demo-status                                           # every worker's http://<ip>:8080/status"
	@echo "  .venv/bin/python -m localcloud ssh <ip>                    # a shell on a host (journalctl -u $(LAYOUT_WORKER_UNIT))"
	@echo "Tear down: make demo-down (the demo's instances), then .venv/bin/python -m localcloud down (all of localcloud)."

# The worker's unit name, from the host layout (plugins/module_utils/layout.py); expanded only where used.
LAYOUT_WORKER_UNIT = $(shell $(PYTHON) -c 'import sys; sys.path.insert(0, "$(ROOT)/plugins/module_utils"); import layout; print(layout.DEFAULT_LAYOUT["worker_unit"])')

.PHONY: demo-status
demo-status: ## show every demo worker's status page
	@$(LOCALCLOUD_ENV); $(PYTHON) scripts/demo.py status $(DEMO_CLUSTER)

demo-down: bootstrap ## terminate the demo's instances, deregister its node images (demo-self-join), delete its cookie parameter (localcloud keeps running)
	$(LOCALCLOUD_ENV); ANSIBLE_PIPELINING=1 ansible localhost -m skunkworks.erlang_ec2.cluster_instances \
	  -a '{"cluster": "$(DEMO_CLUSTER)", "role": "worker", "count": 0}' && \
	ansible localhost -m skunkworks.erlang_ec2.cluster_instances \
	  -a '{"cluster": "$(DEMO_CLUSTER)", "role": "boot_server", "count": 0, "allow_boot_server_termination": true}'
	@$(LOCALCLOUD_ENV); $(PYTHON) scripts/demo.py deregister-images $(DEMO_CLUSTER)
	@$(LOCALCLOUD_ENV); $(PYTHON) scripts/demo.py cookie-delete $(DEMO_COOKIE)

test-e2e: bootstrap ## end to end on localcloud: provision, site (twice), check mode, refusal, rolling v1->v2, broken v3, rollback, automatic rollback, health gates
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/integration/e2e

test-molecule: bootstrap ## molecule scenarios for the roles, on localcloud hosts
	$(PYTHON) -m localcloud up
	$(LOCALCLOUD_ENV); cd extensions && molecule -c molecule/config.yml test --all

bench-rolling: bootstrap ## rolling restart wall time vs N x a bare restart of one node (ratio), and per-node unavailability
	$(PYTHON) tests/integration/e2e/bench_rolling.py --workers $(BENCH_WORKERS) $(BENCH_ROLLING_ARGS)
