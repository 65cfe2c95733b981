# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import posixpath

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT, ROOTS, default_roots, host_layout

# Keys that live below each movable root.
BELOW_HOME = ("cookie_file", "allow_list_file", "joined_allow_list_file", "rollout_log", "boot_server_peers_file")
BELOW_RELEASE_ROOT = ("releases_dir", "current_link", "previous_link")


def test_default_layout_is_the_layout_of_the_default_roots():
    assert DEFAULT_LAYOUT == host_layout()
    assert DEFAULT_LAYOUT == host_layout(**default_roots())
    assert DEFAULT_LAYOUT == host_layout(home=None, release_root="", user=None, group="")


@pytest.mark.parametrize("key", BELOW_HOME)
def test_home_moves_the_cookie_and_the_allow_list_files(key):
    moved = host_layout(home="/data/erlang-home")
    assert moved["home"] == "/data/erlang-home"
    assert moved[key].startswith("/data/erlang-home/")
    assert posixpath.basename(moved[key]) == posixpath.basename(DEFAULT_LAYOUT[key])
    assert DEFAULT_LAYOUT[key].startswith(DEFAULT_LAYOUT["home"] + "/")


@pytest.mark.parametrize("key", BELOW_RELEASE_ROOT)
def test_release_root_moves_the_releases_and_the_links(key):
    moved = host_layout(release_root="/data/erlang-releases/")
    assert moved["release_root"] == "/data/erlang-releases"
    assert moved[key] == "/data/erlang-releases/" + posixpath.basename(DEFAULT_LAYOUT[key])
    assert DEFAULT_LAYOUT[key].startswith(DEFAULT_LAYOUT["release_root"] + "/")


def test_moving_one_root_leaves_the_rest():
    moved = host_layout(home="/data/h", release_root="/data/r", user="svc", group="svcs")
    assert (moved["user"], moved["group"]) == ("svc", "svcs")
    fixed = set(DEFAULT_LAYOUT) - set(ROOTS) - set(BELOW_HOME) - set(BELOW_RELEASE_ROOT)
    assert fixed and all(moved[key] == DEFAULT_LAYOUT[key] for key in fixed)


def test_the_cookie_file_is_in_the_home_as_erlang_reads_it():
    assert posixpath.dirname(DEFAULT_LAYOUT["cookie_file"]) == DEFAULT_LAYOUT["home"]
    assert DEFAULT_LAYOUT["joined_allow_list_file"] == DEFAULT_LAYOUT["allow_list_file"] + ".joined"


@pytest.mark.parametrize("roots", [{"home": "relative/dir"}, {"release_root": "/"}, {"release_root": "data/r"},
                                   {"home": "/.."}, {"home": "//"}, {"home": "/srv/../"}, {"home": 5}])
def test_bad_roots_are_refused(roots):
    with pytest.raises(ValueError, match="absolute path other than /"):
        host_layout(**roots)


def test_unknown_roots_are_refused():
    with pytest.raises(ValueError, match="unknown layout root"):
        host_layout(cookie_file="/tmp/x")
