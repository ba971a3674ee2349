//! Golden vectors (`protocol/vectors/`, format in `PROTOCOL.md §7`): every frame decodes
//! to exactly its stated meaning and re-encodes bit-exact; every error vector yields its
//! stated cause, and the fatal ones lose the stream.

use std::collections::HashSet;
use std::path::Path;

use trunkd::protocol::{decode, Decoded, Frame, MessageType, MAX_PAYLOAD};

struct Vector {
    file: String,
    name: String,
    bytes: Vec<u8>,
    expect: String,
    meaning: Option<String>,
}

fn load() -> Vec<Vector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/vectors");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for block in text.split("\n\n") {
            let mut fields = std::collections::HashMap::new();
            for line in block
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            {
                let (k, v) = line
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{file}: bad line {line:?}"));
                fields.insert(k.to_string(), v.to_string());
            }
            if fields.is_empty() {
                continue;
            }
            let name = fields
                .remove("name")
                .unwrap_or_else(|| panic!("{file}: block without name"));
            let hex: String = fields.remove("hex").unwrap().split_whitespace().collect();
            out.push(Vector {
                bytes: hex::decode(hex).unwrap_or_else(|e| panic!("{name}: {e}")),
                expect: fields
                    .remove("expect")
                    .unwrap_or_else(|| panic!("{name}: no expect")),
                meaning: fields.remove("meaning"),
                file: file.clone(),
                name,
            });
        }
    }
    out
}

#[test]
fn ok_vectors_decode_to_their_meaning_and_reencode_bit_exact() {
    let vectors = load();
    let mut types_seen = HashSet::new();
    for v in vectors.iter().filter(|v| v.expect == "ok") {
        let frame = Frame::decode_exact(&v.bytes).unwrap_or_else(|e| panic!("{}/{}: {e}", v.file, v.name));
        let meaning = v
            .meaning
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no meaning", v.name));
        assert_eq!(format!("{frame:?}"), meaning, "{}/{}", v.file, v.name);
        assert_eq!(
            &frame.to_bytes()[..],
            &v.bytes[..],
            "{}/{} re-encode",
            v.file,
            v.name
        );
        types_seen.insert(frame.msg.message_type());
    }
    for t in MessageType::ALL {
        assert!(types_seen.contains(t), "no golden vector for {t}");
    }
}

#[test]
fn error_vectors_give_their_cause() {
    let vectors = load();
    let errors: Vec<_> = vectors.iter().filter(|v| v.expect.starts_with("error")).collect();
    assert!(errors.len() >= 10, "error vectors missing");
    for v in errors {
        let mut words = v.expect.split_whitespace().skip(1);
        let code = u8::from_str_radix(words.next().unwrap().trim_start_matches("0x"), 16).unwrap();
        let fatal = words.next() == Some("fatal");
        match decode(&v.bytes, MAX_PAYLOAD) {
            Err(stream) => {
                assert!(
                    fatal,
                    "{}: stream lost ({stream}) but vector is not fatal",
                    v.name
                );
                assert_eq!(stream.cause().code(), code, "{}", v.name);
            }
            Ok(Decoded::Frame { len, result: Err(e) }) => {
                assert!(!fatal, "{}: in-sync error ({e}) but vector says fatal", v.name);
                assert_eq!(e.cause().code(), code, "{}: {e}", v.name);
                assert_eq!(
                    len,
                    v.bytes.len(),
                    "{}: in-sync error must consume the whole frame",
                    v.name
                );
            }
            other => panic!("{}: expected an error, got {other:?}", v.name),
        }
    }
}
