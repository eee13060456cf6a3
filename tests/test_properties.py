"""Property tests: `bdn.ranges` keeps to RFC 9110 §14 as documented; `bdn.paths` yields safe keys or BadRequest.

Range headers are generated from the RFC grammar (plus the leniencies the module documents:
any case of the unit, whitespace around the tokens) and checked against the exact expected
result; arbitrary text never raises anything but `Unsatisfiable`. Request targets are built
from arbitrary bytes, percent-encoded at random, and from arbitrary strings (including the
lone surrogates aiohttp produces for non-UTF-8 bytes). The object info another node sends on
`/_peer/` is accepted only when every string can become a header, and a GCS name always makes one
URL path segment. Examples are derandomized: CI runs the same ones every time.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import pytest
import yarl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bdn.errors import BadRequest
from bdn.front.paths import MAX_PATH_BYTES, object_key, segments, split_target
from bdn.front.ranges import ByteRange, Unsatisfiable, if_range_allows, parse
from bdn.objects import MAX_SIZE, ObjectInfo, checked_info, checked_key
from bdn.sources.gcs import _segment

modest = settings(max_examples=150, deadline=None, derandomize=True)  # a few seconds; the same examples in CI

CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")
sizes = st.integers(0, 10**12) | st.integers(0, 4096)
positions = st.integers(0, 10**12) | st.integers(0, 4096)


def near(size: int) -> st.SearchStrategy[int]:
    """A position anywhere, or right around `size` where the boundaries are."""
    return positions | st.integers(max(0, size - 2), size + 2)

ows = st.text(" \t", max_size=3)
unit = st.sampled_from(["bytes", "BYTES", "Bytes", "bYtEs"])


@st.composite
def digits(draw: st.DrawFn, value: int) -> str:
    """`value` in 1*DIGIT, with up to 3 leading zeros (still at most 19 digits, the module's limit)."""
    text = str(value)
    zeros = draw(st.integers(0, min(3, 19 - len(text))))
    return "0" * zeros + text


@st.composite
def range_header(draw: st.DrawFn, first: str, last: str) -> str:
    """`bytes=first-last` with random unit case and whitespace where the module tolerates it."""
    pad = [draw(ows) for _ in range(6)]
    return f"{pad[0]}{draw(unit)}{pad[1]}={pad[2]}{first}{pad[3]}-{pad[4]}{last}{pad[5]}"


def selected(header: str, size: int) -> ByteRange | type[Unsatisfiable] | None:
    """`parse`'s answer, with `Unsatisfiable` as a value so properties can compare it."""
    try:
        return parse(header, size)
    except Unsatisfiable:
        return Unsatisfiable


# --- Range: valid range-specs (RFC 9110 §14.1.1) ----------------------------------------------------------


@modest
@given(st.data(), sizes)
def test_int_range_is_exact_and_clamped(data: st.DataObject, size: int) -> None:
    first, last = sorted((data.draw(near(size)), data.draw(near(size))))
    header = data.draw(range_header(data.draw(digits(first)), data.draw(digits(last))))
    expected = ByteRange(first, min(last + 1, size)) if first < size else Unsatisfiable
    assert selected(header, size) == expected


@modest
@given(st.data(), sizes)
def test_open_ended_range_runs_to_the_end(data: st.DataObject, size: int) -> None:
    first = data.draw(near(size))
    header = data.draw(range_header(data.draw(digits(first)), ""))
    assert selected(header, size) == (ByteRange(first, size) if first < size else Unsatisfiable)


@modest
@given(st.data(), sizes)
def test_suffix_range_selects_the_last_bytes(data: st.DataObject, size: int) -> None:
    suffix = data.draw(near(size))
    header = data.draw(range_header("", data.draw(digits(suffix))))
    if suffix == 0:
        expected: object = Unsatisfiable  # a zero suffix-length is never satisfiable
    elif size == 0:
        expected = None  # satisfiable but not expressible in Content-Range: the empty body with 200
    else:
        expected = ByteRange(max(0, size - suffix), size)
    assert selected(header, size) == expected


@modest
@given(st.data(), sizes, positions, st.integers(1, 10**12))
def test_last_before_first_is_invalid_and_ignored(data: st.DataObject, size: int, last: int, gap: int) -> None:
    header = data.draw(range_header(data.draw(digits(last + gap)), data.draw(digits(last))))
    assert selected(header, size) is None


@modest
@given(sizes)
def test_no_header_and_empty_spec_are_ignored(size: int) -> None:
    assert parse(None, size) is None
    assert parse("bytes=-", size) is None
    assert parse("bytes=", size) is None


# --- Range: what is ignored (§14.2) ------------------------------------------------------------------------


@modest
@given(sizes, st.lists(st.tuples(positions, positions).map(sorted), min_size=2, max_size=4))
def test_multi_range_sets_are_ignored(size: int, pairs: list[list[int]]) -> None:
    assert parse("bytes=" + ", ".join(f"{a}-{b}" for a, b in pairs), size) is None


@modest
@given(sizes, st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).filter(lambda u: u.lower() != "bytes"))
def test_other_units_are_ignored(size: int, other: str) -> None:
    assert parse(f"{other}=0-1", size) is None


@modest
@given(sizes, st.sampled_from(["\u0663", "\uff11", "\u09e7", "\U0001d7d9"]), st.booleans())
def test_only_ascii_digits_are_digits(size: int, digit: str, suffix: bool) -> None:
    """DIGIT is %x30-39 (RFC 5234): Arabic-Indic, fullwidth or other Unicode digits make the header invalid."""
    assert parse(f"bytes=-{digit}" if suffix else f"bytes={digit}-", size) is None


@modest
@given(sizes, st.integers(20, 40), st.booleans())
def test_numbers_beyond_any_offset_are_ignored(size: int, width: int, suffix: bool) -> None:
    """More than 19 digits: ignored (§14.2 lets a server ignore Range), never `int()` of a huge string."""
    huge = "9" * width
    assert parse(f"bytes=-{huge}" if suffix else f"bytes=0-{huge}", size) is None
    assert parse(f"bytes={huge}-", size) is None


@modest
@given(st.text(max_size=60) | st.from_regex(r"\A\s*[Bb][Yy][Tt][Ee][Ss]\s*=[\s0-9,\-]{0,30}\Z"), sizes)
def test_arbitrary_text_never_raises_anything_else(header: str, size: int) -> None:
    try:
        result = parse(header, size)
    except Unsatisfiable:
        return
    assert result is None or 0 <= result.start < result.end <= size


# --- Content-Range ---------------------------------------------------------------------------------------


@modest
@given(st.data(), st.integers(1, 10**12))
def test_content_range_describes_the_selection_and_round_trips(data: st.DataObject, size: int) -> None:
    start = data.draw(st.integers(0, size - 1))
    byte_range = ByteRange(start, data.draw(st.integers(start + 1, size)))
    match = CONTENT_RANGE.fullmatch(byte_range.content_range(size))
    assert match is not None
    first, last, complete = (int(group) for group in match.groups())
    assert (first, last + 1, complete) == (byte_range.start, byte_range.end, size)
    assert last - first + 1 == byte_range.length
    assert parse(f"bytes={first}-{last}", size) == byte_range


# --- If-Range (§13.1.5) ----------------------------------------------------------------------------------

opaque = st.text(st.characters(min_codepoint=0x23, max_codepoint=0x7E), max_size=12)
etags = opaque.map(lambda tag: f'"{tag}"')
dates = st.sampled_from(["Wed, 01 Jan 2025 00:00:00 GMT", "Thu, 02 Jan 2025 10:11:12 GMT"])


@modest
@given(etags, st.none() | dates)
def test_if_range_matches_only_the_same_strong_etag(etag: str, last_modified: str | None) -> None:
    assert if_range_allows(None, etag, last_modified)
    assert if_range_allows(etag, etag, last_modified)
    assert if_range_allows(f" {etag}\t", etag, last_modified)
    assert not if_range_allows(f"W/{etag}", etag, last_modified)
    assert not if_range_allows(f"W/{etag}", f"W/{etag}", last_modified), "a weak validator never matches"
    assert not if_range_allows(etag[:-1] + 'x"', etag, last_modified)


@modest
@given(etags, dates, dates)
def test_if_range_date_must_equal_last_modified(etag: str, if_range: str, last_modified: str) -> None:
    assert if_range_allows(if_range, etag, last_modified) == (if_range == last_modified)
    assert not if_range_allows(if_range, etag, None)


@modest
@given(st.text(max_size=40), st.text(max_size=20), st.none() | st.text(max_size=30))
def test_if_range_never_raises(if_range: str, etag: str, last_modified: str | None) -> None:
    assert isinstance(if_range_allows(if_range, etag, last_modified), bool)


# --- Paths -------------------------------------------------------------------------------------------------

escaped_bytes = st.characters(categories=["Cs"], min_codepoint=0xDC80, max_codepoint=0xDCFF)  # surrogateescape
raw_text = st.text(st.characters() | escaped_bytes, max_size=40) | st.text("/.%2eE0fF\\?#", max_size=40)
quote_safe = st.sampled_from(["", "/", "/:@!$&'()*+,;="])


def is_safe(key: str) -> bool:
    return "\0" not in key and not key.startswith("/") and ".." not in key.split("/")


def assert_safe(key: str) -> None:
    key.encode("utf-8")  # raises on a lone surrogate: the key is valid UTF-8
    assert is_safe(key), key


@st.composite
def percent_encoded(draw: st.DrawFn) -> tuple[bytes, str]:
    """Arbitrary bytes, and a raw path that encodes them with each printable ASCII byte escaped or not at random."""
    raw = draw(st.binary(max_size=40)
               | st.lists(st.sampled_from([b".", b"/", b"..", b"\0", b"a", b"%", b"\xc3\xa9", b"\xff"]),
                          max_size=10).map(b"".join))
    hex_format = draw(st.sampled_from(["%{:02X}", "%{:02x}"]))
    escape = draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw)))
    return raw, "".join(hex_format.format(byte) if forced or not 0x20 < byte < 0x7F or byte == 0x25 else chr(byte)
                        for byte, forced in zip(raw, escape, strict=True))


@modest
@given(percent_encoded())
@example((b"a/../b", "a/%2e%2E/b"))
def test_object_key_is_the_decoded_key_iff_it_is_safe(encoded: tuple[bytes, str]) -> None:
    raw, target = encoded
    try:
        expected: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    if expected is None or not is_safe(expected):
        with pytest.raises(BadRequest):
            object_key(target)
    else:
        assert object_key(target) == expected


@modest
@given(raw_text)
@example("\udcff")  # aiohttp decodes a raw non-UTF-8 byte of the request line as a lone surrogate
def test_object_key_of_any_text_is_safe_or_bad_request(raw: str) -> None:
    try:
        key = object_key(raw)
    except BadRequest:
        return
    assert_safe(key)


@modest
@given(st.text(st.characters(codec="utf-8"), max_size=30).filter(is_safe), quote_safe)
def test_safe_keys_round_trip(key: str, safe: str) -> None:
    assert object_key(quote(key, safe=safe)) == key
    assert checked_key(key) == key


@modest
@given(raw_text, raw_text)
@example("/s\udcff/key", "")
@example("//etc/passwd", "")
@example("http://evil/x", "")
@example("//?", "")
def test_split_target_of_any_text_is_a_decoded_source_or_bad_request(path: str, query: str) -> None:
    target = f"{path}?{query}"
    try:
        source, rest = split_target(target)
    except BadRequest:
        return
    source.encode("utf-8")
    raw_path = target.split("?", 1)[0].split("#", 1)[0]
    assert raw_path.startswith("/") and len(raw_path) <= MAX_PATH_BYTES
    assert rest == raw_path[1:].partition("/")[2]


@modest
@given(st.text(st.characters(codec="utf-8"), max_size=12), st.text(st.characters(codec="utf-8"), max_size=30))
def test_split_target_round_trips_and_ignores_query_and_fragment(source: str, rest: str) -> None:
    raw_rest = quote(rest, safe="/")
    assert split_target(f"/{quote(source, safe='')}/{raw_rest}?x=1&x=%ff#f") == (source, raw_rest)


@modest
@given(st.integers(0, 64))
def test_split_target_limits_the_path_not_the_query(extra: int) -> None:
    path = "/s3/" + "a" * (MAX_PATH_BYTES - 4 + extra)
    if extra:
        with pytest.raises(BadRequest):
            split_target(path)
    else:
        assert split_target(path + "?" + "q" * 10 * MAX_PATH_BYTES) == ("s3", path[4:])


@modest
@given(raw_text)
@example("refs%2Fpr%2F1/a")
@example("x/.%2e/y")
def test_segments_are_safe_or_bad_request(raw: str) -> None:
    try:
        parts = segments(raw)
    except BadRequest:
        return
    assert len(parts) == raw.count("/") + 1
    for part in parts:
        part.encode("utf-8")
        assert "\0" not in part and ".." not in part.split("/"), part


# --- What another node names: X-Bdn-Object's object info (bdn.objects.checked_info) -----------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | raw_text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
INFO_FIELDS = ("size", "etag", "last_modified", "version_id", "content_type", "digest", "attributes")
header_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=30)


@modest
@given(st.fixed_dictionaries({"size": st.integers(0, 2**63 - 1) | json_values, "etag": header_text | json_values},
                             optional={name: json_values | header_text for name in INFO_FIELDS[2:]}))
@example({"size": 3000, "etag": '"x"', "last_modified": "Wed, 01 Jan 2025 00:00:00 GMT\r\nX-Injected: 1"})
@example({"size": "3000", "etag": '"x"'})
@example({"size": True, "etag": '"x"'})
def test_a_peers_object_info_is_checked_or_bad_request(fields: dict[str, Any]) -> None:
    """Whatever JSON a peer sends as info, `checked_info` accepts it only when every string can become a header."""
    info = ObjectInfo(**fields)
    try:
        checked = checked_info(info)
    except BadRequest:
        return
    assert type(checked.size) is int and 0 <= checked.size <= MAX_SIZE
    for name in INFO_FIELDS[1:6]:
        value = getattr(checked, name)
        if value is None:
            assert name != "etag"
            continue
        assert isinstance(value, str) and not re.search(r"[\x00-\x1f\x7f]", value), (name, value)
        value.encode("utf-8")  # raises on a lone surrogate
    assert checked.attributes is None or isinstance(checked.attributes, dict)


@modest
@given(st.integers(0, 2**63 - 1), header_text, st.none() | header_text, st.none() | header_text)
def test_what_a_source_reports_passes_the_peer_check(size: int, etag: str, last_modified: str | None,
                                                    version_id: str | None) -> None:
    info = ObjectInfo(size, etag, last_modified, version_id, "application/octet-stream", "md5:00", {"a": 1})
    assert checked_info(info) == info


# --- GCS names as URL path segments (bdn.sources.gcs._segment) --------------------------------------------


@modest
@given(st.text(st.characters(codec="utf-8"), max_size=30) | st.text("./%2eE", max_size=8))
@example("a/./b")
@example("%2E")
def test_a_gcs_name_is_one_url_segment_that_decodes_to_it(name: str) -> None:
    if name in (".", ".."):
        with pytest.raises(BadRequest):
            _segment(name)
        return
    url = yarl.URL(f"http://gcs.test/storage/v1/b/bkt/o/{_segment(name)}")  # as aiohttp's client builds it
    assert url.raw_path.count("/") == 6, url
    assert unquote(url.raw_path.rsplit("/", 1)[1]) == name
