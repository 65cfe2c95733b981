# AWX/Tower objects as code (awx/, issue 15): the surveys against the playbooks' argument specs, and
# awx/configure.yml's syntax. awx.awx left the `ansible` package in 14, so it is taken from the last one
# that has it (a PyPI wheel, no Galaxy) into the collection path; test-lint needs it too (awx/ is linted).
TEST_TARGETS += test-awx-objects

AWX_ANSIBLE_VERSION := 13.8.0
AWX_COLLECTION := $(COLLECTIONS)/ansible_collections/awx/awx

.PHONY: awx-collection test-awx-objects awx-surveys

awx-collection: $(AWX_COLLECTION)/MANIFEST.json ## install awx.awx (from the last `ansible` wheel that has it, AWX_ANSIBLE_VERSION) into the collection path

$(AWX_COLLECTION)/MANIFEST.json: | venv collection
	@rm -rf $(AWX_COLLECTION) $(STAMPS)/awx-wheel && mkdir -p $(STAMPS)/awx-wheel
	$(PYTHON) -m pip download -q --no-deps --only-binary :all: -d $(STAMPS)/awx-wheel ansible==$(AWX_ANSIBLE_VERSION)
	$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); p = "ansible_collections/awx/awx/"; \
	  z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(p)])' $(STAMPS)/awx-wheel/ansible-$(AWX_ANSIBLE_VERSION)-py3-none-any.whl $(COLLECTIONS)
	@rm -rf $(STAMPS)/awx-wheel
	@test -f $@

# ansible-lint resolves awx/configure.yml's awx.awx modules.
test-lint: awx-collection

test-awx-objects: bootstrap awx-collection ## AWX objects: surveys generated from and checked against the playbooks' specs; configure.yml syntax
	PYTHONPATH=$(COLLECTIONS) $(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/awx
	ansible-playbook --syntax-check awx/configure.yml

awx-surveys: venv ## regenerate awx/surveys/ from the playbooks' argument specs
	$(PYTHON) scripts/awx_surveys.py
