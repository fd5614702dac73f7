"""Output paths: written through links, and long bad names shortened in errors."""

import pytest

from derive.errors import DeriveError
from derive.files import atomic_write
from derive.formula import check_identifier


def test_a_link_is_written_through(tmp_path):
    target = tmp_path / "shared" / "notes.tex"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "notes.tex"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.tex"]


def test_a_long_bad_name_is_shortened_in_the_error():
    with pytest.raises(DeriveError) as caught:
        check_identifier("a" * 5000 + "-", "network.name")
    assert len(caught.value.message) < 300 and "5001 characters" in caught.value.message
