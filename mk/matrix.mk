# The lowest supported ansible-core (issue 15): units and sanity in a second virtual
# environment with the oldest bundle; the newest gets the full suite in `make test`.
TEST_TARGETS += test-matrix

MATRIX_ANSIBLE      ?= 2.17
MATRIX_REQUIREMENTS := requirements-matrix-$(MATRIX_ANSIBLE).txt
# Under .stamps/: already kept out of git, the sanity trees, the Galaxy build and
# ansible-lint, and removed by distclean.
MATRIX_VENV         := $(STAMPS)/venv-ansible-$(MATRIX_ANSIBLE)
MATRIX_PYTHON       := $(MATRIX_VENV)/bin/python
# Apart from SANITY_TREE, so the two runs never share a tree or an amazon.aws.
MATRIX_TREE := $(or $(TMPDIR),/tmp)/skunkworks-erlang_ec2-test-ansible-$(MATRIX_ANSIBLE)/ansible_collections/skunkworks/erlang_ec2
# Its own bin first: ansible-test finds python3.x and itself on PATH.
MATRIX_ENV := PATH=$(MATRIX_VENV)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(abspath $(MATRIX_TREE)/../../..)

.PHONY: matrix-venv test-matrix

matrix-venv: $(MATRIX_VENV)/requirements.txt
# Stamped by the copy of the pins it was made from; made anew when they change,
# so nothing is left over from the old pins.
$(MATRIX_VENV)/requirements.txt: $(MATRIX_REQUIREMENTS) | debs
	rm -rf $(MATRIX_VENV)
	$$(scripts/find-python) -m venv $(MATRIX_VENV)
	$(MATRIX_PYTHON) -m pip install -q --upgrade pip
	$(MATRIX_PYTHON) -m pip install -q -r $<
	cp $< $@

$(MATRIX_TREE): FORCE matrix-venv
	@mkdir -p $@
	rsync -a --delete --exclude-from=scripts/sanity-exclude.txt $(ROOT)/ $@/
	@# amazon.aws of this bundle, beside the collection (the import test looks there).
	@mkdir -p $@/../../amazon
	rsync -a --delete $$($(MATRIX_PYTHON) -c 'import ansible_collections.amazon.aws as m; print(list(m.__path__)[0])')/ $@/../../amazon/aws/

test-matrix: matrix-venv $(MATRIX_TREE) ## ansible-test units + sanity on the lowest supported ansible-core (MATRIX_ANSIBLE=2.17)
	@$(MATRIX_PYTHON) scripts/get-pip-standin.py --install
	cd $(MATRIX_TREE) && $(MATRIX_ENV) ansible-test units --local --python $$($(MATRIX_PYTHON) -c 'import sys;print("%d.%d"%sys.version_info[:2])') --requirements --color no
	cd $(MATRIX_TREE) && $(MATRIX_ENV) ansible-test sanity --local --python $$($(MATRIX_PYTHON) -c 'import sys;print("%d.%d"%sys.version_info[:2])') --requirements --color no
