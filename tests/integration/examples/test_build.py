"""The builds: offline, v1 and v2 of both examples, and the shape of each tarball."""

import hashlib
import os
import re
import subprocess

import pytest

from conftest import APPS, BUILD_HTTP_PORT, EXAMPLES, VERSIONS, offline_prefix


def test_unshare_leaves_only_loopback():
    """What the builds ran in: a network namespace without any interface but lo."""
    proc = subprocess.run(offline_prefix() + ["cat", "/proc/net/dev"], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True)
    interfaces = [line.split(":")[0].strip() for line in proc.stdout.splitlines()[2:]]
    assert interfaces == ["lo"], proc.stdout


def test_every_build_ran_offline_and_printed_its_tarball(builds):
    assert sorted(builds.seconds) == sorted((app, vsn) for app in APPS for vsn in VERSIONS)
    for (app, vsn), log in builds.logs.items():
        assert log.strip().splitlines()[-1].endswith("/%s-%s.tar.gz" % (app, vsn)), log


def test_make_refuses_missing_vsn(tmp_path):
    for app in APPS:
        proc = subprocess.run(["make", "--no-print-directory", "-C", os.path.join(EXAMPLES, app), "tar",
                               "OUT=" + str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        assert proc.returncode == 2 and "set VSN=" in proc.stdout, proc.stdout


def erlang_term_version(text, name):
    """The version of app `name` in a .rel file."""
    match = re.search(r"\{%s,\s*\"([^\"]+)\"" % name, text)
    assert match, (name, text)
    return match.group(1)


def tarball_rel(tarballs, app, vsn):
    """(tarball, its .rel text) of APP VSN, whose .rel names the release and the app at VSN."""
    tar = tarballs[(app, vsn)]
    rel = tar.text("releases/%s/%s.rel" % (vsn, app))
    assert re.search(r'\{release,\s*\{"%s",\s*"%s"\}' % (app, re.escape(vsn)), rel), rel
    assert erlang_term_version(rel, app) == vsn
    return tar, rel


@pytest.mark.parametrize("vsn", VERSIONS)
def test_rebar3_tarball_shape(tarballs, vsn):
    tar, rel = tarball_rel(tarballs, "hello_rebar3", vsn)
    for app in ("kernel", "stdlib", "sasl", "crypto", "asn1", "public_key", "ssl", "inets"):
        erlang_term_version(rel, app)
    # relx copies the OTP applications into lib/ even with include_erts false; no ERTS.
    libs = tar.dirs("lib")
    for app in ("kernel", "stdlib", "sasl", "crypto", "asn1", "public_key", "ssl", "inets"):
        assert ["%s-%s" % (app, erlang_term_version(rel, app))] == [d for d in libs if d.startswith(app + "-")], libs
    assert "hello_rebar3-%s" % vsn in libs
    assert not [n for n in tar.names if n.startswith("erts-")]
    app_file = tar.text("lib/hello_rebar3-%s/ebin/hello_rebar3.app" % vsn)
    assert re.search(r'\{vsn,\s*"%s"\}' % re.escape(vsn), app_file), app_file
    nif = tar.read("lib/hello_rebar3-%s/priv/hello_rebar3_nif.so" % vsn)
    assert nif[:4] == b"\x7fELF" and nif[16] == 3, "not an ELF shared object"  # e_type ET_DYN
    assert "lib/crypto-%s/priv/lib/crypto.so" % erlang_term_version(rel, "crypto") in tar.names
    assert tar.text("lib/hello_rebar3-%s/priv/greeting.txt" % vsn).strip() == "Hello from hello_rebar3 %s" % vsn
    vm_args = tar.text("releases/%s/vm.args" % vsn).splitlines()
    for flag in ("-sname hello_rebar3", "-setcookie hello_rebar3_release_cookie", "+S 1:1", "+A 8",
                 "-kernel net_setuptime 11"):
        assert flag in vm_args, vm_args
    sys_config = tar.text("releases/%s/sys.config" % vsn)
    assert "{http_port, %s}" % BUILD_HTTP_PORT in sys_config, sys_config
    assert "releases/%s/start.boot" % vsn in tar.names
    assert tar.text("releases/start_erl.data").split()[1] == vsn
    # Built from a clean _build: no start script of another version.
    assert sorted(n for n in tar.names if n.startswith("bin/hello_rebar3")) == [
        "bin/hello_rebar3", "bin/hello_rebar3-%s" % vsn]
    assert [d for d in tar.dirs("releases") if re.match(r"\d", d)] == [vsn]


@pytest.mark.parametrize("vsn", VERSIONS)
def test_elixir_tarball_shape(tarballs, vsn):
    tar, rel = tarball_rel(tarballs, "hello_elixir", vsn)
    libs = tar.dirs("lib")
    assert "hello_elixir-%s" % vsn in libs
    assert [d for d in libs if d.startswith("elixir-")], libs
    assert not [n for n in tar.names if n.startswith("erts-")]
    # Protocol consolidation: in releases/<vsn>/consolidated/, not in lib/.
    consolidated = tar.dirs("releases/%s/consolidated" % vsn)
    assert "Elixir.HelloElixir.Describe.beam" in consolidated, consolidated
    assert "Elixir.Enumerable.beam" in consolidated, consolidated
    # ... and mix's boot script puts it first on the path through the RELEASE_LIB boot variable.
    script = tar.text("releases/%s/start.script" % vsn)
    assert '"$RELEASE_LIB/../releases/%s/consolidated"' % vsn in script
    sys_config = tar.text("releases/%s/sys.config" % vsn)
    assert "{http_port,%s}" % BUILD_HTTP_PORT in sys_config, sys_config
    assert "RUNTIME_CONFIG=false" in sys_config, sys_config
    assert "releases/%s/vm.args" % vsn in tar.names
    assert "releases/COOKIE" in tar.names
    assert tar.text("releases/start_erl.data").split()[1] == vsn


@pytest.mark.parametrize("app,member", [
    ("hello_rebar3", "lib/hello_rebar3-{vsn}/priv/hello_rebar3_nif.so"),
    ("hello_rebar3", "lib/hello_rebar3-{vsn}/ebin/hello_rebar3.app"),
    ("hello_elixir", "lib/hello_elixir-{vsn}/ebin/hello_elixir.app"),
])
def test_v1_and_v2_differ_in_code(tarballs, app, member):
    v1, v2 = VERSIONS
    one = tarballs[(app, v1)].read(member.format(vsn=v1))
    two = tarballs[(app, v2)].read(member.format(vsn=v2))
    assert hashlib.sha256(one).digest() != hashlib.sha256(two).digest()
