"""The rclone layer against a real local-folder remote: copy, prove by hash, refuse."""

import hashlib

import pytest

from strongroom.core.remote import Rclone, RemoteError, join


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_join_handles_remote_roots_and_paths():
    assert join("offsite:", "a/b", "c") == "offsite:a/b/c"
    assert join("offsite:/srv/x/", "r") == "offsite:/srv/x/r"
    assert join("/plain/dir", "r") == "/plain/dir/r"


def test_verify_names_each_missing_and_differing_file(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.bundle").write_bytes(b"alpha")
    (src / "b.bundle").write_bytes(b"beta")
    r = Rclone()
    r.copy_new(src, str(dst), ["a.bundle", "b.bundle"])
    r.verify(str(dst), {"a.bundle": sha(b"alpha"), "b.bundle": sha(b"beta")})
    (dst / "b.bundle").write_bytes(b"BETA")
    with pytest.raises(RemoteError) as exc:
        r.verify(str(dst), {"a.bundle": sha(b"alpha"), "b.bundle": sha(b"beta"),
                            "c.bundle": sha(b"gamma")})
    msg = str(exc.value)
    assert "b.bundle: SHA-256 differs" in msg and "c.bundle: missing on the remote" in msg
    assert "a.bundle" not in msg
    assert (src / "b.bundle").read_bytes() == b"beta"  # local copy untouched


def test_unknown_remote_is_a_clear_error(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    with pytest.raises(RemoteError) as exc:
        Rclone(conf).copy_new(tmp_path, "nosuchremote:x", ["rclone.conf"])
    assert str(exc.value).startswith("rclone copy failed (exit 1: syntax, usage or transfer "
                                     "error)")
    assert "nosuchremote" in str(exc.value)
