# AWX's run path (issue 15): inventory update, import and job inventory as AWX does them, then site, deploy,
# rolling_restart and reconcile through ansible-runner with AWX's credential injection; artifacts scanned for secrets.
TEST_TARGETS += test-awx-run

.PHONY: test-awx-run

test-awx-run: bootstrap ## AWX's run path on localcloud: 1 boot server + 2 workers, jobs through ansible-runner, no secret in any artifact
	$(PYTHON) -m pytest -v -rP -p no:cacheprovider tests/integration/awx
