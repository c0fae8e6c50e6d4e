//! Prompt-token estimate of an `OpenAI` chat request, aiming at ±15 % of tiktoken's
//! `cl100k_base` without its vocabulary.
//!
//! A pre-tokeniser reproduces cl100k's split pattern (contractions; letter runs with one
//! optional leading non-letter; 1–3 digit groups; punctuation runs with an optional
//! leading space and trailing newlines; whitespace runs), then each chunk gets a cost in
//! milli-tokens from small tables fitted on the routing prompts (`tests/test_core_tokens.py`
//! measures the error). Character classes are defined here, not by Unicode tables, so the
//! Python reference in `tests/core_reference.py` reproduces every count exactly:
//!
//! * letter: ASCII `A–Z a–z`, or any non-ASCII character that is neither whitespace nor
//!   in [`PUNCT_RANGES`];
//! * digit: ASCII `0–9`;
//! * whitespace: [`is_space`] (ASCII `\t \n \x0b \x0c \r` and space, and the Unicode
//!   spaces U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000);
//! * punctuation: everything else.
//!
//! # What is counted
//! `3` for reply priming, then per message `3 + role + content + name (+1)`, where content
//! is a string or the `text` of each content part (`image_url` parts count
//! [`IMAGE_TOKENS`]); per tool call `3 + function.name + function.arguments`; per tool
//! definition `8 + name + description + json(parameters)`; and
//! `json(response_format.json_schema)`. `json(v)` walks the value: an object costs
//! `1 + Σ(key + 1 + json(value))`, an array `1 + Σ(json(item))`, a string its text + 1,
//! any other scalar 1. Chunks are summed in milli-tokens and rounded once at the end.

use serde_json::Value;

use crate::error::{CoreError, Result};

/// Tokens counted for an image part (`OpenAI`'s "low detail" cost).
pub const IMAGE_TOKENS: u64 = 85;

/// Non-ASCII code point ranges (inclusive) classed as punctuation.
pub const PUNCT_RANGES: &[(u32, u32)] = &[
    (0xA1, 0xBF),
    (0xD7, 0xD7),
    (0xF7, 0xF7),
    (0x2010, 0x2027),
    (0x2030, 0x205E),
    (0x2190, 0x2BFF),
    (0x3001, 0x303F),
    (0xFF01, 0xFF0F),
];

// Milli-token cost of a lower-case (or Capitalised) letter run of length `i`, by what
// precedes it; beyond the table each extra letter adds `SLOPE`.
const SPACE_LOWER: [u64; 17] = [
    0, 1000, 1000, 1000, 1000, 1000, 1040, 1050, 1070, 1110, 1180, 1100, 1150, 1450, 1500, 1900,
    2300,
];
const NOSPACE_LOWER: [u64; 17] = [
    0, 1000, 1000, 1040, 1100, 1250, 1200, 1700, 2000, 2000, 2700, 2900, 3300, 3700, 4000, 4300,
    4600,
];
const OTHER_LOWER: [u64; 17] = [
    0, 1000, 1400, 1250, 1220, 1280, 1260, 1700, 1900, 2000, 2200, 2400, 2700, 3000, 3300, 3600,
    3900,
];
const SLOPE: u64 = 300;
/// Milli-tokens of an ASCII punctuation run of length `i` (beyond: 500 per character).
const PUNCT: [u64; 7] = [0, 1000, 1000, 1600, 2000, 2300, 3000];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Punct,
}

/// Whitespace as the estimator sees it (see the module documentation).
pub fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Digit
        } else if is_space(c) {
            Class::Space
        } else {
            Class::Punct
        }
    } else if is_space(c) {
        Class::Space
    } else if PUNCT_RANGES
        .iter()
        .any(|&(a, b)| (a..=b).contains(&(c as u32)))
    {
        Class::Punct
    } else {
        Class::Letter
    }
}

fn seg_cost(table: &[u64; 17], len: usize) -> u64 {
    if len < table.len() {
        table[len]
    } else {
        table[16] + SLOPE * (len - 16) as u64
    }
}

/// `prefix`: 0 none, 1 a space, 2 anything else.
fn ascii_word_cost(prefix: u8, w: &[u8]) -> u64 {
    let mut total = 0;
    let mut start = 0;
    let mut first = true;
    let mut seg = |s: &[u8], first: bool| {
        let p = if first { prefix } else { 0 };
        if s.len() >= 2 && s.iter().all(u8::is_ascii_uppercase) {
            total += 1000 + 450 * (s.len() as u64 - 2) + if p == 2 { 600 } else { 0 };
        } else {
            let table = match p {
                1 => &SPACE_LOWER,
                2 => &OTHER_LOWER,
                _ => &NOSPACE_LOWER,
            };
            total += seg_cost(table, s.len());
        }
    };
    for i in 1..w.len() {
        if w[i].is_ascii_uppercase() && w[i - 1].is_ascii_lowercase() {
            seg(&w[start..i], first);
            first = false;
            start = i;
        }
    }
    seg(&w[start..], first);
    total
}

fn word_cost(chunk: &str) -> u64 {
    let first = chunk.chars().next().unwrap_or(' ');
    let (prefix, w) = if class(first) == Class::Letter {
        (0, chunk)
    } else {
        (if first == ' ' { 1 } else { 2 }, &chunk[first.len_utf8()..])
    };
    if w.is_ascii() {
        return ascii_word_cost(prefix, w.as_bytes());
    }
    let mut c = if prefix == 2 { 500 } else { 0 };
    for ch in w.chars() {
        c += match ch.len_utf8() {
            1 => 250,
            2 => 1000,
            3 => 1200,
            _ => 2000,
        };
    }
    c.max(1000)
}

fn punct_cost(chunk: &str) -> u64 {
    let body = chunk.trim_end_matches(['\r', '\n']);
    let newline = body.len() != chunk.len();
    let body = if body.len() > 1 && body.starts_with(' ') {
        &body[1..]
    } else {
        body
    };
    let ascii = body.bytes().filter(u8::is_ascii).count();
    let non_ascii = body.chars().count() - ascii;
    let mut c = if ascii < PUNCT.len() {
        PUNCT[ascii]
    } else {
        500 * ascii as u64
    };
    c += 1000 * non_ascii as u64;
    if newline && ascii >= 2 {
        c += 100;
    }
    c
}

fn char_at(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

/// Estimated milli-tokens of one text.
pub fn text_millitokens(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let len = bytes.len();
    let mut total = 0u64;
    let mut i = 0;
    while let Some(c) = char_at(s, i) {
        let cl = class(c);
        let next_i = i + c.len_utf8();
        let next = if next_i < len {
            char_at(s, next_i)
        } else {
            None
        };
        // 1. contractions: 's 'd 'm 't 'll 've 're (ASCII, any case)
        if c == '\'' && next_i < len {
            let two = bytes
                .get(next_i..next_i + 2)
                .map(<[u8]>::to_ascii_lowercase);
            if matches!(two.as_deref(), Some(b"ll" | b"ve" | b"re")) {
                total += 1000;
                i = next_i + 2;
                continue;
            }
            if matches!(
                bytes[next_i].to_ascii_lowercase(),
                b's' | b'd' | b'm' | b't'
            ) {
                total += 1000;
                i = next_i + 1;
                continue;
            }
        }
        let next_letter = next.is_some_and(|x| class(x) == Class::Letter);
        // 2. letters, with one optional leading non-letter, non-digit, non-newline
        if cl == Class::Letter || (cl != Class::Digit && c != '\r' && c != '\n' && next_letter) {
            let mut j = next_i;
            while let Some(x) = char_at(s, j).filter(|&x| class(x) == Class::Letter) {
                j += x.len_utf8();
            }
            total += word_cost(&s[i..j]);
            i = j;
            continue;
        }
        // 3. digits, up to three
        if cl == Class::Digit {
            let mut j = next_i;
            while j < len && j < i + 3 && bytes[j].is_ascii_digit() {
                j += 1;
            }
            total += 1000;
            i = j;
            continue;
        }
        // 4. punctuation run, optional leading space, trailing newlines
        if cl == Class::Punct || (c == ' ' && next.is_some_and(|x| class(x) == Class::Punct)) {
            let mut j = next_i;
            while let Some(x) = char_at(s, j).filter(|&x| class(x) == Class::Punct) {
                j += x.len_utf8();
            }
            while j < len && (bytes[j] == b'\r' || bytes[j] == b'\n') {
                j += 1;
            }
            total += punct_cost(&s[i..j]);
            i = j;
            continue;
        }
        // 5. whitespace: to the end, up to the last newline, all but the last, or one
        let mut j = next_i;
        let mut last_nl = None;
        if c == '\r' || c == '\n' {
            last_nl = Some(i);
        }
        while let Some(x) = char_at(s, j).filter(|&x| is_space(x)) {
            if x == '\r' || x == '\n' {
                last_nl = Some(j);
            }
            j += x.len_utf8();
        }
        total += 1000;
        i = if j == len {
            j
        } else if let Some(nl) = last_nl {
            nl + 1
        } else if s[i..j].chars().nth(1).is_some() {
            // leave the last whitespace character to prefix what follows
            j - char_at_end(&s[..j]).len_utf8()
        } else {
            j
        };
    }
    total
}

fn char_at_end(s: &str) -> char {
    s.chars().next_back().unwrap_or(' ')
}

/// Estimated tokens of one text (no message overhead).
pub fn estimate_text_tokens(s: &str) -> u64 {
    (text_millitokens(s) + 500) / 1000
}

fn json_millitokens(v: &Value) -> u64 {
    match v {
        Value::Object(o) => {
            1000 + o
                .iter()
                .map(|(k, x)| text_millitokens(k) + 1000 + json_millitokens(x))
                .sum::<u64>()
        }
        Value::Array(a) => 1000 + a.iter().map(json_millitokens).sum::<u64>(),
        Value::String(s) => text_millitokens(s) + 1000,
        _ => 1000,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn str_cost(v: &Value, key: &str) -> u64 {
    str_field(v, key).map_or(0, text_millitokens)
}

fn message_millitokens(m: &Value) -> u64 {
    let mut t = 3000 + str_cost(m, "role");
    match m.get("content") {
        Some(Value::String(s)) => t += text_millitokens(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(s) = str_field(p, "text") {
                    t += text_millitokens(s);
                } else if str_field(p, "type") == Some("image_url") {
                    t += IMAGE_TOKENS * 1000;
                }
            }
        }
        _ => {}
    }
    if let Some(name) = str_field(m, "name") {
        t += 1000 + text_millitokens(name);
    }
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for call in calls {
            t += 3000;
            if let Some(f) = call.get("function") {
                t += str_cost(f, "name") + str_cost(f, "arguments");
            }
        }
    }
    t
}

/// Estimated prompt tokens of a chat-completions body. Errors only on invalid JSON or a
/// non-object body; unknown shapes inside count what they can.
pub fn estimate_tokens(body: &[u8]) -> Result<u64> {
    let v: Value = serde_json::from_slice(body)?;
    if !v.is_object() {
        return Err(CoreError::invalid("request body must be a JSON object"));
    }
    let mut t = 3000;
    if let Some(Value::Array(messages)) = v.get("messages") {
        t += messages.iter().map(message_millitokens).sum::<u64>();
    }
    if let Some(Value::Array(tools)) = v.get("tools") {
        for tool in tools {
            t += 8000;
            if let Some(f) = tool.get("function") {
                t += str_cost(f, "name") + str_cost(f, "description");
                if let Some(p) = f.get("parameters") {
                    t += json_millitokens(p);
                }
            }
        }
    }
    if let Some(schema) = v.get("response_format").and_then(|r| r.get("json_schema")) {
        t += json_millitokens(schema);
    }
    Ok((t + 500) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_texts() {
        assert_eq!(estimate_text_tokens(""), 0);
        assert_eq!(estimate_text_tokens("hello world"), 2);
        assert_eq!(estimate_text_tokens("it's 12345"), 5); // it 's ␣ 123 45
        assert_eq!(estimate_text_tokens("a\n\n  b"), 4); // a \n\n ␣ ␣b
        assert!(estimate_text_tokens("日本語のテキスト") >= 8);
    }

    #[test]
    fn request_overheads() {
        let body = br#"{"messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(estimate_tokens(body).unwrap(), 3 + 3 + 1 + 2);
        assert!(estimate_tokens(b"[]").is_err());
        assert!(estimate_tokens(b"{").is_err());
        assert_eq!(
            estimate_tokens(br#"{"messages":[1,{"content":[null,{"text":5}]}]}"#).unwrap(),
            9
        );
    }
}
