-- Wireshark dissector for the trunkd site link: the TCP link between base-station
-- gateways and the trunkd controller, protocol version 1 (protocol/PROTOCOL.md).
--
-- Every header field (§2) and every field of every message (§5) is shown by name, with
-- identities as the spec writes them (IMSI and IMEI as their 15 digits) and causes by
-- their §6 names. Frames split across TCP segments are reassembled and several frames in
-- one segment are each decoded. What a receiver would refuse (§2.3, and the ranges of §4)
-- is flagged with an expert error naming the cause, as FRAME_ERROR would.
--
-- Install: copy this file into Wireshark's personal Lua plugins folder, or run
-- `tshark -X lua_script:trunkd.lua`; see tools/wireshark/README.md.

local trunkd = Proto("trunkd", "trunkd site link")

-- §1 and §2
local DEFAULT_PORT = 7300
local HEADER_LEN = 12
local MAX_PAYLOAD = 2048
local MAGIC = 0x544B -- "TK"
local VERSION = 1
local FLAG_EMERGENCY = 0x0001
local FIRST_CONTROLLER_TXN = 0x80000000

-- §6: one cause table for every reject, close, error, deny and call end.
local cause_names = {
    [0x00] = "normal",
    [0x01] = "unspecified",
    [0x11] = "unsupported version",
    [0x12] = "unknown message type",
    [0x13] = "frame too long",
    [0x14] = "truncated payload",
    [0x15] = "trailing bytes",
    [0x16] = "invalid field",
    [0x17] = "too many malformed",
    [0x18] = "out of sync",
    [0x19] = "wrong direction",
    [0x1A] = "unexpected message",
    [0x20] = "unknown site",
    [0x21] = "link auth failed",
    [0x22] = "handshake timeout",
    [0x23] = "keepalive timeout",
    [0x24] = "superseded",
    [0x25] = "shutting down",
    [0x26] = "connection limit",
    [0x27] = "peer not reading",
    [0x28] = "controller restart",
    [0x29] = "not active",
    [0x2A] = "takeover",
    [0x2B] = "TLS required",
    [0x2C] = "TLS not offered",
    [0x30] = "service not supported",
    [0x31] = "service not permitted",
    [0x40] = "unknown subscriber",
    [0x41] = "unit inhibited",
    [0x42] = "auth failed",
    [0x43] = "challenge expired",
    [0x44] = "no challenge pending",
    [0x45] = "bad IMEI check digit",
    [0x46] = "not registered",
    [0x47] = "clone suspected",
    [0x48] = "talkgroup not permitted",
    [0x49] = "not affiliated",
    [0x50] = "busy",
    [0x51] = "queue full",
    [0x52] = "target busy",
    [0x53] = "target unreachable",
    [0x54] = "preempted",
    [0x55] = "cancelled",
    [0x56] = "hang time expired",
    [0x57] = "max duration",
    [0x58] = "party link lost",
    [0x59] = "party deregistered",
    [0x5A] = "slot faulty",
    [0x5B] = "emergency takeover",
    [0x5C] = "short data expired",
    [0x5D] = "invalid target",
    [0x5E] = "floor taken",
    [0x5F] = "ended by operator",
}

-- §5: every message type with the side that sends it. `request` marks the G→C messages
-- that are not answers: a gateway sends them on a transaction of its own, whose id must
-- lie in 0x00000001..=0x7FFFFFFF (§2.2).
local GATEWAY, CONTROLLER, BOTH = "gateway", "controller", "both"
local messages = {
    [0x01] = { name = "LINK_HELLO", from = GATEWAY, request = true },
    [0x02] = { name = "LINK_CHALLENGE", from = CONTROLLER },
    [0x03] = { name = "LINK_RESPONSE", from = GATEWAY },
    [0x04] = { name = "LINK_ACCEPT", from = CONTROLLER },
    [0x05] = { name = "LINK_REJECT", from = CONTROLLER },
    [0x06] = { name = "KEEPALIVE", from = BOTH, request = true },
    [0x07] = { name = "KEEPALIVE_ACK", from = BOTH },
    [0x08] = { name = "LINK_CLOSE", from = BOTH },
    [0x09] = { name = "FRAME_ERROR", from = BOTH },
    [0x0A] = { name = "ACK", from = BOTH },
    [0x0B] = { name = "LINK_REDIRECT", from = CONTROLLER },
    [0x10] = { name = "REG_REQUEST", from = GATEWAY, request = true },
    [0x11] = { name = "AUTH_CHALLENGE", from = CONTROLLER },
    [0x12] = { name = "AUTH_RESPONSE", from = GATEWAY },
    [0x13] = { name = "REG_ACCEPT", from = CONTROLLER },
    [0x14] = { name = "REG_REJECT", from = CONTROLLER },
    [0x15] = { name = "DEREGISTER", from = GATEWAY, request = true },
    [0x16] = { name = "LOCATION_UPDATE", from = GATEWAY, request = true },
    [0x17] = { name = "LOCATION_ACCEPT", from = CONTROLLER },
    [0x18] = { name = "AFFILIATE", from = GATEWAY, request = true },
    [0x19] = { name = "AFFILIATE_ACCEPT", from = CONTROLLER },
    [0x20] = { name = "GROUP_CALL_REQ", from = GATEWAY, request = true },
    [0x21] = { name = "PRIVATE_CALL_REQ", from = GATEWAY, request = true },
    [0x22] = { name = "EMERGENCY_CALL_REQ", from = GATEWAY, request = true },
    [0x23] = { name = "CALL_ALERT_REQ", from = GATEWAY, request = true },
    [0x24] = { name = "STATUS_REQ", from = GATEWAY, request = true },
    [0x25] = { name = "SHORT_DATA_REQ", from = GATEWAY, request = true },
    [0x26] = { name = "CALL_CANCEL", from = GATEWAY, request = true },
    [0x28] = { name = "CHANNEL_GRANT", from = CONTROLLER },
    [0x29] = { name = "QUEUED", from = CONTROLLER },
    [0x2A] = { name = "QUEUE_UPDATE", from = CONTROLLER },
    [0x2B] = { name = "PTT_PRESS", from = GATEWAY, request = true },
    [0x2C] = { name = "PTT_RELEASE", from = GATEWAY, request = true },
    [0x2D] = { name = "PTT_GRANT", from = CONTROLLER },
    [0x2E] = { name = "CALL_END", from = BOTH },
    [0x2F] = { name = "PREEMPTED", from = CONTROLLER },
    [0x30] = { name = "DENY", from = CONTROLLER },
    [0x31] = { name = "CALL_ALERT", from = CONTROLLER },
    [0x32] = { name = "STATUS_DELIVERY", from = CONTROLLER },
    [0x33] = { name = "SHORT_DATA_DELIVERY", from = CONTROLLER },
    [0x34] = { name = "SHORT_DATA_ACK", from = GATEWAY },
    [0x40] = { name = "INHIBIT", from = CONTROLLER },
    [0x41] = { name = "INHIBIT_ACK", from = GATEWAY },
    [0x42] = { name = "ENABLE", from = CONTROLLER },
    [0x43] = { name = "ENABLE_ACK", from = GATEWAY },
    [0x44] = { name = "RADIO_CHECK", from = CONTROLLER },
    [0x45] = { name = "RADIO_CHECK_ACK", from = GATEWAY },
    [0x50] = { name = "SITE_STATUS", from = GATEWAY, request = true },
}

local type_names = {}
for code, msg in pairs(messages) do
    type_names[code] = msg.name
end

-- The small enumerations of §4 and §5.
local identity_kinds = { [1] = "IMEI", [2] = "IMSI", [3] = "TMSI" }
local target_kinds = { [1] = "unit", [2] = "talkgroup" }
local location_reasons = { [1] = "periodic", [2] = "site change" }
local call_scopes = { [0] = "local", [1] = "selected area", [2] = "wide area" }
local call_types = { [1] = "group", [2] = "private", [3] = "emergency" }
local resource_states = { [0] = "in service / restored", [1] = "faulty" }
local WHOLE_CARRIER = 0xFF

local f = {
    -- §2 header
    magic = ProtoField.uint16("trunkd.magic", "Magic", base.HEX),
    version = ProtoField.uint8("trunkd.version", "Version", base.DEC),
    type = ProtoField.uint8("trunkd.type", "Message type", base.HEX, type_names),
    flags = ProtoField.uint16("trunkd.flags", "Flags", base.HEX),
    emergency = ProtoField.bool("trunkd.flags.emergency", "EMERGENCY", 16, { "set", "not set" }, FLAG_EMERGENCY),
    reserved = ProtoField.uint16("trunkd.flags.reserved", "Reserved", base.HEX, nil, 0xFFFE),
    txn = ProtoField.uint32("trunkd.txn", "Transaction id", base.DEC_HEX),
    txn_origin = ProtoField.string("trunkd.txn.origin", "Transaction started by"),
    length = ProtoField.uint16("trunkd.length", "Payload length", base.DEC),
    direction = ProtoField.string("trunkd.direction", "Direction"),

    -- §5.1 link
    site = ProtoField.uint16("trunkd.site", "Site id", base.DEC),
    nonce = ProtoField.bytes("trunkd.nonce", "Nonce"),
    mac = ProtoField.bytes("trunkd.mac", "MAC (HMAC-SHA-256)"),
    interval_ms = ProtoField.uint32("trunkd.interval_ms", "Keepalive interval (ms)", base.DEC),
    misses = ProtoField.uint8("trunkd.misses", "Misses", base.DEC),
    cause = ProtoField.uint8("trunkd.cause", "Cause", base.HEX, cause_names),
    offending_type = ProtoField.uint8("trunkd.offending_type", "Offending type", base.HEX, type_names),
    acked_type = ProtoField.uint8("trunkd.acked_type", "Acknowledged type", base.HEX, type_names),
    address_length = ProtoField.uint8("trunkd.address.length", "Address length", base.DEC),
    address = ProtoField.string("trunkd.address", "Active controller address"),

    -- §5.2 registration and mobility
    identity = ProtoField.none("trunkd.identity", "Identity"),
    identity_kind = ProtoField.uint8("trunkd.identity.kind", "Identity kind", base.DEC, identity_kinds),
    imei = ProtoField.string("trunkd.imei", "IMEI"),
    imsi = ProtoField.string("trunkd.imsi", "IMSI"),
    tmsi = ProtoField.uint32("trunkd.tmsi", "TMSI", base.DEC_HEX),
    rand = ProtoField.bytes("trunkd.rand", "RAND"),
    res = ProtoField.bytes("trunkd.res", "RES"),
    individual = ProtoField.uint32("trunkd.individual", "Individual id", base.DEC),
    reason = ProtoField.uint8("trunkd.reason", "Reason", base.DEC, location_reasons),
    talkgroups = ProtoField.none("trunkd.talkgroups", "Talkgroup list"),
    tg_primary = ProtoField.uint16("trunkd.talkgroups.primary", "Primary talkgroup", base.DEC),
    tg_count = ProtoField.uint8("trunkd.talkgroups.count", "Secondary count", base.DEC),
    tg_secondary = ProtoField.uint16("trunkd.talkgroups.secondary", "Secondary talkgroup", base.DEC),

    -- §5.3 calls and services
    talkgroup = ProtoField.uint16("trunkd.talkgroup", "Talkgroup id", base.DEC),
    scope = ProtoField.uint8("trunkd.scope", "Scope", base.DEC, call_scopes),
    target_kind = ProtoField.uint8("trunkd.target.kind", "Target kind", base.DEC, target_kinds),
    target_talkgroup = ProtoField.uint16("trunkd.target.talkgroup", "Talkgroup id", base.DEC),
    target_id = ProtoField.uint16("trunkd.target.id", "Id (of an unknown target kind)", base.DEC),
    status_code = ProtoField.uint16("trunkd.status_code", "Status code", base.DEC),
    short_data_length = ProtoField.uint16("trunkd.short_data.length", "Short data length", base.DEC),
    short_data = ProtoField.bytes("trunkd.short_data", "Short data"),
    request_txn = ProtoField.uint32("trunkd.request_txn", "Transaction id of the request to cancel", base.DEC_HEX),
    call_id = ProtoField.uint32("trunkd.call_id", "Call id", base.DEC),
    call_type = ProtoField.uint8("trunkd.call_type", "Call type", base.DEC, call_types),
    grant_count = ProtoField.uint8("trunkd.grant.count", "Site count", base.DEC),
    grant = ProtoField.none("trunkd.grant", "Site grant"),
    grant_site = ProtoField.uint16("trunkd.grant.site", "Site id", base.DEC),
    grant_carrier = ProtoField.uint8("trunkd.grant.carrier", "Carrier", base.DEC),
    grant_slot = ProtoField.uint8("trunkd.grant.slot", "Slot", base.DEC),
    position = ProtoField.uint16("trunkd.position", "Queue position", base.DEC),
    request_type = ProtoField.uint8("trunkd.request_type", "Request type", base.HEX, type_names),
    message_id = ProtoField.uint64("trunkd.message_id", "Message id", base.DEC),

    -- §5.5 site
    carrier = ProtoField.uint8("trunkd.carrier", "Carrier", base.DEC),
    slot = ProtoField.uint8("trunkd.slot", "Slot", base.DEC),
    state = ProtoField.uint8("trunkd.state", "State", base.DEC, resource_states),

    -- Bytes that cannot be read as fields, each flagged by an expert error.
    payload = ProtoField.bytes("trunkd.payload", "Payload of an unknown message type"),
    incomplete = ProtoField.bytes("trunkd.incomplete", "Incomplete field"),
    trailing = ProtoField.bytes("trunkd.trailing", "Trailing bytes"),
    undecodable = ProtoField.bytes("trunkd.undecodable", "Undecodable after an invalid field"),
    lost = ProtoField.bytes("trunkd.lost", "Bytes after the stream was lost"),
}

-- A unit (§4: fleet id u16, member id u16) appears in several roles; each role has its
-- own fields so that a filter such as `trunkd.caller.member == 7` means what it says.
local function unit_role(role, label)
    return {
        label = label,
        tree = ProtoField.none("trunkd." .. role, label),
        fleet = ProtoField.uint16("trunkd." .. role .. ".fleet", "Fleet id", base.DEC),
        member = ProtoField.uint16("trunkd." .. role .. ".member", "Member id", base.DEC),
    }
end
local roles = {
    unit = unit_role("unit", "Unit"),
    target = unit_role("target", "Target"),
    caller = unit_role("caller", "Caller unit"),
    talker = unit_role("talker", "Talker unit"),
    source = unit_role("source", "Source unit"),
}

local field_list = {}
for _, field in pairs(f) do
    field_list[#field_list + 1] = field
end
for _, role in pairs(roles) do
    field_list[#field_list + 1] = role.tree
    field_list[#field_list + 1] = role.fleet
    field_list[#field_list + 1] = role.member
end
trunkd.fields = field_list

-- One expert per §2.3 cause the bytes of one frame can show, so `trunkd.invalid_field`
-- finds every frame a receiver would answer with FRAME_ERROR 0x16.
local function malformed(abbrev, code)
    return ProtoExpert.new("trunkd." .. abbrev, cause_names[code], expert.group.MALFORMED, expert.severity.ERROR)
end
local experts = {
    [0x11] = malformed("unsupported_version", 0x11),
    [0x12] = malformed("unknown_message_type", 0x12),
    [0x13] = malformed("frame_too_long", 0x13),
    [0x14] = malformed("truncated_payload", 0x14),
    [0x15] = malformed("trailing_bytes", 0x15),
    [0x16] = malformed("invalid_field", 0x16),
    [0x18] = malformed("out_of_sync", 0x18),
    [0x19] = malformed("wrong_direction", 0x19),
}
local ex_spec = ProtoExpert.new("trunkd.spec_violation", "frame against a rule of PROTOCOL.md",
    expert.group.PROTOCOL, expert.severity.WARN)
local ex_bug = ProtoExpert.new("trunkd.dissector_error", "dissector error",
    expert.group.MALFORMED, expert.severity.ERROR)
local expert_list = { ex_spec, ex_bug }
for _, ex in pairs(experts) do
    expert_list[#expert_list + 1] = ex
end
trunkd.experts = expert_list

trunkd.prefs.port = Pref.uint("Link TCP port", DEFAULT_PORT,
    "The controller's site-link port (trunkd's link.listen): frames to it are gateway to "
        .. "controller, frames from it controller to gateway")
trunkd.prefs.reassemble = Pref.bool("Reassemble frames split across TCP segments", true,
    "Needs the TCP preference \"Allow subdissector to reassemble TCP streams\" as well")

-- Value checks: each returns nil for a value in range, else what is wrong with it.
local function in_range(lo, hi)
    return function(v)
        if v < lo or v > hi then
            return string.format("%d is outside %d..=%d", v, lo, hi)
        end
    end
end
local function one_of(names)
    return function(v)
        if names[v] == nil then
            return string.format("%d is not a defined value", v)
        end
    end
end
local nonzero = in_range(1, 0xFFFF)
local site_id = in_range(1, 4095)
local function tmsi_value(v)
    if v == 0 or v == 0xFFFFFFFF then
        return string.format("0x%08X is reserved (\"no TMSI\")", v)
    end
end
local function cause_code(v)
    if cause_names[v] == nil then
        return string.format("0x%02X is not in the cause table (§6)", v)
    end
end
local function message_type(v)
    if messages[v] == nil then
        return string.format("0x%02X is not a message type (§5)", v)
    end
end

-- The payload reader: takes fields one after the other from a frame's payload, adds
-- them to the tree and flags what §2.3 calls malformed. Once the payload runs short it
-- stops: every later read returns nil, so a decoder reads on without checking.
local Reader = {}
Reader.__index = Reader

local function new_reader(tvb, offset, length, frame)
    return setmetatable({ tvb = tvb, pos = offset, stop = offset + length, frame = frame }, Reader)
end

function Reader:left()
    return self.stop - self.pos
end

-- The next `n` bytes (fewer if fewer are left, nil if none), without taking them: the
-- range a subtree of `n` bytes starting here should cover.
function Reader:peek(n)
    local left = self:left()
    if left <= 0 then
        return nil
    end
    return self.tvb(self.pos, math.min(n, left))
end

function Reader:error(item, code, detail)
    self.frame:error(item, code, detail)
end

-- Takes the `n` bytes of the field `what`, or flags the payload as truncated.
function Reader:take(tree, n, what)
    if self.stopped then
        return nil
    end
    local left = self:left()
    if left < n then
        local item = tree
        if left > 0 then
            item = tree:add(f.incomplete, self.tvb(self.pos, left))
            self.pos = self.stop
        end
        self:error(item, 0x14, string.format("%s needs %d bytes, %d left", what, n, left))
        self.stopped = true
        return nil
    end
    local range = self.tvb(self.pos, n)
    self.pos = self.pos + n
    self.last = what
    return range
end

-- Marks the rest of the payload as undecodable after an invalid field that decides how
-- it is laid out (an unknown identity kind).
function Reader:give_up(tree)
    if self:left() > 0 then
        tree:add(f.undecodable, self.tvb(self.pos, self:left()))
        self.pos = self.stop
    end
    self.stopped = true
end

-- An unsigned big-endian integer of 1, 2 or 4 bytes; `check` flags a value out of range.
function Reader:uint(tree, field, size, what, check)
    local range = self:take(tree, size, what)
    if not range then
        return nil
    end
    local value = range:uint()
    local item = tree:add(field, range)
    local wrong = check and check(value)
    if wrong then
        self:error(item, 0x16, what .. " " .. wrong)
    end
    return value, item
end

function Reader:bytes(tree, field, size, what)
    local range = self:take(tree, size, what)
    if range then
        tree:add(field, range)
    end
end

function Reader:tmsi(tree, role)
    local value, item = self:uint(tree, f.tmsi, 4, "TMSI", tmsi_value)
    if item and role then
        item:append_text(" (" .. role .. ")")
    end
    if value then
        self.frame:note("tmsi=" .. value)
    end
    return value
end

function Reader:cause(tree)
    local code = self:uint(tree, f.cause, 1, "cause", cause_code)
    if code then
        self.frame:note(cause_names[code] or string.format("cause 0x%02X", code))
    end
end

function Reader:call_id(tree)
    local id = self:uint(tree, f.call_id, 4, "call id", in_range(1, 0xFFFFFFFF))
    if id then
        self.frame:note("call=" .. id)
    end
end

-- A message id (§4): u64, 1..=2^64-1.
function Reader:message_id(tree)
    local range = self:take(tree, 8, "message id")
    if not range then
        return
    end
    local item = tree:add(f.message_id, range)
    if range(0, 4):uint() == 0 and range(4, 4):uint() == 0 then
        self:error(item, 0x16, "message id 0 is outside 1..=2^64-1")
    end
end

-- A subtree for a compound field over `range` (from Reader:peek), or over no bytes when
-- the payload has none left.
local function subtree(tree, field, range)
    if range then
        return tree:add(field, range)
    end
    return tree:add(field)
end

-- Packed BCD (§4): 15 digits, high nibble first, then the filler 0xF. Returns the digits
-- as the spec writes them (a nibble that is no digit shown in hex) and what is wrong.
local function bcd_digits(range)
    local nibbles = {}
    for i = 0, 7 do
        local byte = range(i, 1):uint()
        nibbles[#nibbles + 1] = math.floor(byte / 16)
        nibbles[#nibbles + 1] = byte % 16
    end
    local digits, wrong = {}, nil
    for i = 1, 15 do
        digits[i] = string.format("%X", nibbles[i])
        if nibbles[i] > 9 and not wrong then
            wrong = string.format("digit %d is the nibble 0x%X, not a decimal digit", i, nibbles[i])
        end
    end
    if nibbles[16] ~= 0xF and not wrong then
        wrong = string.format("filler nibble is 0x%X, not 0xF", nibbles[16])
    end
    return table.concat(digits), wrong
end

function Reader:digits(tree, field, what)
    local range = self:take(tree, 8, what)
    if not range then
        return nil
    end
    local digits, wrong = bcd_digits(range)
    local item = tree:add(field, range, digits)
    if wrong then
        self:error(item, 0x16, what .. " " .. wrong)
    end
    self.frame:note(what .. "=" .. digits)
    return digits
end

-- A unit (§4) in one of the roles above.
function Reader:unit(tree, role)
    local sub = subtree(tree, role.tree, self:peek(4))
    local fleet = self:uint(sub, role.fleet, 2, role.label .. " fleet id", nonzero)
    local member = self:uint(sub, role.member, 2, role.label .. " member id", nonzero)
    if fleet and member then
        sub:append_text(string.format(": fleet %d, member %d", fleet, member))
    end
end

-- A target (§4): kind u8 (1 = unit, 2 = talkgroup), fleet id u16, member or talkgroup id.
function Reader:target(tree)
    local role = roles.target
    local sub = subtree(tree, role.tree, self:peek(5))
    local kind = self:uint(sub, f.target_kind, 1, "target kind", one_of(target_kinds))
    local fleet = self:uint(sub, role.fleet, 2, "target fleet id", nonzero)
    local id
    if kind == 1 then
        id = self:uint(sub, role.member, 2, "target member id", nonzero)
    elseif kind == 2 then
        id = self:uint(sub, f.target_talkgroup, 2, "target talkgroup id", nonzero)
    else
        id = self:uint(sub, f.target_id, 2, "target id")
    end
    if kind and fleet and id then
        local id_name = kind == 2 and "talkgroup" or "member"
        sub:append_text(string.format(": %s, fleet %d, %s %d", target_kinds[kind] or "unknown kind", fleet, id_name, id))
    end
end

-- A talkgroup list (§4): primary u16, count u8 (0..=3), `count` secondaries u16, none
-- equal to the primary or to another.
function Reader:talkgroups(tree)
    local start = self.pos
    local sub = subtree(tree, f.talkgroups, self:peek(3))
    local primary = self:uint(sub, f.tg_primary, 2, "primary talkgroup", nonzero)
    local count = self:uint(sub, f.tg_count, 1, "secondary talkgroup count", in_range(0, 3))
    local seen = {}
    if primary then
        seen[primary] = true
    end
    local listed = { tostring(primary) }
    for _ = 1, count or 0 do
        local tg, item = self:uint(sub, f.tg_secondary, 2, "secondary talkgroup", nonzero)
        if tg then
            if seen[tg] then
                self:error(item, 0x16, string.format("secondary talkgroup %d repeats the primary or another secondary", tg))
            end
            seen[tg] = true
            listed[#listed + 1] = tostring(tg)
        end
    end
    if self.pos > start then
        sub:set_len(self.pos - start)
    end
    sub:append_text(": " .. table.concat(listed, ", "))
end

function Reader:short_data(tree)
    local length = self:uint(tree, f.short_data_length, 2, "short data length", in_range(1, 1024))
    if length and length > 0 then
        self:bytes(tree, f.short_data, length, "short data")
    end
end

-- §5: one decoder per message type, reading the payload fields in wire order.
local bodies = {}

bodies[0x01] = function(r, t) -- LINK_HELLO
    local site = r:uint(t, f.site, 2, "site id", site_id)
    if site then
        r.frame:note("site=" .. site)
    end
end
bodies[0x02] = function(r, t) -- LINK_CHALLENGE
    r:bytes(t, f.nonce, 32, "nonce")
end
bodies[0x03] = function(r, t) -- LINK_RESPONSE
    r:bytes(t, f.mac, 32, "mac")
end
bodies[0x04] = function(r, t) -- LINK_ACCEPT
    r:uint(t, f.interval_ms, 4, "interval_ms", in_range(100, 600000))
    r:uint(t, f.misses, 1, "misses", in_range(1, 255))
end
bodies[0x05] = function(r, t) -- LINK_REJECT
    r:cause(t)
end
bodies[0x06] = function() end -- KEEPALIVE: empty
bodies[0x07] = function() end -- KEEPALIVE_ACK: empty
bodies[0x08] = function(r, t) -- LINK_CLOSE
    r:cause(t)
end
bodies[0x09] = function(r, t) -- FRAME_ERROR: the offending type may be one no one knows
    r:cause(t)
    r:uint(t, f.offending_type, 1, "offending type")
end
bodies[0x0A] = function(r, t) -- ACK
    local acked = r:uint(t, f.acked_type, 1, "acknowledged type", message_type)
    if acked then
        r.frame:note("of " .. (type_names[acked] or string.format("0x%02X", acked)))
    end
end
bodies[0x0B] = function(r, t) -- LINK_REDIRECT: printable ASCII, 0x21..=0x7E
    local length = r:uint(t, f.address_length, 1, "address length", in_range(1, 255))
    if not length or length == 0 then
        return
    end
    local range = r:take(t, length, "address")
    if not range then
        return
    end
    local item = t:add(f.address, range)
    local bytes = range:bytes()
    for i = 0, bytes:len() - 1 do
        local byte = bytes:get_index(i)
        if byte < 0x21 or byte > 0x7E then
            r:error(item, 0x16, string.format("address byte %d is 0x%02X, not printable ASCII (0x21..=0x7E)", i + 1, byte))
            break
        end
    end
    -- The Info column is C text: a NUL would cut it short, so no byte goes in raw.
    r.frame:note("to " .. range:string():gsub("[^\33-\126]", function(c)
        return string.format("\\x%02X", c:byte())
    end))
end

bodies[0x10] = function(r, t) -- REG_REQUEST: identity (§4), a kind byte then the value
    local start = r.pos
    local sub = subtree(t, f.identity, r:peek(1))
    local kind = r:uint(sub, f.identity_kind, 1, "identity kind", one_of(identity_kinds))
    local value
    if kind == 1 then
        value = r:digits(sub, f.imei, "IMEI")
    elseif kind == 2 then
        value = r:digits(sub, f.imsi, "IMSI")
    elseif kind == 3 then
        value = r:tmsi(sub)
    elseif kind then
        r:give_up(sub)
    end
    if r.pos > start then
        sub:set_len(r.pos - start)
    end
    if kind then
        sub:append_text(": " .. (identity_kinds[kind] or "unknown kind") .. (value and (" " .. value) or ""))
    end
end
bodies[0x11] = function(r, t) -- AUTH_CHALLENGE
    r:bytes(t, f.rand, 16, "RAND")
end
bodies[0x12] = function(r, t) -- AUTH_RESPONSE
    r:bytes(t, f.res, 8, "RES")
end
bodies[0x13] = function(r, t) -- REG_ACCEPT
    r:digits(t, f.imsi, "IMSI")
    r:uint(t, f.individual, 4, "individual id", in_range(1, 16777215))
    r:tmsi(t)
    r:unit(t, roles.unit)
    r:talkgroups(t)
end
bodies[0x14] = function(r, t) -- REG_REJECT
    r:cause(t)
end
bodies[0x15] = function(r, t) -- DEREGISTER
    r:tmsi(t)
end
bodies[0x16] = function(r, t) -- LOCATION_UPDATE
    r:tmsi(t)
    r:uint(t, f.reason, 1, "reason", one_of(location_reasons))
end
bodies[0x17] = function(r, t) -- LOCATION_ACCEPT: the unit's TMSI from now on
    r:tmsi(t, "from now on")
end
bodies[0x18] = function(r, t) -- AFFILIATE
    r:tmsi(t)
    r:talkgroups(t)
end
bodies[0x19] = function(r, t) -- AFFILIATE_ACCEPT: the list now in force
    r:talkgroups(t)
end

bodies[0x20] = function(r, t) -- GROUP_CALL_REQ
    r:tmsi(t)
    r:uint(t, f.talkgroup, 2, "talkgroup id", nonzero)
    r:uint(t, f.scope, 1, "scope", one_of(call_scopes))
end
bodies[0x21] = function(r, t) -- PRIVATE_CALL_REQ: the target is a unit, without a kind byte
    r:tmsi(t)
    r:unit(t, roles.target)
end
bodies[0x22] = function(r, t) -- EMERGENCY_CALL_REQ
    r:tmsi(t)
    r:uint(t, f.talkgroup, 2, "talkgroup id", nonzero)
end
bodies[0x23] = bodies[0x21] -- CALL_ALERT_REQ: TMSI, target unit
bodies[0x24] = function(r, t) -- STATUS_REQ
    r:tmsi(t)
    r:target(t)
    r:uint(t, f.status_code, 2, "status code")
end
bodies[0x25] = function(r, t) -- SHORT_DATA_REQ
    r:tmsi(t)
    r:target(t)
    r:short_data(t)
end
bodies[0x26] = function(r, t) -- CALL_CANCEL
    r:tmsi(t)
    r:uint(t, f.request_txn, 4, "transaction id of the request to cancel")
end
bodies[0x28] = function(r, t) -- CHANNEL_GRANT
    r:call_id(t)
    r:uint(t, f.call_type, 1, "call type", one_of(call_types))
    r:unit(t, roles.caller)
    r:target(t)
    local count = r:uint(t, f.grant_count, 1, "site count", in_range(1, 255))
    for _ = 1, count or 0 do
        local sub = subtree(t, f.grant, r:peek(4))
        local site = r:uint(sub, f.grant_site, 2, "granted site id", site_id)
        local carrier = r:uint(sub, f.grant_carrier, 1, "granted carrier", in_range(0, 63))
        local slot = r:uint(sub, f.grant_slot, 1, "granted slot", in_range(0, 5))
        if site and carrier and slot then
            sub:append_text(string.format(": site %d, carrier %d, slot %d", site, carrier, slot))
        end
    end
end
bodies[0x29] = function(r, t) -- QUEUED
    local position = r:uint(t, f.position, 2, "queue position", nonzero)
    if position then
        r.frame:note("position=" .. position)
    end
end
bodies[0x2A] = bodies[0x29] -- QUEUE_UPDATE
bodies[0x2B] = function(r, t) -- PTT_PRESS
    r:call_id(t)
    r:tmsi(t)
end
bodies[0x2C] = bodies[0x2B] -- PTT_RELEASE
bodies[0x2D] = function(r, t) -- PTT_GRANT
    r:call_id(t)
    r:unit(t, roles.talker)
end
bodies[0x2E] = function(r, t) -- CALL_END
    r:call_id(t)
    r:cause(t)
end
bodies[0x2F] = bodies[0x2E] -- PREEMPTED
bodies[0x30] = function(r, t) -- DENY
    local request = r:uint(t, f.request_type, 1, "request type", message_type)
    if request then
        r.frame:note("of " .. (type_names[request] or string.format("0x%02X", request)))
    end
    r:cause(t)
end
bodies[0x31] = function(r, t) -- CALL_ALERT
    r:tmsi(t, "callee")
    r:unit(t, roles.caller)
end
bodies[0x32] = function(r, t) -- STATUS_DELIVERY
    r:tmsi(t, "recipient")
    r:unit(t, roles.source)
    r:uint(t, f.status_code, 2, "status code")
end
bodies[0x33] = function(r, t) -- SHORT_DATA_DELIVERY
    r:message_id(t)
    r:tmsi(t, "recipient")
    r:unit(t, roles.source)
    r:short_data(t)
end
bodies[0x34] = function(r, t) -- SHORT_DATA_ACK
    r:message_id(t)
end

-- §5.4: every operator command and its answer carry the unit's TMSI alone.
for code = 0x40, 0x45 do
    bodies[code] = function(r, t)
        r:tmsi(t)
    end
end

bodies[0x50] = function(r, t) -- SITE_STATUS
    r:uint(t, f.carrier, 1, "carrier", in_range(0, 63))
    local slot, item = r:uint(t, f.slot, 1, "slot", function(v)
        if v > 5 and v ~= WHOLE_CARRIER then
            return string.format("%d is neither 0..=5 nor 0xFF (the whole carrier)", v)
        end
    end)
    if slot == WHOLE_CARRIER then
        item:append_text(" (whole carrier)")
    end
    r:uint(t, f.state, 1, "state", one_of(resource_states))
end

-- What one frame's dissection found: the expert errors and the words for the Info column.
local Frame = {}
Frame.__index = Frame

function Frame:error(item, code, detail)
    item:add_proto_expert_info(experts[code], string.format("%s (0x%02X): %s", cause_names[code], code, detail))
    if not self.malformed then
        self.malformed = cause_names[code]
    end
end

-- §2.3: after a bad magic, a bad version or a length over the limit the receiver can no
-- longer find frames in the stream: it closes the link.
function Frame:stream_lost(item, code, detail)
    self:error(item, code, detail .. "; the stream is lost and the receiver closes the link")
end

function Frame:note(text)
    self.notes[#self.notes + 1] = text
end

function Frame:warn(item, text)
    item:add_proto_expert_info(ex_spec, text)
end

local link_port = DEFAULT_PORT

-- Which side sent this frame: the controller listens on the link port (§1).
local function sender(pinfo)
    if pinfo.dst_port == link_port then
        return GATEWAY
    elseif pinfo.src_port == link_port then
        return CONTROLLER
    end
end

local function txn_origin(txn)
    if txn == 0 then
        return "no transaction (0)"
    elseif txn < FIRST_CONTROLLER_TXN then
        return "gateway (0x00000001..=0x7FFFFFFF)"
    end
    return "controller (0x80000000..=0xFFFFFFFF)"
end

local function dissect_frame(tvb, pinfo, root, frame)
    local magic_item = root:add(f.magic, tvb(0, 2))
    local magic = tvb(0, 2):uint()
    if magic ~= MAGIC then
        frame:stream_lost(magic_item, 0x18, string.format("magic is 0x%04X, not TK (0x544B)", magic))
        root:add(f.lost, tvb(2))
        return
    end
    magic_item:append_text(" (TK)")

    local version_item = root:add(f.version, tvb(2, 1))
    local version = tvb(2, 1):uint()
    if version ~= VERSION then
        frame:stream_lost(version_item, 0x11, string.format("version is %d, not %d", version, VERSION))
        root:add(f.lost, tvb(3))
        return
    end

    local type_code = tvb(3, 1):uint()
    local msg = messages[type_code]
    frame.name = msg and msg.name or string.format("type 0x%02X", type_code)
    local type_item = root:add(f.type, tvb(3, 1))

    local flags = tvb(4, 2):uint()
    local flags_item = root:add(f.flags, tvb(4, 2))
    flags_item:add(f.emergency, tvb(4, 2))
    local reserved_item = flags_item:add(f.reserved, tvb(4, 2))
    if flags % 2 == 1 then
        frame.emergency = true
        flags_item:append_text(" (EMERGENCY)")
    end
    if flags >= 2 then
        frame:error(reserved_item, 0x16, string.format("reserved flag bits set (flags 0x%04X)", flags))
    end

    local txn = tvb(6, 4):uint()
    frame.txn = txn
    root:add(f.txn, tvb(6, 4))
    root:add(f.txn_origin, txn_origin(txn)):set_generated()

    local length = tvb(10, 2):uint()
    local length_item = root:add(f.length, tvb(10, 2))
    if length > MAX_PAYLOAD then
        frame:stream_lost(length_item, 0x13, string.format("payload length %d is above %d", length, MAX_PAYLOAD))
        if tvb:len() > HEADER_LEN then
            root:add(f.lost, tvb(HEADER_LEN))
        end
        return
    end

    local from = sender(pinfo)
    if from then
        local text = from == GATEWAY and "gateway to controller (G→C)" or "controller to gateway (C→G)"
        root:add(f.direction, text):set_generated()
    end

    if not msg then
        frame:error(type_item, 0x12, string.format("type 0x%02X is not in §5; the payload is skipped", type_code))
        if length > 0 then
            root:add(f.payload, tvb(HEADER_LEN, length))
        end
        return
    end
    if from and msg.from ~= BOTH and msg.from ~= from then
        frame:error(type_item, 0x19, string.format("%s is sent by the %s only, not the %s", msg.name, msg.from, from))
    end
    if from == GATEWAY and msg.request and (txn == 0 or txn >= FIRST_CONTROLLER_TXN) then
        frame:error(root, 0x16, string.format(
            "transaction id 0x%08X: a gateway starts a transaction with an id in 0x00000001..=0x7FFFFFFF", txn))
    end
    if type_code == 0x08 and txn ~= 0 then
        frame:warn(root, "LINK_CLOSE carries transaction id 0 (§2.4)")
    end
    if type_code == 0x22 and not frame.emergency then
        frame:warn(flags_item, "a gateway MUST set EMERGENCY on EMERGENCY_CALL_REQ (§2.1)")
    end

    local reader = new_reader(tvb, HEADER_LEN, length, frame)
    bodies[type_code](reader, root)
    if not reader.stopped and reader:left() > 0 then
        local item = root:add(f.trailing, tvb(reader.pos, reader:left()))
        local detail
        if reader.last then
            detail = string.format("%d bytes after the last field (%s) of %s", reader:left(), reader.last, msg.name)
        else
            detail = string.format("%s has an empty payload, here %d bytes", msg.name, reader:left())
        end
        frame:error(item, 0x15, detail)
    end
end

-- One frame (a PDU handed over by dissect_tcp_pdus).
local function dissect_pdu(tvb, pinfo, tree)
    local root = tree:add(trunkd, tvb())
    local frame = setmetatable({ notes = {} }, Frame)
    -- A bug here must cost one frame's decoding, never the capture.
    local ok, err = pcall(dissect_frame, tvb, pinfo, root, frame)
    if not ok then
        root:add_proto_expert_info(ex_bug, "dissector error: " .. tostring(err))
    end

    local words = { frame.name or "out of sync" }
    if frame.txn then
        words[#words + 1] = "txn=" .. frame.txn
    end
    if frame.emergency then
        words[#words + 1] = "EMERGENCY"
    end
    for _, note in ipairs(frame.notes) do
        words[#words + 1] = note
    end
    if frame.malformed then
        words[#words + 1] = "[malformed: " .. frame.malformed .. "]"
    end
    local summary = table.concat(words, " ")
    root:append_text(", " .. summary)

    -- Several frames may share a packet: the Info column lists them all. pinfo.private
    -- lives for one dissection of one packet, so the list starts afresh each time.
    local info = pinfo.private.trunkd_info
    info = info and (info .. " | " .. summary) or summary
    pinfo.private.trunkd_info = info
    pinfo.cols.info:set(info)
    return tvb:len()
end

-- The length of the frame starting at `offset`, from its header (§2). When the stream is
-- lost there is no next frame to find: the rest of the segment goes to this one.
local function frame_length(tvb, _, offset)
    local left = tvb:len() - offset
    if tvb(offset, 2):uint() ~= MAGIC or tvb(offset + 2, 1):uint() ~= VERSION then
        return left
    end
    local length = tvb(offset + 10, 2):uint()
    if length > MAX_PAYLOAD then
        return left
    end
    return HEADER_LEN + length
end

function trunkd.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol:set("TRUNKD")
    dissect_tcp_pdus(tvb, tree, HEADER_LEN, frame_length, dissect_pdu, trunkd.prefs.reassemble)
    return tvb:len()
end

local tcp_ports = DissectorTable.get("tcp.port")
tcp_ports:add(link_port, trunkd)

function trunkd.prefs_changed()
    if trunkd.prefs.port ~= link_port then
        tcp_ports:remove(link_port, trunkd)
        link_port = trunkd.prefs.port
        tcp_ports:add(link_port, trunkd)
    end
end
