"""retrainer.services.validation: the limits every entry shares, checked field by field and on whole payloads."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from retrainer import clock
from retrainer.services import validation
from retrainer.services.errors import InvalidEvent

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def nested(depth: int) -> dict[str, Any]:
    leaf: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        leaf = {"a": leaf}
    return leaf


# --- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (0.5, 0.5), (0, 0.0), (-0.0, -0.0), (1e15, 1e15), (-1e15, -1e15), (10**15, 1e15), (5e-324, 5e-324),
])
def test_numbers_in_range(value: Any, expected: float) -> None:
    assert validation.number(value, "value") == expected
    assert isinstance(validation.number(value, "value"), float)


def test_integers_stay_integers_where_asked() -> None:
    assert validation.number(10**15, "f", keep_int=True) == 10**15
    assert type(validation.number(7, "f", keep_int=True)) is int


@pytest.mark.parametrize("value,problem", [
    (math.nan, "nan is not a finite number"),
    (math.inf, "inf is not a finite number"),
    (-math.inf, "-inf is not a finite number"),
    (1.7e308, "1.7e+308 is outside ±1e15"),
    (1e15 * (1 + 1e-15), "1000000000000001.1 is outside ±1e15"),
    (10**15 + 1, "integer outside ±1e15"),
    (10**400, "integer outside ±1e15"),
    (-(10**4000), "integer outside ±1e15"),
    (True, "expected a number, got a boolean"),
    (False, "expected a number, got a boolean"),
    ("0.5", "expected a number, got string"),
    (None, "expected a number, got null"),
    ([1], "expected a number, got array"),
])
def test_numbers_refused(value: Any, problem: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validation.number(value, "value")
    assert str(info.value) == f"value: {problem}"


# --- text ------------------------------------------------------------------------------------------

def test_text_accepts_unicode_up_to_the_limit() -> None:
    assert validation.text("é😀" * 32, "name", 64) == "é😀" * 32
    assert validation.text("", "v", 10, min_chars=0) == ""


@pytest.mark.parametrize("value,problem", [
    ("a\x00b", "contains a NUL character"),
    ("a\ud800b", "contains a lone surrogate"),
    ("\udfff", "contains a lone surrogate"),
    ("x" * 11, "11 characters; at most 10"),
    ("", "empty"),
    (5, "expected a string, got integer"),
    (b"ctr", "expected a string, got bytes"),
])
def test_text_refused(value: Any, problem: str) -> None:
    with pytest.raises(InvalidEvent, match=f"^model: {problem}"):
        validation.text(value, "model", 10)


# --- timestamps ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("2024-05-31T10:00:00+00:00", datetime(2024, 5, 31, 10, tzinfo=UTC)),
    ("2024-05-31T10:00:00Z", datetime(2024, 5, 31, 10, tzinfo=UTC)),
    ("2024-05-31T15:30:00+05:30", datetime(2024, 5, 31, 10, tzinfo=UTC)),
    ("2024-05-31T10:00:00", datetime(2024, 5, 31, 10, tzinfo=UTC)),  # naive = UTC
    ("2024-05-31", datetime(2024, 5, 31, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", validation.EARLIEST),
    ("2024-06-02T12:00:00Z", NOW + timedelta(days=1)),  # the clock-skew allowance, exactly
    (datetime(2024, 5, 31, 12, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 5, 31, 10, tzinfo=UTC)),
])
def test_timestamps_in_the_window(value: Any, expected: datetime) -> None:
    with clock.frozen(NOW):
        at = validation.moment(value, "occurred_at")
    assert at == expected and at.tzinfo == UTC


@pytest.mark.parametrize("value,problem", [
    ("9999-12-31T23:00:00-05:00", "is outside 1970-01-01 .. now + 1 day"),  # after year 10,000 in UTC
    ("0001-01-01T00:00:00+05:00", "is outside"),  # before year 1 in UTC
    ("1969-12-31T23:59:59Z", "is outside"),
    ("2024-06-02T12:00:01Z", "is outside"),
    ("yesterday", "is not an ISO-8601 timestamp"),
    ("2024-02-30", "is not an ISO-8601 timestamp"),
    ("2024-01-01T00:00:00\x00", "contains a NUL character"),  # fromisoformat alone would take it
    ("9" * 65, "65 characters; at most 64"),
    (1717000000, "expected an ISO-8601 timestamp, got integer"),
])
def test_timestamps_refused(value: Any, problem: str) -> None:
    with clock.frozen(NOW), pytest.raises(InvalidEvent) as info:
        validation.moment(value, "occurred_at")
    assert str(info.value).startswith("occurred_at: ") and problem in str(info.value)
    assert "\x00" not in str(info.value)


# --- features --------------------------------------------------------------------------------------

def test_features_keep_numbers_booleans_and_short_strings() -> None:
    features = {"hook_strength": 0.7, "views": 12, "hook_type": "question", "note": "", "trial": True, "paid": False}
    out = validation.features(features)
    assert out == features and out["trial"] is True and out["paid"] is False  # a boolean stays a boolean


def test_features_may_be_empty_for_a_family_that_reads_only_the_time() -> None:
    assert validation.features({}) == {}  # whether the family needs features: events.store, knowing the model


@pytest.mark.parametrize("features,problem", [
    ([("a", 1)], "features: expected an object"),
    ({"x": None}, "features.x: expected a number, boolean or string, got null"),
    ({"x": {"y": 1}}, "features.x: expected a number, boolean or string, got object"),
    ({"x": math.nan}, "features.x: nan is not a finite number"),
    ({"x": 10**400}, "features.x: integer outside ±1e15"),
    ({"x": "y" * 257}, "features.x: 257 characters; at most 256"),
    ({"x": "a\x00"}, "features.x: contains a NUL character"),
    ({"a\x00": 1}, "features: name 'a\\x00': contains a NUL character"),
    ({"a\ud800": 1}, "features: name 'a\\ud800': contains a lone surrogate"),
    ({"": 1}, "features: name '': empty"),
    ({3: 1}, "features: name 3: expected a string, got integer"),
    ({f"f{i}": 1 for i in range(501)}, "features: 501 features; at most 500"),
])
def test_features_refused(features: Any, problem: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validation.features(features)
    assert str(info.value).startswith(problem)


def test_a_feature_name_that_is_not_printable_is_quoted_in_the_message() -> None:
    with pytest.raises(InvalidEvent, match=r"^features\.'a\\nb': nan is not a finite number$"):
        validation.features({"a\nb": math.nan})


# --- whole payloads: depth and size before anything recursive ----------------------------------------

def test_decode_accepts_dict_text_and_bytes() -> None:
    event = {"type": "purchase", "features": {"a": 1}}
    assert validation.decode(event) is event
    assert validation.decode(json.dumps(event)) == event
    assert validation.decode(json.dumps(event).encode()) == event
    assert validation.decode(bytearray(json.dumps(event).encode())) == event


@pytest.mark.parametrize("depth", [3, 50, 475, sys.getrecursionlimit() * 3, 100_000])
def test_decode_refuses_deep_objects_without_recursing(depth: int) -> None:
    with pytest.raises(InvalidEvent, match=r"^features\.a: nested deeper than 2 levels"):  # names the place
        validation.decode({"type": "purchase", "features": nested(depth - 1)})


@pytest.mark.parametrize("text", [
    "[[[1]]]", '{"a": {"b": {"c": 1}}}', "[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000,
    "[" * 60_000,  # not even JSON
])
def test_decode_refuses_deep_text_before_json_loads(text: str) -> None:
    with pytest.raises(InvalidEvent, match="^event: nested deeper than 2 levels"):
        validation.decode(text)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"type": "purchase", "features": {"note": "[[[{{{ \\\" ]]]"}})
    assert validation.decode(text)["features"]["note"] == '[[[{{{ \\" ]]]'


def test_decode_refuses_a_cycle() -> None:
    event: dict[str, Any] = {"type": "purchase"}
    event["features"] = event
    with pytest.raises(InvalidEvent, match="nested deeper"):
        validation.decode(event)


def test_size_limit_in_bytes_for_objects_text_and_bytes() -> None:
    def event(note: str) -> dict[str, Any]:
        return {"type": "purchase", "features": {"note": note}}

    overhead = len(json.dumps(event(""), separators=(",", ":")))
    exact = event("x" * (validation.MAX_EVENT_BYTES - overhead))
    assert validation.decode(exact) is exact  # exactly 64 KiB as compact JSON
    for too_big in (event("x" * (validation.MAX_EVENT_BYTES - overhead + 1)),
                    event("é" * (validation.MAX_EVENT_BYTES // 2)),  # two bytes a character
                    event("\x01" * (validation.MAX_EVENT_BYTES // 5)),  # six bytes each once escaped
                    json.dumps(event("é" * 40_000), ensure_ascii=False),
                    json.dumps(event("é" * 40_000), ensure_ascii=False).encode(),
                    {f"k{i}": 0 for i in range(1_000_000)}):
        with pytest.raises(InvalidEvent, match="^event: larger than the limit of 65536 bytes"):
            validation.decode(too_big)


@pytest.mark.parametrize("payload,problem", [
    (b"\xff{}", "event: not valid UTF-8 (byte 0)"),
    ("{not json", "event: not valid JSON"),
    ('{"value": ' + "9" * 5000 + "}", "event: not valid JSON (Exceeds the limit (4300 digits)"),
    ("[1, 2]", "event: expected a JSON object, got array"),
    ("null", "event: expected a JSON object, got null"),
    (42, "event: expected a JSON object, got integer"),
    (None, "event: expected a JSON object, got null"),
])
def test_decode_refuses_what_is_not_an_object(payload: Any, problem: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validation.decode(payload)
    assert str(info.value).startswith(problem)


# --- what a rejection keeps ------------------------------------------------------------------------

def test_storable_escapes_nul_and_lone_surrogates_only() -> None:
    assert validation.storable("a\x00b\ud800c é😀") == "a\\x00b\\ud800c é😀"
    validation.storable("a\x00\udfff").encode("utf-8")  # encodable now


@pytest.mark.parametrize("payload", [
    nested(100_000), [[[[1]]]] * 100_000, {f"k{i}": "v" * 1000 for i in range(10_000)}, "x" * 10**6,
    b"\xff" * 10**6, {"v": 10**5000, "t": datetime(2024, 1, 1), "o": object(), "s": {1, 2}, (1, 2): None},
])
def test_preview_is_bounded_and_storable_for_anything(payload: Any) -> None:
    text = validation.preview(payload)
    assert 0 < len(text) <= validation.PREVIEW_CHARS
    assert "\x00" not in text
    text.encode("utf-8")


def test_preview_reads_like_json() -> None:
    assert validation.preview({"a": [1, 2.5, None, True], "b": "x\x00"}) == '{"a": [1, 2.5, null, true], "b": "x\\u0000"}'
    assert validation.preview("{broken") == "{broken"
