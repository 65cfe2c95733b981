# Erlang control modules (boot_server_allow_list, node_info, node_restart, boot_script) and the example app.
# The suite starts real Erlang nodes on loopback, one boot server at a time (UDP 4368): never in parallel.
ERLANG_EXAMPLE := $(ROOT)/examples/hello_cluster
EXAMPLES_OUT   ?= $(ROOT)/build/examples

.PHONY: test-erlang-modules examples

test-erlang-modules: bootstrap ## Erlang modules against real nodes on loopback, through Ansible (serial)
	$(PYTHON) -m pytest -p no:cacheprovider -p no:xdist tests/integration/erlang_modules -v -s

examples: bootstrap ## build hello_cluster releases 1.0.0 and 2.0.0 (dirs + tarballs) into build/examples
	$(MAKE) -C $(ERLANG_EXAMPLE) release VSN=1.0.0 OUT=$(EXAMPLES_OUT)/hello_cluster
	$(MAKE) -C $(ERLANG_EXAMPLE) release VSN=2.0.0 OUT=$(EXAMPLES_OUT)/hello_cluster
	$(MAKE) -C $(ERLANG_EXAMPLE) tar VSN=1.0.0 OUT=$(EXAMPLES_OUT)
	$(MAKE) -C $(ERLANG_EXAMPLE) tar VSN=2.0.0 OUT=$(EXAMPLES_OUT)

TEST_TARGETS += test-erlang-modules
