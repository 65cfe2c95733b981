# TLS for self-joined workers (issue 14, docs/tls.md design B): the worker's request and the boot servers' issuer
# against a moto SSM + EC2 server on loopback, real openssl and erl nodes. No localcloud.
TEST_TARGETS += test-tls-join

.PHONY: test-tls-join

test-tls-join: bootstrap ## TLS self-join: key + CSR in SSM, issuer checks EC2 and signs or refuses, the chain in inet_tls_dist (moto on loopback)
	PYTHONPATH=$(COLLECTIONS) $(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/tls_join
	$(PYTHON) -m pytest -v -p no:cacheprovider -p no:xdist tests/integration/tls_join

# The same on localcloud: a TLS cluster whose boot server runs the issuer, a node image, workers launched by the
# EC2 API with an instance profile (IMDS role credentials, the API for hosts). One cluster, 3-8 minutes.
TEST_TARGETS += test-self-join-tls

.PHONY: test-self-join-tls

test-self-join-tls: bootstrap ## TLS self-join on localcloud: a worker gets its certificate from the boot server's issuer and joins over TLS; another cluster's worker is refused
	$(PYTHON) -m pytest -v -s -p no:cacheprovider -p no:xdist tests/integration/self_join_tls
