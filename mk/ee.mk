# The execution environment (issue 15, docs/ee.md): `make ee` builds it with ansible-builder and podman,
# without container registries nor Galaxy; test-ee runs the collection's playbooks inside it on localcloud.
TEST_TARGETS += test-ee

EE_IMAGE      ?= localhost/skunkworks-erlang-ec2-ee:latest
EE_BASE_DEFAULT := localhost/localcloud-ee-base-debian-12:latest
EE_BASE_IMAGE ?= $(EE_BASE_DEFAULT)
# never: the base must be local (the default is); use EE_PULL=missing for a registry base image.
EE_PULL       ?= never
# More ansible-builder options, e.g. EE_BUILDER_OPTS=--no-cache (with EE_FORCE=1: a build from nothing but the base).
EE_BUILDER_OPTS ?=
EE_DIR        := $(ROOT)/build/ee
EE_LABEL      := io.skunkworks.ee.inputs
# The collections galaxy.yml depends on, staged from the controller's `ansible` package (never Galaxy).
EE_DEP_COLLECTIONS := $(shell sed -n '/^dependencies:/,/^[a-z]/s/^  \([a-z_]*\.[a-z_]*\):.*/\1/p' galaxy.yml)

.PHONY: ee ee-base test-ee

ee-base: bootstrap ## the EE's default base image: Debian 12 debootstrapped by localcloud (python3, pip, ssh, erlang-base)
	@eval "$$($(PYTHON) -m localcloud env)" && $(PYTHON) -m localcloud images build-ee-base

# The inputs' digest is kept as a label of the image: the build runs only when one of them changed
# (the EE definition, either collection's MANIFEST.json, which holds every file's checksum, the base image);
# EE_FORCE=1 rebuilds anyway (e.g. for newer PyPI releases). Python packages: wheels downloaded on the host
# (scripts/ee_wheels.py), mounted with a no-index pip.conf into every build step, so nothing of them stays.
ee: bootstrap $(if $(filter $(EE_BASE_DEFAULT),$(EE_BASE_IMAGE)),ee-base) build ## build the execution environment image EE_IMAGE (cached; EE_BASE_IMAGE=... swaps the base)
	@set -euo pipefail; eval "$$($(PYTHON) -m localcloud env)"; \
	rm -rf $(EE_DIR)/collections && mkdir -p $(EE_DIR)/collections; \
	tarball=$$(ls -t build/skunkworks-erlang_ec2-*.tar.gz | head -1); \
	cp "$$tarball" $(EE_DIR)/collections/skunkworks-erlang_ec2.tar.gz; \
	deps=""; for dep in $(EE_DEP_COLLECTIONS); do \
	    dir=$$($(PYTHON) -c "import ansible_collections.$$dep as m; print(list(m.__path__)[0])"); \
	    mkdir -p $(EE_DIR)/collections/ansible_collections/$${dep%%.*}; \
	    rsync -a --delete --exclude=__pycache__ "$$dir"/ $(EE_DIR)/collections/ansible_collections/$${dep/.//}/; \
	    deps="$$deps $$dir"; done; \
	base_id=$$(podman image inspect --format '{{.Id}}' $(EE_BASE_IMAGE) 2>/dev/null || true); \
	inputs=$$( { sha256sum execution-environment.yml mk/ee.mk; tar -xzOf "$$tarball" MANIFEST.json | sha256sum; \
	            for dir in $$deps; do sha256sum < "$$dir/MANIFEST.json"; done; echo "$(EE_BASE_IMAGE) $$base_id"; } | sha256sum | cut -c1-16); \
	if [ -z "$(EE_FORCE)" ] && [ "$$(podman image inspect --format '{{index .Labels "$(EE_LABEL)"}}' $(EE_IMAGE) 2>/dev/null)" = "$$inputs" ]; then \
	    echo "ee: $(EE_IMAGE) is up to date (inputs $$inputs)"; exit 0; fi; \
	echo "ee: building $(EE_IMAGE) from $(EE_BASE_IMAGE) (inputs $$inputs)"; \
	rm -rf $(EE_DIR)/wheels; $(PYTHON) scripts/ee_wheels.py execution-environment.yml . $$deps $(EE_DIR)/wheels; \
	printf '[global]\nno-index = true\nfind-links = /ee-wheels\n' > $(EE_DIR)/pip.conf; \
	ansible-builder build --file execution-environment.yml --context $(EE_DIR)/context --container-runtime podman \
	    --tag $(EE_IMAGE) --build-arg EE_BASE_IMAGE=$(EE_BASE_IMAGE) $(EE_BUILDER_OPTS) \
	    --extra-build-cli-args "--pull=$(EE_PULL) --label $(EE_LABEL)=$$inputs \
	        -v $(EE_DIR)/wheels:/ee-wheels:ro -v $(EE_DIR)/pip.conf:/etc/pip.conf:ro" -v 2

test-ee: bootstrap ee ## the collection's provision and site playbooks run inside the EE (ansible-runner + podman) on localcloud
	EE_IMAGE=$(EE_IMAGE) $(PYTHON) -m pytest -v -p no:cacheprovider tests/integration/ee
