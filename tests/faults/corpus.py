"""A deterministic fuzz corpus of producer events: `corpus(n, seed)` -> [(payload, expected)].

Every entry is a purchase for model `ctr` (or an outcome) that a producer might send, malformed in one
way, or valid. `expected.outcome` says what the system must do with it:

- "stored": a valid purchase (a new event_id): one `observations` row;
- "duplicate": a re-sent valid purchase (an event_id seen earlier in the corpus): stored once only;
- "rejected": refused with a reason, by `services.events.parse` (`expected.by == "parse"`) or, for
  an unknown model or an unknown prediction, by `services.events.store` (`expected.by == "store"`).

`expected.category` names the fault. The same (n, seed, now) always gives the same corpus; valid
timestamps lie in the 30 days before `now` (default: the clock's now). Payloads are dicts, JSON text,
bytes, lists, scalars, objects nested thousands of levels deep; none is ever shared between entries.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from retrainer import clock

MODEL = "ctr"
FEATURES = ("hook_strength", "thumbnail_score", "video_length_s", "hour_of_day", "audience_size_log")


class Expected(NamedTuple):
    outcome: str  # stored | duplicate | rejected
    category: str
    by: str | None = None  # parse | store, for a rejection


class _Maker:
    def __init__(self, rng: random.Random, now: datetime, seed: int) -> None:
        self.rng, self.now, self.seed = rng, now, seed
        self.count = 0
        self.valid: list[dict[str, Any]] = []  # stored so far, for duplicates

    def event_id(self) -> str:
        self.count += 1
        return f"fz{self.seed}-{self.count}"

    def when(self) -> str:
        at = self.now - timedelta(seconds=self.rng.uniform(60, 30 * 86400))
        style = self.rng.randrange(4)
        if style == 0:
            return at.isoformat()
        if style == 1:
            return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if style == 2:  # naive: UTC
            return at.replace(tzinfo=None).isoformat()
        return at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()

    def features(self) -> dict[str, Any]:
        r = self.rng
        f: dict[str, Any] = {
            "hook_strength": round(r.random(), 4), "thumbnail_score": round(r.random(), 4),
            "video_length_s": round(r.uniform(5, 60), 1), "hour_of_day": r.randrange(24),
            "audience_size_log": round(r.uniform(3, 7), 3),
        }
        if r.random() < 0.3:
            f["hook_type"] = r.choice(("question", "stat", "story", "shock", "émoji 😀", ""))
        return f

    def purchase(self, **overrides: Any) -> dict[str, Any]:
        f = self.features()
        ctr = 0.01 + 0.04 * f["hook_strength"] + 0.015 * f["thumbnail_score"]
        event = {"type": "purchase", "model": MODEL, "event_id": self.event_id(), "features": f,
                 "value": round(ctr + self.rng.gauss(0, 0.002), 5), "occurred_at": self.when()}
        return event | overrides

    def with_feature(self, name: str, value: Any) -> dict[str, Any]:
        event = self.purchase()
        event["features"][name] = value
        return event


def _nested(depth: int, leaf: Any = 1, key: str | None = "a") -> Any:
    """`depth` levels of objects (or arrays when key is None), built without recursion."""
    for _ in range(depth):
        leaf = {key: leaf} if key is not None else [leaf]
    return leaf


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def _valid(m: _Maker) -> tuple[Any, Expected]:
    r = m.rng
    kind = r.randrange(10)
    if kind == 0:  # edges that are still valid
        event = m.purchase(value=r.choice((1e15, -1e15, 0, -0.0, 5e-324, 10**15, 1)))
        event["features"]["edge"] = r.choice((10**15, -(10**15), 1e15, 0.0, "x" * 256, "é" * 256))
    elif kind == 1:
        event = m.purchase()
        event.pop("occurred_at")  # stored at the time it arrives
    elif kind == 2:
        event = m.purchase()
        event["features"] |= {f"extra_{i}": r.random() for i in range(r.choice((10, 100, 494)))}
    else:
        event = m.purchase()
    m.valid.append(event)
    if r.random() < 0.1:  # some valid events arrive as JSON text or UTF-8 bytes
        text = json.dumps(event, ensure_ascii=r.random() < 0.5)
        return (text.encode() if r.random() < 0.5 else text), Expected("stored", "valid")
    return event, Expected("stored", "valid")


def _duplicate(m: _Maker) -> tuple[Any, Expected]:
    if not m.valid:
        return _valid(m)
    original = m.rng.choice(m.valid)
    copy = json.loads(json.dumps(original))
    if m.rng.random() < 0.5:
        copy["value"] = round(m.rng.random(), 4)  # the first delivery wins
    return copy, Expected("duplicate", "duplicate")


def _rejected(category: str, by: str = "parse") -> Callable[[Callable[[_Maker], Any]], Callable[[_Maker], tuple[Any, Expected]]]:
    def wrap(make: Callable[[_Maker], Any]) -> Callable[[_Maker], tuple[Any, Expected]]:
        return lambda m: (make(m), Expected("rejected", category, by))
    return wrap


@_rejected("wrong_type")
def _wrong_type(m: _Maker) -> Any:
    r = m.rng
    return r.choice((
        lambda: m.purchase(value=r.choice(([0.1], {"v": 1}, None))),
        lambda: m.purchase(features=r.choice(([1, 2], "hook=1", 3.5, None))),  # {}: valid for a time-only family
        lambda: m.purchase(model=r.choice((7, None, "", ["ctr"]))),
        lambda: m.purchase(type=r.choice(("refund", 1, None, "PURCHASE", ["purchase"], {"purchase": 1}))),
        lambda: _without(m.purchase(), "type"),
        lambda: _without(m.purchase(), r.choice(("model", "features", "value"))),
        lambda: m.purchase(event_id=r.choice((12, 1.5, True, ""))),
        lambda: m.purchase(occurred_at=r.choice((1717000000, [2024, 1, 1], True))),
        lambda: m.purchase(colour="red"),
        lambda: m.with_feature("flag", None),
        lambda: m.with_feature("list", [1, 2]),
        lambda: r.choice(([m.purchase()], 42, None, "hello", "", "null", "[1, 2]", '"purchase"', 3.5)),
        lambda: {"type": "outcome", "prediction_id": r.choice((None, 5, "")), "value": 0.1},
        lambda: {"type": "outcome", "value": 0.1},
    ))()


@_rejected("non_finite")
def _non_finite(m: _Maker) -> Any:
    r = m.rng
    bad = r.choice((math.nan, math.inf, -math.inf))
    event = m.purchase(value=bad) if r.random() < 0.5 else m.with_feature(r.choice(FEATURES), bad)
    return json.dumps(event) if r.random() < 0.3 else event  # NaN / Infinity tokens in the text


@_rejected("huge_number")
def _huge_number(m: _Maker) -> Any:
    r = m.rng
    return r.choice((
        lambda: m.purchase(value=r.choice((1.7e308, -1.7e308, 1e16, 1e300, 10**400, 10**16, -(10**20)))),
        lambda: m.with_feature(r.choice(FEATURES), r.choice((10**400, 10**16, 2**63, 1e300, -1e16))),
        lambda: json.dumps(m.purchase(value=0.5)).replace('"value": 0.5', '"value": 1e400'),  # inf when read
        lambda: json.dumps(m.purchase(value=0.5)).replace('"value": 0.5', '"value": ' + "9" * 5000),  # > 4300 digits
    ))()


@_rejected("bool_value")
def _bool_value(m: _Maker) -> Any:
    return m.purchase(value=m.rng.choice((True, False)))  # a boolean feature is valid (type boolean); a value is not


@_rejected("numeric_string")
def _numeric_string(m: _Maker) -> Any:
    return m.purchase(value=m.rng.choice(("0.5", "1e3", " 3 ", "NaN", "0x10", "")))


@_rejected("bad_date")
def _bad_date(m: _Maker) -> Any:
    return m.purchase(occurred_at=m.rng.choice((
        "9999-12-31T23:00:00-05:00",  # after year 10,000 in UTC
        "0001-01-01T00:00:00+05:00", "1969-12-31T23:59:59Z", "1900-01-01", "2999-01-01T00:00:00Z",
        (m.now + timedelta(days=2)).isoformat(), "yesterday", "2024-13-45", "2024-02-30T10:00:00Z",
        "2024-01-01T00:00:00+25:00", "", "9" * 70, "2024-01-01\x00T00:00:00Z", "2024-01-01T00:00:00\ud800",
    )))


@_rejected("deep_object")
def _deep_object(m: _Maker) -> Any:
    r = m.rng
    depth = r.choice((3, 5, 50, 475, 2000, 5000))
    where = r.randrange(3)
    if where == 0:
        return m.purchase(features={"hook_strength": _nested(depth - 2)})
    if where == 1:
        return _nested(depth, m.purchase())
    return m.purchase(value=_nested(depth - 1, 0.1, key=None))


@_rejected("deep_text")
def _deep_text(m: _Maker) -> Any:
    r = m.rng
    depth = r.choice((3, 100, 1000, 5000, 20_000))
    if r.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _bad_text(char: str) -> Callable[[_Maker], Any]:
    def make(m: _Maker) -> Any:
        r = m.rng
        where = r.randrange(6)
        if where == 0:
            event = m.purchase(model=MODEL + char)
        elif where == 1:
            event = m.purchase(event_id=f"fz{char}{m.count}")
        elif where == 2:
            event = m.with_feature("hook" + char, 0.5)
        elif where == 3:
            event = m.with_feature("hook_type", "story" + char)
        elif where == 4:
            event = {"type": "outcome", "prediction_id": "p" + char, "value": 0.1}
        else:
            event = m.purchase(type="purchase" + char)
        if r.random() < 0.3:  # as JSON text: "\u0000" / "\ud800" escapes
            return json.dumps(event)
        return event
    return make


_nul = _rejected("nul")(_bad_text("\x00"))
_surrogate = _rejected("surrogate")(_bad_text("\ud800"))


@_rejected("oversized")
def _oversized(m: _Maker) -> Any:
    r = m.rng
    return r.choice((
        lambda: m.with_feature("blob", "x" * r.choice((257, 70 * 1024, 200_000))),
        lambda: m.purchase(features={f"f{i}": 0.5 for i in range(r.choice((501, 2000, 10_000)))}),
        lambda: json.dumps(m.with_feature("note", "y" * 70_000)),
        lambda: json.dumps(m.with_feature("note", "é" * 40_000), ensure_ascii=False).encode(),  # 80 KB of bytes
        lambda: m.purchase(model="m" * 101),
        lambda: m.purchase(event_id="e" * 65),
        lambda: m.with_feature("n" * 65, 1.0),
    ))()


@_rejected("invalid_utf8")
def _invalid_utf8(m: _Maker) -> Any:
    text = json.dumps(m.purchase()).encode()
    cut = m.rng.randrange(len(text))
    return text[:cut] + m.rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80")) + text[cut:]


@_rejected("unknown_model", by="store")
def _unknown_model(m: _Maker) -> Any:
    return m.purchase(model=m.rng.choice(("churn", "no-such-model", "CTR", "ctr ")))


@_rejected("unknown_prediction", by="store")
def _unknown_prediction(m: _Maker) -> Any:
    return {"type": "outcome", "prediction_id": f"ghost-{m.event_id()}", "value": round(m.rng.random(), 3),
            "event_id": m.event_id()}


# (make, weight): about a fifth valid, the rest spread over the faults.
_CATEGORIES: list[tuple[Callable[[_Maker], tuple[Any, Expected]], int]] = [
    (_valid, 20), (_duplicate, 5), (_wrong_type, 10), (_non_finite, 6), (_huge_number, 8), (_bool_value, 4),
    (_numeric_string, 4), (_bad_date, 8), (_deep_object, 6), (_deep_text, 4), (_nul, 6), (_surrogate, 6),
    (_oversized, 5), (_invalid_utf8, 3), (_unknown_model, 3), (_unknown_prediction, 2),
]
CATEGORIES = ("valid", "duplicate", "wrong_type", "non_finite", "huge_number", "bool_value", "numeric_string",
              "bad_date", "deep_object", "deep_text", "nul", "surrogate", "oversized", "invalid_utf8",
              "unknown_model", "unknown_prediction")


def corpus(n: int = 10_000, seed: int = 0, now: datetime | None = None) -> list[tuple[Any, Expected]]:
    """`n` entries; every category appears at least once when n >= len(CATEGORIES)."""
    maker = _Maker(random.Random(seed), clock.as_utc(now or clock.now()), seed)
    makers = [make for make, _ in _CATEGORIES]
    weights = [w for _, w in _CATEGORIES]
    out = [make(maker) for make in makers[: min(n, len(makers))]]  # one of each first
    out += [maker.rng.choices(makers, weights)[0](maker) for _ in range(n - len(out))]
    return out
