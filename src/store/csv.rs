//! The subscriber CSV format for `trunkd subscriber import` (documented in the README,
//! example in `examples/subscribers.csv`).
//!
//! The first line names the columns, in any order and any letter case:
//! `imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups`,
//! and `alias`. `imsi`, `msisdn`, `individual_id` and `alias` may be left out or left
//! empty (IMSI and individual id are then assigned); a column that is not one of these, or one named
//! twice, refuses the file. `k` and `opc` are 32 hex digits. `permissions` and
//! `talkgroups` are `;`-separated lists with no empty item; the first talkgroup is the
//! unit's default primary. A row whose every field is empty (as spreadsheets write
//! after the last row) is skipped.
//!
//! Line numbers count the lines of the file as an editor shows them (the header is
//! line 1), whether lines end in LF or CRLF and whatever blank lines come between.

use std::io::Read;

use ::csv::ByteRecord;

use super::rules;
use super::ImportError;
use crate::hlr::{list_items, NewSubscriber, Permissions, Secret128};
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, TalkgroupId, Unit};

/// The columns of the format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    Imei,
    Imsi,
    Msisdn,
    Fleet,
    Member,
    IndividualId,
    K,
    Opc,
    Priority,
    Permissions,
    Talkgroups,
    Alias,
}

impl Column {
    const ALL: [Column; 12] = [
        Column::Imei,
        Column::Imsi,
        Column::Msisdn,
        Column::Fleet,
        Column::Member,
        Column::IndividualId,
        Column::K,
        Column::Opc,
        Column::Priority,
        Column::Permissions,
        Column::Talkgroups,
        Column::Alias,
    ];

    fn name(self) -> &'static str {
        match self {
            Column::Imei => "imei",
            Column::Imsi => "imsi",
            Column::Msisdn => "msisdn",
            Column::Fleet => "fleet",
            Column::Member => "member",
            Column::IndividualId => "individual_id",
            Column::K => "k",
            Column::Opc => "opc",
            Column::Priority => "priority",
            Column::Permissions => "permissions",
            Column::Talkgroups => "talkgroups",
            Column::Alias => "alias",
        }
    }

    /// Whether the header must name it (the others are assigned or absent when missing).
    fn required(self) -> bool {
        !matches!(
            self,
            Column::Imsi | Column::Msisdn | Column::IndividualId | Column::Alias
        )
    }
}

/// Where each column is in a row, from the header.
struct Layout {
    at: [Option<usize>; Column::ALL.len()],
    width: usize,
}

impl Layout {
    fn from_header(header: &ByteRecord) -> Result<Layout, String> {
        let mut at = [None; Column::ALL.len()];
        for (i, raw) in header.iter().enumerate() {
            let n = i + 1;
            let name =
                std::str::from_utf8(raw).map_err(|_| format!("the name of column {n} is not valid UTF-8"))?;
            if name.is_empty() {
                return Err(format!("column {n} of the header has no name"));
            }
            let Some(col) = Column::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(name))
            else {
                let known: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
                return Err(format!(
                    "unknown column `{name}` (the columns are {})",
                    known.join(", ")
                ));
            };
            if at[col as usize].replace(i).is_some() {
                return Err(format!("column `{}` is named twice", col.name()));
            }
        }
        if let Some(missing) = Column::ALL
            .into_iter()
            .find(|c| c.required() && at[*c as usize].is_none())
        {
            return Err(format!("header lacks the `{}` column", missing.name()));
        }
        Ok(Layout {
            at,
            width: header.len(),
        })
    }

    /// The text of `col` in `row` (empty when the header has no such column).
    fn field<'r>(&self, row: &'r ByteRecord, col: Column) -> Result<&'r str, String> {
        let Some(raw) = self.at[col as usize].and_then(|i| row.get(i)) else {
            return Ok("");
        };
        std::str::from_utf8(raw).map_err(|_| format!("column `{}` is not valid UTF-8", col.name()))
    }
}

/// Maps a byte offset of the input to its line number.
struct Lines<'a> {
    data: &'a [u8],
    /// Offsets of every `\n`.
    ends: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(data: &'a [u8]) -> Self {
        let ends = data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Lines { data, ends }
    }

    /// The line where the record read from `start` begins. The reader reports the offset
    /// where it began to look, which can be before the line ends it had still to skip
    /// (the `\n` of a CRLF, blank lines).
    fn of(&self, start: u64) -> u64 {
        let mut at = usize::try_from(start).unwrap_or(usize::MAX).min(self.data.len());
        while matches!(self.data.get(at), Some(b'\r' | b'\n')) {
            at += 1;
        }
        self.ends.partition_point(|&e| e < at) as u64 + 1
    }
}

/// Reads the next record; `None` at the end.
fn next_record(
    reader: &mut ::csv::Reader<&[u8]>,
    record: &mut ByteRecord,
    lines: &Lines,
) -> Result<Option<u64>, ImportError> {
    let line = |pos: Option<&::csv::Position>| lines.of(pos.map_or(0, |p| p.byte()));
    match reader.read_byte_record(record) {
        Ok(false) => Ok(None),
        Ok(true) => Ok(Some(line(record.position()))),
        Err(e) => Err(ImportError::Row {
            line: line(e.position()),
            reason: e.to_string(),
        }),
    }
}

/// Parses a whole CSV file; the first bad row stops it with its line number.
pub fn parse_subscribers(mut input: impl Read) -> Result<Vec<(u64, NewSubscriber)>, ImportError> {
    let mut data = Vec::new();
    input.read_to_end(&mut data).map_err(ImportError::Read)?;
    // Spreadsheet programs start UTF-8 files with a byte-order mark.
    let data = data.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&data);
    let lines = Lines::new(data);
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .flexible(true)
        .has_headers(false)
        .from_reader(data);
    let mut record = ByteRecord::new();
    let Some(line) = next_record(&mut reader, &mut record, &lines)? else {
        return Err(ImportError::Row {
            line: 1,
            reason: "the file is empty; its first line must name the columns".into(),
        });
    };
    let layout = Layout::from_header(&record).map_err(|reason| ImportError::Row { line, reason })?;
    let mut out = Vec::new();
    while let Some(line) = next_record(&mut reader, &mut record, &lines)? {
        if record.iter().all(<[u8]>::is_empty) {
            continue;
        }
        let row = if record.len() == layout.width {
            convert(&layout, &record)
        } else {
            Err(format!(
                "has {} fields, the header has {}",
                record.len(),
                layout.width
            ))
        };
        out.push((line, row.map_err(|reason| ImportError::Row { line, reason })?));
    }
    Ok(out)
}

fn convert(layout: &Layout, row: &ByteRecord) -> Result<NewSubscriber, String> {
    let field = |c| layout.field(row, c);
    let imei = Imei::parse(field(Column::Imei)?).map_err(|e| format!("imei: {e}"))?;
    let imsi = match field(Column::Imsi)? {
        "" => None,
        s => Some(Imsi::parse(s).map_err(|e| format!("imsi: {e}"))?),
    };
    let optional = |c| -> Result<Option<String>, String> {
        Ok(Some(field(c)?).filter(|v| !v.is_empty()).map(str::to_string))
    };
    let msisdn = optional(Column::Msisdn)?;
    let alias = optional(Column::Alias)?;
    fn named(name: &'static str) -> impl Fn(String) -> String {
        move |e| format!("{name} {e}")
    }
    let fleet = rules::ranged(field(Column::Fleet)?, FleetId::new, FleetId::MIN, FleetId::MAX)
        .map_err(named("fleet"))?;
    let member = rules::ranged(
        field(Column::Member)?,
        MemberId::new,
        MemberId::MIN,
        MemberId::MAX,
    )
    .map_err(named("member"))?;
    let individual = match field(Column::IndividualId)? {
        "" => None,
        s => Some(
            rules::ranged(s, IndividualId::new, IndividualId::MIN, IndividualId::MAX)
                .map_err(named("individual_id"))?,
        ),
    };
    let k = Secret128::from_hex(field(Column::K)?).ok_or("k must be 32 hex digits")?;
    let opc = Secret128::from_hex(field(Column::Opc)?).ok_or("opc must be 32 hex digits")?;
    let priority = rules::within(field(Column::Priority)?, rules::PRIORITIES).map_err(named("priority"))?;
    let permissions = Permissions::parse(field(Column::Permissions)?)?;
    let talkgroups = parse_talkgroups(field(Column::Talkgroups)?)?;
    Ok(NewSubscriber {
        imei,
        imsi,
        msisdn,
        alias,
        unit: Unit { fleet, member },
        individual,
        k,
        opc,
        priority,
        permissions,
        talkgroups,
    })
}

/// Parses a `;`- or `,`-separated talkgroup list; an empty item (`10;`) is refused.
pub fn parse_talkgroups(s: &str) -> Result<Vec<TalkgroupId>, String> {
    list_items(s, "talkgroup")?
        .into_iter()
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

    const HEADER: &str = "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups";
    const GOOD: &str = "490154203237518,,,100,1,,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,5,group;private,10;11";

    /// The lines joined with `end` (LF or CRLF), ending in one too.
    fn file(lines: &[&str], end: &str) -> Vec<u8> {
        lines
            .iter()
            .map(|l| format!("{l}{end}"))
            .collect::<String>()
            .into_bytes()
    }

    fn error(lines: &[&str], end: &str) -> String {
        parse_subscribers(file(lines, end).as_slice())
            .map(|rows| format!("parsed {} rows", rows.len()))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn parses_a_good_row() {
        let rows = parse_subscribers(file(&[HEADER, GOOD], "\n").as_slice()).unwrap();
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
    fn every_row_error_names_its_line_with_lf_and_crlf() {
        let bad_k = GOOD.replace("465b5ce8b199b49faa5f0a2ee238a6bc", "xyz");
        let cut = GOOD.replace("10;11", "10;");
        let empty_perm = GOOD.replace("group;private", "group;;private");
        let priority = GOOD.replace(",5,", ",16,");
        for end in ["\n", "\r\n"] {
            let cases: [(&[&str], &str); 5] = [
                (&[HEADER, GOOD, &bad_k], "line 3: k must be 32 hex digits"),
                (
                    &[HEADER, GOOD, GOOD, "1,2"],
                    "line 4: has 2 fields, the header has 11",
                ),
                (&[HEADER, &priority], "line 2: priority must be 0..=15"),
                (
                    &[HEADER, GOOD, &cut],
                    "line 3: talkgroup list `10;` has an empty item",
                ),
                (
                    &[HEADER, &empty_perm],
                    "line 2: permission list `group;;private` has an empty item",
                ),
            ];
            for (lines, want) in cases {
                assert_eq!(error(lines, end), want, "{end:?}");
            }
            // Blank lines count too.
            assert_eq!(
                error(&[HEADER, "", GOOD, "", "", &bad_k], end),
                "line 6: k must be 32 hex digits",
                "{end:?}"
            );
            let mut latin1 = file(&[HEADER, GOOD], end);
            latin1.extend_from_slice(b"490154203237526,,M\xfcller,100,2,,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,5,all,10");
            let e = parse_subscribers(latin1.as_slice()).unwrap_err().to_string();
            assert_eq!(e, "line 3: column `msisdn` is not valid UTF-8", "{end:?}");
        }
    }

    #[test]
    fn rows_keep_their_line_numbers_with_crlf() {
        let rows = parse_subscribers(file(&[HEADER, "", GOOD, GOOD], "\r\n").as_slice()).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn header_names_match_in_any_case_and_unknown_ones_are_refused() {
        let upper = HEADER.to_uppercase();
        let rows =
            parse_subscribers(file(&[&upper, &GOOD.replacen(",,", ",001010000000007,", 1)], "\n").as_slice())
                .unwrap();
        assert_eq!(
            rows[0].1.imsi.map(|i| i.to_string()).as_deref(),
            Some("001010000000007")
        );
        let e = error(&[&format!("{HEADER},colour"), &format!("{GOOD},red")], "\n");
        assert!(e.starts_with("line 1: unknown column `colour`"), "{e}");
        let e = error(&[&format!("{HEADER},IMEI")], "\n");
        assert_eq!(e, "line 1: column `imei` is named twice");
        let e = error(&[&format!("{HEADER},")], "\n");
        assert_eq!(e, "line 1: column 12 of the header has no name");
        let e = error(&["imei,fleet"], "\n");
        assert_eq!(e, "line 1: header lacks the `member` column");
        assert!(error(&[], "\n").starts_with("line 1: the file is empty"));
    }

    #[test]
    fn a_byte_order_mark_and_trailing_empty_rows_are_harmless() {
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        bytes.extend(file(&[HEADER, GOOD, ",,,,,,,,,,", ",,,,,,,,,,"], "\r\n"));
        let rows = parse_subscribers(bytes.as_slice()).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn lists_refuse_empty_items() {
        assert_eq!(parse_talkgroups("10,11").unwrap().len(), 2);
        assert!(parse_talkgroups("10,").unwrap_err().contains("empty item"));
        assert!(parse_talkgroups(";10").unwrap_err().contains("empty item"));
        assert!(Permissions::parse("").unwrap_err().contains("none"));
        assert_eq!(Permissions::parse("none").unwrap(), Permissions::default());
    }
}
