//! The HLR store suite: every test runs against SQLite, and against PostgreSQL too when
//! `TEST_DATABASE_URL` is set (`.ci/run` sets it).

mod common;

use common::*;
use trunkd::hlr::{Fleet, Talkgroup};
use trunkd::protocol::{FleetId, Imsi, MemberId, TalkgroupId};
use trunkd::store::csv::parse_subscribers;
use trunkd::store::{ImportError, StoreError};

#[tokio::test]
async fn fleets_talkgroups_and_sites_with_their_rules() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let fleet = FleetId::new(100).unwrap();
        let dup = store
            .add_fleet(
                "t",
                &Fleet {
                    id: fleet,
                    name: "again".into(),
                },
            )
            .await;
        assert!(
            matches!(dup, Err(StoreError::Conflict(_))),
            "{}: {dup:?}",
            db.name
        );
        let orphan = Talkgroup {
            fleet: FleetId::new(999).unwrap(),
            id: TalkgroupId::new(1).unwrap(),
            name: "x".into(),
        };
        assert!(
            matches!(
                store.add_talkgroup("t", &orphan).await,
                Err(StoreError::NotFound(_))
            ),
            "{}",
            db.name
        );
        let sites = store.sites().await.unwrap();
        assert_eq!(sites.len(), 2, "{}", db.name);
        assert_eq!(sites[0].key, key(1), "{}: site key round trip", db.name);
        assert!(
            !format!("{sites:?}").contains(&key(1).to_hex()),
            "{}: site key in Debug",
            db.name
        );
        assert_eq!(store.talkgroups().await.unwrap().len(), 5, "{}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn a_subscriber_gets_an_imsi_and_individual_id_and_reads_back_without_secrets() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let a = store
            .add_subscriber("t", new_subscriber(1), "00101")
            .await
            .unwrap();
        let b = store
            .add_subscriber("t", new_subscriber(2), "00101")
            .await
            .unwrap();
        assert_eq!(a.imsi.to_string(), "001010000000001", "{}", db.name);
        assert_eq!(b.imsi.to_string(), "001010000000002", "{}", db.name);
        assert_ne!(a.individual, b.individual);
        assert_eq!(a.k, radio_keys(1).k, "{}: K round trip", db.name);
        assert_eq!(
            a.talkgroups,
            [10, 11, 12].map(|t| TalkgroupId::new(t).unwrap()).to_vec()
        );
        let shown = format!("{a:?}");
        assert!(
            !shown.contains(&radio_keys(1).k.to_hex()) && shown.contains("<redacted>"),
            "{shown}"
        );
        // Unique IMEI, member within fleet.
        // One subscriber is not a file: its errors name no line.
        let again = store.add_subscriber("t", new_subscriber(1), "00101").await;
        assert!(
            matches!(&again, Err(StoreError::Conflict(e)) if e == &format!("IMEI {} is already provisioned", a.imei)),
            "{}: {again:?}",
            db.name
        );
        let mut same_member = new_subscriber(3);
        same_member.unit.member = MemberId::new(1).unwrap();
        let e = store.add_subscriber("t", same_member, "00101").await.unwrap_err();
        assert_eq!(e.to_string(), "member 1 of fleet 100 is already provisioned");
        let mut no_tg = new_subscriber(3);
        no_tg.talkgroups = vec![TalkgroupId::new(99).unwrap()];
        let e = store.add_subscriber("t", no_tg, "00101").await.unwrap_err();
        assert_eq!(e.to_string(), "talkgroup 99 does not exist in fleet 100");
        store.close().await;
    }
}

fn csv_row(n: u8, imei_override: Option<&str>) -> String {
    let s = new_subscriber(n);
    let imei = imei_override.map(str::to_string).unwrap_or(s.imei.to_string());
    format!(
        "{imei},,,100,{n},,{},{},3,all,10;11\n",
        s.k.to_hex(),
        s.opc.to_hex()
    )
}

const HEADER: &str = "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups\n";

#[tokio::test]
async fn an_import_is_all_or_nothing() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        // Row 4 (line 5) repeats the IMEI of row 1: the whole file is refused.
        let dup = new_subscriber(1).imei.to_string();
        let text = format!(
            "{HEADER}{}{}{}{}",
            csv_row(1, None),
            csv_row(2, None),
            csv_row(3, None),
            csv_row(4, Some(&dup))
        );
        let rows = parse_subscribers(text.as_bytes()).unwrap();
        let e = store.import_subscribers("t", rows, "00101").await.unwrap_err();
        assert!(matches!(&e, ImportError::Row { line: 5, .. }), "{}: {e}", db.name);
        assert!(
            e.to_string().ends_with(&format!("IMEI {dup} duplicates line 2")),
            "{e}"
        );
        assert!(
            store.load_subscribers(None).await.unwrap().is_empty(),
            "{}: something was written",
            db.name
        );

        // A row that conflicts with the database (talkgroup 99 does not exist).
        let text = format!(
            "{HEADER}{}{}",
            csv_row(1, None),
            csv_row(2, None).replace("10;11", "10;99")
        );
        let e = store
            .import_subscribers("t", parse_subscribers(text.as_bytes()).unwrap(), "00101")
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("line 3: talkgroup 99 does not exist"),
            "{e}"
        );
        assert!(
            store.load_subscribers(None).await.unwrap().is_empty(),
            "{}",
            db.name
        );

        // A good file goes in whole, with one audit entry.
        let text = format!(
            "{HEADER}{}{}{}",
            csv_row(1, None),
            csv_row(2, None),
            csv_row(3, None)
        );
        let done = store
            .import_subscribers("t", parse_subscribers(text.as_bytes()).unwrap(), "00101")
            .await
            .unwrap();
        assert_eq!(done.len(), 3);
        assert_eq!(done[2].imsi, imsi(3), "{}", db.name);
        assert_eq!((done[2].line, done[2].imsi_assigned), (4, true));
        assert_eq!(
            store.load_subscribers(None).await.unwrap().len(),
            3,
            "{}",
            db.name
        );
        let audit = store.audit_since(0, 100).await.unwrap();
        assert!(audit
            .iter()
            .any(|a| a.action == "subscriber.import" && a.detail == "3 subscribers"));
        store.close().await;
    }
}

#[tokio::test]
async fn a_bad_luhn_digit_is_refused_at_provisioning() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let mut s = new_subscriber(1);
        let good = s.imei.to_string();
        let last = good.as_bytes()[14] - b'0';
        s.imei = trunkd::protocol::Imei::parse(&format!("{}{}", &good[..14], (last + 1) % 10)).unwrap();
        let e = store.add_subscriber("t", s, "00101").await.unwrap_err();
        assert!(e.to_string().contains("Luhn"), "{e}");
        store.close().await;
    }
}

#[tokio::test]
async fn inhibit_enable_and_audit() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let s = store
            .add_subscriber("cli:alice", new_subscriber(1), "00101")
            .await
            .unwrap();
        store.set_inhibited("cli:bob", s.imsi, true).await.unwrap();
        assert!(store.subscriber(s.imsi).await.unwrap().unwrap().inhibited);
        store.set_inhibited("cli:bob", s.imsi, false).await.unwrap();
        assert!(!store.subscriber(s.imsi).await.unwrap().unwrap().inhibited);
        let ghost = Imsi::parse("001019999999999").unwrap();
        assert!(matches!(
            store.set_inhibited("x", ghost, true).await,
            Err(StoreError::NotFound(_))
        ));
        let audit = store.audit_since(0, 100).await.unwrap();
        let mine: Vec<_> = audit
            .iter()
            .filter(|a| a.object == format!("subscriber:{}", s.imsi))
            .collect();
        assert_eq!(
            mine.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["subscriber.add", "subscriber.inhibit", "subscriber.enable"]
        );
        assert_eq!(mine[1].actor, "cli:bob");
        store.close().await;
    }
}

#[tokio::test]
async fn last_locations_upsert_and_never_go_back_in_time() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let s = store
            .add_subscriber("t", new_subscriber(1), "00101")
            .await
            .unwrap();
        assert_eq!(store.last_location(s.imsi).await.unwrap(), None);
        store
            .write_locations(&[(s.imsi, site(1), trunkd::protocol::Tmsi::new(7).unwrap(), 1000)])
            .await
            .unwrap();
        store
            .write_locations(&[(s.imsi, site(2), trunkd::protocol::Tmsi::new(8).unwrap(), 2000)])
            .await
            .unwrap();
        store
            .write_locations(&[(s.imsi, site(1), trunkd::protocol::Tmsi::new(9).unwrap(), 1500)])
            .await
            .unwrap();
        assert_eq!(
            store.last_location(s.imsi).await.unwrap(),
            Some((site(2), 2000)),
            "{}",
            db.name
        );
        assert_eq!(
            store.last_tmsi(s.imsi).await.unwrap().map(|t| t.get()),
            Some(8),
            "the TMSI of the newest sighting ({})",
            db.name
        );
        store.close().await;
    }
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_are_idempotent() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        store
            .add_subscriber("t", new_subscriber(1), "00101")
            .await
            .unwrap();
        store.close().await;
        let store = db.open().await;
        store.migrate().await.unwrap();
        assert_eq!(
            store.load_subscribers(None).await.unwrap().len(),
            1,
            "{}",
            db.name
        );
        assert_eq!(store.sites().await.unwrap().len(), 2);
        store.close().await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::sqlite();
    let store = db.open().await;
    let mode = std::fs::metadata(db.dir.path().join("trunkd.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "database readable by others: {mode:o}");
    store.close().await;
}

#[tokio::test]
async fn call_id_blocks_never_overlap_across_reopens_and_concurrent_reservations() {
    for db in TestDb::all().await {
        let a = db.open().await;
        let first = a.reserve_call_ids(100).await.unwrap();
        assert_eq!(first, 1..101, "{}: a new database starts at 1", db.name);
        // A second controller on the same database, reserving at the same time.
        let b = db.open().await;
        let (x, y) = tokio::join!(a.reserve_call_ids(50), b.reserve_call_ids(50));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            x.end <= y.start || y.end <= x.start,
            "{}: {x:?} and {y:?} overlap",
            db.name
        );
        assert!(x.start >= 101 && y.start >= 101, "{}", db.name);
        a.close().await;
        b.close().await;
        // After a restart numbering goes on where it stopped.
        let c = db.open().await;
        assert_eq!(c.reserve_call_ids(1).await.unwrap(), 201..202, "{}", db.name);
    }
}

#[tokio::test]
async fn an_alias_column_is_imported_and_a_bad_alias_refuses_the_file_naming_its_line() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let header = HEADER.replace("talkgroups\n", "talkgroups,alias\n");
        let row = |n: u8, alias: &str| format!("{},{alias}\n", csv_row(n, None).trim_end());
        let text = format!("{header}{}{}", row(1, "Car 1"), row(2, "Car 2\u{7}"));
        let e = store
            .import_subscribers("t", parse_subscribers(text.as_bytes()).unwrap(), "00101")
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("line 3: alias `Car 2\\u{7}` must be"),
            "{e}"
        );
        assert!(
            store.load_subscribers(None).await.unwrap().is_empty(),
            "{}",
            db.name
        );

        let text = format!("{header}{}{}", row(1, "Car 1"), row(2, ""));
        let rows = parse_subscribers(text.as_bytes()).unwrap();
        store.import_subscribers("t", rows, "00101").await.unwrap();
        let aliases: Vec<Option<String>> = store
            .load_subscribers(None)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.alias)
            .collect();
        assert_eq!(aliases, vec![Some("Car 1".into()), None], "{}", db.name);
        store.close().await;
    }
}

/// Imports `lines` (joined with `end`, a blank line after the header) and returns the
/// error, or what was stored.
async fn import_lines(
    store: &trunkd::store::Store,
    lines: &[String],
    end: &str,
) -> Result<Vec<trunkd::store::Provisioned>, ImportError> {
    let mut text = format!("{}{end}{end}", HEADER.trim_end());
    for l in lines {
        text += &format!("{}{end}", l.trim_end());
    }
    let rows = parse_subscribers(text.as_bytes())?;
    store.import_subscribers("t", rows, "00101").await
}

#[tokio::test]
async fn every_kind_of_row_error_names_the_right_line_in_lf_and_crlf_files() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let stored = store
            .add_subscriber("t", new_subscriber(9), "00101")
            .await
            .unwrap();
        // Lines: 1 header, 2 blank, 3.. the rows.
        let good = |n| csv_row(n, None);
        let cases: Vec<(Vec<String>, String)> = vec![
            (
                vec![good(1), good(2), good(3).replace("100,3,", "100,x,")],
                "line 5: member must be 1..=65535".into(),
            ),
            (
                vec![
                    good(1),
                    good(2),
                    csv_row(3, Some(&new_subscriber(1).imei.to_string())),
                ],
                format!("line 5: IMEI {} duplicates line 3", new_subscriber(1).imei),
            ),
            (
                vec![good(1), good(2), csv_row(3, Some(&stored.imei.to_string()))],
                format!("line 5: IMEI {} is already provisioned", stored.imei),
            ),
            (
                vec![good(1), good(2), good(3).replace(",100,3,", ",101,3,")],
                "line 5: fleet 101 does not exist".into(),
            ),
            (
                vec![good(1), good(2), good(3).replace("10;11", "10;99")],
                "line 5: talkgroup 99 does not exist in fleet 100".into(),
            ),
            (
                vec![good(1), good(2), good(3).replace("10;11", "10;")],
                "line 5: talkgroup list `10;` has an empty item".into(),
            ),
            (
                vec![good(1), good(2), good(3).replace(",,,100,3,", ",,,100,1,")],
                "line 5: member 1 of fleet 100 duplicates line 3".into(),
            ),
        ];
        for end in ["\n", "\r\n"] {
            for (lines, want) in &cases {
                let e = import_lines(&store, lines, end).await.unwrap_err();
                assert_eq!(&e.to_string(), want, "{} {end:?}", db.name);
            }
        }
        assert_eq!(
            store.load_subscribers(None).await.unwrap().len(),
            1,
            "{}",
            db.name
        );
        store.close().await;
    }
}

#[tokio::test]
async fn assigned_imsis_and_individual_ids_avoid_those_given_later_in_the_file() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        // Row 1 gets an IMSI and individual id assigned; row 2 names the ones row 1
        // would otherwise have got.
        let given = csv_row(2, None).replace(",,,100,2,,", &format!(",{},,100,2,1,", imsi(1)));
        let done = import_lines(&store, &[csv_row(1, None), given], "\n")
            .await
            .unwrap();
        assert_eq!(done[0].imsi, imsi(2), "{}", db.name);
        assert_eq!(done[0].individual.get(), 2, "{}", db.name);
        assert!(done[0].imsi_assigned && done[0].individual_assigned);
        assert_eq!((done[1].imsi, done[1].individual.get()), (imsi(1), 1));
        assert!(!done[1].imsi_assigned && !done[1].individual_assigned);
        // The next one continues above the highest in use.
        let next = store
            .add_subscriber("t", new_subscriber(3), "00101")
            .await
            .unwrap();
        assert_eq!((next.imsi, next.individual.get()), (imsi(3), 3), "{}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn concurrent_adds_each_get_their_own_imsi() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let adds = (1..=8).map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.add_subscriber("t", new_subscriber(n), "00101").await })
        });
        let mut imsis = Vec::new();
        for a in adds {
            imsis.push(a.await.unwrap().unwrap().imsi);
        }
        imsis.sort();
        imsis.dedup();
        assert_eq!(imsis, (1..=8).map(imsi).collect::<Vec<_>>(), "{}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn names_keys_and_slots_that_cannot_be_right_are_refused() {
    use trunkd::hlr::Site;
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let blank = Fleet {
            id: FleetId::new(7).unwrap(),
            name: "  ".into(),
        };
        let e = store.add_fleet("t", &blank).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
        let tg = Talkgroup {
            fleet: FleetId::new(100).unwrap(),
            id: TalkgroupId::new(20).unwrap(),
            name: String::new(),
        };
        assert!(matches!(
            store.add_talkgroup("t", &tg).await,
            Err(StoreError::Invalid(_))
        ));
        let zero = Site {
            id: site(3),
            name: "South".into(),
            carriers: 1,
            slots_per_carrier: 6,
            key: trunkd::protocol::SiteKey::from_bytes([0; 32]),
        };
        let e = store.add_site("t", &zero).await.unwrap_err().to_string();
        assert!(e.contains("all zeros"), "{e}");
        // Sites 1 and 2 have 2 carriers of 6 slots.
        for (carrier, slot, why) in [
            (2, 0, "no carrier 2"),
            (1, 6, "no slot 6"),
            (0, 0, "control channel"),
        ] {
            for faulty in [true, false] {
                let e = store
                    .set_slot_fault("t", site(1), carrier, slot, faulty)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&e, StoreError::Invalid(m) if m.contains(why)),
                    "{}: {e:?}",
                    db.name
                );
            }
        }
        store.set_slot_fault("t", site(1), 1, 5, true).await.unwrap();
        assert_eq!(store.slot_faults().await.unwrap(), [(site(1), 1, 5)]);
        store.close().await;
    }
}

#[tokio::test]
async fn listing_fleets_talkgroups_and_pages_of_subscribers() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let other = Fleet {
            id: FleetId::new(200).unwrap(),
            name: "Fire".into(),
        };
        store.add_fleet("t", &other).await.unwrap();
        let tg = Talkgroup {
            fleet: other.id,
            id: TalkgroupId::new(10).unwrap(),
            name: "Fireground".into(),
        };
        store.add_talkgroup("t", &tg).await.unwrap();
        let fleets = store.fleets().await.unwrap();
        assert_eq!(fleets.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [100, 200]);
        assert_eq!(store.talkgroups_of(Some(other.id)).await.unwrap(), [tg]);
        assert_eq!(store.talkgroups_of(None).await.unwrap().len(), 6);
        for n in 1..=5 {
            let mut s = new_subscriber(n);
            if n % 2 == 0 {
                s.unit.fleet = other.id;
                s.talkgroups = vec![TalkgroupId::new(10).unwrap()];
            }
            store.add_subscriber("t", s, "00101").await.unwrap();
        }
        let first = store.subscribers_page(None, None, 2).await.unwrap();
        assert_eq!(
            first.iter().map(|s| s.imsi).collect::<Vec<_>>(),
            [imsi(1), imsi(2)]
        );
        assert_eq!(
            first[1].talkgroups,
            [TalkgroupId::new(10).unwrap()],
            "{}",
            db.name
        );
        let rest = store.subscribers_page(None, Some(imsi(2)), 10).await.unwrap();
        assert_eq!(
            rest.iter().map(|s| s.imsi).collect::<Vec<_>>(),
            [imsi(3), imsi(4), imsi(5)]
        );
        assert_eq!(rest[0].talkgroups.len(), 3, "{}", db.name);
        let fire = store
            .subscribers_page(Some(other.id), Some(imsi(2)), 10)
            .await
            .unwrap();
        assert_eq!(
            fire.iter().map(|s| s.imsi).collect::<Vec<_>>(),
            [imsi(4)],
            "{}",
            db.name
        );
        store.close().await;
    }
}

#[tokio::test]
async fn removals_refuse_while_something_depends_and_reach_a_running_cache() {
    use trunkd::hlr::HlrCache;
    use trunkd::link::SiteKeys as _;
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let fleet = FleetId::new(100).unwrap();
        let sub = store
            .add_subscriber("t", new_subscriber(1), "00101")
            .await
            .unwrap();
        store
            .write_locations(&[(sub.imsi, site(1), trunkd::protocol::Tmsi::new(7).unwrap(), 1000)])
            .await
            .unwrap();
        store
            .store_short_data(&[sub.imsi], unit(2), b"hello", i64::MAX)
            .await
            .unwrap();
        store.set_slot_fault("t", site(2), 1, 3, true).await.unwrap();
        let cache = HlrCache::load(&store).await.unwrap();
        assert!(cache.subscriber(&sub.imsi).is_some() && cache.site(site(2)).is_some());

        let e = store.remove_fleet("t", fleet).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "fleet 100 still has 5 talkgroups and 1 subscribers; remove them first",
            "{}",
            db.name
        );
        let e = store.remove_talkgroup("t", fleet, tg(11)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "talkgroup 11 of fleet 100 is permitted to 1 subscribers; remove them first",
            "{}",
            db.name
        );
        store.remove_talkgroup("t", fleet, tg(14)).await.unwrap();
        assert!(matches!(
            store.remove_talkgroup("t", fleet, tg(14)).await,
            Err(StoreError::NotFound(_))
        ));

        store.remove_subscriber("t", sub.imsi).await.unwrap();
        assert!(store.subscriber(sub.imsi).await.unwrap().is_none());
        assert_eq!(store.last_location(sub.imsi).await.unwrap(), None, "{}", db.name);
        assert!(store.pending_short_data(sub.imsi).await.unwrap().is_empty());
        assert!(matches!(
            store.remove_subscriber("t", sub.imsi).await,
            Err(StoreError::NotFound(_))
        ));

        store.remove_site("t", site(2)).await.unwrap();
        assert_eq!(store.sites().await.unwrap().len(), 1);
        assert!(store.slot_faults().await.unwrap().is_empty(), "{}", db.name);

        for t in [10, 11, 12, 13] {
            store.remove_talkgroup("t", fleet, tg(t)).await.unwrap();
        }
        store.remove_fleet("t", fleet).await.unwrap();
        assert!(store.fleets().await.unwrap().is_empty());

        // A running controller's cache follows the audit log.
        cache.refresh(&store).await.unwrap();
        assert!(cache.subscriber(&sub.imsi).is_none(), "{}", db.name);
        assert!(cache.imsi_for_imei(&sub.imei).is_none());
        assert!(cache.site(site(2)).is_none() && cache.site_key(site(2)).is_none());
        assert!(cache.slot_faults().is_empty());
        let audit = store.audit_since(0, 1000).await.unwrap();
        let removals: Vec<(&str, &str)> = audit
            .iter()
            .filter(|a| a.action.ends_with(".remove"))
            .map(|a| (a.action.as_str(), a.object.as_str()))
            .collect();
        let subscriber = format!("subscriber:{}", sub.imsi);
        assert_eq!(removals[0], ("talkgroup.remove", "talkgroup:100/14"));
        assert_eq!(removals[1], ("subscriber.remove", subscriber.as_str()));
        assert_eq!(removals[2], ("site.remove", "site:2"));
        assert_eq!(removals.last(), Some(&("fleet.remove", "fleet:100")));
        store.close().await;
    }
}

#[tokio::test]
async fn operators_with_their_rules_and_generations() {
    use trunkd::auth::{Fleets, Role};
    use trunkd::store::OperatorChange;
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        let fleets = Fleets::parse_list("100").unwrap();
        store
            .add_operator("cli:root", "alice", "$argon2id$x", Role::Dispatcher, &fleets)
            .await
            .unwrap();
        assert!(matches!(
            store
                .add_operator("cli:root", "alice", "h", Role::Admin, &Fleets::All)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store
                .add_operator(
                    "cli:root",
                    "bob",
                    "h",
                    Role::Admin,
                    &Fleets::parse_list("999").unwrap()
                )
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store
                .add_operator("cli:root", "Bob", "h", Role::Admin, &Fleets::All)
                .await,
            Err(StoreError::Invalid(_))
        ));
        let (op, hash) = store.operator_credentials("alice").await.unwrap().unwrap();
        assert_eq!(
            (op.role, op.fleets.clone(), op.disabled, hash.as_str()),
            (Role::Dispatcher, fleets, false, "$argon2id$x")
        );

        let changes = [
            OperatorChange::Password("$argon2id$y".into()),
            OperatorChange::Access {
                role: Some(Role::Viewer),
                fleets: None,
            },
            OperatorChange::Access {
                role: None,
                fleets: Some(Fleets::All),
            },
            OperatorChange::Disabled(true),
        ];
        let mut generation = op.generation;
        for c in changes {
            store.change_operator("cli:root", "alice", c).await.unwrap();
            let now = store.operators().await.unwrap().pop().unwrap();
            assert!(now.generation > generation, "every change refuses older tokens");
            generation = now.generation;
        }
        let (op, hash) = store.operator_credentials("alice").await.unwrap().unwrap();
        assert_eq!(
            (op.role, op.fleets, op.disabled, hash.as_str()),
            (Role::Viewer, Fleets::All, true, "$argon2id$y")
        );
        assert!(matches!(
            store
                .change_operator(
                    "x",
                    "alice",
                    OperatorChange::Access {
                        role: None,
                        fleets: None
                    }
                )
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store
                .change_operator("x", "nobody", OperatorChange::Disabled(true))
                .await,
            Err(StoreError::NotFound(_))
        ));

        store.remove_operator("cli:root", "alice").await.unwrap();
        assert!(store.operator_credentials("alice").await.unwrap().is_none());
        let audit: Vec<String> = store
            .audit_since(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.object == "operator:alice")
            .map(|a| {
                assert!(!a.detail.contains("argon2"), "no hash in the audit log");
                a.action
            })
            .collect();
        assert_eq!(
            audit,
            [
                "operator.add",
                "operator.passwd",
                "operator.update",
                "operator.update",
                "operator.disable",
                "operator.remove"
            ]
        );
        store.close().await;
    }
}

// ---- Alarms ----

fn alarm_row(id: i64, subject: &str, fleet: Option<i64>) -> trunkd::store::AlarmRow {
    trunkd::store::AlarmRow {
        id,
        kind: "site_link_lost".into(),
        subject: subject.into(),
        fleet,
        detail: String::new(),
        raised_at: 1_000,
        last_raised_at: 1_000,
        occurrences: 1,
        acknowledged_at: None,
        acknowledged_by: None,
        cleared_at: None,
    }
}

#[tokio::test]
async fn alarms_are_written_by_id_acknowledged_once_with_their_audit_entry_and_paged() {
    use trunkd::store::AlarmPage;
    for db in TestDb::all().await {
        let store = db.open().await;
        let a = store.reserve_alarm_ids(10).await.unwrap();
        let b = store.reserve_alarm_ids(10).await.unwrap();
        assert_eq!((a.end - a.start, a.end), (10, b.start), "{}", db.name);

        let one = alarm_row(1, "site:1", None);
        assert_eq!(
            store.save_alarms(std::slice::from_ref(&one)).await.unwrap(),
            Vec::<i64>::new()
        );
        // A second open alarm of the same kind and subject is refused, not an error.
        let twin = alarm_row(2, "site:1", None);
        assert_eq!(store.save_alarms(&[twin]).await.unwrap(), vec![2]);

        store
            .acknowledge_alarm("api:ada@127.0.0.1", &one, 2_000)
            .await
            .unwrap();
        let again = store.acknowledge_alarm("api:bob@127.0.0.1", &one, 2_001).await;
        assert!(
            matches!(&again, Err(StoreError::Conflict(m)) if m.contains("api:ada@127.0.0.1")),
            "{again:?}"
        );
        // A later write of the row as it was before does not undo the acknowledgement.
        let mut cleared = one.clone();
        cleared.cleared_at = Some(3_000);
        store.save_alarms(&[cleared]).await.unwrap();
        let got = store.alarm(1).await.unwrap().unwrap();
        assert_eq!(
            (
                got.acknowledged_by.as_deref(),
                got.acknowledged_at,
                got.cleared_at
            ),
            (Some("api:ada@127.0.0.1"), Some(2_000), Some(3_000))
        );
        let log = store.audit_since(0, 1000).await.unwrap();
        let entries: Vec<(&str, &str)> = log
            .iter()
            .filter(|e| e.action == "alarm.acknowledge")
            .map(|e| (e.actor.as_str(), e.object.as_str()))
            .collect();
        assert_eq!(entries, vec![("api:ada@127.0.0.1", "alarm:1")]);
        // Acknowledging an alarm not written yet writes it first.
        let three = alarm_row(3, "unit:001010000000001", Some(100));
        store
            .acknowledge_alarm("api:ada@127.0.0.1", &three, 4_000)
            .await
            .unwrap();
        assert_eq!(
            store.alarm(3).await.unwrap().unwrap().acknowledged_at,
            Some(4_000)
        );
        store
            .save_alarms(&[
                alarm_row(4, "site:1", None),
                alarm_row(5, "unit:001010000000002", Some(200)),
            ])
            .await
            .unwrap();

        let ids = |rows: Vec<trunkd::store::AlarmRow>| rows.iter().map(|r| r.id).collect::<Vec<i64>>();
        assert_eq!(ids(store.unfinished_alarms().await.unwrap()), vec![3, 4, 5]);
        let page = |before, fleets: Option<Vec<i64>>, finished| AlarmPage {
            before,
            limit: 2,
            fleets,
            finished,
        };
        assert_eq!(
            ids(store.alarms_page(&page(None, None, true)).await.unwrap()),
            vec![5, 4]
        );
        assert_eq!(
            ids(store.alarms_page(&page(Some(4), None, true)).await.unwrap()),
            vec![3, 1]
        );
        assert_eq!(
            ids(store.alarms_page(&page(Some(4), None, false)).await.unwrap()),
            vec![3]
        );
        let fleet_200 = page(None, Some(vec![200]), true);
        assert_eq!(ids(store.alarms_page(&fleet_200).await.unwrap()), vec![5, 4]);
        let fleet_200 = page(Some(5), Some(vec![200]), true);
        assert_eq!(ids(store.alarms_page(&fleet_200).await.unwrap()), vec![4, 1]);
        let none = page(None, Some(vec![]), true);
        assert_eq!(ids(store.alarms_page(&none).await.unwrap()), vec![4, 1]);
        store.close().await;
    }
}

#[tokio::test]
async fn write_behind_batches_of_any_size_are_written_whole_and_in_order() {
    use trunkd::store::CallRecordRow;
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        // 101 rows: statements of 32, 32, 32, 4 and 1 rows.
        let row = |n: i64| CallRecordRow {
            call_id: n,
            call_type: "group".into(),
            caller_fleet: 100,
            caller_member: n,
            target_kind: "talkgroup".into(),
            target_fleet: 100,
            target_id: 10,
            sites: "1".into(),
            requested_at: 1000 + n,
            granted_at: Some(1001 + n),
            ended_at: 2000 + n,
            end_cause: 0,
            preempted: false,
            emergency: false,
        };
        let rows: Vec<CallRecordRow> = (1..=101).map(row).collect();
        store.write_call_journal(&[], &rows, &[], None).await.unwrap();
        let ids: Vec<i64> = (1..=60).collect();
        store
            .write_call_journal(&rows[..60], &[], &ids, Some(5000))
            .await
            .unwrap();
        let records = store.call_records(1000).await.unwrap();
        let mut written: Vec<i64> = records.iter().map(|r| r.call_id).collect();
        written.sort();
        assert_eq!(written, ids, "{}", db.name);
        assert!(records.iter().all(|r| *r == row(r.call_id)), "{}", db.name);
        // The 41 left in the journal get their records, ended at the mark.
        assert_eq!(store.recover_open_calls(0x28).await.unwrap(), 41, "{}", db.name);
        let records = store.call_records(1000).await.unwrap();
        let recovered: Vec<&CallRecordRow> = records.iter().filter(|r| r.call_id > 60).collect();
        assert_eq!(recovered.len(), 41, "{}", db.name);
        assert!(recovered
            .iter()
            .all(|r| r.ended_at == 5000 && r.requested_at == 1000 + r.call_id));
        store.close().await;
    }
}

#[tokio::test]
async fn the_hlr_loads_page_by_page_with_every_subscribers_talkgroups() {
    for db in TestDb::all().await {
        let store = db.open().await;
        provision_basics(&store).await;
        // More than one page of the load (20,000), each with its own talkgroups.
        let n: u32 = 20_003;
        let mut text = HEADER.to_string();
        let (k, opc) = ("00".repeat(16), "11".repeat(16));
        for i in 1..=n {
            let imei = trunkd::protocol::Imei::with_check_digit(&format!("35{i:012}")).unwrap();
            let tgs = if i % 2 == 0 { "10;11" } else { "12" };
            text += &format!("{imei},,,100,{i},,{k},{opc},3,all,{tgs}\n");
        }
        let rows = parse_subscribers(text.as_bytes()).unwrap();
        store.import_subscribers("t", rows, "00101").await.unwrap();
        let mut seen = Vec::new();
        let count = store
            .each_subscriber(|s| {
                seen.push((
                    s.unit.member.get(),
                    s.talkgroups.iter().map(|t| t.get()).collect::<Vec<_>>(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(count, u64::from(n), "{}", db.name);
        seen.sort();
        let expected: Vec<(u16, Vec<u16>)> = (1..=n as u16)
            .map(|i| (i, if i % 2 == 0 { vec![10, 11] } else { vec![12] }))
            .collect();
        assert!(
            seen == expected,
            "{}: talkgroups not with their subscribers",
            db.name
        );
        store.close().await;
    }
}
