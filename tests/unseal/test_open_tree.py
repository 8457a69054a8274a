"""A folder copied from a sealed remote, opened file by file (crypt/fetch.open_tree), where
the remote holds a name both plain and sealed: a day sent before encrypt_to was set and
again after. The same content twice restores (the plain copy stands, the ciphertext and
its sidecar are dropped); other content in each is damage, and nothing is decrypted."""

import hashlib

import pytest

from strongroom import crypt
from strongroom.crypt import fetch
from tests.seal.helpers import make_keys


def _sealed_beside(tmp_path, plain_text, sealed_text):
    identity, recipients = make_keys(tmp_path)
    root = tmp_path / "copied"
    (root / "sub").mkdir(parents=True)
    src = tmp_path / "original.txt"
    src.write_text(sealed_text)
    info = crypt.encrypt_file(src, root / "sub" / "notes.txt.age", recipients)
    (root / "sub" / "notes.txt.age.json").write_bytes(
        crypt.sidecar(info, "notes.txt", crypt.check_recipients(recipients)))
    (root / "sub" / "notes.txt").write_text(plain_text)
    return identity, root


def test_the_same_content_plain_and_sealed_restores_as_the_plain_copy(tmp_path):
    identity, root = _sealed_beside(tmp_path, "the notes\n", "the notes\n")
    out = fetch.open_tree(root, identity, "offsite:days/2026-12-01")
    assert out["sealed"] == 1 and out["checked"] == "plaintext"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) \
        == ["sub/notes.txt"]
    assert (root / "sub" / "notes.txt").read_text() == "the notes\n"


def test_other_content_plain_and_sealed_is_damage_and_nothing_is_opened(tmp_path):
    identity, root = _sealed_beside(tmp_path, "an older text\n", "the notes\n")
    before = hashlib.sha256((root / "sub" / "notes.txt").read_bytes()).hexdigest()
    with pytest.raises(crypt.Damaged) as exc:
        fetch.open_tree(root, identity, "offsite:days/2026-12-01")
    assert str(exc.value) == ("offsite:days/2026-12-01/sub/notes.txt is on the remote both "
                              "plain and sealed, with other content in each; nothing was "
                              "restored from it")
    assert hashlib.sha256((root / "sub" / "notes.txt").read_bytes()).hexdigest() == before
    assert (root / "sub" / "notes.txt.age").exists()
