# localcloud: the EC2 API (moto, loopback) whose instances are real hosts (podman containers). See docs/localcloud.md.
LOCALCLOUD := $(PYTHON) -m localcloud

.PHONY: localcloud-up localcloud-down localcloud-status localcloud-images test-localcloud bench-localcloud

localcloud-up: bootstrap ## start localcloud (or reuse the running one); then eval the output of `python -m localcloud env`
	$(LOCALCLOUD) up

localcloud-down: bootstrap ## remove everything localcloud made (hosts, network, IMDS address, daemon)
	$(LOCALCLOUD) down

localcloud-status: bootstrap ## show localcloud's daemon, network and hosts
	$(LOCALCLOUD) status

localcloud-images: bootstrap ## build localcloud's host images (Debian 12; Debian 12 + Erlang)
	$(LOCALCLOUD) images build

test-localcloud: bootstrap ## localcloud's own tests (real containers; uses the running localcloud or starts one)
	$(PYTHON) -m pytest -p no:cacheprovider tests/integration/localcloud -v

bench-localcloud: bootstrap ## launch-to-SSH time of 5 instances on localcloud
	$(PYTHON) -m localcloud.bench --count 5

TEST_TARGETS += test-localcloud
