"""The pure merge against a naive reference of the kernel's path lookup (overlayfs.rst), and the rules.

The reference resolves every path component by component through the layer
stack, exactly as ovl_lookup does; the merge flattens bottom-up. Hypothesis
generates layer stacks; both must agree on every path.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forensics.model import Entry, Kind
from forensics.overlay import rules
from forensics.overlay.classify import docker_stat_different, forensic_details
from forensics.overlay.merge import apply_layer, flatten, sort_layer

OPAQUE = (("trusted.overlay.opaque", b"y"),)


def entry(layer: str, path: str, kind: Kind = Kind.FILE, **kw: object) -> Entry:
    defaults: dict[str, object] = {"mode": 0o644, "uid": 0, "gid": 0, "size": 1, "mtime_ns": 0}
    if kind is Kind.CHAR and "rdev_major" not in kw:
        kw = {"rdev_major": 0, "rdev_minor": 0, **kw}
    defaults.update(kw)
    return Entry(layer_id=layer, path=path.encode(), kind=kind, **defaults)  # type: ignore[arg-type]


def whiteout(layer: str, path: str) -> Entry:
    return entry(layer, path, Kind.CHAR, mode=0)


def layer(name: str, *items: tuple[str, Kind] | Entry) -> list[Entry]:
    out = [entry(name, "/", Kind.DIR)]
    for item in items:
        out.append(item if isinstance(item, Entry) else entry(name, item[0], item[1]))
    return sort_layer(out)


def visible(view_entries: dict[bytes, Entry]) -> dict[bytes, str]:
    return {path: e.layer_id for path, e in view_entries.items()}


# -- the reference ---------------------------------------------------------------------


def kernel_lookup(path: bytes, layers: list[dict[bytes, Entry]]) -> Entry | None:
    """ovl_lookup, component by component (layers top first)."""
    stack = [i for i, lay in enumerate(layers) if b"/" in lay]
    if path == b"/":
        return layers[stack[0]][b"/"] if stack else None
    current = b""
    parts = path.split(b"/")[1:]
    winner: Entry | None = None
    roots = stack
    stack = []
    for index in roots:
        stack.append(index)
        if rules.is_opaque(layers[index][b"/"]):
            break
    for depth, part in enumerate(parts):
        current += b"/" + part
        next_stack: list[int] = []
        winner = None
        for index in stack:
            found = layers[index].get(current)
            if found is None:
                continue
            if rules.is_whiteout(found):
                break
            if winner is None:
                winner = found
                if found.kind is not Kind.DIR:
                    break
            elif found.kind is not Kind.DIR:
                break
            next_stack.append(index)
            if rules.is_opaque(found):
                break
        if winner is None:
            return None
        if depth < len(parts) - 1 and winner.kind is not Kind.DIR:
            return None
        stack = next_stack
    return winner


def reference_view(stack: list[list[Entry]]) -> dict[bytes, str]:
    layers = [{e.path: e for e in lay} for lay in stack]
    paths = {e.path for lay in stack for e in lay}
    out = {}
    for path in paths:
        found = kernel_lookup(path, layers)
        if found is not None:
            out[path] = found.layer_id
    return out


# -- generated stacks ----------------------------------------------------------------

NAMES = ("a", "b", "c")


@st.composite
def layer_strategy(draw: st.DrawFn, name: str) -> list[Entry]:
    """A consistent layer tree over a tiny namespace: files, dirs (maybe opaque), symlinks, whiteouts."""
    out = [entry(name, "/", Kind.DIR)]

    def fill(parent: str, depth: int) -> None:
        for child in NAMES:
            choice = draw(st.sampled_from(["none", "none", "file", "dir", "opaque", "whiteout", "symlink"]))
            path = (parent.rstrip("/") + "/" + child) if parent != "/" else "/" + child
            if choice == "file":
                out.append(entry(name, path, Kind.FILE))
            elif choice == "symlink":
                out.append(entry(name, path, Kind.SYMLINK, target=b"x"))
            elif choice == "whiteout":
                out.append(whiteout(name, path))
            elif choice in ("dir", "opaque"):
                xattrs = OPAQUE if choice == "opaque" else ()
                out.append(entry(name, path, Kind.DIR, xattrs=xattrs))
                if depth < 2:
                    fill(path, depth + 1)

    fill("/", 0)
    return sort_layer(out)


@st.composite
def stacks(draw: st.DrawFn) -> list[list[Entry]]:
    count = draw(st.integers(min_value=1, max_value=4))
    return [draw(layer_strategy(f"L{count - i}")) for i in range(count)]  # top first


@settings(max_examples=400, deadline=None)
@given(stacks())
def test_merge_agrees_with_kernel_lookup(stack: list[list[Entry]]) -> None:
    assert visible(flatten(stack).entries) == reference_view(stack)


@settings(max_examples=200, deadline=None)
@given(stacks())
def test_flattening_is_associative(stack: list[list[Entry]]) -> None:
    """Sharing an image's view between containers is only right if (A over B) over C == A over (B over C)."""
    whole = flatten(stack)
    lower = flatten(stack[1:])
    view, _, _ = apply_layer(lower, stack[0])
    assert visible(view.entries) == visible(whole.entries)


@settings(max_examples=200, deadline=None)
@given(stacks())
def test_children_index_matches_entries(stack: list[list[Entry]]) -> None:
    view = flatten(stack)
    walked = {e.path for e in view.walk()}
    assert walked == set(view.entries)


# -- the rules and merge cases, named after the rule they check ----------------------------


def test_r1_whiteout_is_char_0_0() -> None:
    assert rules.is_whiteout(whiteout("L", "/x"))
    assert not rules.is_whiteout(entry("L", "/x", Kind.CHAR, rdev_major=1, rdev_minor=3))
    assert not rules.is_whiteout(entry("L", "/.wh.x", Kind.FILE))


def test_r2_opaque_trusted_and_user() -> None:
    assert rules.is_opaque(entry("L", "/d", Kind.DIR, xattrs=OPAQUE))
    assert rules.is_opaque(entry("L", "/d", Kind.DIR, xattrs=(("user.overlay.opaque", b"y"),)))
    assert not rules.is_opaque(entry("L", "/d", Kind.DIR, xattrs=(("trusted.overlay.opaque", b"n"),)))
    assert not rules.is_opaque(entry("L", "/f", Kind.FILE, xattrs=OPAQUE))


def test_m1_non_directory_hides_everything_below() -> None:
    top = layer("top", ("/a", Kind.DIR), ("/a/x", Kind.FILE))
    mid = layer("mid", ("/a", Kind.FILE))
    bottom = layer("bottom", ("/a", Kind.DIR), ("/a/y", Kind.FILE))
    view = flatten([top, mid, bottom])
    assert visible(view.entries) == {b"/": "top", b"/a": "top", b"/a/x": "top"}


def test_m3_whiteout_acts_only_below_its_layer() -> None:
    top = layer("top", ("/d", Kind.DIR), ("/d/new", Kind.FILE))
    mid = layer("mid", whiteout("mid", "/d"))
    bottom = layer("bottom", ("/d", Kind.DIR), ("/d/old", Kind.FILE))
    assert visible(flatten([top, mid, bottom]).entries) == {b"/": "top", b"/d": "top", b"/d/new": "top"}


def test_m3_opaque_dir_hides_lower_children() -> None:
    top = layer("top", entry("top", "/d", Kind.DIR, xattrs=OPAQUE), ("/d/fresh", Kind.FILE))
    bottom = layer("bottom", ("/d", Kind.DIR), ("/d/old", Kind.FILE), ("/d/fresh", Kind.FILE))
    view, removals, _ = apply_layer(flatten([bottom]), top)
    assert visible(view.entries) == {b"/": "top", b"/d": "top", b"/d/fresh": "top"}
    assert [(r.path, r.via, r.cause) for r in removals] == [(b"/d/old", b"/d", "opaque")]


def test_m3_whiteout_of_nothing_is_reported() -> None:
    _, removals, orphans = apply_layer(flatten([layer("b")]), layer("t", whiteout("t", "/ghost")))
    assert removals == [] and orphans == [b"/ghost"]


def test_m4_redirect_continues_from_old_path() -> None:
    top = layer("top", entry("top", "/new", Kind.DIR, xattrs=(("trusted.overlay.redirect", b"/old"),)))
    top = sort_layer([*top, whiteout("top", "/old")])
    bottom = layer("bottom", ("/old", Kind.DIR), ("/old/f", Kind.FILE))
    view = flatten([top, bottom])
    assert visible(view.entries) == {b"/": "top", b"/new": "top", b"/new/f": "bottom"}


def test_m4_relative_redirect() -> None:
    top = layer(
        "top",
        ("/p", Kind.DIR),
        entry("top", "/p/new", Kind.DIR, xattrs=(("trusted.overlay.redirect", b"old"),)),
    )
    bottom = layer("bottom", ("/p", Kind.DIR), ("/p/old", Kind.DIR), ("/p/old/f", Kind.FILE))
    assert b"/p/new/f" in flatten([top, bottom]).entries


def test_m5_metacopy_takes_data_from_lower() -> None:
    top = layer(
        "top", entry("top", "/f", Kind.FILE, mode=0o600, size=0, xattrs=(("trusted.overlay.metacopy", b""),))
    )
    bottom = layer("bottom", entry("bottom", "/f", Kind.FILE, size=42, blake3="ab" * 32))
    merged = flatten([top, bottom]).entries[b"/f"]
    assert (merged.mode, merged.size, merged.blake3, merged.layer_id) == (0o600, 42, "ab" * 32, "top")
    assert merged.xattrs == ()


def test_m6_private_xattrs_not_in_merged_view() -> None:
    top = layer(
        "top", entry("top", "/f", Kind.FILE, xattrs=(("trusted.overlay.origin", b"\x00"), ("user.k", b"v")))
    )
    assert flatten([top]).entries[b"/f"].xattrs == (("user.k", b"v"),)


def test_literal_wh_file_is_a_file() -> None:
    top = layer("top", ("/.wh.evil", Kind.FILE))
    bottom = layer("bottom", ("/evil", Kind.FILE))
    assert set(flatten([top, bottom]).entries) == {b"/", b"/.wh.evil", b"/evil"}


# -- classification -----------------------------------------------------------------------


def test_forensic_content_by_hash_not_size_or_mtime() -> None:
    old = entry("l", "/f", size=5, blake3="aa" * 32, mtime_ns=7)
    new = entry("u", "/f", size=5, blake3="bb" * 32, mtime_ns=7)
    assert forensic_details(old, new) == ["content"]
    assert not docker_stat_different(old, new)  # docker diff cannot see it (corpus README, surprise 1)


def test_docker_directory_exception_moby_9874() -> None:
    old = entry("l", "/d", Kind.DIR, mtime_ns=1)
    new = entry("u", "/d", Kind.DIR, mtime_ns=2)
    assert not docker_stat_different(old, new)
    assert docker_stat_different(
        entry("l", "/b", Kind.FILE, mtime_ns=1), entry("u", "/b", Kind.FILE, mtime_ns=2)
    )


def test_docker_same_fs_time_tolerates_truncated_ns() -> None:
    old = entry("l", "/f", mtime_ns=5_000_000_000)
    assert not docker_stat_different(old, entry("u", "/f", mtime_ns=5_123_456_789))
    assert docker_stat_different(
        entry("l", "/f", mtime_ns=5_000_000_001), entry("u", "/f", mtime_ns=5_123_456_789)
    )


def test_docker_capability_compared_other_xattrs_not() -> None:
    old = entry("l", "/f")
    assert docker_stat_different(old, entry("u", "/f", xattrs=(("security.capability", b"\x01"),)))
    assert not docker_stat_different(old, entry("u", "/f", xattrs=(("user.note", b"x"),)))
