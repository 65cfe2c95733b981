# Example releases that look like real applications: examples/hello_rebar3 (rebar3/relx, a C NIF in
# priv/, priv data, crypto + ssl bundled in lib/, a real vm.args) and examples/hello_elixir (mix release,
# consolidated protocols). Built offline (Debian rebar3 and elixir, no hex.pm).
# Other suites build them with `$(MAKE) -C examples/<name> tar VSN=... OUT=...` (the hello_cluster interface).
EXAMPLE_RELEASE_APPS := hello_rebar3 hello_elixir
EXAMPLE_RELEASE_VSNS := 1.0.0 2.0.0
EXAMPLE_RELEASES_DIR ?= $(ROOT)/.state/examples
EXAMPLE_RELEASE_TARBALLS := $(foreach app,$(EXAMPLE_RELEASE_APPS),$(foreach vsn,$(EXAMPLE_RELEASE_VSNS),$(EXAMPLE_RELEASES_DIR)/$(app)-$(vsn).tar.gz))

.PHONY: test-examples example-releases

test-examples: bootstrap ## example releases hello_rebar3 + hello_elixir: offline builds (unshare -n), tarball shapes, booted from disk
	$(PYTHON) -m pytest -p no:cacheprovider tests/integration/examples -v -s

example-releases: bootstrap $(EXAMPLE_RELEASE_TARBALLS) ## hello_rebar3 and hello_elixir 1.0.0 and 2.0.0 tarballs in .state/examples
	@ls -1 $(EXAMPLE_RELEASE_TARBALLS)

# `make examples` (hello_cluster, mk/erlang-modules.mk) builds these too.
examples: example-releases

# A tarball is rebuilt when a file of its example changes (build output excluded).
define example_release_rule
$(EXAMPLE_RELEASES_DIR)/$(1)-%.tar.gz: $$(shell find $(ROOT)/examples/$(1) -type f -not -path '*/_build/*' -not -path '*/deps/*' -not -name '*.so' -not -name '.vsn-*' 2>/dev/null) | bootstrap
	$$(MAKE) --no-print-directory -C $(ROOT)/examples/$(1) tar VSN=$$* OUT=$(EXAMPLE_RELEASES_DIR)
endef
$(foreach app,$(EXAMPLE_RELEASE_APPS),$(eval $(call example_release_rule,$(app))))

TEST_TARGETS += test-examples
