# Several boot servers (issue 13): levelling before serving, the boot_server_level module, the membership keeper.
TEST_TARGETS += test-boot-servers

.PHONY: test-boot-servers

test-boot-servers: bootstrap ## 2 boot servers on localcloud: levelled before serving, level module, membership keeper
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/integration/boot_servers
