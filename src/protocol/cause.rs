//! The one table of cause codes (`PROTOCOL.md §6`) used by every reject, close, error,
//! deny and call end.

macro_rules! causes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        /// A cause code (`PROTOCOL.md §6`).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[repr(u8)]
        pub enum Cause {
            $($(#[$doc])* $name = $code,)*
        }

        impl Cause {
            /// Every cause, in table order.
            pub const ALL: &'static [Cause] = &[$(Cause::$name,)*];

            /// The cause with this code, or `None` for a code not in the table.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(Cause::$name),)*
                    _ => None,
                }
            }

            /// A short human-readable description, as in the spec's table.
            pub const fn text(self) -> &'static str {
                match self {
                    $(Cause::$name => $text,)*
                }
            }
        }
    };
}

causes! {
    /// Normal end, no error.
    Normal = 0x00, "normal";
    /// An error with no better code.
    Unspecified = 0x01, "unspecified";
    /// Header version is not 1.
    UnsupportedVersion = 0x11, "unsupported version";
    /// Message type not in the spec.
    UnknownMessageType = 0x12, "unknown message type";
    /// Length over the receiver's limit.
    FrameTooLong = 0x13, "frame too long";
    /// Payload shorter than the message needs.
    TruncatedPayload = 0x14, "truncated payload";
    /// Payload longer than the message needs.
    TrailingBytes = 0x15, "trailing bytes";
    /// A reserved flag set or a field out of range.
    InvalidField = 0x16, "invalid field";
    /// K malformed frames in a row.
    TooManyMalformed = 0x17, "too many malformed frames";
    /// Bad magic: the stream is lost.
    OutOfSync = 0x18, "out of sync";
    /// A message the sender's side never sends.
    WrongDirection = 0x19, "wrong direction";
    /// A message not valid in the link's current state.
    UnexpectedMessage = 0x1A, "unexpected message";
    /// Handshake: no key for the site id.
    UnknownSite = 0x20, "unknown site";
    /// Handshake: wrong mac.
    LinkAuthFailed = 0x21, "link authentication failed";
    /// Handshake not complete in time.
    HandshakeTimeout = 0x22, "handshake timeout";
    /// Too many keepalive intervals without a keepalive.
    KeepaliveTimeout = 0x23, "keepalive timeout";
    /// A newer link for the same site was accepted.
    Superseded = 0x24, "superseded by a newer link";
    /// The controller is stopping.
    ShuttingDown = 0x25, "shutting down";
    /// The controller is at its connection cap.
    ConnectionLimit = 0x26, "connection limit";
    /// The controller could not write to the link in time.
    PeerNotReading = 0x27, "peer not reading";
    /// Call records only: the call was in progress when the controller stopped without
    /// a clean shutdown (a crash); written when it starts again.
    ControllerRestart = 0x28, "controller restart";
    /// Handshake: this controller is a standby; another one is active.
    NotActive = 0x29, "not active";
    /// Call records only: the call was in progress when another controller of an HA
    /// group took over from the one that granted it (a kill, a crash, or a node fenced
    /// off its database); written by the node that took over.
    Takeover = 0x2A, "takeover";
    /// Handshake: this link port speaks TLS and the gateway's first bytes were not a TLS
    /// ClientHello (sent in plain, on transaction 0).
    TlsRequired = 0x2B, "TLS required";
    /// Handshake: this link port speaks plain TCP and the gateway's first bytes were a
    /// TLS ClientHello (sent in plain, on transaction 0).
    TlsNotOffered = 0x2C, "TLS not offered";
    /// A request this controller does not implement.
    ServiceNotSupported = 0x30, "service not supported";
    /// The unit lacks the permission for the service.
    ServiceNotPermitted = 0x31, "service not permitted";
    /// No such IMEI, IMSI or TMSI.
    UnknownSubscriber = 0x40, "unknown subscriber";
    /// The unit is inhibited.
    UnitInhibited = 0x41, "unit inhibited";
    /// Wrong authentication response.
    AuthFailed = 0x42, "authentication failed";
    /// The response came after the challenge expired.
    ChallengeExpired = 0x43, "challenge expired";
    /// A response with no challenge open.
    NoChallengePending = 0x44, "no challenge pending";
    /// The IMEI's Luhn digit is wrong.
    BadImeiCheckDigit = 0x45, "bad IMEI check digit";
    /// The unit is not in the VLR.
    NotRegistered = 0x46, "not registered";
    /// The same IMSI is active at another site.
    CloneSuspected = 0x47, "clone suspected";
    /// A talkgroup the unit may not use.
    TalkgroupNotPermitted = 0x48, "talkgroup not permitted";
    /// Group call on a talkgroup the unit is not affiliated to.
    NotAffiliated = 0x49, "not affiliated";
    /// No channel, queue timeout.
    Busy = 0x50, "busy";
    /// The site's busy queue is full.
    QueueFull = 0x51, "queue full";
    /// Private call to a unit in a call.
    TargetBusy = 0x52, "target busy";
    /// The target is not registered.
    TargetUnreachable = 0x53, "target unreachable";
    /// A call ended to make room for an emergency.
    Preempted = 0x54, "preempted";
    /// The requester cancelled.
    Cancelled = 0x55, "cancelled";
    /// Message trunking hang time ran out.
    HangTimeExpired = 0x56, "hang time expired";
    /// The call reached the maximum duration.
    MaxDuration = 0x57, "maximum call duration";
    /// A party's site link went down.
    PartyLinkLost = 0x58, "party link lost";
    /// A party powered off.
    PartyDeregistered = 0x59, "party deregistered";
    /// The call's slot failed and no other was free.
    SlotFaulty = 0x5A, "slot faulty";
    /// An emergency took over the talkgroup's call.
    EmergencyTakeover = 0x5B, "emergency takeover";
    /// The message expired before delivery.
    ShortDataExpired = 0x5C, "short data expired";
    /// No such fleet, member or talkgroup.
    InvalidTarget = 0x5D, "invalid target";
    /// PTT while another unit holds the call's floor.
    FloorTaken = 0x5E, "floor taken";
    /// An operator ended the call (`CALL_END`).
    OperatorEnded = 0x5F, "ended by operator";
}

impl Cause {
    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.text(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Cause::ALL {
            assert!(seen.insert(c.code()), "duplicate {c}");
            assert_eq!(Cause::from_code(c.code()), Some(*c));
        }
        assert_eq!(Cause::from_code(0xFF), None);
    }

    #[test]
    fn every_cause_is_in_the_spec_table() {
        let spec = include_str!("../../protocol/PROTOCOL.md");
        for c in Cause::ALL {
            let row = format!("| 0x{:02X} |", c.code());
            assert!(spec.contains(&row), "cause {c} missing from PROTOCOL.md §6");
        }
    }
}
