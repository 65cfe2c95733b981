# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import os
import shutil
import tarfile

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import release
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import TermSyntaxError, consult

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "releases")


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def make_release(root, rel_name, rel_text, vsn, apps=(), files=None):
    """A release directory of the relx/mix shape with the given .rel and extra files."""
    os.makedirs(os.path.join(root, "releases", vsn))
    with open(os.path.join(root, "releases", vsn, rel_name), "w") as handle:
        handle.write(rel_text)
    for app in apps:
        os.makedirs(os.path.join(root, "lib", app, "ebin"))
    os.makedirs(os.path.join(root, "lib"), exist_ok=True)
    for path, content in (files or {}).items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(content)
    return root


def test_consult_reads_recorded_rel_files():
    [(tag, (name, vsn), (erts_tag, erts), apps)] = consult(fixture("hello_rebar3.rel"))
    assert (tag, name, vsn, erts_tag, erts) == ("release", "hello_rebar3", "1.0.0", "erts", "13.1.5")
    assert ("crypto", "5.1.2") in [(str(a[0]), a[1]) for a in apps]
    [(tag, (name, vsn), dummy, apps)] = consult(fixture("hello_elixir.rel"))
    assert name == "hello_elixir"
    assert ("iex", "1.14.0", "none") in [tuple(str(x) for x in a) for a in apps]


@pytest.mark.parametrize("text, expected", [
    ("{a, 'B c', \"s\\n\", <<\"bin\">>, 16#ff, -2, 1.5e3, $a}.", [("a", "B c", "s\n", b"bin", 255, -2, 1500.0, 97)]),
    ("% comment\n[1, 2 | [3]]. #{k => [v]}.", [[1, 2, 3], {"k": ["v"]}]),
    ("\"ab\" \"cd\".", ["abcd"]),
])
def test_consult_term_shapes(text, expected):
    assert consult(text) == expected


@pytest.mark.parametrize("text", ["{a, B}.", "{a, b", "[1 | 2].", "{a b}."])
def test_consult_refuses_what_is_not_a_term(text):
    with pytest.raises(TermSyntaxError):
        consult(text)


def test_vm_args_owned_flags_are_dropped_and_never_their_values():
    content, dropped = release.filter_vm_args(fixture("rebar3-vm.args"))
    assert dropped == ["-setcookie", "-sname"]
    assert "hello_rebar3_release_cookie" not in content
    assert content.splitlines() == ["+S 1:1", "+A 8", "-kernel net_setuptime 11"]


def test_vm_args_flags_with_several_values_and_mid_line_flags():
    content, dropped = release.filter_vm_args(
        '-hosts 10.0.0.1 10.0.0.2\n-config a b +K true\n-env X "a b" # -setcookie x\n-boot_var R /x -mode embedded\n')
    assert content == '+K true\n-env X "a b"\n'
    assert dropped == ["-boot_var", "-config", "-hosts", "-mode"]


def test_inspect_a_relx_release(tmp_path):
    root = make_release(str(tmp_path), "hello_rebar3.rel", fixture("hello_rebar3.rel"), "1.0.0",
                        apps=["hello_rebar3-1.0.0", "crypto-5.1.4", "kernel-8.5.3"],
                        files={"releases/1.0.0/vm.args": fixture("rebar3-vm.args"), "releases/1.0.0/sys.config": "[].",
                               "lib/hello_rebar3-1.0.0/priv/x.so": "", "releases/1.0.0/start.rel": "ignored",
                               "erts-13.1.5/bin/beam.smp": ""})
    info = release.inspect(root)
    assert (info["name"], info["version"], info["erts"]) == ("hello_rebar3", "1.0.0", "13.1.5")
    assert info["applications"]["crypto"] == "5.1.2"
    assert info["bundled"] == ["crypto-5.1.4", "hello_rebar3-1.0.0", "kernel-8.5.3"]
    assert info["priv"] == ["hello_rebar3-1.0.0"]
    assert info["vm_args"]["dropped"] == ["-setcookie", "-sname"]
    assert info["erts_included"] == "13.1.5"
    assert info["consolidated"] == ""
    assert info["sys_config"].endswith("releases/1.0.0/sys.config")


def test_inspect_a_mix_release(tmp_path):
    root = make_release(str(tmp_path), "hello_elixir.rel", fixture("hello_elixir.rel"), "1.0.0",
                        apps=["hello_elixir-1.0.0", "elixir-1.14.0"],
                        files={"releases/1.0.0/sys.config": fixture("hello_elixir-sys.config"),
                               "releases/1.0.0/consolidated/Elixir.Enumerable.beam": "",
                               "releases/COOKIE": "secret", "releases/1.0.0/start_clean.rel": "x"})
    info = release.inspect(root)
    assert info["name"] == "hello_elixir"
    assert info["consolidated"].endswith("releases/1.0.0/consolidated")
    assert info["vm_args"] == {"source": "", "content": "", "dropped": []}


@pytest.mark.parametrize("files, message", [
    ({"releases/1.0.0/vm.args.src": "-sname ${NAME}"}, "vm.args.src"),
    ({"releases/1.0.0/sys.config.src": "[]."}, "sys.config.src"),
    ({"releases/1.0.0/sys.config": "[{elixir, [{config_provider_init, x}]}]."}, "config providers"),
    ({"releases/1.0.0/other.rel": "x"}, "exactly one"),
])
def test_inspect_refuses(tmp_path, files, message):
    root = make_release(str(tmp_path), "hello_rebar3.rel", fixture("hello_rebar3.rel"), "1.0.0",
                        apps=["hello_rebar3-1.0.0"], files=files)
    with pytest.raises(release.ReleaseError, match=message):
        release.inspect(root)


def test_inspect_refuses_a_version_that_is_not_its_directory(tmp_path):
    root = make_release(str(tmp_path), "hello_rebar3.rel", fixture("hello_rebar3.rel"), "9.9.9", apps=["a-1"])
    with pytest.raises(release.ReleaseError, match="releases/<vsn> directory"):
        release.inspect(root)


def test_unpack_refuses_members_outside_the_release(tmp_path):
    tarball = str(tmp_path / "evil.tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        data = b"x"
        member = tarfile.TarInfo("../escaped")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(release.ReleaseError, match="outside the release"):
        release.unpack(tarball, str(dest))
    assert not (tmp_path / "escaped").exists()


def test_unpack_then_inspect_a_tarball(tmp_path):
    src = make_release(str(tmp_path / "src"), "hello_rebar3.rel", fixture("hello_rebar3.rel"), "1.0.0",
                       apps=["hello_rebar3-1.0.0"])
    tarball = str(tmp_path / "hello_rebar3-1.0.0.tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        for top in ("lib", "releases"):
            tar.add(os.path.join(src, top), arcname=top)
    shutil.rmtree(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    release.unpack(tarball, str(dest))
    assert release.inspect(str(dest))["bundled"] == ["hello_rebar3-1.0.0"]


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_unpack_refuses_a_damaged_tarball(tmp_path, damage):
    src = make_release(str(tmp_path / "src"), "hello_rebar3.rel", fixture("hello_rebar3.rel"), "1.0.0",
                       apps=["hello_rebar3-1.0.0"])
    tarball = tmp_path / "hello_rebar3-1.0.0.tar.gz"
    with tarfile.open(str(tarball), "w:gz") as tar:
        tar.add(os.path.join(src, "lib"), arcname="lib")
        tar.add(os.path.join(src, "releases"), arcname="releases")
        # Incompressible bulk, so that the cut or the flipped byte lands inside the deflate stream.
        data = os.urandom(64 * 1024)
        member = tarfile.TarInfo("lib/hello_rebar3-1.0.0/priv/blob")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    raw = bytearray(tarball.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    tarball.write_bytes(bytes(raw))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(release.ReleaseError, match="cannot unpack"):
        release.unpack(str(tarball), str(dest))
