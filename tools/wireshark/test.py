#!/usr/bin/env python3
"""Checks the Wireshark dissector tools/wireshark/trunkd.lua against the golden vectors.

Builds a capture from every frame of protocol/vectors/*.txt (Ethernet/IPv4/TCP, written
here with struct), has tshark decode it with the dissector, and checks from its PDML:

- every `expect: ok` vector decodes to the message named in its `meaning` (the Rust Debug
  form of the frame, parsed below) with every field of `meaning` at its value: header
  fields, identities as digits, causes and message types by their PROTOCOL.md names;
- no byte of an ok frame is left undecoded (no `data` field, every byte under a named
  trunkd field, no trailing-byte field) and no expert warning or error is raised for it;
- every error vector carries an expert error naming the expected cause (and, for `fatal`,
  that the stream is lost);
- frames still decode when one is split across TCP segments and when many share one
  segment, and the link-port preference moves the dissector to another port;
- random payloads of every type byte and corrupted copies of the vectors never end in a
  Lua error: the dissector flags what is wrong and goes on.

Message type and cause codes come from the tables of PROTOCOL.md, not from the dissector.
Standard library only. Exits non-zero naming the vector and field of every mismatch.
Usage: python3 tools/wireshark/test.py [--keep DIR]   (needs tshark on PATH)
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"
SPEC = ROOT / "protocol" / "PROTOCOL.md"
DISSECTOR = Path(__file__).resolve().parent / "trunkd.lua"

LINK_PORT = 7300  # PROTOCOL.md §1
OTHER_PORT = 7400  # for the port preference
CONTROLLER_IP = bytes([127, 0, 0, 1])
GATEWAY_IP = bytes([127, 0, 0, 2])
FIRST_CONTROLLER_TXN = 0x8000_0000

# Messages sent by both sides that answer another frame: they travel opposite to the side
# that started the transaction (PROTOCOL.md §2.2), so the capture sends them that way.
ANSWERS_FROM_BOTH = {"KEEPALIVE_ACK", "ACK", "FRAME_ERROR"}

# Rust `Cause` variants whose name is not the §6 name in CamelCase (see the report).
CAUSE_ALIASES = {"OperatorEnded": "ended by operator"}

# Trunkd fields that hold bytes the dissector could not read as protocol fields.
UNDECODED_FIELDS = {"trunkd.payload", "trunkd.incomplete", "trunkd.trailing", "trunkd.undecodable", "trunkd.lost"}


# ---------------------------------------------------------------------------------------
# PROTOCOL.md: message types (§5) and causes (§6)


@dataclass
class Spec:
    types: dict[str, int]  # LINK_HELLO -> 0x01
    senders: dict[int, str]  # 0x01 -> "G→C" | "C→G" | "both"
    causes: dict[str, int]  # "link auth failed" -> 0x21


def read_spec(text: str) -> Spec:
    types, senders, causes = {}, {}, {}
    row = re.compile(r"^\|\s*0x([0-9A-Fa-f]{2})\s*\|\s*([A-Z][A-Z_]+)\s*\|\s*(G→C|C→G|both)\s*\|", re.M)
    for code, name, sender in row.findall(text):
        types[name] = int(code, 16)
        senders[int(code, 16)] = sender
    section6 = text.split("## 6. Cause codes", 1)[1].split("\n## ", 1)[0]
    for code, name in re.findall(r"^\|\s*0x([0-9A-Fa-f]{2})\s*\|\s*([^|]+?)\s*\|", section6, re.M):
        causes[name] = int(code, 16)
    if len(types) < 40 or len(causes) < 40:
        sys.exit(f"could not read the message and cause tables of {SPEC} ({len(types)} types, {len(causes)} causes)")
    return Spec(types, senders, causes)


# ---------------------------------------------------------------------------------------
# Vectors (PROTOCOL.md §7)


@dataclass
class Vector:
    name: str
    frame: bytes
    expect: str
    meaning: str | None
    source: str

    @property
    def ok(self) -> bool:
        return self.expect == "ok"


def read_vectors() -> list[Vector]:
    vectors = []
    for path in sorted(VECTORS.glob("*.txt")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            entry = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                entry[key.strip()] = value.strip()
            if "name" not in entry:
                continue
            vectors.append(Vector(entry["name"], bytes.fromhex(entry["hex"].replace(" ", "")),
                                  entry["expect"], entry.get("meaning"), path.name))
    if not vectors:
        sys.exit(f"no vectors in {VECTORS}")
    return vectors


# ---------------------------------------------------------------------------------------
# A parser for the Rust Debug text of `meaning`:
#   value  := STRING | '[' values ']' | WORD [ '{' fields '}' | '(' values ')' ]
#   fields := WORD ':' value (',' WORD ':' value)*


@dataclass
class Struct:  # Name { a: x, b: y }
    name: str
    fields: dict


@dataclass
class Tuple:  # Name(x, y)
    name: str
    items: list


@dataclass
class Word:  # 7, true, LinkAuthFailed, 68656c6c6f
    text: str


@dataclass
class Text:  # "001010123456789"
    text: str


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([A-Za-z0-9_]+)|([{}()\[\],:]))')


class DebugParser:
    def __init__(self, text: str):
        self.tokens, pos = [], 0
        text = text.rstrip()
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"unexpected character at {pos}: {text[pos:pos + 20]!r}")
            self.tokens.append(m.group(0).strip())
            pos = m.end()
        self.i = 0

    def parse(self):
        value = self.value()
        if self.i != len(self.tokens):
            raise ValueError(f"text after the value: {' '.join(self.tokens[self.i:])}")
        return value

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'a token'}, found {tok!r}")
        self.i += 1
        return tok

    def sequence(self, close, item):
        items = []
        while self.peek() != close:
            items.append(item())
            if self.peek() != close:
                self.take(",")
        self.take(close)
        return items

    def value(self):
        tok = self.take()
        if tok.startswith('"'):
            return Text(tok[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
        if tok == "[":
            return self.sequence("]", self.value)
        if not re.fullmatch(r"[A-Za-z0-9_]+", tok):
            raise ValueError(f"unexpected {tok!r}")
        if self.peek() == "{":
            self.take("{")
            return Struct(tok, dict(self.sequence("}", self.field)))
        if self.peek() == "(":
            self.take("(")
            return Tuple(tok, self.sequence(")", self.value))
        return Word(tok)

    def field(self):
        name = self.take()
        self.take(":")
        return name, self.value()


def parse_debug(text: str):
    return DebugParser(text).parse()


# ---------------------------------------------------------------------------------------
# What the dissector must show for a vector's meaning


@dataclass
class Want:
    """One occurrence of a field: its integer value, text, bytes and/or displayed name."""
    number: int | None = None
    text: str | None = None
    data: bytes | None = None
    label: str | None = None  # words that must appear in the field's display

    def describe(self):
        parts = [f"{k}={v!r}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts)


def words(camel: str) -> str:
    """`SiteChange` -> `site change`, the way PROTOCOL.md writes enumerated values."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", camel).lower()


def snake(camel: str) -> str:
    """`LinkHello` -> `LINK_HELLO`, the way PROTOCOL.md names messages."""
    return words(camel).replace(" ", "_").upper()


def inner(value):
    """The innermost value of newtype wrappers: SiteId(7) -> 7, Slot(Slot(3)) -> 3."""
    while isinstance(value, Tuple) and len(value.items) == 1:
        value = value.items[0]
    return value


def number(value) -> int:
    return int(inner(value).text)


class Expectations:
    """Turns a Frame's Debug tree into {trunkd field: [Want, ...]} in wire order."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.want: dict[str, list[Want]] = {}

    def add(self, name: str, *wants: Want):
        self.want.setdefault(name, []).extend(wants)

    def message_type(self, camel: str) -> Want:
        name = snake(camel)
        if name not in self.spec.types:
            raise ValueError(f"{camel} is no message type of PROTOCOL.md §5")
        return Want(number=self.spec.types[name], label=name)

    def cause(self, camel: str) -> Want:
        name = CAUSE_ALIASES.get(camel) or next((n for n in self.spec.causes if n.lower() == words(camel)), None)
        if name is None:
            raise ValueError(f"cause {camel} is not in the cause table of PROTOCOL.md §6")
        return Want(number=self.spec.causes[name], label=name)

    def unit(self, role: str, value: Struct):
        self.add(f"trunkd.{role}.fleet", Want(number=number(value.fields["fleet"])))
        self.add(f"trunkd.{role}.member", Want(number=number(value.fields["member"])))

    def frame(self, frame: Struct, wire: bytes):
        msg = frame.fields["msg"]  # a Struct, or a Word for a message without fields
        msg_name = msg.name if isinstance(msg, Struct) else msg.text
        self.add("trunkd.magic", Want(number=0x544B))
        self.add("trunkd.version", Want(number=1))
        self.add("trunkd.type", self.message_type(msg_name))
        emergency = frame.fields["emergency"].text == "true"
        self.add("trunkd.flags.emergency", Want(number=int(emergency)))
        self.add("trunkd.flags.reserved", Want(number=0))
        self.add("trunkd.txn", Want(number=number(frame.fields["txn"])))
        self.add("trunkd.length", Want(number=len(wire) - 12))
        if isinstance(msg, Struct):
            for name, value in msg.fields.items():
                rule = getattr(self, "field_" + name, None)
                if rule is None:
                    raise ValueError(f"no rule maps the Debug field `{name}` of {msg.name} to a dissector field")
                rule(value)
        return self.want

    # One method per Debug field name of the messages (src/protocol/message.rs).
    def field_site(self, v):
        self.add("trunkd.site", Want(number=number(v)))

    def field_nonce(self, v):
        self.add("trunkd.nonce", Want(data=bytes(number(x) for x in v)))

    def field_mac(self, v):
        self.add("trunkd.mac", Want(data=bytes(number(x) for x in v)))

    def field_rand(self, v):
        self.add("trunkd.rand", Want(data=bytes(number(x) for x in v)))

    def field_res(self, v):
        self.add("trunkd.res", Want(data=bytes(number(x) for x in v)))

    def field_keepalive_interval_ms(self, v):
        self.add("trunkd.interval_ms", Want(number=number(v)))

    def field_misses(self, v):
        self.add("trunkd.misses", Want(number=number(v)))

    def field_cause(self, v):
        self.add("trunkd.cause", self.cause(v.text))

    def field_offending_type(self, v):
        self.add("trunkd.offending_type", Want(number=number(v)))

    def field_acked(self, v):
        self.add("trunkd.acked_type", self.message_type(v.text))

    def field_request(self, v):
        self.add("trunkd.request_type", self.message_type(v.text))

    def field_active(self, v):
        address = inner(v).text
        self.add("trunkd.address.length", Want(number=len(address)))
        self.add("trunkd.address", Want(text=address))

    def field_identity(self, v):
        # Imei(Imei("...")), Imsi(Imsi("...")) or Tmsi(Tmsi(n))
        kind = v.name
        self.add("trunkd.identity.kind", Want(label=kind.lower()))
        if kind == "Tmsi":
            self.add("trunkd.tmsi", Want(number=number(v)))
        else:
            self.add(f"trunkd.{kind.lower()}", Want(text=inner(v).text))

    def field_imsi(self, v):
        self.add("trunkd.imsi", Want(text=inner(v).text))

    def field_individual(self, v):
        self.add("trunkd.individual", Want(number=number(v)))

    def field_tmsi(self, v):
        self.add("trunkd.tmsi", Want(number=number(v)))

    def field_unit(self, v):
        self.unit("unit", v)

    def field_caller(self, v):
        self.unit("caller", v)

    def field_talker(self, v):
        self.unit("talker", v)

    def field_source(self, v):
        self.unit("source", v)

    def field_talkgroups(self, v):
        secondary = v.fields["secondary"]
        self.add("trunkd.talkgroups.primary", Want(number=number(v.fields["primary"])))
        self.add("trunkd.talkgroups.count", Want(number=len(secondary)))
        self.add("trunkd.talkgroups.secondary", *(Want(number=number(x)) for x in secondary))

    def field_reason(self, v):
        self.add("trunkd.reason", Want(label=words(v.text)))

    def field_scope(self, v):
        self.add("trunkd.scope", Want(label=words(v.text)))

    def field_call_type(self, v):
        self.add("trunkd.call_type", Want(label=words(v.text)))

    def field_state(self, v):
        self.add("trunkd.state", Want(label=words(v.text)))

    def field_talkgroup(self, v):
        self.add("trunkd.talkgroup", Want(number=number(v)))

    def field_target(self, v):
        if isinstance(v, Struct) and v.name == "Unit":
            # PRIVATE_CALL_REQ, CALL_ALERT_REQ: a bare unit, no kind byte on the wire.
            self.want["trunkd.target.kind"] = []
            self.unit("target", v)
        elif isinstance(v, Tuple) and v.name == "Unit":
            self.add("trunkd.target.kind", Want(number=1, label="unit"))
            self.unit("target", v.items[0])
        elif isinstance(v, Struct) and v.name == "Talkgroup":
            self.add("trunkd.target.kind", Want(number=2, label="talkgroup"))
            self.add("trunkd.target.fleet", Want(number=number(v.fields["fleet"])))
            self.add("trunkd.target.talkgroup", Want(number=number(v.fields["talkgroup"])))
        else:
            raise ValueError(f"unknown target form {v}")

    def field_code(self, v):
        self.add("trunkd.status_code", Want(number=number(v)))

    def field_data(self, v):
        data = bytes.fromhex(inner(v).text)
        self.add("trunkd.short_data.length", Want(number=len(data)))
        self.add("trunkd.short_data", Want(data=data))

    def field_request_txn(self, v):
        self.add("trunkd.request_txn", Want(number=number(v)))

    def field_call(self, v):
        self.add("trunkd.call_id", Want(number=number(v)))

    def field_sites(self, v):
        self.add("trunkd.grant.count", Want(number=len(v)))
        for grant in v:
            self.add("trunkd.grant.site", Want(number=number(grant.fields["site"])))
            self.add("trunkd.grant.carrier", Want(number=number(grant.fields["carrier"])))
            self.add("trunkd.grant.slot", Want(number=number(grant.fields["slot"])))

    def field_position(self, v):
        self.add("trunkd.position", Want(number=number(v)))

    def field_id(self, v):
        self.add("trunkd.message_id", Want(number=number(v)))

    def field_carrier(self, v):
        self.add("trunkd.carrier", Want(number=number(v)))

    def field_slot(self, v):
        if isinstance(v, Word) and v.text == "WholeCarrier":
            self.add("trunkd.slot", Want(number=0xFF, label="whole carrier"))
        else:
            self.add("trunkd.slot", Want(number=number(v)))


# ---------------------------------------------------------------------------------------
# The capture


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_packet(src_ip, dst_ip, src_port, dst_port, seq, payload) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", src_port, dst_port, seq, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    ethernet = bytes.fromhex("020000000001" "020000000002") + struct.pack("!H", 0x0800)
    return ethernet + ip + tcp


@dataclass
class Stream:
    """One TCP connection's one direction: its segments and the frames they carry."""
    label: str
    gateway_port: int
    from_controller: bool
    segments: list[bytes]
    vectors: list[Vector]
    link_port: int = LINK_PORT


def write_pcap(path: Path, streams: list[Stream]):
    records = []
    for stream in streams:
        seq = 1
        for segment in stream.segments:
            if stream.from_controller:
                packet = tcp_packet(CONTROLLER_IP, GATEWAY_IP, stream.link_port, stream.gateway_port, seq, segment)
            else:
                packet = tcp_packet(GATEWAY_IP, CONTROLLER_IP, stream.gateway_port, stream.link_port, seq, segment)
            seq += len(segment)
            records.append(packet)
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # pcap, Ethernet
        for i, packet in enumerate(records):
            out.write(struct.pack("<IIII", 1_700_000_000 + i // 1000, (i % 1000) * 1000, len(packet), len(packet)))
            out.write(packet)


def sent_by_controller(vector: Vector, spec: Spec) -> bool:
    """The side that sends this frame on a real link (PROTOCOL.md §5's dir, §2.2)."""
    type_code = vector.frame[3]
    sender = spec.senders.get(type_code, "G→C")
    if sender != "both":
        return sender == "C→G"
    txn = int.from_bytes(vector.frame[6:10], "big")
    controller_txn = txn >= FIRST_CONTROLLER_TXN
    name = next((n for n, c in spec.types.items() if c == type_code), "")
    return not controller_txn if name in ANSWERS_FROM_BOTH else controller_txn


def build_streams(vectors: list[Vector], spec: Spec) -> list[Stream]:
    streams = []
    port = 40000
    # Each vector alone in a connection of its own: a fatal error loses only its stream.
    for v in vectors:
        port += 1
        streams.append(Stream(f"{v.name} (own segment)", port, sent_by_controller(v, spec), [v.frame], [v]))
    ok = [v for v in vectors if v.ok]
    # Every ok frame of one side in a single segment.
    for from_controller in (False, True):
        side = [v for v in ok if sent_by_controller(v, spec) == from_controller]
        port += 1
        label = f"in one segment with {len(side) - 1} other frames"
        streams.append(Stream(label, port, from_controller, [b"".join(v.frame for v in side)], side))
    # One frame split inside its header, the next inside its payload, and a segment that
    # carries the end of one frame and the start of the next.
    by_name = {v.name: v for v in ok}
    first, second = by_name["reg_accept"], by_name["channel_grant"]
    port += 1
    segments = [first.frame[:5], first.frame[5:] + second.frame[:20], second.frame[20:]]
    streams.append(Stream("split across TCP segments", port, True, segments, [first, second]))
    return streams


# ---------------------------------------------------------------------------------------
# tshark and its PDML


def run_tshark(pcap: Path, *options: str) -> ET.Element:
    # An empty home: no personal preferences, and no installed copy of the dissector that
    # would register the protocol a second time next to the one under test.
    home = pcap.parent / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")} | {"HOME": str(home)}
    command = ["tshark", "-n", "-X", f"lua_script:{DISSECTOR}", "-o", "tcp.desegment_tcp_streams:TRUE",
               *options, "-r", str(pcap), "-T", "pdml"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lua_trouble = [line for line in result.stderr.splitlines() if "lua" in line.lower()]
    if result.returncode != 0 or lua_trouble:
        sys.exit(f"FAIL: {' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return ET.fromstring(result.stdout)


@dataclass
class Pdu:
    """One trunkd frame as tshark showed it."""
    element: ET.Element
    fields: dict[str, list[ET.Element]] = field(default_factory=dict)
    experts: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)

    @classmethod
    def of(cls, element: ET.Element) -> "Pdu":
        pdu = cls(element)
        for f in element.iter("field"):
            pdu.fields.setdefault(f.get("name"), []).append(f)
            if f.get("name") == "_ws.expert":
                parts = {c.get("name"): c for c in f}
                severity = parts["_ws.expert.severity"].get("showname").split(": ", 1)[1]
                pdu.experts.append((severity, parts["_ws.expert.message"].get("show")))
        return pdu

    def errors(self):
        return [message for severity, message in self.experts if severity == "Error"]


@dataclass
class Shown:
    """What tshark showed, by connection (the gateway's port), in capture order."""
    frames: dict[int, list[Pdu]] = field(default_factory=dict)
    lua_errors: dict[int, list[str]] = field(default_factory=dict)


def shown_in(pdml: ET.Element, link_port: int) -> Shown:
    shown = Shown()
    for packet in pdml.iter("packet"):
        ports = {f.get("name"): int(f.get("show")) for f in packet.iter("field")
                 if f.get("name") in ("tcp.srcport", "tcp.dstport")}
        gateway_port = ports["tcp.srcport"] if ports["tcp.dstport"] == link_port else ports["tcp.dstport"]
        frames = shown.frames.setdefault(gateway_port, [])
        for proto in packet.findall("proto"):
            if proto.get("name") == "trunkd":
                frames.append(Pdu.of(proto))
            elif proto.get("name") == "data":
                frames.append(Pdu(proto))  # bytes no dissector took: never matches a vector
        for f in packet.iter("field"):
            if f.get("name") == "_ws.lua.error":  # a Lua error the dissector did not catch
                shown.lua_errors.setdefault(gateway_port, []).append(f.get("showname"))
    return shown


# ---------------------------------------------------------------------------------------
# Checks


def check_field(name: str, shown: list[ET.Element], wants: list[Want]) -> list[str]:
    if len(shown) != len(wants):
        values = [f.get("showname") for f in shown]
        return [f"field {name}: expected {len(wants)} occurrence(s) ({'; '.join(w.describe() for w in wants)}), "
                f"shown {len(shown)}: {values}"]
    problems = []
    for f, want in zip(shown, wants):
        showname = f.get("showname") or ""
        if want.number is not None:
            try:
                got = int(f.get("show"), 0)
            except (TypeError, ValueError):
                got = None
            if got != want.number:
                problems.append(f"field {name}: expected {want.number} (0x{want.number:X}), shown {showname!r}")
        if want.text is not None and f.get("show") != want.text:
            problems.append(f"field {name}: expected {want.text!r}, shown {f.get('show')!r}")
        if want.data is not None and f.get("value") != want.data.hex():
            problems.append(f"field {name}: expected bytes {want.data.hex()}, shown {f.get('value')}")
        if want.label is not None and want.label.lower() not in showname.lower():
            problems.append(f"field {name}: expected the name {want.label!r}, shown {showname!r}")
    return problems


def undecoded_bytes(pdu: Pdu) -> list[str]:
    """Bytes of the frame that no trunkd field covers."""
    start, size = int(pdu.element.get("pos")), int(pdu.element.get("size"))
    covered = set()
    for name, shown in pdu.fields.items():
        if not name.startswith("trunkd.") or name in UNDECODED_FIELDS:
            continue
        for f in shown:
            pos, length = int(f.get("pos")), int(f.get("size"))
            covered.update(range(pos, pos + length))
    missing = sorted(set(range(start, start + size)) - covered)
    if missing:
        return [f"bytes at frame offsets {[m - start for m in missing]} are under no trunkd field"]
    return []


def check_ok(vector: Vector, pdu: Pdu, spec: Spec) -> list[str]:
    if pdu.element.get("name") != "trunkd":
        return [f"shown as {pdu.element.get('name')!r}, not as a trunkd frame"]
    try:
        wants = Expectations(spec).frame(parse_debug(vector.meaning), vector.frame)
    except ValueError as e:
        return [f"meaning: {e}"]
    problems = []
    for name, want in wants.items():
        problems += check_field(name, pdu.fields.get(name, []), want)
    for name in UNDECODED_FIELDS & pdu.fields.keys():
        problems.append(f"field {name} present: bytes left undecoded")
    for severity, message in pdu.experts:
        if severity in ("Error", "Warning"):
            problems.append(f"expert {severity.lower()}: {message}")
    problems += undecoded_bytes(pdu)
    return problems


def check_error(vector: Vector, pdu: Pdu, spec: Spec) -> list[str]:
    if pdu.element.get("name") != "trunkd":
        return [f"shown as {pdu.element.get('name')!r}, not as a trunkd frame"]
    m = re.fullmatch(r"error 0x([0-9a-fA-F]{2})( fatal)?", vector.expect)
    if not m:
        return [f"cannot read `expect: {vector.expect}`"]
    code, fatal = int(m.group(1), 16), bool(m.group(2))
    name = next(n for n, c in spec.causes.items() if c == code)
    tag = f"{name} (0x{code:02X})"
    errors = pdu.errors()
    naming = [e for e in errors if tag in e]
    if not naming:
        return [f"no expert error naming {tag}; errors shown: {errors or 'none'}"]
    if fatal and not any("stream is lost" in e for e in naming):
        return [f"the expert error does not say that the stream is lost: {naming}"]
    return []


class Tally:
    """Cases passed and failed, with a line naming the vector and field of each problem."""

    def __init__(self):
        self.passed, self.failed, self.lines = 0, 0, []

    def case(self, label: str, problems: list[str]):
        if problems:
            self.failed += 1
            self.lines += [f"FAIL {label}: {p}" for p in problems]
        else:
            self.passed += 1


def check_streams(streams: list[Stream], shown: Shown, spec: Spec, tally: Tally):
    for stream in streams:
        pdus = shown.frames.get(stream.gateway_port, [])
        lua_errors = shown.lua_errors.get(stream.gateway_port, [])
        if len(pdus) != len(stream.vectors) or lua_errors:
            names = ", ".join(v.name for v in stream.vectors)
            tally.case(stream.label, [f"{len(stream.vectors)} frames sent ({names}), {len(pdus)} decoded"
                                      + "".join(f"; {e}" for e in lua_errors)])
            continue
        for vector, pdu in zip(stream.vectors, pdus):
            check = check_ok if vector.ok else check_error
            problems = check(vector, pdu, spec)
            problems += [e for e in pdu.errors() if e.startswith("dissector error")]
            tally.case(f"{vector.name} [{vector.source}, {stream.label}]", problems)


def check_port_preference(vectors: list[Vector], spec: Spec, workdir: Path, tally: Tally):
    """On another port the frames decode only once the preference names that port, and
    then with their direction."""
    by_name = {v.name: v for v in vectors}
    hello, challenge = by_name["link_hello"], by_name["link_challenge"]
    streams = [Stream("link port preference", 50001, False, [hello.frame], [hello], OTHER_PORT),
               Stream("link port preference", 50002, True, [challenge.frame], [challenge], OTHER_PORT)]
    pcap = workdir / "other_port.pcap"
    write_pcap(pcap, streams)
    default = shown_in(run_tshark(pcap), OTHER_PORT)
    decoded = [p for pdus in default.frames.values() for p in pdus if p.element.get("name") == "trunkd"]
    tally.case(f"port {OTHER_PORT} with the default preference",
               [f"decoded as trunkd although the link port is {LINK_PORT}"] if decoded else [])
    moved = shown_in(run_tshark(pcap, "-o", f"trunkd.port:{OTHER_PORT}"), OTHER_PORT)
    check_streams(streams, moved, spec, tally)
    problems = []
    for port, direction in ((50001, "gateway to controller"), (50002, "controller to gateway")):
        directions = [f.get("show") for p in moved.frames.get(port, []) for f in p.fields.get("trunkd.direction", [])]
        if not any(direction in d for d in directions):
            problems.append(f"direction {direction!r} not shown (shown: {directions})")
    tally.case(f"port {OTHER_PORT} with trunkd.port:{OTHER_PORT}, direction", problems)


def header(type_code: int, flags: int, txn: int, length: int) -> bytes:
    return b"TK" + struct.pack("!BBHIH", 1, type_code, flags, txn, length)


def waits_for_more(frame: bytes) -> bool:
    """A frame in sync whose length field asks for more bytes than it has: the dissector
    rightly waits for the next segment, which never comes."""
    in_sync = frame[:3] == b"TK\x01" and int.from_bytes(frame[10:12], "big") <= 2048
    return in_sync and 12 + int.from_bytes(frame[10:12], "big") > len(frame)


def check_robustness(vectors: list[Vector], workdir: Path, tally: Tally):
    """Whatever the bytes, the dissector flags them and goes on: random payloads of every
    type byte and corrupted copies of the vectors never end in a Lua error."""
    rng = random.Random(7300)  # the same frames on every run
    frames = []
    for type_code in range(256):
        for _ in range(4):
            payload = rng.randbytes(rng.randrange(0, 48))
            flags = rng.choice([0, 1, rng.randrange(0x10000)])
            frames.append(header(type_code, flags, rng.randrange(1 << 32), len(payload)) + payload)
    for v in vectors:
        for _ in range(5):
            corrupt = bytearray(v.frame)
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
            frames.append(bytes(corrupt))
    streams = [Stream(f"robustness frame {frame.hex()}", 41000 + i, bool(i % 2), [frame], [])
               for i, frame in enumerate(frames)]
    pcap = workdir / "robustness.pcap"
    write_pcap(pcap, streams)
    shown = shown_in(run_tshark(pcap), LINK_PORT)
    problems = []
    for stream in streams:
        pdus = shown.frames.get(stream.gateway_port, [])
        trouble = shown.lua_errors.get(stream.gateway_port, [])
        trouble += [e for p in pdus for e in p.errors() if e.startswith("dissector error")]
        if not waits_for_more(stream.segments[0]) and not any(p.element.get("name") == "trunkd" for p in pdus):
            trouble.append("not shown as a trunkd frame")
        problems += [f"{stream.label}: {t}" for t in trouble]
    tally.case(f"robustness: {len(frames)} random and corrupted frames", problems)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the captures into this folder and keep them")
    args = parser.parse_args()
    if shutil.which("tshark") is None:
        sys.exit("tshark is not installed (tools/wireshark/test.sh installs it)")

    spec = read_spec(SPEC.read_text())
    vectors = read_vectors()
    types_seen = {v.frame[3] for v in vectors if v.ok}
    untested = sorted(set(spec.types.values()) - types_seen)
    if untested:
        sys.exit(f"message types with no ok vector: {[hex(t) for t in untested]}")

    tally = Tally()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="trunkd-wireshark-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        streams = build_streams(vectors, spec)
        pcap = workdir / "vectors.pcap"
        write_pcap(pcap, streams)
        check_streams(streams, shown_in(run_tshark(pcap), LINK_PORT), spec, tally)
        check_port_preference(vectors, spec, workdir, tally)
        check_robustness(vectors, workdir, tally)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    for line in tally.lines:
        print(line)
    ok_count = sum(v.ok for v in vectors)
    print(f"{len(vectors)} vectors ({ok_count} ok, {len(vectors) - ok_count} errors) from {VECTORS.relative_to(ROOT)}: "
          f"each alone, every ok one again among others in one segment, two split across segments, "
          f"two on another port; then random and corrupted frames")
    print(f"{tally.passed} passed, {tally.failed} failed")
    sys.exit(1 if tally.failed else 0)


if __name__ == "__main__":
    main()
