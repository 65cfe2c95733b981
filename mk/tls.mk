# TLS distribution (issue 14 part 3, docs/tls.md): role-issued certificates, real erl nodes on loopback.
TEST_TARGETS += test-tls

.PHONY: test-tls bench-tls-call

test-tls: bootstrap ## TLS distribution: role-made CA and node certificates, TLS nodes, control layer over TLS, other-CA and TCP nodes refused
	$(PYTHON) -m pytest -v -p no:cacheprovider -p no:xdist tests/integration/erlang_tls

bench-tls-call: bootstrap ## benchmark: one control-layer call over TLS (hidden erl node) vs erl_call, same run
	$(PYTHON) benchmarks/bench_tls_call.py
