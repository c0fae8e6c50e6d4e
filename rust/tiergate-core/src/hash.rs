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

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::{Map, Number, Value};
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{CoreError, Result};

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
    let value: Value = serde_json::from_slice(body)?;
    let Value::Object(mut map) = value else {
        return Err(CoreError::invalid("request body must be a JSON object"));
    };
    canonicalise_top(&mut map);
    write_object(&map, out);
    Ok(())
}

fn number_is(v: &Value, target: f64) -> bool {
    matches!(v, Value::Number(n) if n.as_f64() == Some(target))
}

fn canonicalise_top(map: &mut Map<String, Value>) {
    map.retain(|k, v| !v.is_null() && !TRANSPORT_FIELDS.contains(&k.as_str()));
    if let Some(Value::String(s)) = map.get("stop") {
        let s = Value::String(s.clone());
        map.insert("stop".to_owned(), Value::Array(vec![s]));
    }
    let has_tools = matches!(map.get("tools"), Some(Value::Array(a)) if !a.is_empty());
    map.retain(|k, v| {
        let default = match k.as_str() {
            "temperature" | "top_p" | "n" => number_is(v, 1.0),
            "presence_penalty" | "frequency_penalty" => number_is(v, 0.0),
            "logprobs" => *v == Value::Bool(false),
            "parallel_tool_calls" => *v == Value::Bool(true),
            "response_format" => {
                matches!(v, Value::Object(o) if o.len() == 1
                    && o.get("type").and_then(Value::as_str) == Some("text"))
            }
            "tools" | "functions" | "stop" => matches!(v, Value::Array(a) if a.is_empty()),
            "logit_bias" => matches!(v, Value::Object(o) if o.is_empty()),
            "tool_choice" => v.as_str() == Some(if has_tools { "auto" } else { "none" }),
            _ => false,
        };
        !default
    });
    if let Some(Value::Array(messages)) = map.get_mut("messages") {
        for message in messages {
            if let Value::Object(m) = message {
                canonicalise_message(m);
            }
        }
    }
}

fn canonicalise_message(m: &mut Map<String, Value>) {
    m.retain(|_, v| !v.is_null());
    let single_text = match m.get_mut("content") {
        Some(Value::Array(parts)) if parts.len() == 1 => match &mut parts[0] {
            Value::Object(p)
                if p.len() == 2 && p.get("type").and_then(Value::as_str) == Some("text") =>
            {
                match p.get_mut("text") {
                    Some(Value::String(s)) => Some(std::mem::take(s)),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(s) = single_text {
        m.insert("content".to_owned(), Value::String(s));
    }
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(o) => write_object(o, out),
    }
}

/// `serde_json::Map` is a `BTreeMap` here (no `preserve_order`), so iteration is
/// already in byte order of the keys.
fn write_object(o: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in o.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_value(v, out);
    }
    out.push(b'}');
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// 2^63 as f64: integral values in `[-2^63, 2^63)` fit an `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        write_f64(u as f64, out);
    } else if let Some(f) = n.as_f64() {
        write_f64(f, out);
    }
}

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
