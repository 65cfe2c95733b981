"""Images: tagged by recipe (rebuilt only when the recipe changes), AMI map, preflight messages."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, localcloud
from localcloud import cli, config, images


def test_image_tags_follow_the_recipe(monkeypatch):
    base, baked = images.base_image_ref(), images.baked_image_ref()
    assert (images.base_image_ref(), images.baked_image_ref()) == (base, baked)  # same recipe, same tag
    monkeypatch.setattr(images, "BASE_PACKAGES", images.BASE_PACKAGES + ["vim-tiny"])
    assert images.base_image_ref() != base
    assert images.baked_image_ref() != baked  # the baked image is built FROM the base image
    monkeypatch.undo()
    monkeypatch.setattr(images, "BAKED_PACKAGES", images.BAKED_PACKAGES + ["erlang-mnesia"])
    assert images.base_image_ref() == base and images.baked_image_ref() != baked


def test_images_build_reuses_current_images(cloud):
    env = dict(os.environ, CONTAINERS_CONF=str(cloud.paths.containers_conf))
    ids = {}
    for ref in (images.base_image_ref(), images.baked_image_ref()):
        ids[ref] = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, env=env, check=True).stdout
    proc = localcloud("images", "build")
    assert json.loads(proc.stdout) == {"base": images.base_image_ref(), "baked": images.baked_image_ref()}
    assert "debootstrap" not in proc.stderr and "baking" not in proc.stderr
    for ref, image_id in ids.items():
        inspect = ["podman", "image", "inspect", "--format", "{{.Id}}", ref]
        assert subprocess.run(inspect, capture_output=True, text=True, env=env, check=False).stdout == image_id


def test_images_lists_the_ami_map(cloud):
    out = localcloud("images").stdout
    assert config.BASE_AMI_ID in out and images.base_image_ref() in out
    assert config.BAKED_AMI_ID in out and images.baked_image_ref() in out
    assert "not built" not in out


@pytest.mark.parametrize("ami, image, message", [
    ("not-an-ami", images.base_image_ref(), "not an AMI id"),
    ("ami-0123456789abcdef0", "localhost/no-such-image:1", "no such podman image"),
])
def test_images_map_refuses_bad_input_and_changes_nothing(cloud, ami, image, message):
    before = cloud.paths.ami_map.read_text() if cloud.paths.ami_map.exists() else None
    proc = localcloud("images", "map", ami, image, check=False)
    assert proc.returncode == 1 and message in proc.stderr
    assert (cloud.paths.ami_map.read_text() if cloud.paths.ami_map.exists() else None) == before


def test_up_as_non_root_fails_clearly(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["up"]) == 1
    assert "localcloud needs root" in capsys.readouterr().err


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "localcloud", "--help"], cwd=str(REPO), capture_output=True, text=True, check=True).stdout
    for command in ("up", "down", "status", "env", "images", "ssh"):
        assert command in out


def test_a_mapped_ami_boots_its_image(cloud, launcher, key_pair):
    """RegisterImage gives an AMI id; `images map` makes it boot the baked image."""
    from conftest import ssh, wait_ssh

    ec2 = cloud.client()
    ami = ec2.register_image(Name="localcloud-test-mapped-%d" % os.getpid(), RootDeviceName="/dev/xvda")["ImageId"]
    try:
        localcloud("images", "map", ami, images.baked_image_ref())
        assert ami in localcloud("images").stdout
        instance = launcher.run(ImageId=ami, KeyName=key_pair.name)[0]
        wait_ssh(instance["PrivateIpAddress"], key_pair.path)
        assert ssh(instance["PrivateIpAddress"], key_pair.path, "command -v erl").stdout.strip() == "/usr/bin/erl"
    finally:
        localcloud("images", "unmap", ami, check=False)
        ec2.deregister_image(ImageId=ami)
    assert ami not in localcloud("images").stdout
    assert localcloud("images", "unmap", ami, check=False).returncode == 1
