//! Call alert, status messages and store-and-forward short data over the real link,
//! against a real HLR (SQLite, and PostgreSQL for the restart test when available).

mod common;

use std::time::Duration;

use common::*;
use trunkd::config::{Config, TrunkingSection};
use trunkd::controller::start;
use trunkd::link::gateway::GatewayLink;
use trunkd::protocol::{Cause, FleetId, Frame, Message, MessageType, ShortData, TalkgroupId, Target, Tmsi};

fn config(db: &TestDb) -> Config {
    let mut cfg = call_config(db, TrunkingSection::default());
    cfg.messaging.delivery_timeout_ms = 300;
    cfg
}

async fn provision(db: &TestDb) {
    let store = db.open().await;
    provision_basics(&store).await;
    for n in 1..=4 {
        store
            .add_subscriber("t", new_subscriber(n), "00101")
            .await
            .unwrap();
    }
    store.close().await;
}

/// Sends status `code` from `tmsi` to talkgroup 10 of fleet 100; returns its transaction.
async fn status_to_talkgroup_10(g: &mut GatewayLink, tmsi: Tmsi, code: u16) -> u32 {
    let target = Target::Talkgroup {
        fleet: FleetId::new(100).unwrap(),
        talkgroup: TalkgroupId::new(10).unwrap(),
    };
    g.request(Message::StatusReq { tmsi, target, code })
        .await
        .unwrap()
}

/// The recipients of the next `n` deliveries of status `code` at `g`, sorted.
async fn status_heard(g: &mut GatewayLink, code: u16, n: usize) -> Vec<Tmsi> {
    let mut heard = Vec::new();
    for _ in 0..n {
        let d = until(
            g,
            |f| matches!(f.msg, Message::StatusDelivery { code: c, .. } if c == code),
        )
        .await;
        let Message::StatusDelivery { tmsi, .. } = d.msg else {
            unreachable!()
        };
        heard.push(tmsi);
    }
    heard.sort();
    heard
}

#[tokio::test]
async fn a_call_alert_is_acknowledged_once_the_callees_gateway_has_it() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let t2 = reg(&mut g2, 2).await;
    let txn = g1
        .request(Message::CallAlertReq {
            tmsi: t1,
            target: unit(2),
        })
        .await
        .unwrap();
    let alert = until(&mut g2, |f| matches!(f.msg, Message::CallAlert { .. })).await;
    assert_eq!(
        alert.msg,
        Message::CallAlert {
            tmsi: t2,
            caller: unit(1)
        }
    );
    g2.send(Frame::new(
        alert.txn,
        Message::Ack {
            acked: MessageType::CallAlert,
        },
    ))
    .await
    .unwrap();
    let ack = until(&mut g1, |f| f.txn == txn).await;
    assert_eq!(
        ack.msg,
        Message::Ack {
            acked: MessageType::CallAlertReq
        }
    );
    // A unit that is not on the air cannot be paged.
    let txn = g1
        .request(Message::CallAlertReq {
            tmsi: t1,
            target: unit(3),
        })
        .await
        .unwrap();
    let f = until(&mut g1, |f| f.txn == txn).await;
    assert_eq!(f.msg, deny(MessageType::CallAlertReq, Cause::TargetUnreachable));
    c.stop().await;
}

#[tokio::test]
async fn an_unacknowledged_alert_is_reported_unreachable() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g2, 2).await;
    let txn = g1
        .request(Message::CallAlertReq {
            tmsi: t1,
            target: unit(2),
        })
        .await
        .unwrap();
    until(&mut g2, |f| matches!(f.msg, Message::CallAlert { .. })).await; // never acknowledged
    let f = until(&mut g1, |f| f.txn == txn).await;
    assert_eq!(f.msg, deny(MessageType::CallAlertReq, Cause::TargetUnreachable));
    c.stop().await;
}

#[tokio::test]
async fn status_messages_to_a_unit_and_to_a_talkgroup() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let (t2, t3) = (reg(&mut g2, 2).await, reg(&mut g2, 3).await);
    let txn = g1
        .request(Message::StatusReq {
            tmsi: t1,
            target: Target::Unit(unit(2)),
            code: 42,
        })
        .await
        .unwrap();
    let d = until(&mut g2, |f| matches!(f.msg, Message::StatusDelivery { .. })).await;
    assert_eq!(
        d.msg,
        Message::StatusDelivery {
            tmsi: t2,
            source: unit(1),
            code: 42
        }
    );
    g2.send(Frame::new(
        d.txn,
        Message::Ack {
            acked: MessageType::StatusDelivery,
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        until(&mut g1, |f| f.txn == txn).await.msg,
        Message::Ack {
            acked: MessageType::StatusReq
        }
    );
    // Talkgroup 10: every affiliated unit on the air hears it (units 2 and 3 at site 2, 1 itself).
    let txn = status_to_talkgroup_10(&mut g1, t1, 7).await;
    let mut want = vec![t2, t3];
    want.sort();
    assert_eq!(status_heard(&mut g2, 7, 2).await, want);
    let ack = until(&mut g1, |f| f.txn == txn).await;
    assert_eq!(
        ack.msg,
        Message::Ack {
            acked: MessageType::StatusReq
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn a_talkgroup_status_larger_than_a_link_queue_waits_for_room() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let mut cfg = config(&db);
    cfg.link.outbound_queue = 1;
    let c = start(cfg).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let (t2, t3) = (reg(&mut g2, 2).await, reg(&mut g2, 3).await);
    // Two deliveries for site 2, whose queue holds one: both arrive, the link stays up.
    let txn = status_to_talkgroup_10(&mut g1, t1, 7).await;
    let mut want = vec![t2, t3];
    want.sort();
    assert_eq!(status_heard(&mut g2, 7, 2).await, want);
    assert_eq!(
        until(&mut g1, |f| f.txn == txn).await.msg,
        Message::Ack {
            acked: MessageType::StatusReq
        }
    );
    assert!(c.links.is_connected(site(2)));
    c.stop().await;
}

#[tokio::test]
async fn short_data_beyond_the_stores_in_flight_is_refused_busy() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let mut cfg = config(&db);
    cfg.messaging.max_short_data_in_flight = 1;
    let c = start(cfg).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let t1 = reg(&mut g1, 1).await;
    let req = |n: u8| Message::ShortDataReq {
        tmsi: t1,
        target: Target::Unit(unit(3)),
        data: ShortData::new(vec![n]).unwrap(),
    };
    // Two requests in one write: the controller reads both before the first is stored.
    let first = g1.queue_request(req(1)).await.unwrap();
    let second = g1.queue_request(req(2)).await.unwrap();
    g1.flush().await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let f = until(&mut g1, |f| f.txn == first || f.txn == second).await;
        answers.push((f.txn, f.msg));
    }
    answers.sort_by_key(|(txn, _)| *txn);
    assert_eq!(
        answers,
        vec![
            (
                first,
                Message::Ack {
                    acked: MessageType::ShortDataReq
                }
            ),
            (second, deny(MessageType::ShortDataReq, Cause::Busy)),
        ]
    );
    // Once the first is stored, the next is taken again.
    let third = g1.request(req(3)).await.unwrap();
    assert_eq!(
        until(&mut g1, |f| f.txn == third).await.msg,
        Message::Ack {
            acked: MessageType::ShortDataReq
        }
    );
    assert_eq!(c.store.pending_short_data(imsi(3)).await.unwrap().len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn short_data_is_stored_delivered_and_removed_on_acknowledgement() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let t2 = reg(&mut g2, 2).await;
    let data = ShortData::new(b"meet at gate 4".to_vec()).unwrap();
    let msg = Message::ShortDataReq {
        tmsi: t1,
        target: Target::Unit(unit(2)),
        data: data.clone(),
    };
    let txn = g1.request(msg).await.unwrap();
    assert_eq!(
        until(&mut g1, |f| f.txn == txn).await.msg,
        Message::Ack {
            acked: MessageType::ShortDataReq
        }
    );
    let d = until(&mut g2, |f| matches!(f.msg, Message::ShortDataDelivery { .. })).await;
    let Message::ShortDataDelivery {
        id,
        tmsi,
        source,
        data: got,
    } = d.msg
    else {
        unreachable!()
    };
    assert_eq!((tmsi, source, got), (t2, unit(1), data));
    assert_eq!(
        c.store.pending_short_data(imsi(2)).await.unwrap().len(),
        1,
        "kept until acknowledged"
    );
    g2.send(Frame::new(d.txn, Message::ShortDataAck { id }))
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if c.store.pending_short_data(imsi(2)).await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "acknowledged short data was not removed");
    c.stop().await;
}

#[tokio::test]
async fn short_data_for_a_unit_that_is_off_survives_a_restart() {
    for db in TestDb::all().await {
        provision(&db).await;
        let c = start(config(&db)).await.unwrap();
        let mut g1 = gw(&c, 1).await;
        let t1 = reg(&mut g1, 1).await;
        let data = ShortData::new(vec![1, 2, 3]).unwrap();
        let msg = Message::ShortDataReq {
            tmsi: t1,
            target: Target::Unit(unit(3)),
            data: data.clone(),
        };
        let txn = g1.request(msg).await.unwrap();
        // The ACK comes only once the message is on disk.
        assert_eq!(
            until(&mut g1, |f| f.txn == txn).await.msg,
            Message::Ack {
                acked: MessageType::ShortDataReq
            }
        );
        drop(g1);
        c.stop().await;

        let c = start(config(&db)).await.unwrap();
        let mut g2 = gw(&c, 2).await;
        let t3 = reg(&mut g2, 3).await;
        let d = until(&mut g2, |f| matches!(f.msg, Message::ShortDataDelivery { .. })).await;
        let Message::ShortDataDelivery { tmsi, data: got, .. } = d.msg else {
            unreachable!()
        };
        assert_eq!((tmsi, got), (t3, data), "{}", db.name);
        c.stop().await;
    }
}

#[tokio::test]
async fn short_data_waits_for_a_unit_that_registers_later() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let t1 = reg(&mut g1, 1).await;
    let data = ShortData::new(b"call base".to_vec()).unwrap();
    let msg = Message::ShortDataReq {
        tmsi: t1,
        target: Target::Unit(unit(3)),
        data: data.clone(),
    };
    let txn = g1.request(msg).await.unwrap();
    until(&mut g1, |f| f.txn == txn).await;
    // Unit 3 powers on afterwards, on the same running controller.
    let mut g2 = gw(&c, 2).await;
    let t3 = reg(&mut g2, 3).await;
    let d = until(&mut g2, |f| matches!(f.msg, Message::ShortDataDelivery { .. })).await;
    let Message::ShortDataDelivery {
        id, tmsi, data: got, ..
    } = d.msg
    else {
        unreachable!()
    };
    assert_eq!((tmsi, got), (t3, data));
    g2.send(Frame::new(d.txn, Message::ShortDataAck { id }))
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test]
async fn undelivered_short_data_expires() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let mut cfg = config(&db);
    cfg.messaging.short_data_ttl_ms = 100;
    let c = start(cfg).await.unwrap();
    let mut g1 = gw(&c, 1).await;
    let t1 = reg(&mut g1, 1).await;
    let msg = Message::ShortDataReq {
        tmsi: t1,
        target: Target::Unit(unit(4)),
        data: ShortData::new(vec![9]).unwrap(),
    };
    let txn = g1.request(msg).await.unwrap();
    until(&mut g1, |f| f.txn == txn).await;
    skip(Duration::from_millis(600)).await;
    // Unit 4 comes on the air: nothing is delivered, the message is gone.
    let mut g2 = gw(&c, 2).await;
    reg(&mut g2, 4).await;
    assert!(c.store.pending_short_data(imsi(4)).await.unwrap().is_empty());
    let keepalive = g2.request(Message::Keepalive).await.unwrap();
    loop {
        let f = tokio::time::timeout(PATIENCE, g2.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            !matches!(f.msg, Message::ShortDataDelivery { .. }),
            "expired message delivered"
        );
        if f.txn == keepalive && f.msg == Message::KeepaliveAck {
            break;
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn only_the_recipients_gateway_can_acknowledge_short_data() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let (mut g1, mut g2) = short_data_from_1_to_2(&c).await;
    let d = until(&mut g2, |f| matches!(f.msg, Message::ShortDataDelivery { .. })).await;
    let Message::ShortDataDelivery { id, .. } = d.msg else {
        unreachable!()
    };
    // Site 1 claims the delivery: ignored.
    g1.send(Frame::new(d.txn, Message::ShortDataAck { id }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.store.pending_short_data(imsi(2)).await.unwrap().len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn talkgroup_statuses_beyond_the_fanouts_in_flight_are_refused_busy_and_none_is_left_unanswered() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let mut cfg = config(&db);
    cfg.messaging.max_status_fanouts_in_flight = 2;
    let c = start(cfg).await.unwrap();
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 3).await;
    // A burst of five in one write: the controller reads them all before a fan-out ends.
    let target = Target::Talkgroup {
        fleet: FleetId::new(100).unwrap(),
        talkgroup: TalkgroupId::new(10).unwrap(),
    };
    let mut burst = Vec::new();
    for code in 1..=5 {
        let status = Message::StatusReq {
            tmsi: t[0],
            target,
            code,
        };
        burst.push(g.queue_request(status).await.unwrap());
    }
    g.flush().await.unwrap();
    let (mut acked, mut busy) = (0, 0);
    for _ in 0..burst.len() {
        let f = until(&mut g, |f| burst.contains(&f.txn)).await;
        match f.msg {
            Message::Ack { .. } => acked += 1,
            m if m == deny(MessageType::StatusReq, Cause::Busy) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        (acked, busy),
        (2, 3),
        "two fan-outs at a time, the rest refused busy"
    );
    // Once they are done, the next is taken again.
    let again = status_to_talkgroup_10(&mut g, t[0], 9).await;
    assert_eq!(
        until(&mut g, |f| f.txn == again).await.msg,
        Message::Ack {
            acked: MessageType::StatusReq
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn a_units_stored_short_data_is_delivered_a_page_at_a_time_as_it_is_acknowledged() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let mut cfg = config(&db);
    cfg.messaging.delivery_timeout_ms = 5000;
    let c = start(cfg).await.unwrap();
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let total = trunkd::shell::messaging::STORED_PAGE as usize + 8;
    for n in 0..total {
        let msg = Message::ShortDataReq {
            tmsi: t1,
            target: Target::Unit(unit(2)),
            data: ShortData::new((n as u16).to_be_bytes().to_vec()).unwrap(),
        };
        let txn = g.request(msg).await.unwrap();
        assert!(matches!(
            until(&mut g, |f| f.txn == txn).await.msg,
            Message::Ack { .. }
        ));
    }
    // Unit 2 comes on the air: the first page arrives, and no more until it is acknowledged.
    reg(&mut g, 2).await;
    let is_delivery = |f: &Frame| matches!(f.msg, Message::ShortDataDelivery { .. });
    let mut page = Vec::new();
    for _ in 0..trunkd::shell::messaging::STORED_PAGE {
        page.push(until(&mut g, is_delivery).await);
    }
    let more = tokio::time::timeout(Duration::from_millis(300), until(&mut g, is_delivery)).await;
    assert!(
        more.is_err(),
        "a delivery beyond the page before any acknowledgement"
    );
    for f in page {
        let Message::ShortDataDelivery { id, .. } = f.msg else {
            unreachable!()
        };
        g.send(Frame::new(f.txn, Message::ShortDataAck { id }))
            .await
            .unwrap();
    }
    for _ in 0..8 {
        until(&mut g, is_delivery).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn short_data_acknowledged_just_before_a_stop_is_not_delivered_again_after_it() {
    let db = TestDb::sqlite();
    provision(&db).await;
    let c = start(config(&db)).await.unwrap();
    let (_g1, mut g2) = short_data_from_1_to_2(&c).await;
    receive_short_data(&mut g2).await;
    // The acknowledgement has been handled once the keepalive after it is answered;
    // the controller stops at once: its removal from the store is not cut short.
    let keepalive = g2.request(Message::Keepalive).await.unwrap();
    let answered = async { while !matches!(g2.recv().await, Some(Ok(Ok(f))) if f.txn == keepalive) {} };
    tokio::time::timeout(PATIENCE, answered).await.unwrap();
    c.stop().await;
    let store = db.open().await;
    assert!(store.pending_short_data(imsi(2)).await.unwrap().is_empty());
    store.close().await;
}

/// Units 1 (site 1) and 2 (site 2) on the air, and short data `[7]` from 1 to 2 accepted:
/// the gateways of sites 1 and 2.
async fn short_data_from_1_to_2(c: &trunkd::controller::Running) -> (GatewayLink, GatewayLink) {
    let mut g1 = gw(c, 1).await;
    let mut g2 = gw(c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g2, 2).await;
    let msg = Message::ShortDataReq {
        tmsi: t1,
        target: Target::Unit(unit(2)),
        data: ShortData::new(vec![7]).unwrap(),
    };
    let txn = g1.request(msg).await.unwrap();
    until(&mut g1, |f| f.txn == txn).await;
    (g1, g2)
}
