# skunkworks.erlang_ec2 - every developer and CI entry point.
# `make test` sets up everything it needs (Debian packages, virtual environment,
# collection path) and runs every suite. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT        := $(CURDIR)
VENV        ?= $(ROOT)/.venv
PYTHON      := $(VENV)/bin/python
STAMPS      := $(ROOT)/.stamps
COLLECTIONS := $(ROOT)/.collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/skunkworks/erlang_ec2
# Outside the git work tree: inside it, ansible-test would only see tracked files of the outer repo.
SANITY_TREE := $(or $(TMPDIR),/tmp)/skunkworks-erlang_ec2-test/ansible_collections/skunkworks/erlang_ec2

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(VENV)/bin:$(PATH)
# Never let a test pick up a user's real AWS profile.
export AWS_CONFIG_FILE := /dev/null
export AWS_SHARED_CREDENTIALS_FILE := /dev/null

# Suites added by mk/*.mk fragments (each appends to TEST_TARGETS).
TEST_TARGETS :=
-include mk/*.mk

.PHONY: help bootstrap debs venv collection test test-lists test-units test-sanity test-lint clean distclean build

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

bootstrap: debs venv collection ## install Debian packages, the virtual environment and the collection path

debs: $(STAMPS)/debs
$(STAMPS)/debs: scripts/debian-packages.txt
	@mkdir -p $(STAMPS)
	@if [ "$$(id -u)" != 0 ]; then echo "bootstrap: installing Debian packages needs root (apt-get)"; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$(grep -v '^#' $< | xargs) >/dev/null
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: requirements.txt requirements-dev.txt
	@mkdir -p $(STAMPS)
	test -x $(PYTHON) || $$(scripts/find-python) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	@touch $@

collection: $(COLLECTION_LINK)
$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	ln -sfn $(ROOT) $@

build: bootstrap ## build the Galaxy tarball into build/
	@mkdir -p build
	ansible-galaxy collection build --force --output-path build .

# `make test`: ansible-test and lint, then localcloud's own suite alone (its up/down tests need localcloud to
# themselves), then every other suite in parallel streams (scripts/test-streams; TEST_STREAMS=1 runs them one
# after another). Every suite of TEST_TARGETS is in exactly one of these lists, else `make test` stops first.
TEST_ALONE    := test-localcloud
TEST_STREAM_1 := test-failures test-releases test-examples test-push test-tls-cluster test-tls test-tls-join test-self-join-tls test-erlang-modules \
                 test-inventory test-awx-objects
TEST_STREAM_2 := test-self-join test-cluster-instances test-e2e test-molecule test-boot-servers test-awx-run test-ee \
                 test-status test-matrix
TEST_STREAMS  ?= 2
TEST_LISTED   := $(TEST_ALONE) $(TEST_STREAM_1) $(TEST_STREAM_2)

test: test-lists bootstrap test-units test-sanity test-lint ## run every suite (what CI runs)
	$(MAKE) --no-print-directory $(TEST_ALONE)
	$(PYTHON) -m localcloud up
	$(PYTHON) -m localcloud images build
ifeq ($(TEST_STREAMS),1)
	scripts/test-streams "$(TEST_STREAM_1) $(TEST_STREAM_2)"
else
	scripts/test-streams "$(TEST_STREAM_1)" "$(TEST_STREAM_2)"
endif
	@echo "make test: all suites passed"

test-lists: ## check that every suite is in exactly one of make test's lists
	@for t in $(TEST_TARGETS); do n=0; for l in $(TEST_LISTED); do [ "$$t" = "$$l" ] && n=$$((n+1)); done; \
	  [ $$n = 1 ] || { echo "make test: suite $$t is in $$n of TEST_ALONE/TEST_STREAM_1/TEST_STREAM_2 (Makefile), not 1"; exit 1; }; done
	@for l in $(TEST_LISTED); do case " $(TEST_TARGETS) " in *" $$l "*) ;; \
	  *) echo "make test: $$l is listed in the Makefile but no mk/*.mk adds it to TEST_TARGETS"; exit 1;; esac; done

# ansible-test needs the collection under ansible_collections/<ns>/<name> as a real
# directory; copy what is shipped in the Galaxy build (localcloud/ and examples/ are not).
$(SANITY_TREE): FORCE
	@mkdir -p $@
	rsync -a --delete --exclude-from=scripts/sanity-exclude.txt $(ROOT)/ $@/
	@# The import test needs amazon.aws beside the collection, as it is where the collection is installed.
	@mkdir -p $@/../../amazon
	rsync -a --delete $$($(PYTHON) -c 'import ansible_collections.amazon.aws as m; print(list(m.__path__)[0])')/ $@/../../amazon/aws/

# ansible-test bootstraps pip in its per-test virtual environments from a script it
# downloads from a host unreachable here; stand in for it (see scripts/get-pip-standin.py).
ansible-test-pip: bootstrap
	@$(PYTHON) scripts/get-pip-standin.py --install

test-units: bootstrap $(SANITY_TREE) ansible-test-pip ## ansible-test units
	cd $(SANITY_TREE) && ansible-test units --local --python $$($(PYTHON) -c 'import sys;print("%d.%d"%sys.version_info[:2])') --requirements --color no

test-sanity: bootstrap $(SANITY_TREE) ansible-test-pip ## ansible-test sanity
	cd $(SANITY_TREE) && ansible-test sanity --local --python $$($(PYTHON) -c 'import sys;print("%d.%d"%sys.version_info[:2])') --requirements --color no

test-lint: bootstrap ## ansible-lint, production profile
	ansible-lint --profile production

clean: ## remove build output
	rm -rf build tests/output

distclean: clean ## remove everything make created (virtual environment included)
	rm -rf $(VENV) $(COLLECTIONS) $(STAMPS)

FORCE:
