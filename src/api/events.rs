//! `GET /api/v1/events`: the controller's numbered event stream as Server-Sent Events,
//! and `POST /api/v1/events/ticket` for browsers, whose `EventSource` cannot set an
//! `Authorization` header.
//!
//! # Opening a stream
//! - With `Authorization: Bearer <access token>`, like every other route; or
//! - with `?ticket=<ticket>`: a ticket from `POST /api/v1/events/ticket` (itself called
//!   with the Bearer token), good for one stream within [`TICKET_LIFETIME`]. The ticket
//!   keeps the access token it was issued under, and that token is checked again when
//!   the ticket is redeemed, so a ticket of an operator disabled, changed or logged out
//!   since opens nothing. Tickets live in this controller's memory: open the stream on
//!   the controller that issued the ticket.
//!
//! Any role may listen. Missing or refused credentials get the usual 401 JSON error
//! (`missing_token`, `invalid_token`, `token_expired`, or `invalid_ticket` for a ticket
//! that is unknown, used or expired).
//!
//! # What it sends
//! Every SSE event's `data` is one line of JSON; times are Unix ms; names are snake_case.
//! - `snapshot` first (`id`: the snapshot's sequence number): the state then (units on
//!   the air, calls, every site's slots, busy queues, links, the alarms that need attention) and a `reason`:
//!   `start`, `resume_unavailable` (the `Last-Event-ID` asked for is no longer held: this
//!   snapshot replaces what was missed) or `lagged` (see below). Events after its `seq`
//!   follow; one of them may already be reflected in it (applying it again is harmless).
//! - then each event with `id: <seq>` and `data` carrying `seq`, `at_ms` and its fields:
//!   `unit` (`kind`: `registered`, `location_changed`, `left`, `affiliated`), `call`
//!   (`granted`, `queued`, `queue_moved`, `queue_left`, `queue_full`, `emergency`,
//!   `preempted`, `talker`, `ended`), `slot` (a slot out of service or back), `link` (a site's link
//!   up or down), `radio_command` (how an inhibit, enable or radio check ended),
//!   `subscriber` (a subscriber's record changed), `message` (a console's call alert,
//!   status or short data was answered), `parameter` (a system parameter changed),
//!   `clone_suspected`, `alarm` (`change`: `raised`, `acknowledged` or `cleared`, and the
//!   `alarm` as it now is, as `GET /api/v1/alarms` shows it). The README lists every field.
//!
//! # Resuming
//! A client that reconnects with `Last-Event-ID: <id>` (browsers send it by themselves;
//! `?last_event_id=<id>` does the same for a new `EventSource`, the header winning)
//! gets the events after it, with no snapshot, as long as the controller still holds
//! them (`events.backlog`); otherwise a `snapshot` with reason `resume_unavailable`.
//! Events an operator may not see are not sent, but the stream's id still moves past
//! them (an event with an `id` and no data, which `EventSource` does not dispatch), so
//! a resume never replays them and rarely falls out of the backlog.
//!
//! Sequence numbers start again at 1 when a controller restarts: a resume whose id is
//! beyond the new stream gets a snapshot, but one that falls within it is not detected.
//!
//! # HA
//! On the active node of an HA group, an `ha` event (no `id`) follows the snapshot (or
//! starts a resumed stream) and is sent again every [`RECHECK`]: `role` (`active`),
//! `epoch` and `lease_age_ms` (ms since the node last renewed its lease), as `/healthz`
//! says them. A standalone controller sends none; a standby has no stream (503).
//!
//! # A listener that falls behind
//! The controller never waits for a listener. One that falls more than the backlog
//! behind gets a `lagged` event (`data`: `{"last_seen": <seq>}`, no `id`) and then a new
//! `snapshot` with reason `lagged`, and the stream goes on from there.
//!
//! # Fleets and roles
//! An operator limited to some fleets is sent only the events about them: units of its
//! fleets (their registrations, moves, radio commands, record changes, suspected
//! clones), calls and queued requests whose caller or target is in them, console
//! messages from or to them, alarms of their units (emergencies, suspected clones).
//! Links, slots going out of service, full queues and the other alarms are the
//! infrastructure every operator watches, and go to everyone. Parameter changes go to
//! admins only, as the parameters themselves do. Its snapshot is filtered the same way
//! (a slot carrying another fleet's call shows `busy` without the call).
//!
//! # How long a stream lives
//! No longer than the access token that opened it: every [`RECHECK`] the token is
//! checked again; once it has expired, or its operator was disabled or changed or its
//! session revoked, the stream sends a `closed` event (`data`: the error's `code` and
//! `message`, no `id`) and ends. The client reconnects with a fresh token (or ticket) and
//! its last id, and misses nothing. A comment line is sent every [`KEEP_ALIVE`] so that
//! proxies keep an idle stream open. When the controller stops (a restart, or an HA node
//! stopping), the stream sends `closed` with the code `controller_stopped` and ends.
//!
//! Each listener serialises each event it sends once; the controller only publishes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::alarms::{alarm_json, AlarmJson};
use super::live::{
    call_json, call_slot_json, link_json, queued_json, CallJson, CallSlotJson, LinkJson, QueueJson, SlotJson,
    SlotsJson, TargetJson, UnitJson, UnitOnAirJson,
};
use super::openapi::{BadRequest, RateLimited, Unauthorized};
use super::{bearer, query_params, ApiError, ApiRoutes, ApiState, Caller};
use crate::auth::{Authority, Fleets, Principal, Role};
use crate::controller::{ActiveCall, Alarm, Answer, ControllerHandle, Query, Reads, Snapshot};
use crate::core::messaging::Reply;
use crate::core::registration::{LeaveReason, UnitEvent};
use crate::core::slots::{SlotUse, SlotView};
use crate::core::trunking::CallEvent;
use crate::events::{Event, EventKind, Lagged, MessageKind, RadioCommand, RadioOutcome, Subscription};
use crate::protocol::{CallId, CallType, Cause, FleetId, Imsi, SiteId, Target, Unit};

/// How long a ticket may wait to be redeemed.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);
/// Most tickets waiting at once, in all.
const MAX_TICKETS: usize = 1024;
/// Most tickets waiting at once for one operator.
const MAX_TICKETS_PER_OPERATOR: usize = 16;
/// How often a stream's access token is checked again.
pub const RECHECK: Duration = Duration::from_secs(5);
/// How often an idle stream sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(events)).routes(routes!(ticket))
}

// ---- Tickets ----

/// Tickets issued and not yet redeemed, by the SHA-256 of the ticket (the ticket itself
/// is not kept), each with the access token it stands for. On the controller's clock
/// (tokio's time).
#[derive(Default)]
pub struct Tickets {
    waiting: Mutex<HashMap<[u8; 32], Ticket>>,
}

struct Ticket {
    operator: String,
    access_token: String,
    expires: Instant,
}

impl Tickets {
    fn waiting(&self) -> MutexGuard<'_, HashMap<[u8; 32], Ticket>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new ticket for `operator`'s `access_token`: `tk_` and 32 random bytes in hex.
    /// 429 while too many wait.
    fn issue(&self, operator: &str, access_token: &str) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no random bytes"))?;
        let ticket = format!("tk_{}", hex::encode(bytes));
        let now = Instant::now();
        let mut waiting = self.waiting();
        waiting.retain(|_, t| t.expires > now);
        let mine = waiting.values().filter(|t| t.operator == operator).count();
        if waiting.len() >= MAX_TICKETS || mine >= MAX_TICKETS_PER_OPERATOR {
            return Err(ApiError {
                retry_after: Some(TICKET_LIFETIME.as_secs()),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_tickets",
                    "too many tickets wait to be used; use or let expire some first",
                )
            });
        }
        let t = Ticket {
            operator: operator.to_string(),
            access_token: access_token.to_string(),
            expires: now + TICKET_LIFETIME,
        };
        waiting.insert(digest(&ticket), t);
        Ok(ticket)
    }

    /// The access token of `ticket` if it is waiting and has not expired; it is used up
    /// either way.
    fn redeem(&self, ticket: &str) -> Option<String> {
        let t = self.waiting().remove(&digest(ticket))?;
        (t.expires > Instant::now()).then_some(t.access_token)
    }
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

/// `POST /events/ticket`'s answer.
#[derive(Serialize, ToSchema)]
pub struct TicketJson {
    /// Give it as `?ticket=` to `GET /events`, once.
    pub ticket: String,
    /// Seconds it stays good.
    pub expires_in: u64,
}

/// A single-use ticket that opens one event stream (for `EventSource`, which cannot
/// send a token).
#[utoipa::path(
    post,
    path = "/events/ticket",
    tag = "events",
    responses(
        (status = 200, description = "A ticket", body = TicketJson),
        Unauthorized,
        RateLimited,
    )
)]
async fn ticket(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<TicketJson>, ApiError> {
    let p = caller.require(Role::Viewer)?;
    // A ticket opens this node's stream only.
    s.live()?;
    // `Caller` checked this very token.
    let ticket = s.tickets.issue(&p.name, bearer(&headers)?)?;
    Ok(Json(TicketJson {
        ticket,
        expires_in: TICKET_LIFETIME.as_secs(),
    }))
}

// ---- The stream ----

/// `GET /events`'s query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// A ticket from `POST /events/ticket`, instead of the `Authorization` header.
    ticket: Option<String>,
    /// Resume after this event (as the `Last-Event-ID` header, which wins).
    #[param(pattern = "^[0-9]+$")]
    last_event_id: Option<String>,
}

/// The event to resume after: the `Last-Event-ID` header, else `?last_event_id`.
fn resume_after(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let (field, value) = match headers.get("last-event-id") {
        Some(v) => ("Last-Event-ID", v.to_str().unwrap_or("?")),
        None => ("last_event_id", query.unwrap_or("")),
    };
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u64>() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(ApiError::invalid(
            field,
            "must be the id of an event of this stream",
        )),
    }
}

/// The live event stream (Server-Sent Events): a snapshot, then every event with its
/// sequence number as `id`; see the README for every event and field.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    security(("bearer" = []), ()),
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]+$",
            description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "The stream, open until the token that opened it is \
            refused", content_type = "text/event-stream", body = String),
        BadRequest,
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, or \
            `invalid_ticket` (unknown, used or expired)", body = ApiError),
    )
)]
async fn events(State(s): State<ApiState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let q: StreamQuery = query_params(&uri)?;
    let after = resume_after(&headers, q.last_event_id.as_deref())?;
    let token = match q.ticket {
        Some(_) if headers.contains_key(AUTHORIZATION) => {
            return Err(ApiError::invalid(
                "ticket",
                "give an access token or a ticket, not both",
            ));
        }
        Some(t) => s.tickets.redeem(&t).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_ticket",
                "the ticket is unknown, used or expired",
            )
        })?,
        None => bearer(&headers)?.to_string(),
    };
    // Every role may listen.
    let principal = s.auth.authenticate(&token)?;
    let listener = Listener::start(s.live()?.clone(), token, &principal, after);
    let stream = futures::stream::unfold(listener, |mut l| async move {
        l.next_event().await.map(|e| (Ok::<_, Infallible>(e), l))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies that buffer answers (nginx) would hold the events back.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// Why a snapshot is sent.
#[derive(Clone, Copy)]
enum Reason {
    Start,
    ResumeUnavailable,
    Lagged,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::ResumeUnavailable => "resume_unavailable",
            Reason::Lagged => "lagged",
        }
    }
}

/// One open stream: where it is in the controller's events, and what its operator sees.
struct Listener {
    handle: ControllerHandle,
    auth: Arc<Authority>,
    reads: Reads,
    /// The access token that opened it, checked again every [`RECHECK`].
    token: String,
    view: View,
    sub: Subscription,
    /// Sent before anything else (a snapshot, a `lagged`).
    pending: VecDeque<SseEvent>,
    /// The last event not shown to this operator, after the last one sent.
    hidden: Option<u64>,
    recheck_at: Instant,
    closed: bool,
}

impl Listener {
    fn start(handle: ControllerHandle, token: String, p: &Principal, after: Option<u64>) -> Listener {
        let (sub, snapshot) = match after.map(|n| handle.resume(n)) {
            Some(Ok(sub)) => (sub, None),
            Some(Err(_)) => {
                let (snap, sub) = handle.events();
                (sub, Some((snap, Reason::ResumeUnavailable)))
            }
            None => {
                let (snap, sub) = handle.events();
                (sub, Some((snap, Reason::Start)))
            }
        };
        let mut l = Listener {
            auth: handle.authority(),
            reads: handle.reads(),
            handle,
            token,
            view: View {
                fleets: p.fleets.clone(),
                admin: p.may(Role::Admin),
                calls: HashSet::new(),
            },
            sub,
            pending: VecDeque::new(),
            hidden: None,
            recheck_at: Instant::now() + RECHECK,
            closed: false,
        };
        match snapshot {
            Some((snap, reason)) => {
                let e = l.snapshot(&snap, reason);
                l.pending.push_back(e);
            }
            // Resumed: the calls in progress it may see, for their later events.
            None => {
                if let Ok(Answer::Calls(calls)) = l.handle.query(Query::Calls) {
                    l.view.track_calls(&calls);
                }
            }
        }
        l.ha();
        l
    }

    /// On the active node of an HA group, queues an `ha` event: its role, epoch and lease
    /// age now.
    fn ha(&mut self) {
        if let Some((epoch, age)) = self.handle.ha_lease() {
            let data = serde_json::json!({ "role": "active", "epoch": epoch, "lease_age_ms": age });
            self.pending
                .push_back(SseEvent::default().event("ha").data(data.to_string()));
        }
    }

    /// The next SSE event to send; `None` ends the stream (closed, or the controller
    /// stopped).
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.closed {
                return None;
            }
            if Instant::now() >= self.recheck_at {
                self.recheck();
                continue;
            }
            let next = match self.sub.try_next() {
                Some(n) => Some(n),
                None => {
                    // Nothing more is ready: move the client's id past what it was not shown.
                    if let Some(seq) = self.hidden.take() {
                        return Some(SseEvent::default().id(seq.to_string()));
                    }
                    let recheck_at = self.recheck_at;
                    tokio::select! {
                        n = self.sub.next() => n,
                        () = tokio::time::sleep_until(recheck_at) => continue,
                    }
                }
            };
            match next {
                None => {
                    let data = serde_json::json!({
                        "code": "controller_stopped",
                        "message": "the controller stopped; reconnect (to the node that is active now)",
                    });
                    self.pending
                        .push_back(SseEvent::default().event("closed").data(data.to_string()));
                    self.closed = true;
                }
                Some(Ok(event)) => match self.render(&event) {
                    Some(e) => {
                        self.hidden = None;
                        return Some(e);
                    }
                    None => self.hidden = Some(event.seq),
                },
                Some(Err(Lagged { last_seen })) => {
                    let (snap, sub) = self.handle.events();
                    self.sub = sub;
                    self.hidden = None;
                    self.pending.push_back(
                        SseEvent::default()
                            .event("lagged")
                            .data(format!("{{\"last_seen\":{last_seen}}}")),
                    );
                    let e = self.snapshot(&snap, Reason::Lagged);
                    self.pending.push_back(e);
                }
            }
        }
    }

    /// Checks the access token again; a refused one closes the stream with a `closed`
    /// event saying why. An open one is told the HA lease again.
    fn recheck(&mut self) {
        self.recheck_at = Instant::now() + RECHECK;
        match self.auth.authenticate(&self.token) {
            Ok(_) => self.ha(),
            Err(e) => {
                let e = ApiError::from(e);
                let data = serde_json::json!({ "code": e.code, "message": e.message });
                self.pending
                    .push_back(SseEvent::default().event("closed").data(data.to_string()));
                self.closed = true;
            }
        }
    }

    fn snapshot(&mut self, s: &Snapshot, reason: Reason) -> SseEvent {
        let v = &mut self.view;
        v.calls.clear();
        v.track_calls(&s.calls);
        let json = SnapshotJson {
            seq: s.seq,
            reason: reason.as_str(),
            units: s
                .units
                .iter()
                .filter(|u| v.unit(u.unit))
                .map(UnitOnAirJson::from)
                .collect(),
            calls: s
                .calls
                .iter()
                .filter(|c| v.call(c.view.caller, &c.view.target))
                .map(call_json)
                .collect(),
            slots: s
                .slots
                .iter()
                .map(|(site, slots)| SlotsJson {
                    site: site.get(),
                    slots: slots.iter().map(|sv| slot_json(sv, v)).collect(),
                })
                .collect(),
            queues: s
                .queues
                .iter()
                .map(|(site, entries)| QueueJson {
                    site: site.get(),
                    requests: entries
                        .iter()
                        .filter(|q| v.call(q.entry.caller, &q.entry.target))
                        .map(queued_json)
                        .collect(),
                })
                .collect(),
            links: s.links.iter().map(link_json).collect(),
            alarms: s
                .alarms
                .iter()
                .filter(|a| v.alarm(a))
                .map(|a| alarm_json(a, &self.reads))
                .collect(),
        };
        sse("snapshot", s.seq, &json).unwrap_or_else(|| SseEvent::default().event("snapshot"))
    }

    /// `event` as this operator may see it, or `None`.
    fn render(&mut self, event: &Event) -> Option<SseEvent> {
        let unit = |imsi: &Imsi| self.handle.subscriber_unit(imsi);
        let (seq, at_ms) = (event.seq, event.at_ms);
        let v = &mut self.view;
        match &event.kind {
            EventKind::Unit(u) => {
                let imsi = unit_imsi(u);
                let of = unit(&imsi);
                if !v.unit(of) {
                    return None;
                }
                let body = unit_change(u, of.map(UnitJson::from));
                sse("unit", seq, &Data { seq, at_ms, body })
            }
            EventKind::CloneSuspected { imsi, detail } => {
                let of = unit(imsi);
                if !v.unit(of) {
                    return None;
                }
                let body = CloneJson {
                    imsi: Text(imsi),
                    unit: of.map(UnitJson::from),
                    detail,
                };
                sse("clone_suspected", seq, &Data { seq, at_ms, body })
            }
            EventKind::Call(CallEvent::SlotChanged {
                site,
                carrier,
                slot,
                in_service,
            }) => {
                let body = SlotChangeJson {
                    site: site.get(),
                    carrier: carrier.get(),
                    slot: slot.get(),
                    in_service: *in_service,
                };
                sse("slot", seq, &Data { seq, at_ms, body })
            }
            EventKind::Call(c) => {
                let body = call_change(c, v, &self.handle)?;
                sse("call", seq, &Data { seq, at_ms, body })
            }
            EventKind::RadioCommand {
                imsi,
                command,
                outcome,
            } => {
                let of = unit(imsi);
                if !v.unit(of) {
                    return None;
                }
                let body = RadioCommandJson {
                    imsi: Text(imsi),
                    unit: of.map(UnitJson::from),
                    command: match command {
                        RadioCommand::Inhibit => "inhibit",
                        RadioCommand::Enable => "enable",
                        RadioCommand::Check => "check",
                    },
                    outcome: match outcome {
                        RadioOutcome::Acknowledged => "acknowledged",
                        RadioOutcome::Unacknowledged => "unacknowledged",
                        RadioOutcome::NotSent => "not_sent",
                    },
                };
                sse("radio_command", seq, &Data { seq, at_ms, body })
            }
            EventKind::Command(c) => {
                if !v.unit(unit(&c.imsi)) {
                    return None;
                }
                let body = super::commands::CommandJson::from(c.clone());
                sse("command", seq, &Data { seq, at_ms, body })
            }
            EventKind::LinkUp { site } | EventKind::LinkDown { site } => {
                let up = matches!(event.kind, EventKind::LinkUp { .. });
                let body = LinkChangeJson { site: site.get(), up };
                sse("link", seq, &Data { seq, at_ms, body })
            }
            EventKind::SubscriberChanged {
                imsi,
                unit,
                actor,
                change,
            } => {
                if !v.fleet(unit.fleet) {
                    return None;
                }
                let body = SubscriberJson {
                    imsi: Text(imsi),
                    unit: UnitJson::from(*unit),
                    actor,
                    change,
                };
                sse("subscriber", seq, &Data { seq, at_ms, body })
            }
            EventKind::Message {
                kind,
                from,
                to,
                actor,
                outcome,
            } => {
                if !v.call(*from, to) {
                    return None;
                }
                let (service, code) = match kind {
                    MessageKind::CallAlert => ("call_alert", None),
                    MessageKind::Status { code } => ("status", Some(*code)),
                    MessageKind::ShortData => ("short_data", None),
                };
                let (result, recipients, cause) = match outcome {
                    Reply::Delivered => ("delivered", None, None),
                    Reply::SentToTalkgroup { recipients } => ("sent_to_talkgroup", Some(*recipients), None),
                    Reply::Stored { recipients } => ("stored", Some(*recipients), None),
                    Reply::Refused(c) => ("refused", None, Some(CauseJson::from(*c))),
                };
                let body = MessageJson {
                    service,
                    code,
                    from: UnitJson::from(*from),
                    to: TargetJson::from(*to),
                    actor,
                    outcome: result,
                    recipients,
                    cause,
                };
                sse("message", seq, &Data { seq, at_ms, body })
            }
            EventKind::Alarm { change, alarm } => {
                if !v.alarm(alarm) {
                    return None;
                }
                let body = AlarmChangeJson {
                    change: change.as_str(),
                    alarm: alarm_json(alarm, &self.reads),
                };
                sse("alarm", seq, &Data { seq, at_ms, body })
            }
            EventKind::ParameterChanged { name, value, actor } => {
                if !v.admin {
                    return None;
                }
                let body = ParameterJson { name, value, actor };
                sse("parameter", seq, &Data { seq, at_ms, body })
            }
        }
    }
}

/// An SSE event of type `name` with id `seq` and `data` as JSON.
fn sse<T: Serialize>(name: &'static str, seq: u64, data: &T) -> Option<SseEvent> {
    SseEvent::default()
        .event(name)
        .id(seq.to_string())
        .json_data(data)
        .ok()
}

/// What one operator may see, and the calls in progress it sees (kept only for an
/// operator limited to some fleets: a `preempted` event names nothing but the call).
struct View {
    fleets: Fleets,
    admin: bool,
    calls: HashSet<CallId>,
}

impl View {
    fn every_fleet(&self) -> bool {
        matches!(self.fleets, Fleets::All)
    }

    fn fleet(&self, f: FleetId) -> bool {
        self.fleets.allows(f)
    }

    /// A unit's events; one not provisioned (any more) only to those who see every fleet.
    fn unit(&self, u: Option<Unit>) -> bool {
        u.map_or(self.every_fleet(), |u| self.fleet(u.fleet))
    }

    /// A call, queued request or message: its caller's fleet or its target's.
    fn call(&self, caller: Unit, target: &Target) -> bool {
        self.fleet(caller.fleet) || self.fleet(target_fleet(target))
    }

    fn track_calls(&mut self, calls: &[ActiveCall]) {
        if !self.every_fleet() {
            let visible = calls.iter().filter(|c| self.call(c.view.caller, &c.view.target));
            let ids: Vec<CallId> = visible.map(|c| c.view.call).collect();
            self.calls.extend(ids);
        }
    }

    fn sees_call(&self, call: CallId) -> bool {
        self.every_fleet() || self.calls.contains(&call)
    }

    /// An alarm: infrastructure, or a unit of its fleets.
    fn alarm(&self, a: &Alarm) -> bool {
        a.fleet.is_none_or(|f| self.fleet(f))
    }
}

fn target_fleet(t: &Target) -> FleetId {
    match t {
        Target::Unit(u) => u.fleet,
        Target::Talkgroup { fleet, .. } => *fleet,
    }
}

fn unit_imsi(u: &UnitEvent) -> Imsi {
    match u {
        UnitEvent::Registered { imsi, .. }
        | UnitEvent::LocationChanged { imsi, .. }
        | UnitEvent::Left { imsi, .. }
        | UnitEvent::Affiliated { imsi, .. } => *imsi,
    }
}

fn call_type(t: CallType) -> &'static str {
    match t {
        CallType::Group => "group",
        CallType::Private => "private",
        CallType::Emergency => "emergency",
    }
}

// ---- JSON ----

/// Serialised with its `Display` (IMSIs as their 15 digits), without a `String`.
struct Text<T>(T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An event's `data`: its number and time, then its own fields.
#[derive(Serialize)]
struct Data<T> {
    seq: u64,
    at_ms: i64,
    #[serde(flatten)]
    body: T,
}

/// A cause code (`PROTOCOL.md §6`).
#[derive(Serialize)]
struct CauseJson {
    code: u8,
    text: &'static str,
}

impl From<Cause> for CauseJson {
    fn from(c: Cause) -> Self {
        CauseJson {
            code: c.code(),
            text: c.text(),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum UnitChangeJson<'a> {
    Registered {
        imsi: Text<&'a Imsi>,
        unit: Option<UnitJson>,
        tmsi: u32,
        site: u16,
    },
    LocationChanged {
        imsi: Text<&'a Imsi>,
        unit: Option<UnitJson>,
        tmsi: u32,
        from: u16,
        to: u16,
    },
    Left {
        imsi: Text<&'a Imsi>,
        unit: Option<UnitJson>,
        site: u16,
        reason: &'static str,
    },
    Affiliated {
        imsi: Text<&'a Imsi>,
        unit: Option<UnitJson>,
        site: u16,
        talkgroups: Vec<u16>,
    },
}

fn unit_change(u: &UnitEvent, unit: Option<UnitJson>) -> UnitChangeJson<'_> {
    match u {
        UnitEvent::Registered { imsi, tmsi, site } => UnitChangeJson::Registered {
            imsi: Text(imsi),
            unit,
            tmsi: tmsi.get(),
            site: site.get(),
        },
        UnitEvent::LocationChanged { imsi, from, to, tmsi } => UnitChangeJson::LocationChanged {
            imsi: Text(imsi),
            unit,
            tmsi: tmsi.get(),
            from: from.get(),
            to: to.get(),
        },
        UnitEvent::Left { imsi, site, reason } => UnitChangeJson::Left {
            imsi: Text(imsi),
            unit,
            site: site.get(),
            reason: match reason {
                LeaveReason::Detached => "detached",
                LeaveReason::Expired => "expired",
                LeaveReason::Removed => "removed",
                LeaveReason::Inhibited => "inhibited",
            },
        },
        UnitEvent::Affiliated {
            imsi,
            site,
            talkgroups,
        } => UnitChangeJson::Affiliated {
            imsi: Text(imsi),
            unit,
            site: site.get(),
            talkgroups: talkgroups.iter().map(|t| t.get()).collect(),
        },
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum CallChangeJson {
    Granted {
        call: u32,
        #[serde(rename = "type")]
        call_type: &'static str,
        caller: UnitJson,
        target: TargetJson,
        sites: Vec<u16>,
        slots: Vec<CallSlotJson>,
    },
    Queued {
        site: u16,
        caller: UnitJson,
        txn: u32,
        position: usize,
        emergency: bool,
    },
    QueueMoved {
        site: u16,
        caller: UnitJson,
        txn: u32,
        position: usize,
    },
    QueueLeft {
        site: u16,
        caller: UnitJson,
        txn: u32,
    },
    QueueFull {
        site: u16,
    },
    Emergency {
        site: u16,
        caller: UnitJson,
        target: TargetJson,
    },
    Preempted {
        call: u32,
        site: u16,
    },
    Talker {
        call: u32,
        /// Absent in hang time.
        #[serde(skip_serializing_if = "Option::is_none")]
        talker: Option<UnitJson>,
    },
    Ended {
        /// Absent for a request refused without a call.
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<u32>,
        #[serde(rename = "type")]
        call_type: &'static str,
        caller: UnitJson,
        target: TargetJson,
        sites: Vec<u16>,
        requested_at_ms: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        granted_at_ms: Option<i64>,
        ended_at_ms: i64,
        cause: CauseJson,
        preempted: bool,
        emergency: bool,
    },
}

/// A trunking event (but a slot change) as `v` may see it, tracking the calls it sees.
fn call_change(c: &CallEvent, v: &mut View, handle: &ControllerHandle) -> Option<CallChangeJson> {
    let visible = match c {
        CallEvent::Granted { caller, target, .. } | CallEvent::Emergency { caller, target, .. } => {
            v.call(*caller, target)
        }
        CallEvent::Queued { caller, .. }
        | CallEvent::QueueMoved { caller, .. }
        | CallEvent::QueueLeft { caller, .. } => v.fleet(caller.fleet),
        CallEvent::Preempted { call, .. } | CallEvent::Talker { call, .. } => v.sees_call(*call),
        CallEvent::Ended(r) => v.call(r.caller, &r.target),
        CallEvent::QueueFull { .. } => true,
        // Sent as `slot` by the caller.
        CallEvent::SlotChanged { .. } => false,
    };
    match c {
        CallEvent::Granted { call, .. } if visible && !v.every_fleet() => {
            v.calls.insert(*call);
        }
        CallEvent::Ended(r) => {
            if let Some(call) = r.call {
                v.calls.remove(&call);
            }
        }
        _ => {}
    }
    if !visible {
        return None;
    }
    let sites = |s: &[SiteId]| s.iter().map(|s| s.get()).collect();
    Some(match c {
        CallEvent::Granted {
            call,
            call_type: t,
            caller,
            target,
            slots,
        } => CallChangeJson::Granted {
            call: call.get(),
            call_type: call_type(*t),
            caller: (*caller).into(),
            target: (*target).into(),
            sites: slots.iter().map(|(s, ..)| s.get()).collect(),
            slots: slots.iter().map(call_slot_json).collect(),
        },
        CallEvent::Queued {
            site,
            caller,
            txn,
            position,
            emergency,
        } => CallChangeJson::Queued {
            site: site.get(),
            caller: (*caller).into(),
            txn: *txn,
            position: *position,
            emergency: *emergency,
        },
        CallEvent::QueueMoved {
            site,
            caller,
            txn,
            position,
        } => CallChangeJson::QueueMoved {
            site: site.get(),
            caller: (*caller).into(),
            txn: *txn,
            position: *position,
        },
        CallEvent::QueueLeft { site, caller, txn } => CallChangeJson::QueueLeft {
            site: site.get(),
            caller: (*caller).into(),
            txn: *txn,
        },
        CallEvent::QueueFull { site } => CallChangeJson::QueueFull { site: site.get() },
        CallEvent::Emergency { site, caller, target } => CallChangeJson::Emergency {
            site: site.get(),
            caller: (*caller).into(),
            target: (*target).into(),
        },
        CallEvent::Preempted { call, site } => CallChangeJson::Preempted {
            call: call.get(),
            site: site.get(),
        },
        CallEvent::Ended(r) => CallChangeJson::Ended {
            call: r.call.map(CallId::get),
            call_type: call_type(r.call_type),
            caller: r.caller.into(),
            target: r.target.into(),
            sites: sites(&r.sites),
            requested_at_ms: handle.unix_of(r.requested_ms),
            granted_at_ms: r.granted_ms.map(|g| handle.unix_of(g)),
            ended_at_ms: handle.unix_of(r.ended_ms),
            cause: r.end_cause.into(),
            preempted: r.preempted,
            emergency: r.emergency,
        },
        CallEvent::Talker { call, talker } => CallChangeJson::Talker {
            call: call.get(),
            talker: talker.map(UnitJson::from),
        },
        CallEvent::SlotChanged { .. } => return None,
    })
}

#[derive(Serialize)]
struct SlotChangeJson {
    site: u16,
    carrier: u8,
    slot: u8,
    in_service: bool,
}

#[derive(Serialize)]
struct LinkChangeJson {
    site: u16,
    up: bool,
}

#[derive(Serialize)]
struct CloneJson<'a> {
    imsi: Text<&'a Imsi>,
    unit: Option<UnitJson>,
    detail: &'a str,
}

#[derive(Serialize)]
struct RadioCommandJson<'a> {
    imsi: Text<&'a Imsi>,
    unit: Option<UnitJson>,
    command: &'static str,
    outcome: &'static str,
}

#[derive(Serialize)]
struct SubscriberJson<'a> {
    imsi: Text<&'a Imsi>,
    unit: UnitJson,
    actor: &'a str,
    change: &'a str,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    service: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    from: UnitJson,
    to: TargetJson,
    actor: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<CauseJson>,
}

#[derive(Serialize)]
struct AlarmChangeJson {
    change: &'static str,
    alarm: AlarmJson,
}

#[derive(Serialize)]
struct ParameterJson<'a> {
    name: &'a str,
    value: &'a str,
    actor: &'a str,
}

// ---- The snapshot ----

#[derive(Serialize)]
struct SnapshotJson {
    seq: u64,
    reason: &'static str,
    units: Vec<UnitOnAirJson>,
    calls: Vec<CallJson>,
    slots: Vec<SlotsJson>,
    queues: Vec<QueueJson>,
    links: Vec<LinkJson>,
    alarms: Vec<AlarmJson>,
}

// The snapshot's parts have the shapes of the live reads' answers (`live.rs`).

fn slot_json(s: &SlotView, v: &View) -> SlotJson {
    let (state, call) = match s.state {
        SlotUse::Control => ("control", None),
        SlotUse::Free => ("free", None),
        SlotUse::Busy(c) => ("busy", v.sees_call(c).then_some(c.get())),
        SlotUse::OutOfService => ("out_of_service", None),
    };
    SlotJson {
        carrier: s.carrier,
        slot: s.slot,
        state,
        call,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ticket_is_good_once_and_only_within_its_lifetime() {
        let t = Tickets::default();
        let a = t.issue("alice", "token-a").unwrap();
        assert!(a.starts_with("tk_") && a.len() == 3 + 64);
        assert_eq!(t.redeem(&a).as_deref(), Some("token-a"));
        assert_eq!(t.redeem(&a), None, "used twice");
        assert_eq!(t.redeem("tk_00"), None);

        let b = t.issue("alice", "token-b").unwrap();
        tokio::time::advance(TICKET_LIFETIME).await;
        assert_eq!(t.redeem(&b), None, "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_waiting_are_bounded_per_operator_and_expire_out_of_the_count() {
        let t = Tickets::default();
        for _ in 0..MAX_TICKETS_PER_OPERATOR {
            t.issue("alice", "x").unwrap();
        }
        let e = t.issue("alice", "x").unwrap_err();
        assert_eq!(
            (e.status(), e.code),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_tickets")
        );
        // Someone else still gets one; alice again once hers have expired.
        t.issue("bob", "y").unwrap();
        tokio::time::advance(TICKET_LIFETIME).await;
        t.issue("alice", "x").unwrap();
    }

    #[test]
    fn the_query_takes_a_ticket_and_a_last_event_id_once_each() {
        let q: StreamQuery = query_params(&"/e?ticket=tk_ab&last_event_id=7".parse().unwrap()).unwrap();
        assert_eq!(
            (q.ticket.as_deref(), q.last_event_id.as_deref()),
            (Some("tk_ab"), Some("7"))
        );
        for bad in ["/e?ticket=a&ticket=b", "/e?token=x"] {
            let e = query_params::<StreamQuery>(&bad.parse().unwrap()).err().unwrap();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let mut h = HeaderMap::new();
        assert_eq!(resume_after(&h, Some("12")).unwrap(), Some(12));
        h.insert("last-event-id", HeaderValue::from_static("15"));
        assert_eq!(resume_after(&h, Some("12")).unwrap(), Some(15), "the header wins");
        h.insert("last-event-id", HeaderValue::from_static("+15"));
        assert_eq!(
            resume_after(&h, None).unwrap_err().field.as_deref(),
            Some("Last-Event-ID")
        );
        assert_eq!(resume_after(&HeaderMap::new(), None).unwrap(), None);
    }
}
