# Real releases (issue 10): the rebar3 example (own NIF, priv data, crypto, ssl) and the Elixir example
# on localcloud clusters, pushed, self-joined and Auto Scaling workers. Uses the running localcloud.
TEST_TARGETS += test-releases

.PHONY: test-releases

test-releases: bootstrap ## real releases on localcloud: rebar3 (NIF, priv, crypto, ssl, vm.args) and mix, site then deploy
	$(PYTHON) -m pytest -p no:cacheprovider tests/integration/releases -v
