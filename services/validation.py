"""What a valid event is, field by field: the limits and checks every entry shares (the per-event task,
the batch path, the CLI, predictions logged in-process, later the HTTP API).

Limits, and why:

- MAX_EVENT_BYTES (64 KiB): an event as UTF-8 JSON (as received when it arrives as text, in compact
  form when it arrives as an object). One event is one row, never a file.
- MAX_DEPTH (2): an event nests at most event -> features -> scalar. Depth and size are checked
  iteratively BEFORE anything recursive (json, pickle) touches the payload, so no input can raise
  RecursionError in a producer or a worker.
- MAX_ABS (1e15): every number is finite with |x| <= 1e15; an integer beyond it is refused, never
  rounded. Every integer in range is exact as a float64 (< 2**53), and the squared errors of a
  10,000-row holdout (<= 1e34) stay far below float64's 1.8e308, so training metrics stay finite
  and PostgreSQL (float8, JSONB) stores them. 1.7e308 made every later retrain fail.
- Timestamps: ISO-8601 (naive = UTC), from 1970-01-01 to now + 1 day (clock skew). Year 10,000 in
  UTC cannot be read back into a Python datetime.
- Text (model, ids, feature names, string feature values): no NUL (PostgreSQL text and JSONB refuse
  it) and no lone surrogate (not encodable as UTF-8); lengths fit their columns.
- MAX_FEATURES (500): one training row's width, far beyond any model here.

Booleans are not numbers here, and a numeric string is not a number: both are refused where a
number is expected (a label, a value). A boolean feature is a feature of type boolean. Every error
is an InvalidEvent (a ValueError) whose one-line message names the field and the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from retrainer import clock
from retrainer.services.errors import InvalidEvent

MAX_EVENT_BYTES = 64 * 1024
MAX_DEPTH = 2
MAX_ABS = 1e15
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)
MAX_FEATURES = 500
MAX_MODEL_CHARS = 100  # the model columns
MAX_ID_CHARS = 64  # event_id, prediction_id columns
MAX_NAME_CHARS = 64  # a feature name
MAX_TEXT_CHARS = 256  # a string feature value (a category)
MAX_TIMESTAMP_CHARS = 64
PREVIEW_CHARS = 2000  # what a rejection keeps of its payload

_CONTAINERS = (dict, list, tuple)
_INT_LIMIT = int(MAX_ABS)
_RANGE = f"±{MAX_ABS:.0e}".replace("e+", "e")  # ±1e15
_KINDS = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean", type(None): "null",
          int: "integer", float: "number", bytes: "bytes"}
# A JSON string (escapes included) and, once strings are gone, anything but a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


# --- the whole payload: decoding, depth, size ------------------------------------------------------

def decode(payload: Any) -> dict[Any, Any]:
    """The event as a dict, whatever arrived (dict, JSON text, UTF-8 bytes): size and depth checked
    before json.loads, so a deep or huge payload is an InvalidEvent, never a RecursionError."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        if len(payload) > MAX_EVENT_BYTES:
            raise _too_big()
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"event: not valid UTF-8 (byte {exc.start})") from None
    if isinstance(payload, str):
        if len(payload) > MAX_EVENT_BYTES or utf8_size(payload) > MAX_EVENT_BYTES:
            raise _too_big()
        if _text_too_deep(payload):
            raise _too_deep()
        try:
            payload = json.loads(payload)
        except ValueError as exc:  # also an integer of more than 4,300 digits
            raise InvalidEvent(f"event: not valid JSON ({str(exc).split(';')[0][:120]})") from None
    elif _json_size(payload) > MAX_EVENT_BYTES:  # JSON text was measured as received
        raise _too_big()
    if not isinstance(payload, dict):
        raise InvalidEvent(f"event: expected a JSON object, got {kind(payload)}")
    return payload


def _too_big() -> InvalidEvent:
    return InvalidEvent(f"event: larger than the limit of {MAX_EVENT_BYTES} bytes (as UTF-8 JSON)")


def _too_deep(where: str = "event") -> InvalidEvent:
    return InvalidEvent(f"{where}: nested deeper than {MAX_DEPTH} levels (event -> features -> value)")


def _text_too_deep(text: str) -> bool:
    # Brackets inside strings count too, so a text with at most MAX_DEPTH openers is surely shallow
    # (every valid event); otherwise drop the strings and measure.
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        return False
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _json_size(payload: Any) -> int:
    """The payload's size as compact UTF-8 JSON, walked iteratively; InvalidEvent once deeper than
    MAX_DEPTH. A cheap upper bound first (every event passes on it); exact only when that is over."""
    bound = _walk(payload, _size_at_most)
    return bound if bound <= MAX_EVENT_BYTES else _walk(payload, _exact_size)


def _walk(payload: Any, scalar_size: Callable[[Any], int]) -> int:
    # Stops once past MAX_EVENT_BYTES, and a container's separators are counted before its items are
    # looked at: a huge or self-containing object costs little.
    size = 0
    stack: list[tuple[Any, int, str]] = [(payload, 0, "event")]
    while stack and size <= MAX_EVENT_BYTES:
        item, depth, where = stack.pop()
        if not isinstance(item, _CONTAINERS):
            size += scalar_size(item)
            continue
        if depth == MAX_DEPTH:
            raise _too_deep(where)
        size += 2 * len(item) + 1 if isinstance(item, dict) else len(item) + 1  # brackets, ":" and ","
        if size > MAX_EVENT_BYTES:
            break
        if isinstance(item, dict):
            size += sum(map(scalar_size, item))
        for key, value in item.items() if isinstance(item, dict) else enumerate(item):
            if isinstance(value, _CONTAINERS):  # named for the message: features.x, value[0]
                if isinstance(item, dict):
                    inner = f"{where}.{label(key)}" if depth else label(key)
                else:
                    inner = f"{where}[{key}]"
                stack.append((value, depth + 1, inner))
            else:
                size += scalar_size(value)
    return size


def _size_at_most(value: Any) -> int:
    if isinstance(value, str):
        return 6 * len(value) + 2  # a character is at most 6 bytes in JSON ("\u001f")
    if isinstance(value, int) and abs(value).bit_length() > 64:
        return _exact_size(value)
    return 32  # a number, true/false/null, or not JSON (a datetime from a Python producer)


def _exact_size(value: Any) -> int:
    if isinstance(value, str):
        if len(value) > MAX_EVENT_BYTES:
            return len(value)  # too big already: no need to encode it
        return utf8_size(json.encoder.encode_basestring(value))  # quotes and escapes included
    if isinstance(value, bool) or value is None:
        return 5 if value is False else 4
    if isinstance(value, int):
        bits = abs(value).bit_length()
        return len(str(value)) if bits <= 64 else bits * 30103 // 100000 + 2  # str() refuses > 4,300 digits
    if isinstance(value, float):
        return len(repr(value))
    return 32


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


# --- fields ----------------------------------------------------------------------------------------

def number(value: Any, where: str, keep_int: bool = False) -> float | int:
    """A finite number with |x| <= MAX_ABS (a float, or an int with keep_int); never a bool or a string."""
    if isinstance(value, bool):
        raise InvalidEvent(f"{where}: expected a number, got a boolean")
    if isinstance(value, int):
        if -_INT_LIMIT <= value <= _INT_LIMIT:
            return int(value) if keep_int else float(value)
        raise InvalidEvent(f"{where}: integer outside {_RANGE}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{where}: {value} is not a finite number")
        if abs(value) > MAX_ABS:
            raise InvalidEvent(f"{where}: {value!r} is outside {_RANGE}")
        return float(value)
    raise InvalidEvent(f"{where}: expected a number, got {kind(value)}")


def text(value: Any, where: str, max_chars: int, min_chars: int = 1) -> str:
    """A string PostgreSQL and SQLite both store as is: no NUL, no lone surrogate, bounded length."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}: expected a string, got {kind(value)}")
    if len(value) < min_chars:
        raise InvalidEvent(f"{where}: empty")
    if len(value) > max_chars:
        raise InvalidEvent(f"{where}: {len(value)} characters; at most {max_chars}")
    if "\x00" in value:
        raise InvalidEvent(f"{where}: contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(f"{where}: contains a lone surrogate (not valid Unicode)") from None
    return str(value)


def moment(value: Any, where: str) -> datetime:
    """An ISO-8601 timestamp (or a datetime) between EARLIEST and now + MAX_AHEAD, as aware UTC."""
    if isinstance(value, str):
        text(value, where, MAX_TIMESTAMP_CHARS)  # fromisoformat ignores a trailing NUL
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"{where}: {show(value)} is not an ISO-8601 timestamp") from None
    elif isinstance(value, datetime):
        at = value
    else:
        raise InvalidEvent(f"{where}: expected an ISO-8601 timestamp, got {kind(value)}")
    try:
        at = clock.as_utc(at)  # naive = UTC; an offset may carry it past year 9999 (OverflowError)
    except OverflowError:
        at = None
    latest = clock.now() + MAX_AHEAD
    if at is None or not EARLIEST <= at <= latest:
        raise InvalidEvent(f"{where}: {show(value)} is outside {EARLIEST:%Y-%m-%d} .. now + {MAX_AHEAD.days} day")
    return at


def features(value: Any, where: str = "features") -> dict[str, float | int | str | bool]:
    """An object of name -> finite number, boolean or short string, at most MAX_FEATURES of them. It
    may be empty: a family that reads only the time (timing) needs none; whether the model's family
    needs features is checked where the model is known (services/events.py store)."""
    if not isinstance(value, dict):
        raise InvalidEvent(f"{where}: expected an object of name -> value")
    if len(value) > MAX_FEATURES:
        raise InvalidEvent(f"{where}: {len(value)} features; at most {MAX_FEATURES}")
    out: dict[str, float | int | str | bool] = {}
    for name, item in value.items():
        name = text(name, f"{where}: name {show(name)}", MAX_NAME_CHARS)
        at = f"{where}.{label(name)}"
        if isinstance(item, str):
            out[name] = text(item, at, MAX_TEXT_CHARS, min_chars=0)
        elif isinstance(item, bool):  # a boolean feature; never read as the number 0 or 1
            out[name] = item
        elif isinstance(item, (int, float)):
            out[name] = number(item, at, keep_int=True)
        else:
            raise InvalidEvent(f"{at}: expected a number, boolean or string, got {kind(item)}")
    return out


# --- showing what was refused ----------------------------------------------------------------------

def kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def label(name: Any) -> str:
    """A name as it reads in a message: as is when a short printable string, else quoted and escaped."""
    return name if isinstance(name, str) and len(name) <= 64 and name.isprintable() else show(name)


def show(value: Any, limit: int = 40) -> str:
    """A short, one-line, storable rendering of any value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > 64:
        return f"an integer of {abs(value).bit_length()} bits"
    if isinstance(value, (str, bytes)):
        text_ = repr(value[:limit])  # repr escapes NUL, surrogates and newlines
        return text_ + "..." if len(value) > limit else text_
    if isinstance(value, (int, float, type(None))):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return f"an {kind(value)}" if kind(value)[0] in "aeiou" else f"a {kind(value)}"


def storable(text_: str) -> str:
    """The text with NUL and lone surrogates escaped: safe in any text or JSON column."""
    if "\x00" in text_:
        text_ = text_.replace("\x00", "\\x00")
    if not text_.isascii():
        text_ = text_.encode("utf-8", "backslashreplace").decode("utf-8")
    return text_


def preview(payload: Any, limit: int = PREVIEW_CHARS) -> str:
    """At most `limit` characters of any payload (text as is, anything else JSON-like), storable.
    Iterative and stopped at `limit`: a deep, huge or self-containing object costs little."""
    if isinstance(payload, str):
        return storable(payload[:limit])[:limit]
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return storable(bytes(payload[:limit]).decode("utf-8", "backslashreplace"))[:limit]
    parts: list[str] = []
    used = 0
    for token in _tokens(payload):
        parts.append(token)
        used += len(token)
        if used >= limit:
            break
    return storable("".join(parts)[:limit])[:limit]


_END = object()


def _tokens(payload: Any) -> Any:
    # One frame per open container: [remaining items, closing bracket, is a dict, wrote an item].
    frames: list[list[Any]] = [[iter((payload,)), "", False, False]]
    while frames:
        frame = frames[-1]
        item = next(frame[0], _END)
        if item is _END:
            frames.pop()
            yield frame[1]
            continue
        if frame[3]:
            yield ", "
        frame[3] = True
        if frame[2]:
            key, item = item
            yield _scalar_text(key) + ": "
        if isinstance(item, dict):
            yield "{"
            frames.append([iter(item.items()), "}", True, False])
        elif isinstance(item, (list, tuple)):
            yield "["
            frames.append([iter(item), "]", False, False])
        else:
            yield _scalar_text(item)


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[:PREVIEW_CHARS], ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    return show(value)
