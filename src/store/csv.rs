//! The subscriber CSV format for `trunkd subscriber import` (documented in the README,
//! example in `examples/subscribers.csv`).
//!
//! Header (required, this order not required):
//! `imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups`.
//! `imsi`, `msisdn` and `individual_id` may be empty (IMSI and individual id are then
//! assigned). `k` and `opc` are 32 hex digits. `permissions` and `talkgroups` are
//! `;`-separated lists; the first talkgroup is the unit's default primary.

use std::io::Read;

use serde::Deserialize;

use super::model::{NewSubscriber, Permissions, Secret128};
use super::ImportError;
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, TalkgroupId, Unit};

#[derive(Deserialize)]
struct Row {
    imei: String,
    #[serde(default)]
    imsi: String,
    #[serde(default)]
    msisdn: String,
    fleet: String,
    member: String,
    #[serde(default)]
    individual_id: String,
    k: String,
    opc: String,
    priority: String,
    permissions: String,
    talkgroups: String,
}

/// Parses a whole CSV file; the first bad row stops it with its line number.
pub fn parse_subscribers(input: impl Read) -> Result<Vec<(u64, NewSubscriber)>, ImportError> {
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Row {
            line: 1,
            reason: e.to_string(),
        })?
        .clone();
    for needed in [
        "imei",
        "fleet",
        "member",
        "k",
        "opc",
        "priority",
        "permissions",
        "talkgroups",
    ] {
        if !headers.iter().any(|h| h == needed) {
            return Err(ImportError::Row {
                line: 1,
                reason: format!("header lacks the `{needed}` column"),
            });
        }
    }
    let mut out = Vec::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(reader.position().line(), |p| p.line());
                return Err(ImportError::Row {
                    line,
                    reason: csv_reason(&e),
                });
            }
        }
        let line = record.position().map_or(reader.position().line(), |p| p.line());
        if record.len() != headers.len() {
            let reason = format!("has {} fields, the header has {}", record.len(), headers.len());
            return Err(ImportError::Row { line, reason });
        }
        let row: Row = record.deserialize(Some(&headers)).map_err(|e| ImportError::Row {
            line,
            reason: csv_reason(&e),
        })?;
        let sub = convert(row).map_err(|reason| ImportError::Row { line, reason })?;
        out.push((line, sub));
    }
    Ok(out)
}

fn csv_reason(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".into(),
        ::csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        _ => e.to_string(),
    }
}

fn convert(r: Row) -> Result<NewSubscriber, String> {
    let imei = Imei::parse(&r.imei).map_err(|e| format!("imei: {e}"))?;
    let imsi = if r.imsi.is_empty() {
        None
    } else {
        Some(Imsi::parse(&r.imsi).map_err(|e| format!("imsi: {e}"))?)
    };
    let msisdn = (!r.msisdn.is_empty()).then_some(r.msisdn);
    let fleet = r
        .fleet
        .parse()
        .ok()
        .and_then(FleetId::new)
        .ok_or("fleet must be 1..=65535")?;
    let member = r
        .member
        .parse()
        .ok()
        .and_then(MemberId::new)
        .ok_or("member must be 1..=65535")?;
    let individual = if r.individual_id.is_empty() {
        None
    } else {
        Some(
            r.individual_id
                .parse()
                .ok()
                .and_then(IndividualId::new)
                .ok_or("individual_id must be 1..=16777215")?,
        )
    };
    let k = Secret128::from_hex(&r.k).ok_or("k must be 32 hex digits")?;
    let opc = Secret128::from_hex(&r.opc).ok_or("opc must be 32 hex digits")?;
    let priority: u8 = r
        .priority
        .parse()
        .ok()
        .filter(|p| *p <= 15)
        .ok_or("priority must be 0..=15")?;
    let permissions = Permissions::parse(&r.permissions)?;
    let talkgroups = parse_talkgroups(&r.talkgroups)?;
    Ok(NewSubscriber {
        imei,
        imsi,
        msisdn,
        unit: Unit { fleet, member },
        individual,
        k,
        opc,
        priority,
        permissions,
        talkgroups,
    })
}

/// Parses a `;`- or `,`-separated talkgroup list.
pub fn parse_talkgroups(s: &str) -> Result<Vec<TalkgroupId>, String> {
    s.split([';', ','])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse()
                .ok()
                .and_then(TalkgroupId::new)
                .ok_or_else(|| format!("talkgroup `{w}` must be 1..=65535"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups\n";
    const GOOD: &str = "490154203237518,,,100,1,,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,5,group;private,10;11\n";

    #[test]
    fn parses_a_good_row() {
        let rows = parse_subscribers(format!("{HEADER}{GOOD}").as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.talkgroups.len(), 2);
        assert!(rows[0].1.imsi.is_none());
    }

    #[test]
    fn the_documented_example_file_parses() {
        let rows = parse_subscribers(include_str!("../../examples/subscribers.csv").as_bytes()).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|(_, s)| s.imei.luhn_ok()));
        assert_eq!(rows[1].1.msisdn.as_deref(), Some("447700900123"));
        assert_eq!(rows[2].1.talkgroups.len(), 3);
    }

    #[test]
    fn bad_rows_name_their_line_and_reason() {
        let bad_k = GOOD.replace("465b5ce8b199b49faa5f0a2ee238a6bc", "xyz");
        let e = parse_subscribers(format!("{HEADER}{GOOD}{bad_k}").as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "line 3: k must be 32 hex digits");
        let e = parse_subscribers(format!("{HEADER}{GOOD}{GOOD}1,2\n").as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("line 4: has 2 fields"), "{e}");
        let e = parse_subscribers(format!("{HEADER}{}", GOOD.replace(",5,", ",16,")).as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "line 2: priority must be 0..=15");
        let e = parse_subscribers("imei,fleet\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
