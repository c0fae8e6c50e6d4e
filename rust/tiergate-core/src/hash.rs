//! Idempotency key: xxh3-128 over the canonical form of an `OpenAI` chat-completions body.
//!
//! # Canonical form
//!
//! 1. Parse with `serde_json`'s grammar ([`crate::rawjson`]: UTF-8 checked; nesting 128
//!    deep is an error, never a stack overflow). The top level must be an object.
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
//!    (`1.0` → `1`, `-0.0` → `0`); any other value is written as the bits of its `f64`
//!    in hexadecimal (`0.7` → `0x3fe6666666666666`, `1e20` → `0x4415af1d78b58c40`): every
//!    spelling of the same number gives the same bits, and no decimal printer's rounding
//!    of ties is involved. Numbers that overflow `f64` are rejected by the parser.
//!
//! # Key
//!
//! `xxh3_128(len(tenant) as u64 little-endian ‖ tenant UTF-8 ‖ canonical)`, returned as
//! 16 big-endian bytes (the same bytes as Python's `xxhash.xxh3_128_digest`). The length
//! prefix keeps `("ab", "c…")` and `("a", "bc…")` apart.

use std::cmp::Ordering;

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{CoreError, Result};
use crate::rawjson::{push_span, Esc, Parser, Value};

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
    write_canonical(body, &mut out, &mut Spare::default())?;
    Ok(out)
}

/// The 16-byte idempotency key of `body` for `tenant`.
pub fn request_key(body: &[u8], tenant: &str) -> Result<[u8; 16]> {
    KEY_BUFFERS.with_borrow_mut(|(buf, spare)| {
        buf.clear();
        buf.extend_from_slice(&(tenant.len() as u64).to_le_bytes());
        buf.extend_from_slice(tenant.as_bytes());
        let written = write_canonical(body, buf, spare);
        let key = written.map(|()| xxh3_128(buf).to_be_bytes());
        if buf.capacity() > KEEP_BYTES {
            // One huge body must not pin its buffers for the thread's lifetime.
            *buf = Vec::new();
            *spare = Spare::default();
        }
        key
    })
}

/// Buffers over this size are freed after the call rather than kept for the next.
const KEEP_BYTES: usize = 1 << 20;

thread_local! {
    /// `request_key`'s output and [`Spare`] buffers, reused from call to call: allocating
    /// three body-sized buffers per call cost about 4% of the call's time.
    static KEY_BUFFERS: std::cell::RefCell<(Vec<u8>, Spare)> =
        const { std::cell::RefCell::new((Vec::new(), Spare { members: Vec::new(), scratch: Vec::new() })) };
}

/// The canonicaliser's working buffers, lent to it by the caller.
#[derive(Default)]
struct Spare {
    members: Vec<Written>,
    scratch: Vec<u8>,
}

fn write_canonical(body: &[u8], out: &mut Vec<u8>, spare: &mut Spare) -> Result<()> {
    let p = Parser::new(body)?;
    if p.peek() != Some(b'{') {
        // Reject bad JSON as bad JSON before saying it is not an object.
        Value::parse(body)?;
        return Err(CoreError::invalid("request body must be a JSON object"));
    }
    let mut w = Canon {
        p,
        b: body,
        members: std::mem::take(&mut spare.members),
        scratch: std::mem::take(&mut spare.scratch),
    };
    w.members.clear();
    let written = w.value(out, Ctx::Top).and_then(|()| w.p.finish());
    spare.members = w.members;
    spare.scratch = w.scratch;
    written
}

/// Where a value sits, for the rewrites of steps 2–5.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Messages,
    Message,
    Other,
}

/// One object member as written, relative to the object's first byte: the key's output
/// `k..kv` (with its `:`), the value's `v..e` (a rewrite may narrow it).
#[derive(Clone, Copy)]
struct Written {
    /// [`key_prefix`] of the key.
    pfx: u64,
    /// The key's quotes in the input.
    q: usize,
    close: usize,
    esc: Esc,
    /// A `stop` string, written as a one-element array.
    wrap: bool,
    k: usize,
    kv: usize,
    v: usize,
    e: usize,
}

/// The streaming canonicaliser: arrays and scalars are written as they are read; an
/// object's members are written in input order while their ranges are noted, and only
/// when they were out of order, repeated or rewritten is the object's output reassembled
/// (one copy of that object's bytes). Strings whose escapes are already canonical are
/// copied from the input; no tree is built. Keys are kept as input positions (no `&str`
/// slicing per member) and compared by their first eight bytes where those differ.
struct Canon<'a> {
    p: Parser<'a>,
    b: &'a [u8],
    /// Members of every object being written, innermost last.
    members: Vec<Written>,
    scratch: Vec<u8>,
}

impl<'a> Canon<'a> {
    fn value(&mut self, out: &mut Vec<u8>, ctx: Ctx) -> Result<()> {
        match self.p.peek() {
            Some(b'{') => {
                self.p.enter()?;
                let r = self.object(out, ctx);
                self.p.leave();
                r
            }
            Some(b'[') => {
                self.p.enter()?;
                let r = self.array(out, ctx);
                self.p.leave();
                r
            }
            _ => self.leaf(out).map(|_| ()),
        }
    }

    fn array(&mut self, out: &mut Vec<u8>, ctx: Ctx) -> Result<()> {
        out.push(b'[');
        if !self.p.empty(b']') {
            let item = if ctx == Ctx::Messages {
                Ctx::Message
            } else {
                Ctx::Other
            };
            loop {
                if !self.leaf(out)? {
                    self.value(out, item)?;
                }
                if !self.p.next_or_close(b']')? {
                    break;
                }
                out.push(b',');
            }
        }
        out.push(b']');
        Ok(())
    }

    /// The decoded key of `m` (cold: only keys with escapes get here).
    fn key_text(&self, m: &Written) -> std::borrow::Cow<'a, str> {
        self.p.jstr(m.q, m.close, m.esc).text()
    }

    /// Whether the key of `m` is `lit`.
    #[inline]
    fn key_is(&self, m: &Written, lit: &str) -> bool {
        if m.esc == Esc::None {
            &self.b[m.q + 1..m.close] == lit.as_bytes()
        } else {
            self.key_text(m) == lit
        }
    }

    /// Order of decoded key bytes, from the prefixes of [`key_prefix`] when they decide it.
    #[allow(clippy::inline_always)] // per member and per sort step; mostly one compare
    #[inline(always)]
    fn key_cmp(&self, a: &Written, b: &Written) -> Ordering {
        if a.esc == Esc::None && b.esc == Esc::None {
            if a.pfx != b.pfx {
                return a.pfx.cmp(&b.pfx);
            }
            self.b[a.q + 1..a.close].cmp(&self.b[b.q + 1..b.close])
        } else {
            self.key_cmp_decoded(a, b)
        }
    }

    #[inline(never)]
    fn key_cmp_decoded(&self, a: &Written, b: &Written) -> Ordering {
        self.key_text(a).as_bytes().cmp(self.key_text(b).as_bytes())
    }

    /// A string, literal or number at the cursor written in place (no call to
    /// [`Canon::value`] for the values most members hold); `false` for a bracket.
    #[allow(clippy::inline_always)] // in both container loops: the call is the cost
    #[inline(always)]
    fn leaf(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        match self.p.peek() {
            Some(b'"') => {
                self.p.i += 1;
                self.p.scan::<true, false>(out, &mut String::new())?;
            }
            Some(b'{' | b'[') => return Ok(false),
            Some(b'n') => self.p.word(b"null", out)?,
            Some(b't') => self.p.word(b"true", out)?,
            Some(b'f') => self.p.word(b"false", out)?,
            _ => match self.p.scalar()? {
                Some(v) => write_scalar(&v, out),
                None => unreachable!("brackets handled above"),
            },
        }
        Ok(true)
    }

    fn object(&mut self, out: &mut Vec<u8>, ctx: Ctx) -> Result<()> {
        let start = out.len();
        out.push(b'{');
        let base = self.members.len();
        let mut in_order = true;
        let input = self.b;
        if !self.p.empty(b'}') {
            loop {
                let (q, close, esc) = self.p.key_span()?;
                if self.members.len() > base {
                    out.push(b',');
                }
                let k = out.len() - start;
                if esc == Esc::Other {
                    self.p.jstr(q, close, esc).write_json(out);
                } else {
                    push_span(out, input, q, close + 1);
                }
                out.push(b':');
                let v = out.len() - start;
                let m = Written {
                    pfx: key_prefix(input, q, close, esc),
                    q,
                    close,
                    esc,
                    wrap: false,
                    k,
                    kv: v,
                    v,
                    e: 0,
                };
                if let Some(last) = self.members[base..].last() {
                    in_order &= self.key_cmp(last, &m) == Ordering::Less;
                }
                let inner = if ctx == Ctx::Top && self.key_is(&m, "messages") {
                    Ctx::Messages
                } else {
                    Ctx::Other
                };
                if !self.leaf(out)? {
                    self.value(out, inner)?;
                }
                self.members.push(Written {
                    e: out.len() - start,
                    ..m
                });
                if !self.p.next_or_close(b'}')? {
                    break;
                }
            }
        }
        let mut changed = !in_order;
        if !in_order {
            self.sort_members(base);
        }
        let obj = &out[start..];
        match ctx {
            Ctx::Top => changed |= self.canonicalise_top(base, obj),
            Ctx::Message => changed |= self.canonicalise_message(base, obj),
            _ => {}
        }
        if changed {
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[start..]);
            out.truncate(start + 1);
            let mut first = true;
            for m in &self.members[base..] {
                if m.e == 0 {
                    continue; // dropped
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                if m.wrap {
                    out.extend_from_slice(&self.scratch[m.k..m.kv]);
                    out.push(b'[');
                    out.extend_from_slice(&self.scratch[m.v..m.e]);
                    out.push(b']');
                } else if m.v == m.kv {
                    // Key and value are still adjacent: one copy.
                    push_span(out, &self.scratch, m.k, m.e);
                } else {
                    push_span(out, &self.scratch, m.k, m.kv);
                    push_span(out, &self.scratch, m.v, m.e);
                }
            }
        }
        out.push(b'}');
        self.members.truncate(base);
        Ok(())
    }

    /// Sort the members from `base` by key and keep the last of each run of equal keys.
    /// Insertion sort, stable (equal keys stay in input order): objects have a handful of
    /// members, often nearly in order. A key equal to an earlier one stops its insertion
    /// right after it, so that is where repeats are seen.
    fn sort_members(&mut self, base: usize) {
        let mut repeats = false;
        for i in base + 1..self.members.len() {
            let m = self.members[i];
            let mut j = i;
            loop {
                let o = self.key_cmp(&self.members[j - 1], &m);
                if o != Ordering::Greater {
                    repeats |= o == Ordering::Equal;
                    break;
                }
                self.members[j] = self.members[j - 1];
                j -= 1;
                if j == base {
                    break;
                }
            }
            self.members[j] = m;
        }
        if !repeats {
            return;
        }
        let mut kept = base;
        for i in base..self.members.len() {
            let next_same = i + 1 < self.members.len()
                && self.key_cmp(&self.members[i], &self.members[i + 1]) == Ordering::Equal;
            if !next_same {
                self.members[kept] = self.members[i];
                kept += 1;
            }
        }
        self.members.truncate(kept);
    }
}

/// The first eight bytes of a key without escapes (between the quotes at `q` and
/// `close`), big-endian, zero-padded (such a key holds no zero byte, so comparing these
/// orders keys whose first eight bytes differ); `0` for a key with escapes, which
/// [`Canon::key_cmp`] compares decoded.
#[inline]
fn key_prefix(b: &[u8], q: usize, close: usize, esc: Esc) -> u64 {
    if esc != Esc::None {
        return 0;
    }
    let n = (close - q - 1).min(8);
    if n == 0 {
        return 0;
    }
    let w = if let Some(w) = b.get(q + 1..).and_then(<[u8]>::first_chunk::<8>) {
        u64::from_be_bytes(*w)
    } else {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(&b[q + 1..q + 1 + n]);
        u64::from_be_bytes(w)
    };
    // Keep the key's `n` bytes (the top ones), zero the rest.
    w & (u64::MAX << (8 * (8 - n)))
}

impl Canon<'_> {
    /// Steps 2–4 on the written top-level members from `base` (`obj`: the object's
    /// output so far; the values are already canonical, so defaults compare as bytes). A
    /// dropped member gets `e = 0`. Whether anything changed.
    fn canonicalise_top(&mut self, base: usize, obj: &[u8]) -> bool {
        let val = |m: &Written| &obj[m.v..m.e];
        let has_tools = self.members[base..].iter().any(|m| {
            let v = val(m);
            self.key_is(m, "tools") && v.first() == Some(&b'[') && v != b"[]"
        });
        let mut changed = false;
        for i in base..self.members.len() {
            let m = self.members[i];
            let v = val(&m);
            let key = if m.esc == Esc::None {
                std::borrow::Cow::Borrowed(self.p.jstr(m.q, m.close, m.esc).raw())
            } else {
                self.key_text(&m)
            };
            let drop = v == b"null"
                || TRANSPORT_FIELDS.contains(&key.as_ref())
                || match key.as_ref() {
                    "temperature" | "top_p" | "n" => v == b"1",
                    "presence_penalty" | "frequency_penalty" => v == b"0",
                    "logprobs" => v == b"false",
                    "parallel_tool_calls" => v == b"true",
                    "response_format" => v == br#"{"type":"text"}"#,
                    "tools" | "functions" | "stop" => v == b"[]",
                    "logit_bias" => v == b"{}",
                    "tool_choice" => {
                        v == if has_tools {
                            &br#""auto""#[..]
                        } else {
                            br#""none""#
                        }
                    }
                    _ => false,
                };
            if drop {
                self.members[i].e = 0;
                changed = true;
            } else if key == "stop" && v.first() == Some(&b'"') {
                self.members[i].wrap = true;
                changed = true;
            }
        }
        changed
    }

    /// Step 5 on the written members of one message.
    fn canonicalise_message(&mut self, base: usize, obj: &[u8]) -> bool {
        const HEAD: &[u8] = br#"[{"text":"#;
        const TAIL: &[u8] = br#","type":"text"}]"#;
        let mut changed = false;
        for i in base..self.members.len() {
            let m = self.members[i];
            let v = &obj[m.v..m.e];
            if v == b"null" {
                self.members[i].e = 0;
                changed = true;
            } else if v.len() > HEAD.len() + TAIL.len()
                && v.starts_with(HEAD)
                && v.ends_with(TAIL)
                && self.key_is(&m, "content")
                && is_one_string(&v[HEAD.len()..v.len() - TAIL.len()])
            {
                let m = &mut self.members[i];
                m.v += HEAD.len();
                m.e -= TAIL.len();
                changed = true;
            }
        }
        changed
    }
}

/// Whether canonical JSON bytes `s` are exactly one string.
fn is_one_string(s: &[u8]) -> bool {
    if s.len() < 2 || s[0] != b'"' {
        return false;
    }
    let mut i = 1;
    while let Some(k) = memchr::memchr2(b'"', b'\\', &s[i..]) {
        i += k;
        if s[i] == b'\\' {
            i += 2;
        } else {
            return i == s.len() - 1;
        }
    }
    false
}

fn write_scalar(v: &Value<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_int(*i, out),
        Value::UInt(u) => write_f64(*u as f64, out),
        Value::Float(f) => write_f64(*f, out),
        Value::Str(s) => s.write_json(out),
        Value::Arr(_) | Value::Obj(_) => unreachable!("scalars only"),
    }
}

/// `i` in decimal, as `{i}` formats it (without the formatting machinery, which costs
/// more than the rest of a number's canonicalisation).
fn write_int(i: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut p = buf.len();
    loop {
        p -= 1;
        buf[p] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[p..]);
}

/// 2^63 as f64: integral values in `[-2^63, 2^63)` fit an `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Canonical text of a finite `f64` (see the module documentation).
pub fn format_f64(f: f64) -> String {
    let mut out = Vec::new();
    write_f64(f, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_f64(f: f64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        write_int(f as i64, out);
    } else {
        // The bits themselves: shortest-decimal printers disagree on ties (Python's repr
        // rounds half to even, Rust's `{:e}` does not), the bits never do.
        let bits = f.to_bits();
        let mut text = *b"0x0000000000000000";
        for (j, d) in text[2..].iter_mut().enumerate() {
            *d = HEX[(bits >> (60 - 4 * j) & 15) as usize];
        }
        out.extend_from_slice(&text);
    }
}

/// The tree-building canonicaliser the streaming one replaced: the oracle of its tests.
#[cfg(test)]
mod tree {
    use super::{write_scalar, TRANSPORT_FIELDS};
    use crate::error::Result;
    use crate::rawjson::{parse_object, Member, Value};

    pub(super) fn write_canonical(body: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut node = parse_object(body)?;
        if let Value::Obj(members) = &mut node {
            canonicalise_top(members);
        }
        write_value(&node, out);
        Ok(())
    }

    fn number_is(v: &Value<'_>, target: f64) -> bool {
        v.as_f64() == Some(target)
    }

    fn is_text_format(v: &Value<'_>) -> bool {
        matches!(v, Value::Obj(o) if o.len() == 1 && o[0].key == "type" && o[0].value.is_str("text"))
    }

    fn canonicalise_top(map: &mut Vec<Member<'_>>) {
        map.retain(|m| m.value != Value::Null && !TRANSPORT_FIELDS.contains(&m.key.as_ref()));
        for m in map.iter_mut() {
            if m.key == "stop" {
                if let Value::Str(_) = m.value {
                    let s = std::mem::replace(&mut m.value, Value::Null);
                    m.value = Value::Arr(vec![s]);
                }
            }
        }
        let has_tools = map
            .iter()
            .any(|m| m.key == "tools" && matches!(&m.value, Value::Arr(a) if !a.is_empty()));
        map.retain(|m| {
            let v = &m.value;
            let default = match m.key.as_ref() {
                "temperature" | "top_p" | "n" => number_is(v, 1.0),
                "presence_penalty" | "frequency_penalty" => number_is(v, 0.0),
                "logprobs" => *v == Value::Bool(false),
                "parallel_tool_calls" => *v == Value::Bool(true),
                "response_format" => is_text_format(v),
                "tools" | "functions" | "stop" => matches!(v, Value::Arr(a) if a.is_empty()),
                "logit_bias" => matches!(v, Value::Obj(o) if o.is_empty()),
                "tool_choice" => v.is_str(if has_tools { "auto" } else { "none" }),
                _ => false,
            };
            !default
        });
        for m in map.iter_mut() {
            if let (true, Value::Arr(messages)) = (m.key == "messages", &mut m.value) {
                for message in messages {
                    if let Value::Obj(members) = message {
                        canonicalise_message(members);
                    }
                }
            }
        }
    }

    fn canonicalise_message(m: &mut Vec<Member<'_>>) {
        m.retain(|x| x.value != Value::Null);
        for x in m.iter_mut() {
            if x.key != "content" {
                continue;
            }
            let Value::Arr(parts) = &mut x.value else {
                continue;
            };
            if parts.len() != 1 {
                continue;
            }
            let Value::Obj(p) = &mut parts[0] else {
                continue;
            };
            // Sorted keys: exactly [("text", Str), ("type", "text")].
            if p.len() == 2
                && p[0].key == "text"
                && matches!(p[0].value, Value::Str(_))
                && p[1].key == "type"
                && p[1].value.is_str("text")
            {
                let text = std::mem::replace(&mut p[0].value, Value::Null);
                x.value = text;
            }
        }
    }

    fn write_value(v: &Value<'_>, out: &mut Vec<u8>) {
        match v {
            Value::Arr(a) => {
                out.push(b'[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_value(item, out);
                }
                out.push(b']');
            }
            Value::Obj(o) => {
                out.push(b'{');
                for (i, m) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    m.raw_key.write_json(out);
                    out.push(b':');
                    write_value(&m.value, out);
                }
                out.push(b'}');
            }
            // Strings whose escapes are already canonical are copied from the input.
            scalar => write_scalar(scalar, out),
        }
    }
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
            r#"{"a":1,"b":0,"c":0x3fe6666666666666,"d":0x4415af1d78b58c40,"e":0x43f0000000000000}"#
        );
    }

    /// Numbers are written as the formatting machinery wrote them.
    #[test]
    fn number_text_matches_format() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ints = vec![0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN, 1 << 53];
        let mut floats = vec![0.7, -0.0, 1e20, 1e300, -2.5, 9_223_372_036_854_775_808.0];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ints.push((x as i64) >> (x % 64));
            let f = f64::from_bits(x);
            if f.is_finite() {
                floats.push(f);
            }
        }
        for i in ints {
            let mut out = Vec::new();
            write_int(i, &mut out);
            assert_eq!(out, i.to_string().as_bytes());
        }
        for f in floats {
            let mut out = Vec::new();
            write_f64(f, &mut out);
            let expected = if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
                format!("{}", f as i64)
            } else {
                format!("0x{:016x}", f.to_bits())
            };
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
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

    fn tree_canon(body: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        tree::write_canonical(body, &mut out)?;
        Ok(out)
    }

    /// The streaming canonicaliser writes what the tree-building one wrote, on chat
    /// bodies with every rewrite and on random mutations of them.
    #[test]
    fn streaming_matches_tree() {
        const SEEDS: &[&str] = &[
            r#"{"stream":true,"model":"m","temperature":1.0,"messages":[{"role":"user","content":"hi\n\"x\"","name":null},{"content":[{"type":"text","text":"a\u00e9"}],"role":"user"},{"content":[{"text":"a","type":"text"},{"text":"b","type":"text"}]},{"content":[{"type":"text","text":"x","y":1}]},{"content":[{"type":"text","text":5}]},null,3],"user":"u","n":1}"#,
            r#"{"tools":[{"type":"function"}],"tool_choice":"auto","stop":"\u0041\n","response_format":{"type":"text"},"logit_bias":{},"functions":[],"top_p":1.0,"presence_penalty":-0.0,"b":2,"a":1,"b":3,"logprobs":false,"parallel_tool_calls":true}"#,
            r#"{"tool_choice":"none","tools":[],"stop":[],"messages":{"content":[{"type":"text","text":"x"}]},"x":{"z":1,"y":{"b":[{"d":0,"c":1e400}],"a":null}},"\u0061":1,"a":2}"#,
            r#"{"messages":[{"content":[{"text":"q\"],[\"","type":"text"}],"role":"user","role":"system"}],"seed":18446744073709551615,"k":-9223372036854775808}"#,
        ];
        let mut ok = 0;
        for (_, body) in crate::mutate::mutated_bodies(
            SEEDS,
            30_000,
            0x2545_F491_4F6C_DD1D,
            crate::mutate::ALPHABET,
        ) {
            let ours = canonical_request(&body);
            let theirs = tree_canon(&body);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    ok += 1;
                    assert_eq!(
                        String::from_utf8_lossy(a),
                        String::from_utf8_lossy(b),
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                }
                (Err(a), Err(b)) => assert_eq!(
                    a.message.contains("JSON object"),
                    b.message.contains("JSON object")
                ),
                _ => panic!("{}: {ours:?} vs {theirs:?}", String::from_utf8_lossy(&body)),
            }
        }
        assert!(ok > 3_000, "{ok}");
    }

    /// `\uXXXX` escapes at the edges of the fast path (control characters, `"` and `\`,
    /// upper-case digits, surrogates, bad digits, a string's end) canonicalise as the tree
    /// canonicaliser writes them, and the invalid ones fail as they do there.
    #[test]
    fn unicode_escapes_match_tree() {
        const PIECES: &[&str] = &[
            "\\u0020",
            "\\u001f",
            "\\u001F",
            "\\u0021",
            "\\u0022",
            "\\u005c",
            "\\u005C",
            "\\u00E9",
            "\\u00e9",
            "\\u4e2d",
            "\\u4E2D",
            "\\ud7ff",
            "\\ud800",
            "\\udfff",
            "\\ud83d\\ude00",
            "\\ue000",
            "\\uffff",
            "\\uFFFE",
            "\\u12g4",
            "\\u12",
            "\\u",
            "\\/",
            "\\n",
            "x",
            "é",
        ];
        let mut x: u64 = 0x5DEE_CE66_D1CE_4E5B;
        for _ in 0..20_000 {
            let mut text = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 6) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":"{text}"}}],"model":"{text}"}}"#
            );
            let ours = canonical_request(body.as_bytes());
            let theirs = tree_canon(body.as_bytes());
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{body}: {ours:?} vs {theirs:?}"),
            }
            let tokens = crate::tokens::estimate_tokens(body.as_bytes());
            assert_eq!(tokens.is_ok(), theirs.is_ok(), "{body}");
        }
    }

    /// Keys the implementation before the one-pass string writer gave (known answers).
    #[test]
    fn known_answers() {
        let body = br#"{"user":"u","model":"m","messages":[{"role":"user","content":"a\/b \u00e9\u2014\ud83d\ude00 \u0041\u001F\u000a \\ \"q\" \t"},{"content":[{"type":"text","text":"x\u2019y"}],"role":"assistant"}],"temperature":0.7,"stop":"\u0045ND"}"#;
        assert_eq!(
            u128::from_be_bytes(request_key(body, "t").unwrap()),
            0x7149_7ba4_f164_8011_8872_8d59_3daa_20dc
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

    /// The thread's reused buffers carry nothing from one call to the next: after a
    /// failed call, after a call that left a deep object half written, and after a body
    /// big enough for its buffers to be freed, keys equal those of fresh buffers.
    #[test]
    fn reused_buffers_carry_nothing_over() {
        let fresh = |body: &[u8], tenant: &str| {
            let mut buf = (tenant.len() as u64).to_le_bytes().to_vec();
            buf.extend_from_slice(tenant.as_bytes());
            buf.extend_from_slice(&canonical_request(body).unwrap());
            xxh3_128(&buf).to_be_bytes()
        };
        let good = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#;
        let big = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(2 << 20)
        );
        let failing: [&[u8]; 3] = [
            br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"a":"#,
            br#"{"z":1,"messages":[{"role":"u","content":[1,2,"#,
            b"\xff",
        ];
        for bad in failing {
            assert!(request_key(bad, "t").is_err());
            assert_eq!(request_key(good, "t").unwrap(), fresh(good, "t"));
        }
        assert_eq!(
            request_key(big.as_bytes(), "").unwrap(),
            fresh(big.as_bytes(), "")
        );
        assert_eq!(request_key(good, "").unwrap(), fresh(good, ""));
        assert_ne!(
            request_key(good, "t").unwrap(),
            request_key(good, "").unwrap()
        );
    }
}
