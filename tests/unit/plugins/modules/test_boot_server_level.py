# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.modules import boot_server_level as bsl

BEFORE = {"current": "1.0.0", "previous": "undefined", "releases": ["1.0.0"], "allow_list": ["172.31.0.10", "172.31.0.9"]}
REPORT = {"copied": ["2.0.0"], "links": [{"name": "previous", "before": None, "after": "1.0.0"},
                                         {"name": "current", "before": "1.0.0", "after": "2.0.0"}],
          "allow_list_after": ["172.31.0.9"]}


def test_diff_text_sorts_addresses_numerically_and_shows_absent_links():
    assert bsl.describe(BEFORE) == "current: 1.0.0\nprevious: -\nreleases: 1.0.0\nallow: 172.31.0.9\nallow: 172.31.0.10\n"


def test_expected_after_applies_copies_links_and_allow_list():
    after = bsl.expected_after(BEFORE, REPORT)
    assert after["releases"] == ["1.0.0", "2.0.0"]
    assert (after["current"], after["previous"]) == ("2.0.0", "1.0.0")
    assert after["allow_list"] == ["172.31.0.9"]
    assert BEFORE["current"] == "1.0.0"  # not changed in place


class FailJson(Exception):
    pass


class FakeModule(object):
    def fail_json(self, **kwargs):
        raise FailJson(kwargs)


def make_root(tmp_path):
    releases = tmp_path / "releases"
    (releases / "1.0.0" / "lib").mkdir(parents=True)
    (releases / "0.9.0").mkdir()
    (releases / ".level-2.0.0-1").mkdir()
    os.symlink(str(releases / "1.0.0"), str(tmp_path / "current"))
    return tmp_path


def test_unpruned_releases_are_removed_and_check_mode_removes_nothing(tmp_path):
    root = make_root(tmp_path)
    assert bsl.remove_unpruned(FakeModule(), str(root), ["0.9.0", "0.8.0"], check=True) == ["0.9.0"]
    assert (root / "releases" / "0.9.0").is_dir()
    assert bsl.remove_unpruned(FakeModule(), str(root), ["0.9.0"], check=False) == ["0.9.0"]
    assert not (root / "releases" / "0.9.0").exists()


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", ".level-2.0.0-1", ""])
def test_a_release_name_outside_the_releases_directory_is_refused(tmp_path, name):
    root = make_root(tmp_path)
    with pytest.raises(FailJson):
        bsl.remove_unpruned(FakeModule(), str(root), [name], check=False)
    assert (root / "releases" / ".level-2.0.0-1").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to root needs root")
def test_levelled_copies_are_given_to_root_and_temporary_copies_left_alone(tmp_path):
    root = make_root(tmp_path)
    copied = [root / "releases" / "1.0.0", root / "releases" / "1.0.0" / "lib", root / "current", root / "releases" / ".level-2.0.0-1"]
    for path in copied:
        os.lchown(str(path), 1000, 1000)
    expected = sorted(str(p) for p in copied[:3])
    assert sorted(bsl.fix_owner(FakeModule(), str(root), check=True)) == expected
    assert os.lstat(str(copied[0])).st_uid == 1000  # check mode changes nothing
    assert sorted(bsl.fix_owner(FakeModule(), str(root), check=False)) == expected
    assert [os.lstat(str(p)).st_uid for p in copied] == [0, 0, 0, 1000]
    assert bsl.fix_owner(FakeModule(), str(root), check=False) == []
