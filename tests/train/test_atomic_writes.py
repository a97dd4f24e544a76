"""Result files are written atomically and stay readable (attnlab.atomic)."""

import os
import stat

import numpy as np
import pytest

from attnlab import atomic as res


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_text_npz_and_copy_get_plain_open_permissions(tmp_path):
    res.atomic_write_text(tmp_path / "a.json", "{}")
    res.atomic_write_npz(tmp_path / "a.npz", {"x": np.arange(3)})
    res.atomic_copy(tmp_path / "a.npz", tmp_path / "sub" / "b.npz")
    assert res._UMASK == os.umask(res._UMASK)  # the process umask, read at import
    for name in ("a.json", "a.npz", "sub/b.npz"):
        assert _mode(tmp_path / name) == 0o666 & ~res._UMASK, name  # not mkstemp's 0600
    assert (tmp_path / "sub" / "b.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "b.npz")["x"], np.arange(3))
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    res.atomic_write_text(tmp_path / "r.json", "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        res.atomic_write(tmp_path / "r.json", lambda f: f.write(str(Boom())), binary=False)
    assert (tmp_path / "r.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
