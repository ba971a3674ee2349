//! The one typed configuration. Every field has a default, so `trunkd serve` runs with
//! no file at all. Sources, later ones winning: defaults, the TOML file
//! (`--config FILE`), then environment variables `TRUNKD_<SECTION>__<FIELD>` (for example
//! `TRUNKD_LINK__LISTEN=127.0.0.1:7300`). Other `TRUNKD_*` variables (without `__`), such
//! as `TRUNKD_CONFIG`, belong to the command line and are not configuration fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::core::trunking::{EmergencyPolicy, SlotPolicy, TrunkingConfig, TrunkingMode};
use crate::protocol::{SiteId, MAX_PAYLOAD};

/// The full default configuration file with a comment per field; `trunkd config default`
/// prints it. A test checks that it parses to exactly [`Config::default`].
pub const DEFAULT_TOML: &str = r#"# trunkd configuration. Every field is optional: a missing one takes the value shown.
# Environment variables override the file: TRUNKD_<SECTION>__<FIELD>, for example
# TRUNKD_LINK__LISTEN=127.0.0.1:7300 or TRUNKD_LOG__FORMAT=json.
# Sites and their link keys live in the HLR database: see `trunkd site add`.
# System parameters (marked "system parameter" below) live in the database too: the values
# here are written into a fresh database at the first start, and from then on the
# database's values are in force (an operator changes them through the controller handle;
# a config file that disagrees is reported at start and otherwise ignored).

[link]
# Address the site-gateway link server listens on (PROTOCOL.md §1).
listen = "0.0.0.0:7300"
# Most simultaneous gateway connections, handshaking ones included. Of these,
# max_handshakes are for connections still in the handshake and the rest are kept for
# linked gateways (one per site), which strangers can therefore never crowd out
# (PROTOCOL.md §3.2).
max_connections = 1024
# Most connections in the handshake at once (1..max_connections). A newcomer always gets
# a place: when they are all taken, the oldest connection of the source holding the most
# is closed with LINK_REJECT "connection limit".
max_handshakes = 128
# Most connections in the handshake from one IPv4 address or IPv6 /64 (1..=max_handshakes).
# A newcomer from a source at this share takes the place of that source's oldest one.
max_handshakes_per_address = 16
# Time a new connection has to complete the handshake (PROTOCOL.md §3), in ms.
handshake_timeout_ms = 5000
# Keepalive interval announced in LINK_ACCEPT, in ms (100..=600000).
keepalive_interval_ms = 5000
# A link that receives no keepalive for this many intervals is closed (1..=255).
keepalive_misses = 3
# Largest frame payload accepted, in bytes (64..=2048). A larger frame closes the link.
max_payload_len = 2048
# Malformed frames in a row (no good frame between them) that close the link (1..).
max_malformed_in_row = 8
# Time allowed to write one frame to a gateway before the link is closed, in ms.
write_timeout_ms = 5000
# Frames that may wait to be sent on one link. A frame of a call that finds the queue full
# closes the link (peer not reading); bulk deliveries wait for room instead.
outbound_queue = 1024
# TLS 1.3 on the link (PROTOCOL.md §1): the controller's certificate chain and private
# key, PEM, both or neither. Gateways check the certificate, then prove their site key
# as they do without TLS. Read again on SIGHUP (new connections get them).
# tls_cert = "/etc/trunkd/link.crt"
# tls_key = "/etc/trunkd/link.key"

[shutdown]
# On SIGINT/SIGTERM, time allowed for links to finish in-flight work and close, in ms.
grace_ms = 5000

[log]
# "text" (human-readable) or "json" (one object a line).
format = "text"
# tracing filter directive, e.g. "info" or "trunkd=debug"; RUST_LOG overrides it.
level = "info"

[database]
# HLR database URL. Empty: the embedded SQLite file trunkd.db in data_dir, created on
# first start. "postgres://user@host/db" selects PostgreSQL. DATABASE_URL overrides it.
url = ""
# Directory for the embedded database (created with mode 0700).
data_dir = "trunkd-data"

[trunking]
# Which free slot a call gets: "least_loaded" (the carrier with the fewest busy slots,
# spreading calls over carriers) or "pack" (the lowest carrier with a free slot).
# (system parameter)
slot_policy = "least_loaded"
# An emergency at a site with no free slot: "preempt" (the lowest-priority
# non-emergency call there is ended and its slot taken) or "queue_head".
# (system parameter)
emergency = "preempt"
# "message" (the slot is held for hang_time_ms after each transmission),
# "quasi_transmission" (held for quasi_hang_time_ms) or "transmission" (freed at PTT release).
# (system parameter)
mode = "message"
# Message trunking hang time, in ms.
# (system parameter)
hang_time_ms = 10000
# Quasi-transmission trunking hang time, in ms.
# (system parameter)
quasi_hang_time_ms = 3000
# Longest call, in ms; the call is ended with "maximum call duration".
# (system parameter)
max_call_ms = 300000
# Most requests waiting per site; more are denied "queue full".
# (system parameter)
queue_depth = 32
# A request waiting longer is denied "busy", in ms; 0 waits until served or cancelled.
# (system parameter)
queue_timeout_ms = 30000
# The sites of a "selected area" group call (besides the caller's).
selected_area = []
# Call records waiting to be written (the database is slow or down) at which new call
# requests are refused "busy" until the records are written, so that none is dropped;
# emergency calls are never refused for it (1..=10000000).
max_unwritten_records = 100000

[messaging]
# Short data not delivered (acknowledged by the recipient) within this age is dropped, in ms.
short_data_ttl_ms = 86400000
# A call alert or status message to a unit not acknowledged by its gateway within this
# time is reported to the sender as "target unreachable", in ms.
delivery_timeout_ms = 5000
# Short data being written to the database at once; more is refused "busy" until one is
# stored (1..=100000).
max_short_data_in_flight = 256
# Statuses to a talkgroup being delivered at once (each waits for room on the links of
# its recipients' sites); more are refused "busy" until one is done (1..=100000).
max_status_fanouts_in_flight = 64
# An INHIBIT or ENABLE to a unit (PROTOCOL.md §5.4) not acknowledged by its gateway within
# this time is sent again, in ms.
radio_command_timeout_ms = 5000
# How many times an INHIBIT or ENABLE is sent before it is given up (1..=10); an inhibited
# unit leaves the VLR then, acknowledged or not, and the audit log says which.
radio_command_attempts = 3

[registration]
# How long a unit has to answer an authentication challenge, in ms.
# (system parameter)
challenge_timeout_ms = 10000
# Most challenges waiting for an answer at once; more registrations are refused "busy".
max_pending_challenges = 200000
# Most challenges waiting for an answer at once at one site (1..=max_pending_challenges);
# more registrations at that site are refused "busy", so one site cannot starve the others.
max_pending_challenges_per_site = 10000
# Periodic registration: a unit not heard from for this long leaves the VLR, in ms.
# (system parameter)
periodic_registration_ms = 1800000
# The same IMSI authenticating at two sites closer together than this is a suspected
# clone (logged and audited), in ms.
# (system parameter)
clone_window_ms = 2000
# Whether the second registration of a suspected clone is refused.
# (system parameter)
refuse_clones = true
# How often last known locations are written to the HLR (batched), in ms.
location_flush_ms = 1000
# How often the controller picks up HLR changes made by other processes, in ms.
hlr_refresh_ms = 1000
# MCC + MNC (5 or 6 digits) under which new IMSIs are assigned.
imsi_prefix = "00101"

[events]
# Events kept for operators' listeners that reconnect: one that comes back within this
# many events resumes where it left off, one that falls further behind must take a new
# snapshot (16..=1000000).
backlog = 65536

[alarms]
# A site whose gateway has not linked since trunkd started (or since the site was added)
# raises "site link lost" only after this long, in ms, so that a restart does not raise
# one for every site while the gateways reconnect. A link that goes down raises it at
# once; an alarm still open from before the restart stays open until the site links.
link_grace_ms = 30000

[api]
# Where the operator API (HTTP, JSON) listens. Loopback by default; on any other address
# it is reachable from the network without TLS, which is logged as a warning at start.
listen = "127.0.0.1:7380"
# How access tokens (JWT) are signed: "EdDSA" with an Ed25519 key pair that trunkd keeps
# in the database (every controller on it signs and validates the same tokens; `trunkd
# auth rotate-key` rotates it), or "HS256" with jwt_secret. Tokens signed otherwise are
# refused.
jwt_algorithm = "EdDSA"
# HS256 only: at least 32 random bytes as hex (64+ digits; `trunkd config keygen` makes
# one). Better set as TRUNKD_API__JWT_SECRET than in a file. Never logged.
jwt_secret = ""
# Lifetime of an access token (seconds).
access_token_ttl_s = 900
# Lifetime of a refresh token (seconds); each refresh rotates it.
refresh_token_ttl_s = 86400
# A refresh token used again after it was rotated revokes its whole family, except
# within this many seconds of the rotation (a client whose answer was lost), 0..=10.
refresh_reuse_grace_s = 10
# Login attempts allowed per operator name and per client address, each a minute (a
# burst of that many, then one every 60/N seconds); more get 429 with Retry-After.
login_attempts_per_minute = 10
# Largest request body (bytes); a bulk import takes import_body_limit instead.
body_limit = 1048576
# Largest bulk import body (bytes).
import_body_limit = 67108864
# A request not answered within this is answered 503 `timeout` (ms).
request_timeout_ms = 30000
# TLS (1.2 and 1.3): a certificate chain and its private key, PEM files, both or neither.
# Without them the API speaks plain HTTP, and warns when it listens beyond loopback.
# tls_cert = "/etc/trunkd/api.crt"
# tls_key = "/etc/trunkd/api.key"

[ha]
# Active-standby: two or more trunkd on one PostgreSQL database, each with its own
# node_id; exactly one is active (serves gateways and commands), the others stand by and
# take over when it fails. SQLite cannot be shared: HA needs database.url = postgres://….
enabled = false
# This node's name, unique among the nodes on the database (letters, digits, '-', '_').
node_id = ""
# The leadership lease (ms): renewed five times per period; an active node that cannot
# renew it stops acting as active before it runs out, and a standby takes over a lease
# that ran out (at once when the active node's database session ended).
lease_ms = 2000
# The link address gateways dial to reach this node, told to them by a standby while
# this node is active (PROTOCOL.md §3.3). Empty: the address the link server is bound to.
link_address = ""
"#;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The site-gateway link server.
    pub link: LinkConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// The HLR database.
    pub database: DatabaseConfig,
    /// Registration and authentication.
    pub registration: RegistrationConfig,
    /// Calls and slots.
    pub trunking: TrunkingSection,
    /// Call alert, status messages, short data.
    pub messaging: MessagingConfig,
    /// The event stream for operators.
    pub events: EventsConfig,
    /// Alarms.
    pub alarms: AlarmsConfig,
    /// The operator API.
    pub api: ApiConfig,
    /// Active-standby controllers.
    pub ha: HaConfig,
}

/// `[ha]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Whether this node is one of an active-standby group.
    pub enabled: bool,
    /// This node's name.
    pub node_id: String,
    /// The leadership lease, ms.
    pub lease_ms: u64,
    /// The link address gateways dial for this node; empty: the bound address.
    pub link_address: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            node_id: String::new(),
            lease_ms: 2000,
            link_address: String::new(),
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the operator API listens.
    pub listen: SocketAddr,
    /// How access tokens are signed.
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256's secret, hex; at least 32 bytes.
    pub jwt_secret: Secret,
    /// Access token lifetime, seconds.
    pub access_token_ttl_s: u64,
    /// Refresh token lifetime, seconds.
    pub refresh_token_ttl_s: u64,
    /// Reuse of a rotated refresh token within this many seconds is a lost answer, not
    /// theft.
    pub refresh_reuse_grace_s: u64,
    /// Login attempts per operator and per client address, a minute.
    pub login_attempts_per_minute: u32,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Largest bulk import body, bytes.
    pub import_body_limit: usize,
    /// Request timeout, ms.
    pub request_timeout_ms: u64,
    /// The API's TLS certificate chain, PEM (with `tls_key`; both or neither).
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key, PEM.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7380)),
            jwt_algorithm: JwtAlgorithm::EdDSA,
            jwt_secret: Secret::default(),
            access_token_ttl_s: 900,
            refresh_token_ttl_s: 86_400,
            refresh_reuse_grace_s: 10,
            login_attempts_per_minute: 10,
            body_limit: 1 << 20,
            import_body_limit: 64 << 20,
            request_timeout_ms: 30_000,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// How the API's access tokens are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// Ed25519, keys in the database.
    EdDSA,
    /// HMAC-SHA256 with `api.jwt_secret`.
    HS256,
}

/// A secret from the configuration: never shown by `Debug` (nor, therefore, in logs).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "(none)" } else { "(secret)" })
    }
}

impl ApiConfig {
    /// HS256's key: `jwt_secret` decoded, at least 32 bytes.
    pub fn hs256_key(&self) -> Result<Vec<u8>, ConfigError> {
        let key = hex::decode(self.jwt_secret.0.trim())
            .map_err(|_| ConfigError::Invalid("api.jwt_secret must be hex digits".into()))?;
        if key.len() < 32 {
            return Err(ConfigError::Invalid(
                "api.jwt_secret must hold at least 32 random bytes (64 hex digits) for HS256".into(),
            ));
        }
        Ok(key)
    }
}

/// `[events]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept for listeners that resume.
    pub backlog: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { backlog: 65_536 }
    }
}

/// `[alarms]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmsConfig {
    /// How long a site that has not linked since start may stay unlinked before its
    /// "site link lost" alarm is raised, in ms.
    pub link_grace_ms: u64,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            link_grace_ms: 30_000,
        }
    }
}

/// `[messaging]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Short-data lifetime, ms.
    pub short_data_ttl_ms: u64,
    /// Delivery acknowledgement deadline, ms.
    pub delivery_timeout_ms: u64,
    /// Short data stores in progress at once.
    pub max_short_data_in_flight: usize,
    /// Talkgroup statuses being fanned out at once.
    pub max_status_fanouts_in_flight: usize,
    /// How long the controller waits for `INHIBIT_ACK` / `ENABLE_ACK` before sending
    /// the command again, ms.
    pub radio_command_timeout_ms: u64,
    /// How many times an `INHIBIT` or `ENABLE` is sent before it is given up.
    pub radio_command_attempts: u32,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            short_data_ttl_ms: 86_400_000,
            delivery_timeout_ms: 5000,
            max_short_data_in_flight: 256,
            max_status_fanouts_in_flight: 64,
            radio_command_timeout_ms: 5000,
            radio_command_attempts: 3,
        }
    }
}

/// `[trunking]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkingSection {
    /// Slot choice.
    pub slot_policy: SlotPolicy,
    /// Emergency behaviour.
    pub emergency: EmergencyPolicy,
    /// Trunking mode.
    pub mode: TrunkingMode,
    /// Message trunking hang time, ms.
    pub hang_time_ms: u64,
    /// Quasi-transmission hang time, ms.
    pub quasi_hang_time_ms: u64,
    /// Longest call, ms.
    pub max_call_ms: u64,
    /// Queue depth per site.
    pub queue_depth: usize,
    /// Queue timeout, ms (0: none).
    pub queue_timeout_ms: u64,
    /// Sites of a selected-area call.
    pub selected_area: Vec<u16>,
    /// Call records not yet written at which new requests are refused "busy".
    pub max_unwritten_records: usize,
}

impl Default for TrunkingSection {
    fn default() -> Self {
        TrunkingSection {
            slot_policy: SlotPolicy::LeastLoaded,
            emergency: EmergencyPolicy::Preempt,
            mode: TrunkingMode::Message,
            hang_time_ms: 10_000,
            quasi_hang_time_ms: 3000,
            max_call_ms: 300_000,
            queue_depth: 32,
            queue_timeout_ms: 30_000,
            selected_area: vec![],
            max_unwritten_records: 100_000,
        }
    }
}

impl TrunkingSection {
    /// The settings of the trunking state machine.
    pub fn core(&self) -> TrunkingConfig {
        TrunkingConfig {
            slot_policy: self.slot_policy,
            emergency: self.emergency,
            mode: self.mode,
            hang_time_ms: self.hang_time_ms as i64,
            quasi_hang_time_ms: self.quasi_hang_time_ms as i64,
            max_call_ms: self.max_call_ms as i64,
            queue_depth: self.queue_depth,
            queue_timeout_ms: (self.queue_timeout_ms > 0).then_some(self.queue_timeout_ms as i64),
        }
    }
}

/// `[database]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// URL; empty for the embedded SQLite file.
    pub url: String,
    /// Directory of the embedded SQLite file.
    pub data_dir: PathBuf,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            data_dir: PathBuf::from("trunkd-data"),
        }
    }
}

/// `[registration]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Challenge lifetime, ms.
    pub challenge_timeout_ms: u64,
    /// Most pending challenges.
    pub max_pending_challenges: usize,
    /// Most pending challenges of one site.
    pub max_pending_challenges_per_site: usize,
    /// Periodic registration period, ms.
    pub periodic_registration_ms: u64,
    /// Clone detection window, ms.
    pub clone_window_ms: u64,
    /// Refuse a suspected clone.
    pub refuse_clones: bool,
    /// Last-location flush interval, ms.
    pub location_flush_ms: u64,
    /// HLR change polling interval, ms.
    pub hlr_refresh_ms: u64,
    /// MCC + MNC for assigned IMSIs.
    pub imsi_prefix: String,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            challenge_timeout_ms: 10_000,
            max_pending_challenges: 200_000,
            max_pending_challenges_per_site: 10_000,
            periodic_registration_ms: 1_800_000,
            clone_window_ms: 2000,
            refuse_clones: true,
            location_flush_ms: 1000,
            hlr_refresh_ms: 1000,
            imsi_prefix: "00101".into(),
        }
    }
}

impl RegistrationConfig {
    /// The policy the registration state machine needs.
    pub fn policy(&self) -> crate::core::registration::RegistrationPolicy {
        crate::core::registration::RegistrationPolicy {
            challenge_timeout_ms: self.challenge_timeout_ms as i64,
            max_pending_challenges: self.max_pending_challenges,
            max_pending_challenges_per_site: self.max_pending_challenges_per_site,
            clone_window_ms: self.clone_window_ms as i64,
            refuse_clones: self.refuse_clones,
            periodic_registration_ms: self.periodic_registration_ms as i64,
        }
    }
}

/// `[link]`: the site-gateway link server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Connection cap, handshaking connections included.
    pub max_connections: usize,
    /// Places for connections in the handshake (the rest of the cap is for links).
    pub max_handshakes: usize,
    /// Places in the handshake per IPv4 address or IPv6 /64.
    pub max_handshakes_per_address: usize,
    /// Handshake deadline from accept, ms.
    pub handshake_timeout_ms: u64,
    /// Keepalive interval, ms.
    pub keepalive_interval_ms: u32,
    /// Missed intervals before close.
    pub keepalive_misses: u8,
    /// Largest accepted payload, bytes.
    pub max_payload_len: usize,
    /// Malformed frames in a row before close.
    pub max_malformed_in_row: u32,
    /// Per-frame write deadline, ms.
    pub write_timeout_ms: u64,
    /// Outbound frames queued per link.
    pub outbound_queue: usize,
    /// TLS: the certificate chain, PEM.
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key, PEM.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            listen: "0.0.0.0:7300".parse().expect("valid literal"),
            max_connections: 1024,
            max_handshakes: 128,
            max_handshakes_per_address: 16,
            handshake_timeout_ms: 5000,
            keepalive_interval_ms: 5000,
            keepalive_misses: 3,
            max_payload_len: MAX_PAYLOAD,
            max_malformed_in_row: 8,
            write_timeout_ms: 5000,
            outbound_queue: 1024,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl LinkConfig {
    /// Room for linked gateways: the connection cap less the handshake places.
    pub fn max_links(&self) -> usize {
        self.max_connections.saturating_sub(self.max_handshakes)
    }
    /// Handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Keepalive interval.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms.into())
    }
    /// Silence after which a link is closed: interval × misses.
    pub fn keepalive_deadline(&self) -> Duration {
        self.keepalive_interval() * u32::from(self.keepalive_misses)
    }
    /// Per-frame write deadline.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// `[shutdown]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Grace period for links to close, ms.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_ms: 5000 }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A configuration that cannot be used, with the reason. The message names the field as
/// the user wrote it: `link.listen` in a file, `TRUNKD_LINK__LISTEN` in the environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment did not parse.
    #[error("configuration: {0}")]
    Parse(String),
    /// A value is out of its range.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Parse(describe(&e))
    }
}

/// Variables with the `TRUNKD_` prefix that belong to the command line, not to `Config`.
const COMMAND_LINE_VARS: [&str; 4] = ["TRUNKD_CONFIG", "TRUNKD_SITE_KEY", "TRUNKD_K", "TRUNKD_OPC"];

/// One figment error as `KEY: what is wrong (where)`, with the key as its source spells
/// it. figment's own text prefixes the profile (`default.link.lisen`), which no user wrote.
fn describe(e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let key = if from_env {
        let upper: Vec<String> = e.path.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("TRUNKD_{}", upper.join("__"))
    } else {
        e.path.join(".")
    };
    let place = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        _ if from_env => " (environment variable)".to_string(),
        Some(figment::Source::File(f)) => format!(" (in {})", f.display()),
        _ => String::new(),
    };
    let what = match &e.kind {
        figment::error::Kind::UnknownField(found, expected) => {
            format!(
                "unknown field `{found}`; the fields here are {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string(),
    };
    if key.is_empty() {
        format!("{what}{place}")
    } else {
        format!("{key}: {what}{place}")
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `TRUNKD_*` environment overrides and
    /// `DATABASE_URL`, and validates the result: what `serve` and `config check` use.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        if let Some((var, _)) = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .find(|(k, _)| {
                k.starts_with("TRUNKD_") && !k.contains("__") && !COMMAND_LINE_VARS.contains(&k.as_str())
            })
        {
            return Err(ConfigError::Invalid(format!(
                "{var} is not a configuration variable: fields are set as TRUNKD_<SECTION>__<FIELD> \
                 (two underscores, e.g. TRUNKD_LINK__LISTEN)"
            )));
        }
        let mut cfg: Config = fig
            .merge(
                Env::prefixed("TRUNKD_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .extract()?;
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                cfg.database.url = url;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML text over the defaults (no environment) and validates it, for tests
    /// and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges, cross-field rules, the database URL's scheme and the log filter:
    /// everything `serve` would refuse or misread before it opens the database.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.link;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        crate::store::url_backend(&self.database.url)
            .map_err(|e| ConfigError::Invalid(format!("database.url (or DATABASE_URL): {e}")))?;
        check_filter(&self.log.level).map_err(|e| ConfigError::Invalid(format!("log.level: {e}")))?;
        if l.max_connections == 0 {
            return bad("link.max_connections must be at least 1");
        }
        if l.max_handshakes == 0 || l.max_handshakes >= l.max_connections {
            return bad("link.max_handshakes must be within 1..max_connections, leaving room for links");
        }
        if !(1..=l.max_handshakes).contains(&l.max_handshakes_per_address) {
            return bad("link.max_handshakes_per_address must be within 1..=max_handshakes");
        }
        if !(100..=600_000).contains(&l.keepalive_interval_ms) {
            return bad("link.keepalive_interval_ms must be within 100..=600000");
        }
        if l.keepalive_misses == 0 {
            return bad("link.keepalive_misses must be at least 1");
        }
        if !(64..=MAX_PAYLOAD).contains(&l.max_payload_len) {
            return bad("link.max_payload_len must be within 64..=2048");
        }
        if l.max_malformed_in_row == 0 {
            return bad("link.max_malformed_in_row must be at least 1");
        }
        if l.handshake_timeout_ms == 0 || l.write_timeout_ms == 0 || l.outbound_queue == 0 {
            return bad("link.handshake_timeout_ms, write_timeout_ms and outbound_queue must be above 0");
        }
        let r = &self.registration;
        if r.challenge_timeout_ms == 0 || r.max_pending_challenges == 0 || r.periodic_registration_ms == 0 {
            return bad("registration.challenge_timeout_ms, max_pending_challenges and periodic_registration_ms must be above 0");
        }
        if !(1..=r.max_pending_challenges).contains(&r.max_pending_challenges_per_site) {
            return bad(
                "registration.max_pending_challenges_per_site must be within 1..=max_pending_challenges",
            );
        }
        if r.location_flush_ms == 0 || r.hlr_refresh_ms == 0 {
            return bad("registration.location_flush_ms and hlr_refresh_ms must be above 0");
        }
        if !crate::store::valid_imsi_prefix(&r.imsi_prefix) {
            return bad("registration.imsi_prefix must be 5 or 6 digits (MCC + MNC)");
        }
        let t = &self.trunking;
        if t.queue_depth == 0 || t.max_call_ms == 0 || t.max_unwritten_records == 0 {
            return bad("trunking.queue_depth, max_call_ms and max_unwritten_records must be above 0");
        }
        if t.max_unwritten_records > 10_000_000 {
            return bad("trunking.max_unwritten_records must be at most 10000000");
        }
        if let Some(s) = t.selected_area.iter().find(|s| SiteId::new(**s).is_none()) {
            return Err(ConfigError::Invalid(format!(
                "trunking.selected_area: site {s} is outside 1..=4095"
            )));
        }
        // Upper bounds keep every deadline computation far from overflow.
        const TEN_MIN: u64 = 600_000;
        const HOUR: u64 = 3_600_000;
        let m = &self.messaging;
        if m.short_data_ttl_ms == 0
            || m.delivery_timeout_ms == 0
            || m.max_short_data_in_flight == 0
            || m.max_status_fanouts_in_flight == 0
            || m.radio_command_timeout_ms == 0
            || m.radio_command_attempts == 0
        {
            return bad(
                "messaging.short_data_ttl_ms, delivery_timeout_ms, max_short_data_in_flight, \
                 max_status_fanouts_in_flight, radio_command_timeout_ms and radio_command_attempts \
                 must be above 0",
            );
        }
        let limits: [(&str, u64, u64); 24] = [
            ("api.access_token_ttl_s", self.api.access_token_ttl_s, 86_400),
            (
                "api.refresh_token_ttl_s",
                self.api.refresh_token_ttl_s,
                90 * 86_400,
            ),
            ("api.refresh_reuse_grace_s", self.api.refresh_reuse_grace_s, 10),
            ("api.request_timeout_ms", self.api.request_timeout_ms, TEN_MIN),
            (
                "messaging.max_status_fanouts_in_flight",
                m.max_status_fanouts_in_flight as u64,
                100_000,
            ),
            (
                "messaging.radio_command_timeout_ms",
                m.radio_command_timeout_ms,
                TEN_MIN,
            ),
            (
                "messaging.radio_command_attempts",
                u64::from(m.radio_command_attempts),
                10,
            ),
            ("messaging.short_data_ttl_ms", m.short_data_ttl_ms, 30 * 24 * HOUR),
            (
                "messaging.max_short_data_in_flight",
                m.max_short_data_in_flight as u64,
                100_000,
            ),
            ("messaging.delivery_timeout_ms", m.delivery_timeout_ms, TEN_MIN),
            ("trunking.hang_time_ms", t.hang_time_ms, TEN_MIN),
            ("trunking.quasi_hang_time_ms", t.quasi_hang_time_ms, TEN_MIN),
            ("trunking.max_call_ms", t.max_call_ms, 24 * HOUR),
            ("trunking.queue_timeout_ms", t.queue_timeout_ms, HOUR),
            ("trunking.queue_depth", t.queue_depth as u64, 10_000),
            ("link.handshake_timeout_ms", l.handshake_timeout_ms, TEN_MIN),
            ("link.write_timeout_ms", l.write_timeout_ms, TEN_MIN),
            ("shutdown.grace_ms", self.shutdown.grace_ms, TEN_MIN),
            (
                "registration.challenge_timeout_ms",
                r.challenge_timeout_ms,
                TEN_MIN,
            ),
            (
                "registration.periodic_registration_ms",
                r.periodic_registration_ms,
                7 * 24 * HOUR,
            ),
            ("registration.clone_window_ms", r.clone_window_ms, HOUR),
            ("registration.location_flush_ms", r.location_flush_ms, HOUR),
            ("registration.hlr_refresh_ms", r.hlr_refresh_ms, HOUR),
            (
                "registration.max_pending_challenges",
                r.max_pending_challenges as u64,
                10_000_000,
            ),
        ];
        let a = &self.api;
        if a.jwt_algorithm == JwtAlgorithm::HS256 {
            a.hs256_key()?;
        } else if !a.jwt_secret.0.is_empty() {
            return bad("api.jwt_secret is for HS256 only: set api.jwt_algorithm = \"HS256\" or remove it");
        }
        if a.access_token_ttl_s < 60 || a.refresh_token_ttl_s < a.access_token_ttl_s {
            return bad("api.access_token_ttl_s must be at least 60, and refresh_token_ttl_s at least that");
        }
        if a.login_attempts_per_minute == 0 || a.body_limit < 1024 || a.import_body_limit < a.body_limit {
            return bad("api.login_attempts_per_minute must be above 0, body_limit at least 1024 and import_body_limit at least body_limit");
        }
        if a.request_timeout_ms < 100 {
            return bad("api.request_timeout_ms must be at least 100");
        }
        if self.link.tls_cert.is_some() != self.link.tls_key.is_some() {
            return bad("link.tls_cert and link.tls_key go together: give both, or neither for plain TCP");
        }
        if a.tls_cert.is_some() != a.tls_key.is_some() {
            return bad("api.tls_cert and api.tls_key go together: give both, or neither for plain HTTP");
        }
        if !(16..=1_000_000).contains(&self.events.backlog) {
            return bad("events.backlog must be within 16..=1000000");
        }
        if self.alarms.link_grace_ms > 3_600_000 {
            return bad("alarms.link_grace_ms must be at most 3600000");
        }
        let h = &self.ha;
        if h.enabled {
            if crate::store::url_backend(&self.database.url).ok() != Some("postgres") {
                return bad(
                    "ha.enabled needs PostgreSQL (database.url = postgres://…): the embedded \
                     SQLite file cannot be shared between nodes",
                );
            }
            let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if h.node_id.is_empty() || h.node_id.len() > 64 || !h.node_id.chars().all(name_ok) {
                return bad("ha.node_id must be 1..=64 letters, digits, '-' or '_' when ha.enabled");
            }
            if !(500..=60_000).contains(&h.lease_ms) {
                return bad("ha.lease_ms must be within 500..=60000");
            }
            if !h.link_address.is_empty()
                && crate::protocol::ControllerAddress::new(&h.link_address).is_none()
            {
                return bad("ha.link_address must be host:port, printable ASCII without spaces");
            }
        }
        for (name, value, max) in limits {
            if value > max {
                return Err(ConfigError::Invalid(format!("{name} must be at most {max}")));
            }
        }
        Ok(())
    }
}

/// Checks a filter directive list (`info`, `warn,trunkd=debug`, …) as `serve` will use
/// it. Besides what does not parse, it refuses what parses but means nothing: a bare
/// word that is not a level (`inof`) is taken by tracing as a target name, silently
/// enabling everything for a target that does not exist. A target is written
/// `target=level`.
pub fn check_filter(directives: &str) -> Result<(), String> {
    for d in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains(['=', '[']) && LevelFilter::from_str(d).is_err() {
            return Err(format!(
                "`{d}` is not a level (trace, debug, info, warn, error, off); \
                 a target is written `{d}=LEVEL`"
            ));
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map(drop)
        .map_err(|e| format!("`{directives}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_the_default_config() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn every_field_of_the_default_file_is_commented() {
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(lines[i - 1].starts_with('#'), "field without a comment: {line}");
            }
        }
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let e = Config::from_toml("[link]\nkeepalive_misses = 0\n").unwrap_err();
        assert!(e.to_string().contains("keepalive_misses"), "{e}");
        let e = Config::from_toml("[link]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::from_toml("[link]\nlisen = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::from_toml("[registration]\nchallenge_timeout_ms = 99999999999\n").unwrap_err();
        assert!(
            e.to_string().contains("challenge_timeout_ms must be at most"),
            "{e}"
        );
        let e = Config::from_toml("[registration]\nimsi_prefix = \"12\"\n").unwrap_err();
        assert!(e.to_string().contains("imsi_prefix"), "{e}");
        let e = Config::from_toml("[link]\nmax_connections = 100\nmax_handshakes = 100\n").unwrap_err();
        assert!(e.to_string().contains("max_handshakes must be"), "{e}");
        let e =
            Config::from_toml("[link]\nmax_handshakes = 8\nmax_handshakes_per_address = 9\n").unwrap_err();
        assert!(e.to_string().contains("max_handshakes_per_address"), "{e}");
        let e = Config::from_toml(
            "[registration]\nmax_pending_challenges = 10\nmax_pending_challenges_per_site = 11\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_pending_challenges_per_site"), "{e}");
    }

    #[test]
    fn filters_that_mean_something_pass() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,trunkd=debug",
            "trunkd::link=trace",
            "info,[link]=debug",
            "",
        ] {
            assert!(check_filter(ok).is_ok(), "{ok}: {:?}", check_filter(ok));
        }
    }

    #[test]
    fn a_level_typo_and_a_bad_level_are_refused() {
        let e = check_filter("inof").unwrap_err();
        assert!(e.contains("`inof` is not a level"), "{e}");
        assert!(check_filter("warn,trunkd=degub").is_err());
        assert!(check_filter("info,debgu").is_err());
    }
}
