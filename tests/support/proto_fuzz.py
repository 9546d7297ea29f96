"""Random protobuf requests from message descriptors, and wire-level oddities (RELIABILITY E6).

`ProtoFuzzer.build(cls)` fills a message field by field from its descriptor: integers at their
type's edges, floats as NaN / ±inf / subnormal, strings empty, long (up to `max_text` characters:
long values echoed into error metadata are a test of their own), or full of awkward code
points (U+2028, RLO, NUL, emoji, combining marks), bytes random, enums out of range (proto3 enums
are open), repeated fields empty or long, one member of each oneof, nested messages to a depth,
Structs with awkward JSON. `mutate(base)` changes one to three fields of a valid request, so
fuzzed values also reach the code behind validation. `encode(msg)` serializes it and sometimes changes the encoding
without changing validity: unknown fields appended, varints padded to their 10-byte maximum,
two messages merged. `garbage(cls)` makes bytes that do not parse: random, truncated, a string
that is not UTF-8, a length past the end, nesting past the parser's recursion limit.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any, Callable

from google.protobuf import descriptor as D
from google.protobuf.message import Message

INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 7, 1000)
INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1, 86400 * 365 * 100)
UINT32 = (0, 1, 2**32 - 1, 2**31)
UINT64 = (0, 1, 2**64 - 1, 2**63)
FLOATS = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 3.4e38, 1e-45, 0.5)
DOUBLES = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324, 1e15)
ODD_TEXT = ("", " ", "\x00", "a\x00b", "\u2028", "\u2029", "\u202e", "👋🏽", "e\u0301" * 50, "\ufeff", "\uffff", "𝕏" * 10,
            "../../../etc/passwd", "' OR 1=1 --", "%00%0d%0a", "${jndi:ldap://x}", "\r\n", "\t", "null", "-1", "NaN",
            "gpt-4o-mini", "demo", "openai", "anthropic", "gemini", "priority", "cost", "user", "tg_", "req_x")
INT_TYPES = {D.FieldDescriptor.TYPE_INT32: INT32, D.FieldDescriptor.TYPE_SINT32: INT32, D.FieldDescriptor.TYPE_SFIXED32: INT32,
             D.FieldDescriptor.TYPE_INT64: INT64, D.FieldDescriptor.TYPE_SINT64: INT64, D.FieldDescriptor.TYPE_SFIXED64: INT64,
             D.FieldDescriptor.TYPE_UINT32: UINT32, D.FieldDescriptor.TYPE_FIXED32: UINT32,
             D.FieldDescriptor.TYPE_UINT64: UINT64, D.FieldDescriptor.TYPE_FIXED64: UINT64}
RANGES = {D.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), D.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
          D.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), D.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
          D.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), D.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
          D.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), D.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
          D.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), D.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1)}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def padded_varint(n: int, size: int = 10) -> bytes:
    """The same number in `size` bytes (10 for values, 5 for tags): legal, and rarely produced."""
    raw = bytearray(varint(n))
    while len(raw) < size:
        raw[-1] |= 0x80
        raw.append(0)
    return bytes(raw)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields_of(data: bytes) -> list[tuple[int, int, bytes]]:
    """Top-level (number, wire type, payload incl. length prefix) of a valid serialization."""
    out, i = [], 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wt = key >> 3, key & 7
        start = i
        if wt == 0:
            _, i = read_varint(data, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            ln, j = read_varint(data, i)
            i = j + ln
        else:
            raise ValueError(wt)
        out.append((number, wt, data[start:i]))
    return out


class ProtoFuzzer:
    def __init__(self, rng: random.Random, overrides: dict[str, Callable[[random.Random], Any]] | None = None,
                 max_depth: int = 4, max_text: int = 1024, max_repeated: int = 6) -> None:
        self.rng = rng
        self.overrides = overrides or {}
        self.max_depth = max_depth
        self.max_text = max_text
        self.max_repeated = max_repeated

    # ------------------------------------------------------------------ values

    def text(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.35:
            return r.choice(ODD_TEXT)
        if pick < 0.45:
            return (r.choice(ODD_TEXT) * r.randint(1, 64))[: self.max_text]
        if pick < 0.55:
            return "x" * min(self.max_text, r.choice((255, 256, 1024, 4096)))
        alphabet = "abcXYZ019-_./:@ \u00e9\u4e16\U0001f600\u0000\u2028"
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, 40)))

    def blob(self) -> bytes:
        r = self.rng
        return r.choice((b"", b"\x00", b"\xff" * 16, bytes(r.getrandbits(8) for _ in range(r.randint(1, 300))),
                         b"\x89PNG\r\n\x1a\n" + bytes(64)))

    def scalar(self, f: D.FieldDescriptor) -> Any:
        r = self.rng
        t = f.type
        if t in INT_TYPES:
            lo, hi = RANGES[t]
            return r.choice(INT_TYPES[t]) if r.random() < 0.7 else r.randint(lo, hi)
        if t == D.FieldDescriptor.TYPE_FLOAT:
            return r.choice(FLOATS)
        if t == D.FieldDescriptor.TYPE_DOUBLE:
            return r.choice(DOUBLES) if r.random() < 0.7 else r.uniform(-1e9, 1e9)
        if t == D.FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if t == D.FieldDescriptor.TYPE_STRING:
            return self.text()
        if t == D.FieldDescriptor.TYPE_BYTES:
            return self.blob()
        if t == D.FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in f.enum_type.values]
            return r.choice(known) if r.random() < 0.6 else r.choice((-1, 99, 2**31 - 1, -(2**31), max(known) + 1))
        raise TypeError(t)

    def json_value(self, depth: int) -> Any:
        r = self.rng
        pick = r.random()
        if depth <= 0 or pick < 0.5:
            return r.choice((None, True, False, 0, -1.5, 1e308, "", self.text(), "\u2028"))
        if pick < 0.75:
            return [self.json_value(depth - 1) for _ in range(r.randint(0, 4))]
        return {self.text()[:40]: self.json_value(depth - 1) for _ in range(r.randint(0, 4))}

    # ------------------------------------------------------------------ messages

    def build(self, cls: type[Message], depth: int | None = None) -> Message:
        msg = cls()
        self.fill(msg, self.max_depth if depth is None else depth)
        return msg

    def fill(self, msg: Message, depth: int) -> None:
        r = self.rng
        desc = msg.DESCRIPTOR
        if desc.full_name == "google.protobuf.Struct":
            obj = self.json_value(depth)
            msg.update(obj if isinstance(obj, dict) else {"v": obj})
            return
        chosen_oneofs = {o.name: r.choice(o.fields).name for o in desc.oneofs if o.fields and r.random() < 0.8}
        for f in desc.fields:
            if f.containing_oneof is not None and chosen_oneofs.get(f.containing_oneof.name) != f.name:
                continue
            if f.containing_oneof is None and r.random() < 0.25:
                continue  # leave some fields unset
            self._set(msg, f, depth)

    def mutate(self, base: Message, changes: int | None = None) -> Message:
        """A copy of a valid `base` with one to three fields, at any depth, given fuzzed values."""
        r = self.rng
        msg = type(base)()
        msg.CopyFrom(base)
        for _ in range(changes or r.randint(1, 3)):
            target = msg
            while True:
                f = r.choice(target.DESCRIPTOR.fields)
                nested = f.type == D.FieldDescriptor.TYPE_MESSAGE and not f.message_type.GetOptions().map_entry
                if nested and r.random() < 0.6:
                    if f.is_repeated and len(getattr(target, f.name)):
                        target = r.choice(getattr(target, f.name))
                        continue
                    if not f.is_repeated and target.HasField(f.name):
                        target = getattr(target, f.name)
                        continue
                break
            target.ClearField(f.name)
            self._set(target, f, 2)
        return msg

    def _set(self, msg: Message, f: D.FieldDescriptor, depth: int) -> None:
        if f.name in self.overrides and f.type != D.FieldDescriptor.TYPE_MESSAGE:
            v = self.overrides[f.name](self.rng)
            if f.is_repeated:
                getattr(msg, f.name).extend(v if isinstance(v, list) else [v])
            else:
                setattr(msg, f.name, v)
            return
        self._field(msg, f, depth)

    def _field(self, msg: Message, f: D.FieldDescriptor, depth: int) -> None:
        r = self.rng
        is_msg = f.type == D.FieldDescriptor.TYPE_MESSAGE
        if f.is_repeated:
            if is_msg and f.message_type.GetOptions().map_entry:
                container = getattr(msg, f.name)
                kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                for _ in range(r.randint(0, self.max_repeated)):
                    k = self.scalar(kf)
                    if vf.type == D.FieldDescriptor.TYPE_MESSAGE:
                        if depth > 0:
                            self.fill(container[k], depth - 1)
                    else:
                        container[k] = self.scalar(vf)
                return
            n = r.choice((0, 1, 2, r.randint(0, self.max_repeated), 64 if not is_msg else 3))
            container = getattr(msg, f.name)
            for _ in range(n):
                if is_msg:
                    if depth > 0:
                        self.fill(container.add(), depth - 1)
                else:
                    container.append(self.scalar(f))
            return
        if is_msg:
            if depth > 0:
                self.fill(getattr(msg, f.name), depth - 1)
            else:
                getattr(msg, f.name).SetInParent()
            return
        setattr(msg, f.name, self.scalar(f))

    # ------------------------------------------------------------------ encodings

    def unknown_field(self) -> bytes:
        r = self.rng
        number = r.choice((1000, 4096, 19999, 2**29 - 1, r.randint(100, 100_000)))
        wt = r.choice((0, 1, 2, 5))
        if wt == 0:
            return tag(number, 0) + varint(r.getrandbits(64))
        if wt == 1:
            return tag(number, 1) + struct.pack("<Q", r.getrandbits(64))
        if wt == 5:
            return tag(number, 5) + struct.pack("<I", r.getrandbits(32))
        payload = bytes(r.getrandbits(8) for _ in range(r.randint(0, 64)))
        return tag(number, 2) + varint(len(payload)) + payload

    def encode(self, msg: Message) -> bytes:
        """A valid encoding of `msg` (or of msg merged with another), often an unusual one."""
        r = self.rng
        data = msg.SerializeToString()
        pick = r.random()
        if pick < 0.3:
            return data
        if pick < 0.55:  # unknown fields, before, between and after the known ones
            parts = [self.unknown_field()]
            for number, wt, payload in fields_of(data):
                parts += [tag(number, wt) + payload, self.unknown_field() if r.random() < 0.3 else b""]
            return b"".join(parts) + self.unknown_field()
        if pick < 0.75:  # every varint padded to its maximum length (tags to 5 bytes, values to 10)
            out = []
            for number, wt, payload in fields_of(data):
                key = padded_varint((number << 3) | wt, 5)
                if wt == 0:
                    value, _ = read_varint(payload, 0)
                    out.append(key + padded_varint(value))
                else:
                    out.append(key + payload)
            return b"".join(out)
        if pick < 0.9:  # two messages concatenated: the parser merges them (last scalar wins)
            return data + self.build(type(msg)).SerializeToString()
        # fields in reverse order: legal, and no serializer writes it
        return b"".join(tag(n, wt) + p for n, wt, p in reversed(fields_of(data)))

    def garbage(self, cls: type[Message]) -> bytes:
        """Bytes that do not parse as `cls`."""
        r = self.rng
        desc = cls.DESCRIPTOR
        strings = [f for f in desc.fields if f.type == D.FieldDescriptor.TYPE_STRING and not f.is_repeated]
        messages = [f for f in desc.fields if f.type == D.FieldDescriptor.TYPE_MESSAGE]
        kinds = ["random", "past-the-end", "bad-wire-type"]
        if strings:
            kinds.append("bad-utf8")
        if messages:
            kinds.append("bad-utf8-nested")
        if desc.full_name in ("tollgate.v1.ChatRequest", "tollgate.v1.StreamChatRequest"):
            kinds.append("too-deep")
        kind = r.choice(kinds)
        if kind == "random":
            while True:
                data = bytes(r.getrandbits(8) for _ in range(r.randint(1, 200)))
                try:
                    cls.FromString(data)
                except Exception:
                    return data
        if kind == "past-the-end":
            number = (desc.fields[0].number if desc.fields else 1)
            return tag(number, 2) + varint(1000) + b"short"
        if kind == "bad-wire-type":
            return tag(1, 7) + b"\x00"  # wire types 6 and 7 do not exist
        if kind == "bad-utf8":
            f = r.choice(strings)
            bad = r.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"ok\xe4\xb8"))
            return tag(f.number, 2) + varint(len(bad)) + bad
        if kind == "bad-utf8-nested":
            f = r.choice(messages)
            inner_strings = [g for g in f.message_type.fields if g.type == D.FieldDescriptor.TYPE_STRING]
            inner = (tag(inner_strings[0].number, 2) + b"\x01\xff") if inner_strings else (tag(1, 7) + b"\x00")
            return tag(f.number, 2) + varint(len(inner)) + inner
        # too deep: ChatInput.sampling.json_schema (a Struct) nested 200 levels through ListValue
        value = b""
        for _ in range(200):
            lst = tag(1, 2) + varint(len(value)) + value  # ListValue.values = [value]
            value = tag(6, 2) + varint(len(lst)) + lst  # Value.list_value
        entry = b"\x0a\x01k" + tag(2, 2) + varint(len(value)) + value  # map entry {key: "k", value}
        struct_ = tag(1, 2) + varint(len(entry)) + entry  # Struct.fields
        sampling = tag(9, 2) + varint(len(struct_)) + struct_  # Sampling.json_schema
        chat_input = tag(3, 2) + varint(len(sampling)) + sampling  # ChatInput.sampling
        return tag(1, 2) + varint(len(chat_input)) + chat_input
