#!/usr/bin/env python3
"""Writes the golden frames of protocol/vectors/ from PROTOCOL.md alone.

This encoder is deliberately independent of the Rust code: it builds every frame byte
by byte from the layouts in PROTOCOL.md §2 and §5, and states the meaning as the Rust
`Debug` form the decoder must produce. The Rust tests (tests/vectors.rs) decode each
frame, compare it with `meaning` and re-encode it bit-exact, so spec, vectors and code
cannot drift apart. Run from the repository root: python3 protocol/vectors/gen_vectors.py
"""
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent

T = dict(
    LinkHello=0x01, LinkChallenge=0x02, LinkResponse=0x03, LinkAccept=0x04,
    LinkReject=0x05, Keepalive=0x06, KeepaliveAck=0x07, LinkClose=0x08,
    FrameError=0x09, Ack=0x0A, LinkRedirect=0x0B, RegRequest=0x10, AuthChallenge=0x11,
    AuthResponse=0x12, RegAccept=0x13, RegReject=0x14, Deregister=0x15,
    LocationUpdate=0x16, LocationAccept=0x17, Affiliate=0x18, AffiliateAccept=0x19,
    GroupCallReq=0x20, PrivateCallReq=0x21, EmergencyCallReq=0x22, CallAlertReq=0x23,
    StatusReq=0x24, ShortDataReq=0x25, CallCancel=0x26, ChannelGrant=0x28,
    Queued=0x29, QueueUpdate=0x2A, PttPress=0x2B, PttRelease=0x2C, PttGrant=0x2D,
    CallEnd=0x2E, Preempted=0x2F, Deny=0x30, CallAlert=0x31, StatusDelivery=0x32,
    ShortDataDelivery=0x33, ShortDataAck=0x34, Inhibit=0x40, InhibitAck=0x41,
    Enable=0x42, EnableAck=0x43, RadioCheck=0x44, RadioCheckAck=0x45, SiteStatus=0x50,
)
CAUSE = dict(Normal=0x00, UnsupportedVersion=0x11, UnknownMessageType=0x12,
             InvalidField=0x16, UnknownSite=0x20, LinkAuthFailed=0x21,
             KeepaliveTimeout=0x23, ShuttingDown=0x25, ServiceNotSupported=0x30,
             UnitInhibited=0x41, Preempted=0x54, HangTimeExpired=0x56, Busy=0x50)


def header(ty, txn, length, flags=0, magic=b"TK", version=1):
    return magic + bytes([version, ty]) + struct.pack(">HIH", flags, txn, length)


def frame(name, txn, payload, flags=0):
    return header(T[name], txn, len(payload), flags) + payload


def bcd(digits):
    nibbles = [int(c) for c in digits] + [0xF]
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 16, 2))


def unit(f, m):
    return struct.pack(">HH", f, m)


def unit_dbg(f, m):
    return f"Unit {{ fleet: FleetId({f}), member: MemberId({m}) }}"


def tg_list(p, sec):
    return struct.pack(">HB", p, len(sec)) + b"".join(struct.pack(">H", s) for s in sec)


def tg_list_dbg(p, sec):
    s = ", ".join(f"TalkgroupId({x})" for x in sec)
    return f"TalkgroupList {{ primary: TalkgroupId({p}), secondary: [{s}] }}"


def tgt_unit(f, m):
    return bytes([1]) + unit(f, m)


def tgt_tg(f, t):
    return bytes([2]) + struct.pack(">HH", f, t)


def tgt_tg_dbg(f, t):
    return f"Talkgroup {{ fleet: FleetId({f}), talkgroup: TalkgroupId({t}) }}"


def arr_dbg(b):
    return "[" + ", ".join(str(x) for x in b) + "]"


def ok(name, data, msg, txn, emergency=False, note=""):
    return dict(name=name, hex=data.hex(), expect="ok", note=note,
                meaning=f"Frame {{ txn: {txn}, emergency: {'true' if emergency else 'false'}, msg: {msg} }}")


def err(name, data, cause, fatal=False, note=""):
    return dict(name=name, hex=data.hex(), expect=f"error 0x{cause:02x}" + (" fatal" if fatal else ""),
                note=note)


NONCE = bytes(range(32))
MAC = bytes(range(0xA0, 0xC0))
RAND = bytes(range(0x10, 0x20))
RES = bytes.fromhex("a54211d5e3ba50bf")
IMSI = "001010123456789"
IMEI = "490154203237518"
C = 0x80000001  # first controller transaction id

link = [
    ok("link_hello", frame("LinkHello", 1, struct.pack(">H", 7)), "LinkHello { site: SiteId(7) }", 1),
    ok("link_challenge", frame("LinkChallenge", 1, NONCE), f"LinkChallenge {{ nonce: {arr_dbg(NONCE)} }}", 1),
    ok("link_response", frame("LinkResponse", 1, MAC), f"LinkResponse {{ mac: {arr_dbg(MAC)} }}", 1),
    ok("link_accept", frame("LinkAccept", 1, struct.pack(">IB", 5000, 3)),
       "LinkAccept { keepalive_interval_ms: 5000, misses: 3 }", 1),
    ok("link_reject", frame("LinkReject", 1, bytes([0x21])), "LinkReject { cause: LinkAuthFailed }", 1),
    ok("link_reject_unexpected_first_frame", frame("LinkReject", 5, bytes([0x1A])), "LinkReject { cause: UnexpectedMessage }", 5,
       note="a well-formed first frame that is not LINK_HELLO, answered on its own transaction id (§2.3)"),
    ok("link_reject_unknown_site", frame("LinkReject", 1, bytes([0x20])), "LinkReject { cause: UnknownSite }", 1),
    ok("link_redirect", frame("LinkRedirect", 1, bytes([13]) + b"10.0.0.2:7300"),
       'LinkRedirect { active: ControllerAddress("10.0.0.2:7300") }', 1,
       note="a standby names the active controller's link address, on the LINK_HELLO's transaction (§3.3)"),
    ok("link_reject_not_active", frame("LinkReject", 1, bytes([0x29])), "LinkReject { cause: NotActive }", 1,
       note="then refuses the link: it is not the active controller (§3.3)"),
    ok("keepalive_from_gateway", frame("Keepalive", 2, b""), "Keepalive", 2),
    ok("keepalive_from_controller", frame("Keepalive", C, b""), "Keepalive", C),
    ok("keepalive_ack", frame("KeepaliveAck", C, b""), "KeepaliveAck", C),
    ok("link_close_shutdown", frame("LinkClose", 0, bytes([0x25])), "LinkClose { cause: ShuttingDown }", 0),
    ok("link_close_keepalive", frame("LinkClose", 0, bytes([0x23])), "LinkClose { cause: KeepaliveTimeout }", 0),
    ok("frame_error", frame("FrameError", 9, bytes([0x12, 0x7F])),
       "FrameError { cause: UnknownMessageType, offending_type: 127 }", 9),
    ok("ack", frame("Ack", 5, bytes([0x15])), "Ack { acked: Deregister }", 5),
]

reg = [
    ok("reg_request_imei", frame("RegRequest", 0x10, bytes([1]) + bcd(IMEI)),
       f'RegRequest {{ identity: Imei(Imei("{IMEI}")) }}', 0x10),
    ok("reg_request_imsi", frame("RegRequest", 0x11, bytes([2]) + bcd(IMSI)),
       f'RegRequest {{ identity: Imsi(Imsi("{IMSI}")) }}', 0x11),
    ok("reg_request_tmsi", frame("RegRequest", 0x12, bytes([3]) + struct.pack(">I", 0x1234ABCD)),
       f"RegRequest {{ identity: Tmsi(Tmsi({0x1234ABCD})) }}", 0x12),
    ok("auth_challenge", frame("AuthChallenge", 0x10, RAND), f"AuthChallenge {{ rand: {arr_dbg(RAND)} }}", 0x10),
    ok("auth_response", frame("AuthResponse", 0x10, RES), f"AuthResponse {{ res: {arr_dbg(RES)} }}", 0x10),
    ok("reg_accept", frame("RegAccept", 0x10, bcd(IMSI) + struct.pack(">II", 0x0001F4, 0xCAFE0001)
                           + unit(100, 7) + tg_list(10, [11, 12, 13])),
       f'RegAccept {{ imsi: Imsi("{IMSI}"), individual: IndividualId(500), tmsi: Tmsi({0xCAFE0001}), '
       f"unit: {unit_dbg(100, 7)}, talkgroups: {tg_list_dbg(10, [11, 12, 13])} }}", 0x10),
    ok("reg_reject", frame("RegReject", 0x10, bytes([0x41])), "RegReject { cause: UnitInhibited }", 0x10),
    ok("deregister", frame("Deregister", 0x20, struct.pack(">I", 42)), "Deregister { tmsi: Tmsi(42) }", 0x20),
    ok("location_update", frame("LocationUpdate", 0x21, struct.pack(">IB", 42, 2)),
       "LocationUpdate { tmsi: Tmsi(42), reason: SiteChange }", 0x21),
    ok("location_update_periodic", frame("LocationUpdate", 0x22, struct.pack(">IB", 42, 1)),
       "LocationUpdate { tmsi: Tmsi(42), reason: Periodic }", 0x22),
    ok("location_accept", frame("LocationAccept", 0x21, struct.pack(">I", 43)), "LocationAccept { tmsi: Tmsi(43) }", 0x21),
    ok("affiliate", frame("Affiliate", 0x23, struct.pack(">I", 42) + tg_list(10, [11])),
       f"Affiliate {{ tmsi: Tmsi(42), talkgroups: {tg_list_dbg(10, [11])} }}", 0x23),
    ok("affiliate_accept", frame("AffiliateAccept", 0x23, tg_list(10, [])),
       f"AffiliateAccept {{ talkgroups: {tg_list_dbg(10, [])} }}", 0x23),
]

calls = [
    ok("group_call_req", frame("GroupCallReq", 0x30, struct.pack(">IHB", 42, 10, 2)),
       "GroupCallReq { tmsi: Tmsi(42), talkgroup: TalkgroupId(10), scope: WideArea }", 0x30),
    ok("group_call_req_local", frame("GroupCallReq", 0x31, struct.pack(">IHB", 42, 10, 0)),
       "GroupCallReq { tmsi: Tmsi(42), talkgroup: TalkgroupId(10), scope: Local }", 0x31),
    ok("private_call_req", frame("PrivateCallReq", 0x32, struct.pack(">I", 42) + unit(100, 9)),
       f"PrivateCallReq {{ tmsi: Tmsi(42), target: {unit_dbg(100, 9)} }}", 0x32),
    ok("emergency_call_req", frame("EmergencyCallReq", 0x33, struct.pack(">IH", 42, 10), flags=1),
       "EmergencyCallReq { tmsi: Tmsi(42), talkgroup: TalkgroupId(10) }", 0x33, emergency=True),
    ok("call_alert_req", frame("CallAlertReq", 0x34, struct.pack(">I", 42) + unit(100, 9)),
       f"CallAlertReq {{ tmsi: Tmsi(42), target: {unit_dbg(100, 9)} }}", 0x34),
    ok("status_req_unit", frame("StatusReq", 0x35, struct.pack(">I", 42) + tgt_unit(100, 9) + struct.pack(">H", 17)),
       f"StatusReq {{ tmsi: Tmsi(42), target: Unit({unit_dbg(100, 9)}), code: 17 }}", 0x35),
    ok("status_req_talkgroup", frame("StatusReq", 0x36, struct.pack(">I", 42) + tgt_tg(100, 10) + struct.pack(">H", 3)),
       f"StatusReq {{ tmsi: Tmsi(42), target: {tgt_tg_dbg(100, 10)}, code: 3 }}", 0x36),
    ok("short_data_req", frame("ShortDataReq", 0x37, struct.pack(">I", 42) + tgt_unit(100, 9) + struct.pack(">H", 5) + b"hello"),
       f"ShortDataReq {{ tmsi: Tmsi(42), target: Unit({unit_dbg(100, 9)}), data: ShortData({b'hello'.hex()}) }}", 0x37),
    ok("call_cancel", frame("CallCancel", 0x38, struct.pack(">II", 42, 0x30)),
       "CallCancel { tmsi: Tmsi(42), request_txn: 48 }", 0x38),
    ok("channel_grant", frame("ChannelGrant", 0x30, struct.pack(">IB", 1001, 1) + unit(100, 7) + tgt_tg(100, 10)
                              + bytes([2]) + struct.pack(">HBB", 7, 0, 1) + struct.pack(">HBB", 8, 1, 5)),
       f"ChannelGrant {{ call: CallId(1001), call_type: Group, caller: {unit_dbg(100, 7)}, "
       f"target: {tgt_tg_dbg(100, 10)}, sites: [SiteGrant {{ site: SiteId(7), carrier: Carrier(0), slot: Slot(1) }}, "
       f"SiteGrant {{ site: SiteId(8), carrier: Carrier(1), slot: Slot(5) }}] }}", 0x30),
    ok("channel_grant_private", frame("ChannelGrant", C, struct.pack(">IB", 1002, 2) + unit(100, 7) + tgt_unit(100, 9)
                                      + bytes([1]) + struct.pack(">HBB", 7, 0, 2)),
       f"ChannelGrant {{ call: CallId(1002), call_type: Private, caller: {unit_dbg(100, 7)}, "
       f"target: Unit({unit_dbg(100, 9)}), sites: [SiteGrant {{ site: SiteId(7), carrier: Carrier(0), slot: Slot(2) }}] }}", C),
    ok("queued", frame("Queued", 0x30, struct.pack(">H", 3)), "Queued { position: QueuePosition(3) }", 0x30),
    ok("queue_update", frame("QueueUpdate", 0x30, struct.pack(">H", 1)), "QueueUpdate { position: QueuePosition(1) }", 0x30),
    ok("ptt_press", frame("PttPress", 0x39, struct.pack(">II", 1001, 42)), "PttPress { call: CallId(1001), tmsi: Tmsi(42) }", 0x39),
    ok("ptt_release", frame("PttRelease", 0x3A, struct.pack(">II", 1001, 42)), "PttRelease { call: CallId(1001), tmsi: Tmsi(42) }", 0x3A),
    ok("ptt_grant", frame("PttGrant", 0x39, struct.pack(">I", 1001) + unit(100, 7)),
       f"PttGrant {{ call: CallId(1001), talker: {unit_dbg(100, 7)} }}", 0x39),
    ok("call_end", frame("CallEnd", C, struct.pack(">IB", 1001, 0x56)), "CallEnd { call: CallId(1001), cause: HangTimeExpired }", C),
    ok("preempted", frame("Preempted", C, struct.pack(">IB", 1001, 0x54)), "Preempted { call: CallId(1001), cause: Preempted }", C),
    ok("deny", frame("Deny", 0x30, bytes([0x20, 0x30])), "Deny { request: GroupCallReq, cause: ServiceNotSupported }", 0x30),
    # PROTOCOL.md §5.3 decisions: floor taken, cancel, invalid target, permissions, shutdown.
    ok("deny_ptt_floor_taken", frame("Deny", 0x39, bytes([0x2B, 0x5E])), "Deny { request: PttPress, cause: FloorTaken }", 0x39,
       note="PTT_PRESS while another unit holds the floor"),
    ok("deny_cancelled", frame("Deny", 0x30, bytes([0x20, 0x55])), "Deny { request: GroupCallReq, cause: Cancelled }", 0x30,
       note="the cancelled request's own transaction hears DENY cancelled after the cancel's ACK"),
    ok("ack_call_cancel", frame("Ack", 0x38, bytes([0x26])), "Ack { acked: CallCancel }", 0x38),
    ok("deny_talkgroup_does_not_exist", frame("Deny", 0x30, bytes([0x20, 0x5D])),
       "Deny { request: GroupCallReq, cause: InvalidTarget }", 0x30),
    ok("deny_short_data_not_permitted", frame("Deny", 0x37, bytes([0x25, 0x31])),
       "Deny { request: ShortDataReq, cause: ServiceNotPermitted }", 0x37, note="the unit lacks the data permission (§5.6)"),
    ok("call_end_shutting_down", frame("CallEnd", C, struct.pack(">IB", 1001, 0x25)),
       "CallEnd { call: CallId(1001), cause: ShuttingDown }", C, note="sent for every running call before LINK_CLOSE 0x25"),
    ok("call_end_operator", frame("CallEnd", C, struct.pack(">IB", 1001, 0x5F)),
       "CallEnd { call: CallId(1001), cause: OperatorEnded }", C, note="an operator ended the call (§5.3)"),
    # §2.1: every frame about an emergency carries the flag.
    ok("queued_emergency", frame("Queued", 0x33, struct.pack(">H", 1), flags=1), "Queued { position: QueuePosition(1) }", 0x33,
       emergency=True),
    ok("channel_grant_emergency", frame("ChannelGrant", 0x33, struct.pack(">IB", 1003, 3) + unit(100, 7) + tgt_tg(100, 10)
                                        + bytes([1]) + struct.pack(">HBB", 7, 0, 3), flags=1),
       f"ChannelGrant {{ call: CallId(1003), call_type: Emergency, caller: {unit_dbg(100, 7)}, "
       f"target: {tgt_tg_dbg(100, 10)}, sites: [SiteGrant {{ site: SiteId(7), carrier: Carrier(0), slot: Slot(3) }}] }}", 0x33,
       emergency=True),
    ok("call_end_emergency", frame("CallEnd", C, struct.pack(">IB", 1003, 0x00), flags=1),
       "CallEnd { call: CallId(1003), cause: Normal }", C, emergency=True),
    ok("call_alert", frame("CallAlert", C, struct.pack(">I", 43) + unit(100, 7)),
       f"CallAlert {{ tmsi: Tmsi(43), caller: {unit_dbg(100, 7)} }}", C),
    ok("status_delivery", frame("StatusDelivery", C, struct.pack(">I", 43) + unit(100, 7) + struct.pack(">H", 17)),
       f"StatusDelivery {{ tmsi: Tmsi(43), source: {unit_dbg(100, 7)}, code: 17 }}", C),
    ok("short_data_delivery", frame("ShortDataDelivery", C, struct.pack(">QI", 77, 43) + unit(100, 7) + struct.pack(">H", 2) + b"ok"),
       f"ShortDataDelivery {{ id: MessageId(77), tmsi: Tmsi(43), source: {unit_dbg(100, 7)}, data: ShortData({b'ok'.hex()}) }}", C),
    ok("short_data_ack", frame("ShortDataAck", C, struct.pack(">Q", 77)), "ShortDataAck { id: MessageId(77) }", C),
]

ops = [
    ok("inhibit", frame("Inhibit", C, struct.pack(">I", 42)), "Inhibit { tmsi: Tmsi(42) }", C),
    ok("inhibit_ack", frame("InhibitAck", C, struct.pack(">I", 42)), "InhibitAck { tmsi: Tmsi(42) }", C,
       note="on the INHIBIT's transaction, with its TMSI (§5.4)"),
    ok("call_end_unit_inhibited", frame("CallEnd", C + 1, struct.pack(">IB", 1001, 0x41)),
       "CallEnd { call: CallId(1001), cause: UnitInhibited }", C + 1, note="the inhibited unit's calls end first"),
    ok("enable", frame("Enable", C, struct.pack(">I", 42)), "Enable { tmsi: Tmsi(42) }", C),
    ok("enable_ack", frame("EnableAck", C, struct.pack(">I", 42)), "EnableAck { tmsi: Tmsi(42) }", C),
    ok("radio_check", frame("RadioCheck", C, struct.pack(">I", 42)), "RadioCheck { tmsi: Tmsi(42) }", C),
    ok("radio_check_ack", frame("RadioCheckAck", C, struct.pack(">I", 42)), "RadioCheckAck { tmsi: Tmsi(42) }", C,
       note="the radio answered the check: on the RADIO_CHECK's transaction, with its TMSI (§5.4)"),
    ok("site_status_slot_faulty", frame("SiteStatus", 0x40, bytes([1, 3, 1])),
       "SiteStatus { carrier: Carrier(1), slot: Slot(Slot(3)), state: Faulty }", 0x40),
    ok("site_status_carrier_restored", frame("SiteStatus", 0x41, bytes([0, 0xFF, 0])),
       "SiteStatus { carrier: Carrier(0), slot: WholeCarrier, state: InService }", 0x41),
]

hello = struct.pack(">H", 7)
errors = [
    err("bad_magic", b"XK" + header(0x01, 1, 2)[2:] + hello, 0x18, fatal=True, note="magic is not TK"),
    err("bad_version", header(0x01, 1, 2, version=2) + hello, 0x11, fatal=True, note="version 2"),
    err("too_long", header(0x25, 1, 2049), 0x13, fatal=True, note="length 2049 > MAX_PAYLOAD; payload never read"),
    err("unknown_type", header(0x7F, 9, 0), 0x12, note="type 0x7F is not in §5"),
    err("reserved_flag", header(0x06, 2, 0, flags=0x0002), 0x16, note="flags bit 1 is reserved"),
    err("truncated_hello", header(0x01, 1, 1) + b"\x00", 0x14, note="site id needs 2 bytes"),
    err("trailing_keepalive", header(0x06, 2, 1) + b"\x00", 0x15, note="KEEPALIVE has an empty payload"),
    err("site_zero", frame("LinkHello", 1, struct.pack(">H", 0)), 0x16, note="site id 0 is out of range"),
    err("site_4096", frame("LinkHello", 1, struct.pack(">H", 4096)), 0x16, note="site id above 4095"),
    err("bad_bcd", frame("RegRequest", 0x10, bytes([2]) + bytes.fromhex("0010101234567A9F")), 0x16, note="nibble A in the IMSI"),
    err("bad_bcd_filler", frame("RegRequest", 0x10, bytes([2]) + bytes.fromhex("0010101234567890")), 0x16, note="filler nibble must be F"),
    err("bad_identity_kind", frame("RegRequest", 0x10, bytes([4]) + struct.pack(">I", 1)), 0x16, note="identity kind 4"),
    err("reserved_tmsi", frame("Deregister", 0x20, struct.pack(">I", 0xFFFFFFFF)), 0x16, note="TMSI all-ones is reserved"),
    err("unknown_cause", frame("LinkClose", 0, bytes([0xEE])), 0x16, note="cause 0xEE is not in §6"),
    err("four_secondary_talkgroups", frame("Affiliate", 0x23, struct.pack(">IHB", 42, 10, 4) + struct.pack(">HHHH", 1, 2, 3, 4)), 0x16,
        note="at most 3 secondary talkgroups"),
    err("secondary_equals_primary", frame("Affiliate", 0x23, struct.pack(">I", 42) + tg_list(10, [10])), 0x16),
    err("empty_short_data", frame("ShortDataReq", 0x37, struct.pack(">I", 42) + tgt_unit(100, 9) + struct.pack(">H", 0)), 0x16,
        note="short data length 0"),
    err("short_data_cut", frame("ShortDataReq", 0x37, struct.pack(">I", 42) + tgt_unit(100, 9) + struct.pack(">H", 9) + b"abc"), 0x14,
        note="declares 9 bytes, carries 3"),
    err("grant_no_sites", frame("ChannelGrant", 0x30, struct.pack(">IB", 1001, 1) + unit(100, 7) + tgt_tg(100, 10) + bytes([0])), 0x16),
    err("slot_6", frame("SiteStatus", 0x40, bytes([0, 6, 1])), 0x16, note="slot 6 does not exist"),
    err("redirect_empty_address", frame("LinkRedirect", 1, bytes([0])), 0x16, note="an address has 1..=255 bytes"),
    err("redirect_address_with_space", frame("LinkRedirect", 1, bytes([9]) + b"host :73\x00"), 0x16,
        note="an address is printable ASCII without spaces"),
    err("redirect_address_cut", frame("LinkRedirect", 1, bytes([20]) + b"10.0.0.2:7300"), 0x14,
        note="declares 20 bytes, carries 13"),
    err("accept_interval_zero", frame("LinkAccept", 1, struct.pack(">IB", 0, 3)), 0x16, note="interval below 100 ms"),
    err("deny_unknown_request_type", frame("Deny", 0x30, bytes([0x7F, 0x30])), 0x16),
]

FILES = {"link.txt": link, "registration.txt": reg, "calls.txt": calls, "operator_and_site.txt": ops,
         "errors.txt": errors}


def main():
    for fname, vectors in FILES.items():
        lines = [f"# Golden frames: {fname[:-4]}. Written by gen_vectors.py from PROTOCOL.md; format in PROTOCOL.md §7.", ""]
        for v in vectors:
            if v.get("note"):
                lines.append(f"# {v['note']}")
            lines.append(f"name: {v['name']}")
            lines.append(f"hex: {v['hex']}")
            lines.append(f"expect: {v['expect']}")
            if "meaning" in v:
                lines.append(f"meaning: {v['meaning']}")
            lines.append("")
        (OUT / fname).write_text("\n".join(lines))
    seen = {bytes.fromhex(v["hex"])[3] for vs in FILES.values() for v in vs if v["expect"] == "ok"}
    missing = set(T.values()) - seen
    assert not missing, f"message types without a vector: {sorted(missing)}"


if __name__ == "__main__":
    main()
