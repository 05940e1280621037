"""safefiles.stamps: the file stamp and the racy-stamp rule."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from safefiles.stamps import RACY_WINDOW_NS, Stamp, stamp, trusted


def test_a_stamp_changes_with_a_rewrite_a_replace_and_a_size_change(tmp_path):
    path = tmp_path / "f"
    assert stamp(path) is None
    path.write_text("a")
    first = stamp(path)
    assert first is not None and first.size == 1 and first.ino == path.stat().st_ino
    assert stamp(path) == first
    os.utime(path, ns=(first.mtime_ns + 5_000_000_000, first.mtime_ns + 5_000_000_000))
    assert stamp(path) != first  # same content, new mtime (and ctime)
    other = tmp_path / "g"
    other.write_text("b")
    os.replace(other, path)
    assert stamp(path).ino != first.ino
    path.write_text("abc")
    assert stamp(path).size == 3


def test_a_stamp_equals_the_plain_tuple(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    st_ = os.stat(path)
    assert Stamp.of(st_) == (st_.st_mtime_ns, st_.st_size, st_.st_ino, st_.st_ctime_ns)


def test_a_file_written_just_now_is_not_trusted_an_old_one_is(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    started = time.time_ns()
    assert not trusted(stamp(path), started)
    assert not trusted(os.stat(path), started)
    old = started - 10 * RACY_WINDOW_NS
    os.utime(path, ns=(old, old))
    # ctime is now (utime changes it): still racy, as a rewrite now could be missed
    assert not trusted(stamp(path), started)
    assert trusted(stamp(path), time.time_ns() + RACY_WINDOW_NS + 1_000_000_000)


_ns = st.integers(min_value=0, max_value=2**62)


@given(_ns, _ns, _ns, st.integers(min_value=1, max_value=10**10))
def test_trusted_exactly_when_the_newest_time_is_older_than_the_window(m, c, started, window):
    s = Stamp(m, 0, 1, c)
    assert s.newest_ns == max(m, c)
    assert trusted(s, started, window) == (max(m, c) < started - window)
    # the boundary: exactly one window old is still racy
    assert not trusted(Stamp(started - window, 0, 1, started - window), started, window)
    assert trusted(Stamp(started - window - 1, 0, 1, started - window - 1), started, window)



def test_the_package_exports_its_helpers_in_a_sorted_all():
    import safefiles
    from safefiles import atomic, locks, stamps

    assert safefiles.__all__ == sorted(safefiles.__all__)
    modules = (atomic, locks, stamps)
    for name in safefiles.__all__:
        assert any(getattr(m, name, None) is getattr(safefiles, name) for m in modules), name
    assert set(locks.__all__) | set(stamps.__all__) <= set(safefiles.__all__)
