# TLS distribution (issue 14 part 3, docs/tls.md): role-issued certificates, real erl nodes on loopback.
TEST_TARGETS += test-tls test-tls-cluster

.PHONY: test-tls test-tls-cluster bench-tls-call

test-tls: bootstrap ## TLS distribution: role-made CA and node certificates, TLS nodes, control layer over TLS (its client node), other-CA and TCP nodes refused; CA from SSM/Secrets Manager (moto)
	$(PYTHON) -m pytest -v -p no:cacheprovider -p no:xdist tests/integration/erlang_tls --ignore=tests/integration/erlang_tls/test_tls_cluster.py

test-tls-cluster: bootstrap ## TLS cluster on localcloud: 1 boot server + 2 workers, site v1, deploy v2, push, rotate_cookie with erlang_distribution=tls, other-CA node refused
	$(PYTHON) -m pytest -v -p no:cacheprovider -p no:xdist tests/integration/erlang_tls/test_tls_cluster.py

bench-tls-call: bootstrap ## benchmark: control-layer calls over TLS (first call: client node starts; later calls) vs erl_call, same run
	$(PYTHON) benchmarks/bench_tls_call.py
