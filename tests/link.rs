//! The site link over real TCP (`PROTOCOL.md §2.3`, §3): handshake, keys, keepalive,
//! duplicate links, bad input, silent peers, the handshake budget, room for links and
//! graceful shutdown.

mod common;

use common::*;
use trunkd::config::LinkConfig;
use trunkd::link::gateway::{GatewayError, GatewayLink};
use trunkd::link::SendError;
use trunkd::protocol::{
    link_mac, Cause, Frame, FrameError, Message, MessageType, TalkgroupId, Tmsi, CONTROLLER_TXN_BASE,
};

fn group_call() -> Message {
    Message::GroupCallReq {
        tmsi: Tmsi::new(42).unwrap(),
        talkgroup: TalkgroupId::new(10).unwrap(),
        scope: trunkd::protocol::CallScope::Local,
    }
}

#[tokio::test]
async fn handshake_with_the_right_key_brings_the_link_up() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    assert_eq!(gw.keepalive_interval().as_millis(), 200);
    assert_eq!(gw.misses(), 3);
    srv.until_linked(1).await;
    assert_eq!(srv.links.connected(), vec![site(1)]);

    // A service this controller does not implement yet is denied, on the same transaction.
    let txn = gw.request(group_call()).await.unwrap();
    let answer = next_service(&mut gw).await.unwrap();
    assert_eq!(answer.txn, txn);
    assert_eq!(
        answer.msg,
        deny(MessageType::GroupCallReq, Cause::ServiceNotSupported)
    );
}

#[tokio::test]
async fn wrong_key_is_rejected_and_closed() {
    let srv = TestServer::start(fast_config()).await;
    let err = GatewayLink::connect(srv.addr, site(1), &key(9))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, GatewayError::Rejected(Cause::LinkAuthFailed)),
        "{err}"
    );
    assert!(srv.links.connected().is_empty());
}

#[tokio::test]
async fn wrong_key_connection_is_closed_after_the_reject() {
    let srv = TestServer::start(fast_config()).await;
    let mut raw = srv.raw().await;
    raw.send(Frame::new(1, Message::LinkHello { site: site(2) }))
        .await;
    let Some(Frame {
        msg: Message::LinkChallenge { nonce },
        txn: 1,
        ..
    }) = raw.next().await
    else {
        panic!("expected a challenge");
    };
    // Right construction, key of another site.
    raw.send(Frame::new(
        1,
        Message::LinkResponse {
            mac: link_mac(&key(1), &nonce, site(2)),
        },
    ))
    .await;
    assert_eq!(
        raw.next().await.unwrap().msg,
        Message::LinkReject {
            cause: Cause::LinkAuthFailed
        }
    );
    raw.expect_eof().await;
}

#[tokio::test]
async fn unknown_site_is_rejected() {
    let srv = TestServer::start(fast_config()).await;
    let err = GatewayLink::connect(srv.addr, site(77), &key(77))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, GatewayError::Rejected(Cause::UnknownSite)), "{err}");
}

#[tokio::test]
async fn every_challenge_is_fresh() {
    let srv = TestServer::start(fast_config()).await;
    let mut nonces = std::collections::HashSet::new();
    for _ in 0..5 {
        let mut raw = srv.raw().await;
        raw.send(Frame::new(1, Message::LinkHello { site: site(1) }))
            .await;
        match raw.next().await.unwrap().msg {
            Message::LinkChallenge { nonce } => assert!(nonces.insert(nonce), "nonce reused"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn anything_but_hello_first_is_rejected() {
    let srv = TestServer::start(fast_config()).await;
    let mut raw = srv.raw().await;
    raw.send(Frame::new(5, Message::Keepalive)).await;
    // On the offending frame's own transaction id (PROTOCOL.md §2.3).
    assert_eq!(
        raw.next().await.unwrap(),
        Frame::new(
            5,
            Message::LinkReject {
                cause: Cause::UnexpectedMessage
            }
        )
    );
    raw.expect_eof().await;
}

#[tokio::test]
async fn keepalives_are_exchanged_and_keep_the_link_up() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    // Our own keepalive is answered on its transaction.
    let txn = gw.request(Message::Keepalive).await.unwrap();
    let mut got_ack = false;
    let mut controller_keepalives = 0;
    // Run for well over misses × interval (600 ms), answering the controller's
    // keepalives and sending ours, and make sure the link is never closed.
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = tick.tick() => gw.keepalive().await.unwrap(),
            f = gw.recv() => {
                let f = f.expect("link closed").unwrap().unwrap();
                match f.msg {
                    Message::KeepaliveAck if f.txn == txn => got_ack = true,
                    Message::KeepaliveAck => {}
                    Message::Keepalive => {
                        assert!(f.txn >= CONTROLLER_TXN_BASE, "controller keepalive in the gateway range");
                        controller_keepalives += 1;
                        gw.send(Frame::new(f.txn, Message::KeepaliveAck)).await.unwrap();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert!(got_ack, "our keepalive was not answered");
    assert!(
        controller_keepalives >= 2,
        "controller sent {controller_keepalives} keepalives"
    );
    assert!(srv.links.is_connected(site(1)));
}

#[tokio::test]
async fn missed_keepalives_close_the_link() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    // Stay silent: read without ever answering.
    let close = loop {
        let f = tokio::time::timeout(PATIENCE, gw.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        if f.msg != Message::Keepalive {
            break f;
        }
    };
    assert_eq!(
        close.msg,
        Message::LinkClose {
            cause: Cause::KeepaliveTimeout
        }
    );
    assert_eq!(close.txn, 0);
    assert!(gw.recv().await.is_none(), "connection should be closed");
    assert!(!srv.links.is_connected(site(1)));
}

#[tokio::test]
async fn a_second_link_for_a_site_supersedes_the_first() {
    let srv = TestServer::start(fast_config()).await;
    let mut old = srv.gateway(1).await;
    let mut new = srv.gateway(1).await;
    assert!(matches!(
        next_service(&mut old).await,
        Err(GatewayError::Closed(Cause::Superseded))
    ));
    // The new link carries traffic and the site stays connected.
    let txn = new.request(group_call()).await.unwrap();
    assert_eq!(next_service(&mut new).await.unwrap().txn, txn);
    assert_eq!(srv.links.connected(), vec![site(1)]);
    // The old link's end must not unregister the new one.
    drop(old);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(srv.links.is_connected(site(1)));
}

#[tokio::test]
async fn malformed_frames_get_frame_error_and_the_link_stays_up() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    // Unknown type 0x7F, transaction 0x55.
    gw.send_raw(&hex::decode("544b017f000000000055 0000".replace(' ', "")).unwrap())
        .await
        .unwrap();
    let f = next_service(&mut gw).await.unwrap();
    assert_eq!(f.txn, 0x55);
    assert_eq!(
        f.msg,
        Message::FrameError {
            cause: Cause::UnknownMessageType,
            offending_type: 0x7F
        }
    );
    // Truncated LINK_HELLO-sized payload for DEREGISTER (needs 4 bytes).
    gw.send_raw(&hex::decode("544b0115000000000056000100").unwrap())
        .await
        .unwrap();
    let f = next_service(&mut gw).await.unwrap();
    assert_eq!(
        f.msg,
        Message::FrameError {
            cause: Cause::TruncatedPayload,
            offending_type: 0x15
        }
    );
    // A well-formed frame in between resets the malformed-in-a-row count (limit 4).
    let ka = gw.request(Message::Keepalive).await.unwrap();
    let f = tokio::time::timeout(PATIENCE, async {
        loop {
            let f = gw.recv().await.unwrap().unwrap().unwrap();
            if f.msg == Message::KeepaliveAck && f.txn == ka {
                break f;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(f.txn, ka);
    // A message only the controller sends.
    let grant_only_controller_sends = Message::Queued {
        position: trunkd::protocol::QueuePosition::new(1).unwrap(),
    };
    gw.send(Frame::new(0x57, grant_only_controller_sends))
        .await
        .unwrap();
    let f = next_service(&mut gw).await.unwrap();
    assert_eq!(
        f.msg,
        Message::FrameError {
            cause: Cause::WrongDirection,
            offending_type: 0x29
        }
    );
    // A request on a controller transaction id.
    gw.send(Frame::new(CONTROLLER_TXN_BASE + 5, group_call()))
        .await
        .unwrap();
    let f = next_service(&mut gw).await.unwrap();
    assert_eq!(
        f.msg,
        Message::FrameError {
            cause: Cause::InvalidField,
            offending_type: 0x20
        }
    );
    // Four malformed frames, but never four in a row: the link still works.
    let txn = gw.request(group_call()).await.unwrap();
    assert_eq!(next_service(&mut gw).await.unwrap().txn, txn);
    assert!(srv.links.is_connected(site(1)));
}

#[tokio::test]
async fn too_many_malformed_frames_in_a_row_close_the_link() {
    let srv = TestServer::start(fast_config()).await; // max_malformed_in_row = 4
    let mut gw = srv.gateway(1).await;
    for i in 0..4u8 {
        let mut b = hex::decode("544b017f0000000000000000").unwrap();
        b[9] = i + 1;
        gw.send_raw(&b).await.unwrap();
    }
    for _ in 0..4 {
        let f = next_service(&mut gw).await.unwrap();
        assert!(matches!(f.msg, Message::FrameError { .. }), "{f:?}");
    }
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::TooManyMalformed))
    ));
}

#[tokio::test]
async fn an_oversized_frame_closes_the_link_without_reading_it() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    // Header of a SHORT_DATA_REQ declaring 2049 payload bytes; no payload follows, so a
    // server that waited for it would hang here.
    gw.send_raw(&hex::decode("544b0125000000000009 0801".replace(' ', "")).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::FrameTooLong))
    ));
    assert!(matches!(next_service(&mut gw).await, Err(GatewayError::Eof)));
}

#[tokio::test]
async fn garbage_loses_sync_and_closes_the_link() {
    let srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    gw.send_raw(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::OutOfSync))
    ));
}

#[tokio::test]
async fn a_wrong_version_is_refused_during_the_handshake() {
    let srv = TestServer::start(fast_config()).await;
    let mut raw = srv.raw().await;
    raw.send_bytes(&hex::decode("544b020100000000000100020001").unwrap())
        .await;
    assert_eq!(
        raw.next().await.unwrap().msg,
        Message::LinkReject {
            cause: Cause::UnsupportedVersion
        }
    );
    raw.expect_eof().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let srv = TestServer::start(fast_config()).await;
    let mut raw = srv.raw().await;
    assert_eq!(
        raw.next().await.unwrap().msg,
        Message::LinkReject {
            cause: Cause::HandshakeTimeout
        }
    );
    raw.expect_eof().await;
}

#[tokio::test]
async fn a_half_sent_frame_does_not_hold_the_handshake_open() {
    let srv = TestServer::start(fast_config()).await;
    let mut raw = srv.raw().await;
    raw.send_bytes(&hex::decode("544b01010000").unwrap()).await; // half a header
    assert_eq!(
        raw.next().await.unwrap().msg,
        Message::LinkReject {
            cause: Cause::HandshakeTimeout
        }
    );
}

/// Fast settings with `max_connections`, `max_handshakes` and `max_handshakes_per_address`
/// as given, and a handshake timeout no test here reaches.
fn budget(connections: usize, handshakes: usize, per_address: usize) -> LinkConfig {
    LinkConfig {
        max_connections: connections,
        max_handshakes: handshakes,
        max_handshakes_per_address: per_address,
        handshake_timeout_ms: 5000,
        ..fast_config()
    }
}

/// The frame a connection evicted from the handshake, or refused a link, receives.
fn connection_limit(txn: u32) -> Option<Frame> {
    Some(Frame::new(
        txn,
        Message::LinkReject {
            cause: Cause::ConnectionLimit,
        },
    ))
}

#[tokio::test]
async fn a_newcomer_takes_the_place_of_the_oldest_silent_connection() {
    let srv = TestServer::start(budget(4, 2, 2)).await;
    // `a` said hello and was challenged; `b` and `c` are silent.
    let mut a = srv.raw().await;
    let nonce = a.hello(5, 1).await;
    let mut b = srv.raw().await;
    let mut c = srv.raw().await;
    // The budget is full: `c` took the place of `b` (silent), not of the older `a`.
    assert_eq!(b.next().await, connection_limit(0));
    b.expect_eof().await;
    // A gateway takes the place of `c`, the oldest silent one, and links.
    let _gw = srv.gateway(2).await;
    assert_eq!(c.next().await, connection_limit(0));
    // `a` kept its place all along and links too.
    a.respond(5, 1, &nonce).await;
}

#[tokio::test]
async fn an_evicted_challenged_connection_is_told_on_its_transaction() {
    let srv = TestServer::start(budget(4, 1, 1)).await;
    let mut a = srv.raw().await;
    a.hello(9, 1).await;
    let _b = srv.raw().await;
    assert_eq!(a.next().await, connection_limit(9));
    a.expect_eof().await;
}

#[tokio::test]
async fn a_flooding_address_only_evicts_its_own_connections() {
    let srv = TestServer::start(budget(8, 4, 2)).await;
    let mut quiet = srv.raw_from([127, 0, 0, 3]).await;
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(srv.raw_from([127, 0, 0, 2]).await);
    }
    // All but the last two of the flood were evicted, oldest first.
    for raw in &mut flood[..8] {
        assert_eq!(raw.next().await, connection_limit(0));
    }
    // The other address still holds its place and links on it.
    let nonce = quiet.hello(1, 1).await;
    quiet.respond(1, 1, &nonce).await;
}

#[tokio::test]
async fn links_have_room_of_their_own_and_a_linked_site_can_always_relink() {
    // One place for links, two for handshakes.
    let srv = TestServer::start(budget(3, 2, 2)).await;
    let _a = srv.gateway(1).await;
    srv.until_linked(1).await;
    // Strangers filling the handshake places do not take the link's place.
    let _idle = [srv.raw().await, srv.raw().await];
    let err = GatewayLink::connect(srv.addr, site(2), &key(2))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, GatewayError::Rejected(Cause::ConnectionLimit)),
        "{err}"
    );
    // Site 1 reconnecting replaces its own link: it needs no further place.
    let _a2 = srv.gateway(1).await;
    assert_eq!(srv.links.connected(), vec![site(1)]);
}

#[tokio::test]
async fn graceful_shutdown_closes_every_link_and_stops_accepting() {
    let mut srv = TestServer::start(fast_config()).await;
    let mut a = srv.gateway(1).await;
    let mut b = srv.gateway(2).await;
    srv.shutdown();
    for gw in [&mut a, &mut b] {
        assert!(matches!(
            next_service(gw).await,
            Err(GatewayError::Closed(Cause::ShuttingDown))
        ));
        assert!(matches!(next_service(gw).await, Err(GatewayError::Eof)));
    }
    tokio::time::timeout(PATIENCE, &mut srv.task)
        .await
        .expect("server did not stop")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(srv.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn frames_queued_for_a_site_are_sent_before_the_shutdown_close() {
    let mut srv = TestServer::start(fast_config()).await;
    let mut gw = srv.gateway(1).await;
    let inhibit = Frame::new(
        CONTROLLER_TXN_BASE + 100,
        Message::Inhibit {
            tmsi: Tmsi::new(7).unwrap(),
        },
    );
    for _ in 0..100 {
        if srv.links.send(site(1), inhibit.clone()).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    srv.shutdown();
    assert_eq!(next_service(&mut gw).await.unwrap(), inhibit);
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::ShuttingDown))
    ));
}

#[tokio::test]
async fn a_link_whose_queue_overflows_is_closed_rather_than_left_missing_frames() {
    let cfg = LinkConfig {
        outbound_queue: 1,
        ..fast_config()
    };
    let srv = TestServer::start(cfg).await;
    let mut gw = srv.gateway(1).await;
    srv.until_linked(1).await;
    let inhibit = Frame::new(
        CONTROLLER_TXN_BASE + 100,
        Message::Inhibit {
            tmsi: Tmsi::new(7).unwrap(),
        },
    );
    // Two frames queued with nothing awaited between them: the link cannot write in
    // between, and its queue holds one.
    assert_eq!(srv.links.send(site(1), inhibit.clone()), Ok(()));
    assert_eq!(
        srv.links.send(site(1), inhibit),
        Err(SendError::QueueFull(site(1)))
    );
    let closed = loop {
        match next_service(&mut gw).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(closed, GatewayError::Closed(Cause::PeerNotReading)),
        "{closed:?}"
    );
    assert!(!srv.links.is_connected(site(1)));
}

#[test]
fn frame_error_answer_echoes_transaction_and_type() {
    let e = FrameError::UnknownType {
        txn: 9,
        type_code: 0x7F,
    };
    assert_eq!(
        e.answer(),
        Frame::new(
            9,
            Message::FrameError {
                cause: Cause::UnknownMessageType,
                offending_type: 0x7F
            }
        )
    );
}
