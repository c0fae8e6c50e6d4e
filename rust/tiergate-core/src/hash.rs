//! Idempotency key: xxh3-128 over the canonical form of an `OpenAI` chat-completions body.
//!
//! # Canonical form
//!
//! 1. Parse with `serde_json` (UTF-8 checked; nesting deeper than `serde_json`'s limit of
//!    128 is an error, never a stack overflow). The top level must be an object.
//!    Duplicate keys: the last one wins.
//! 2. Top-level keys whose value is `null` are dropped (the API reads `null` as absent).
//! 3. Transport-only top-level fields are dropped: [`TRANSPORT_FIELDS`] —
//!    `stream`, `stream_options`, `user`, `metadata`, `store`, `service_tier`,
//!    `timeout`, `request_id`, `idempotency_key`, `prompt_cache_key`,
//!    `safety_identifier`. `stream` is transport-only because a streamed and a
//!    non-streamed answer are the same answer; the idempotency layer, which must
//!    replay in the caller's shape, keys the stream flag separately when it needs to.
//!    `model` is *not* transport-only.
//! 4. Top-level fields equal to their documented default are dropped (numbers compare
//!    by value, so `1` and `1.0` are both the default of `temperature`):
//!
//!    | field | dropped when |
//!    | --- | --- |
//!    | `temperature` | `1` |
//!    | `top_p` | `1` |
//!    | `n` | `1` |
//!    | `presence_penalty` | `0` |
//!    | `frequency_penalty` | `0` |
//!    | `logprobs` | `false` |
//!    | `parallel_tool_calls` | `true` |
//!    | `response_format` | `{"type": "text"}` |
//!    | `tools` | `[]` |
//!    | `functions` | `[]` |
//!    | `logit_bias` | `{}` |
//!    | `stop` | `[]` (and a string `s` becomes `[s]`) |
//!    | `tool_choice` | `"auto"` when `tools` is a non-empty array, `"none"` otherwise |
//!
//! 5. In each object of the `messages` array: keys whose value is `null` are dropped,
//!    and a `content` that is a list of exactly one part `{"type": "text", "text": s}`
//!    (no other keys) becomes the string `s`.
//! 6. Serialise compactly: object keys sorted by their UTF-8 bytes (recursively), no
//!    whitespace, strings escaped as `serde_json` does (`\"`, `\\`, `\b`, `\f`, `\n`,
//!    `\r`, `\t`, other control characters as `\u00xx` lowercase, nothing else), numbers
//!    normalised: a value that is integral and in `[-2^63, 2^63)` is written as an integer
//!    (`1.0` → `1`, `-0.0` → `0`); any other value is written as its shortest round-trip
//!    `f64` in Rust's `{:e}` form (`0.7` → `7e-1`, `1e20` → `1e20`, `2^64-1` →
//!    `1.8446744073709552e19`). Numbers that overflow `f64` are rejected by the parser.
//!
//! # Key
//!
//! `xxh3_128(len(tenant) as u64 little-endian ‖ tenant UTF-8 ‖ canonical)`, returned as
//! 16 big-endian bytes (the same bytes as Python's `xxhash.xxh3_128_digest`). The length
//! prefix keeps `("ab", "c…")` and `("a", "bc…")` apart.

use std::borrow::Cow;
use std::fmt::Write as _;

use xxhash_rust::xxh3::xxh3_128;

use crate::error::Result;
use crate::json::{parse_object, write_escaped, Node, Str};

/// Top-level fields that only shape the transport, never the answer.
pub const TRANSPORT_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "timeout",
    "request_id",
    "idempotency_key",
    "prompt_cache_key",
    "safety_identifier",
];

/// Parse a body and return its canonical bytes (see the module documentation).
pub fn canonical_request(body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    write_canonical(body, &mut out)?;
    Ok(out)
}

/// The 16-byte idempotency key of `body` for `tenant`.
pub fn request_key(body: &[u8], tenant: &str) -> Result<[u8; 16]> {
    let mut buf = Vec::with_capacity(body.len() + tenant.len() + 24);
    buf.extend_from_slice(&(tenant.len() as u64).to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    write_canonical(body, &mut buf)?;
    Ok(xxh3_128(&buf).to_be_bytes())
}

fn write_canonical(body: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut node = parse_object(body)?;
    if let Node::Obj(members) = &mut node {
        canonicalise_top(members);
    }
    write_value(&node, out);
    Ok(())
}

type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

fn number_is(v: &Node<'_>, target: f64) -> bool {
    v.as_f64() == Some(target)
}

fn is_text_format(v: &Node<'_>) -> bool {
    matches!(v, Node::Obj(o) if o.len() == 1 && o[0].0 == "type" && o[0].1.as_str() == Some("text"))
}

fn canonicalise_top(map: &mut Members<'_>) {
    map.retain(|(k, v)| *v != Node::Null && !TRANSPORT_FIELDS.contains(&k.as_ref()));
    for (k, v) in map.iter_mut() {
        if k == "stop" {
            if let Node::Str(_) = v {
                let s = std::mem::replace(v, Node::Null);
                *v = Node::Arr(vec![s]);
            }
        }
    }
    let has_tools = map
        .iter()
        .any(|(k, v)| k == "tools" && matches!(v, Node::Arr(a) if !a.is_empty()));
    map.retain(|(k, v)| {
        let default = match k.as_ref() {
            "temperature" | "top_p" | "n" => number_is(v, 1.0),
            "presence_penalty" | "frequency_penalty" => number_is(v, 0.0),
            "logprobs" => *v == Node::Bool(false),
            "parallel_tool_calls" => *v == Node::Bool(true),
            "response_format" => is_text_format(v),
            "tools" | "functions" | "stop" => matches!(v, Node::Arr(a) if a.is_empty()),
            "logit_bias" => matches!(v, Node::Obj(o) if o.is_empty()),
            "tool_choice" => v.as_str() == Some(if has_tools { "auto" } else { "none" }),
            _ => false,
        };
        !default
    });
    for (k, v) in map.iter_mut() {
        if let (true, Node::Arr(messages)) = (k == "messages", v) {
            for message in messages {
                if let Node::Obj(m) = message {
                    canonicalise_message(m);
                }
            }
        }
    }
}

fn canonicalise_message(m: &mut Members<'_>) {
    m.retain(|(_, v)| *v != Node::Null);
    for (k, v) in m.iter_mut() {
        if k != "content" {
            continue;
        }
        let Node::Arr(parts) = v else { continue };
        if parts.len() != 1 {
            continue;
        }
        let Node::Obj(p) = &mut parts[0] else {
            continue;
        };
        // Sorted keys: exactly [("text", Str), ("type", "text")].
        if p.len() == 2
            && p[0].0 == "text"
            && matches!(p[0].1, Node::Str(_))
            && p[1].0 == "type"
            && p[1].1.as_str() == Some("text")
        {
            let text = std::mem::replace(&mut p[0].1, Node::Null);
            *v = text;
        }
    }
}

fn write_value(v: &Node<'_>, out: &mut Vec<u8>) {
    match v {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Int(i) => {
            let _ = write!(Adapter(out), "{i}");
        }
        Node::UInt(u) => write_f64(*u as f64, out),
        Node::Float(f) => write_f64(*f, out),
        Node::Str(Str::Raw(s)) => {
            // No escapes in the input means nothing to escape on output.
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Node::Str(Str::Decoded(s)) => write_escaped(s, out),
        Node::Arr(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Node::Obj(o) => {
            out.push(b'{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_escaped(k, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// 2^63 as f64: integral values in `[-2^63, 2^63)` fit an `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Canonical text of a finite `f64` (see the module documentation).
pub fn format_f64(f: f64) -> String {
    let mut s = String::new();
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        let _ = write!(s, "{}", f as i64);
    } else {
        let _ = write!(s, "{f:e}");
    }
    s
}

fn write_f64(f: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(format_f64(f).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_request(s.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_and_drops_transport_and_defaults() {
        let a = canon(
            r#"{"stream":true,"model":"m","temperature":1.0,"messages":[{"role":"user","content":"hi"}],"user":"u","n":1}"#,
        );
        assert_eq!(
            a,
            r#"{"messages":[{"content":"hi","role":"user"}],"model":"m"}"#
        );
    }

    #[test]
    fn numbers_normalise() {
        assert_eq!(
            canon(r#"{"a":1.0,"b":-0.0,"c":0.7,"d":1e20,"e":18446744073709551615}"#),
            r#"{"a":1,"b":0,"c":7e-1,"d":1e20,"e":1.8446744073709552e19}"#
        );
    }

    #[test]
    fn content_part_equals_string() {
        let a = request_key(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "t",
        );
        let b = request_key(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}"#,
            "t",
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }

    #[test]
    fn tool_choice_default_depends_on_tools() {
        assert_eq!(canon(r#"{"tool_choice":"none"}"#), "{}");
        assert_eq!(
            canon(r#"{"tool_choice":"auto"}"#),
            r#"{"tool_choice":"auto"}"#
        );
        assert_eq!(
            canon(r#"{"tools":[1],"tool_choice":"auto"}"#),
            r#"{"tools":[1]}"#
        );
        assert_eq!(canon(r#"{"stop":"x"}"#), r#"{"stop":["x"]}"#);
    }

    #[test]
    fn tenant_is_length_prefixed() {
        let body = br#"{"model":"m"}"#;
        assert_ne!(
            request_key(body, "a").unwrap(),
            request_key(body, "b").unwrap()
        );
        assert_ne!(
            request_key(body, "").unwrap(),
            request_key(body, "a").unwrap()
        );
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        assert!(request_key(b"[1]", "").is_err());
        assert!(request_key(b"{", "").is_err());
        assert!(request_key(b"\xff", "").is_err());
        assert!(request_key(b"{\"a\":1e400}", "").is_err());
        let deep = "[".repeat(100_000);
        assert!(request_key(format!("{{\"a\":{deep}").as_bytes(), "").is_err());
        let ok_depth = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(request_key(ok_depth.as_bytes(), "").is_ok());
    }
}
