//! `TaskId::parse` on arbitrary strings, against an independent predicate.
//!
//! Properties: parsing never panics; it accepts exactly 1 to 128 characters
//! of `[A-Za-z0-9_.-]` not starting with `.`; an accepted id round-trips
//! through serde (as a JSON string) and `Display`; a rejected one is
//! `InvalidId` whose `id` stays bounded, is a prefix of the input and
//! whose reason is not empty, and serde and `FromStr` reject it too.

use taskstore::{Error, InvalidId, MAX_ID_LEN, TaskId};

/// Written from FORMAT.md, not from the crate: the ids a store accepts.
fn is_valid_id(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    (1..=128).contains(&chars.len())
        && chars[0] != '.'
        && chars
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// The longest `id` an `InvalidId` may carry: the input's first 160 bytes
/// (cut back to a character boundary) and "...".
const MAX_SHOWN_BYTES: usize = 160 + 3;

/// Checks one input, panicking at the first property it breaks.
pub fn check_input(data: &[u8]) {
    // Every input is a string: lossy decoding keeps invalid UTF-8 inputs
    // useful (as U+FFFD), which the store must reject like any non-ASCII.
    let input = String::from_utf8_lossy(data);
    let input: &str = &input;
    assert_eq!(MAX_ID_LEN, 128);
    match TaskId::parse(input) {
        Ok(id) => {
            assert!(is_valid_id(input), "accepted an invalid id {input:?}");
            assert_eq!(id.as_str(), input);
            assert_eq!(id.to_string(), input, "Display is the id itself");
            assert_eq!(id.as_ref() as &str, input);
            let json = serde_json::to_string(&id).expect("an id serializes");
            assert_eq!(json, format!("\"{input}\""), "an id is a plain JSON string");
            let back: TaskId = serde_json::from_str(&json).expect("an accepted id deserializes");
            assert_eq!(back, id);
            let parsed: TaskId = input.parse().expect("FromStr agrees with parse");
            assert_eq!(parsed, id);
        }
        Err(InvalidId {
            id: shown, reason, ..
        }) => {
            assert!(
                !is_valid_id(input),
                "rejected a valid id {input:?}: {reason}"
            );
            assert!(
                shown.len() <= MAX_SHOWN_BYTES,
                "the error carries {} bytes of the input",
                shown.len()
            );
            let kept = shown.strip_suffix("...").unwrap_or(&shown);
            assert!(input.starts_with(kept), "the error shows the input's start");
            assert!(!reason.is_empty());
            let message = Error::InvalidId { id: shown, reason }.to_string();
            assert!(message.contains(reason), "the message says why: {message}");
            assert!(
                input.parse::<TaskId>().is_err(),
                "FromStr agrees with parse"
            );
            let json = serde_json::to_string(input).expect("a string serializes");
            assert!(
                serde_json::from_str::<TaskId>(&json).is_err(),
                "serde validates {input:?}"
            );
        }
    }
}
