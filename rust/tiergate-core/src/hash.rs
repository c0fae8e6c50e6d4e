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
use crate::json::write_int;
use crate::memo::ValueMemo;
use crate::rawjson::{Esc, Parser, Value};

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
    let mut out = Vec::new();
    let end = write_canonical(body, &mut out, 0, &mut Spare::default(), None)?;
    out.truncate(end);
    Ok(out)
}

/// The 16-byte idempotency key of `body` for `tenant`.
pub fn request_key(body: &[u8], tenant: &str) -> Result<[u8; 16]> {
    KEY_BUFFERS.with_borrow_mut(|(buf, spare)| {
        // The buffer keeps its length from call to call (see `write_canonical`): only
        // the bytes up to this call's end are hashed.
        let pre = 8 + tenant.len();
        if buf.len() < pre {
            buf.resize(pre, 0);
        }
        buf[..8].copy_from_slice(&(tenant.len() as u64).to_le_bytes());
        buf[8..pre].copy_from_slice(tenant.as_bytes());
        let written = KNOWN_TOOLS
            .with_borrow_mut(|known| write_canonical(body, buf, pre, spare, Some(known)));
        let key = written.map(|end| key_of(&buf[..end]));
        if buf.capacity() > KEEP_BYTES || spare.capacity_bytes() > KEEP_BYTES {
            // One huge body must not pin its buffers for the thread's lifetime.
            *buf = Vec::new();
            *spare = Spare::default();
        }
        key
    })
}

/// The key of `prefixed`: the tenant's length prefix and name, then a canonical form
/// (what [`request_key`] hashes).
pub fn key_of(prefixed: &[u8]) -> [u8; 16] {
    xxh3_128(prefixed).to_be_bytes()
}

/// Buffers over this size are freed after the call rather than kept for the next.
const KEEP_BYTES: usize = 1 << 20;

thread_local! {
    /// The canonical forms of the `tools` arrays keyed lately (up to 64 KiB each), by
    /// their bytes: an agent sends the same tools with every turn, and most of its
    /// body's canonicalising is theirs.
    static KNOWN_TOOLS: std::cell::RefCell<ValueMemo<Box<[u8]>>> =
        std::cell::RefCell::new(ValueMemo::new(8, 1 << 16));

    /// `request_key`'s output and [`Spare`] buffers, reused from call to call: allocating
    /// body-sized buffers per call cost about 4% of the call's time.
    static KEY_BUFFERS: std::cell::RefCell<(Vec<u8>, Spare)> =
        const { std::cell::RefCell::new((Vec::new(), Spare { nodes: Vec::new(), members: Vec::new(), order: Vec::new(), side: Vec::new() })) };
}

/// The canonicaliser's working buffers, lent to it by the caller.
#[derive(Default)]
struct Spare {
    nodes: Vec<Node>,
    members: Vec<Member>,
    order: Vec<usize>,
    side: Vec<u8>,
}

impl Spare {
    fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.members.capacity() * std::mem::size_of::<Member>()
            + self.order.capacity() * std::mem::size_of::<usize>()
            + self.side.capacity()
    }
}

/// Write the canonical form of `body` into `out` from `start`; where it ends. `out` is
/// lengthened when it is shorter than the form can be, never shortened: the bytes after
/// the end are left as they were, so a reused buffer is not filled again per call.
///
/// `known`: the canonical forms of top-level `tools` values read before, by their bytes
/// (see [`ValueMemo`]): one found is copied rather than read, one not is kept.
fn write_canonical(
    body: &[u8],
    out: &mut Vec<u8>,
    start: usize,
    spare: &mut Spare,
    known: Option<&mut ValueMemo<Box<[u8]>>>,
) -> Result<usize> {
    let p = Parser::new_ascii_fast(body)?;
    if p.peek() != Some(b'{') {
        // Reject bad JSON as bad JSON before saying it is not an object.
        Value::parse(body)?;
        return Err(CoreError::invalid("request body must be a JSON object"));
    }
    let mut w = Canon {
        p,
        b: body,
        nodes: std::mem::take(&mut spare.nodes),
        members: std::mem::take(&mut spare.members),
        order: std::mem::take(&mut spare.order),
        side: std::mem::take(&mut spare.side),
        known,
    };
    w.nodes.clear();
    w.members.clear();
    w.order.clear();
    w.side.clear();
    let read = w.read(Ctx::Top).and_then(|()| w.p.finish());
    let written = read.map(|()| {
        // Every byte written is a byte of the input or of the side buffer (escapes are
        // only ever rewritten shorter), plus the brackets of a wrapped `stop`; and the
        // writer's sixteen-byte stores need sixteen bytes of room past the end.
        let bound = start + body.len() + w.side.len() + 2 + 16;
        if out.len() < bound {
            out.resize(bound, 0);
        }
        let mut o = Out {
            buf: &mut out[..bound],
            pos: start,
        };
        w.emit(0, &mut o, Ctx::Top);
        o.pos
    });
    spare.nodes = w.nodes;
    spare.members = w.members;
    spare.order = w.order;
    spare.side = w.side;
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

/// What the first pass noted of one value or key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Canonical as written: the input `a..e` is copied (strings whose escapes are
    /// canonical, `true`, `false`, integers, and containers already in canonical form).
    Span,
    /// `null` (the input `a..e`): steps 2 and 5 drop members holding it.
    Null,
    /// Canonical form written by the first pass to the side buffer's `a..e` (strings
    /// with escapes to rewrite, numbers to normalise).
    Side,
    /// An object key: quotes at `a` and `e - 1`, [`key_prefix`] in `x`.
    Key,
    /// An array whose items follow it up to node `e`.
    Arr,
    /// An object whose members follow it up to node `e`; `order[a..x]` are its key nodes
    /// in canonical order (sorted, repeats resolved).
    Obj,
}

/// One entry of the first pass's tape (see [`Canon`]).
#[derive(Clone, Copy)]
struct Node {
    kind: Kind,
    esc: Esc,
    a: usize,
    e: usize,
    x: u64,
}

/// One member of an object being read: its key's node and that key's order data.
#[derive(Clone, Copy)]
struct Member {
    /// [`key_prefix`] of the decoded key.
    pfx: u64,
    /// The key's node; the value's first node follows it.
    k: usize,
}

/// The second pass's writer: a cursor in a slice sized for the longest canonical form
/// (no capacity check per byte, as a `Vec` push has).
struct Out<'o> {
    buf: &'o mut [u8],
    pos: usize,
}

impl Out<'_> {
    #[allow(clippy::inline_always)] // per separator
    #[inline(always)]
    fn byte(&mut self, c: u8) {
        self.buf[self.pos] = c;
        self.pos += 1;
    }

    /// Append `src[a..e]`. A span of at most sixteen bytes with sixteen readable bytes
    /// from `a` goes as one fixed-size store (the buffer has sixteen bytes of room past
    /// the end): keys and short values are most spans, and a `memcpy` call costs more
    /// than the copy.
    #[allow(clippy::inline_always)] // per key and value
    #[inline(always)]
    fn span(&mut self, src: &[u8], a: usize, e: usize) {
        let n = e - a;
        if n <= 16 {
            if let Some(w) = src.get(a..).and_then(<[u8]>::first_chunk::<16>) {
                self.buf[self.pos..self.pos + 16].copy_from_slice(w);
                self.pos += n;
                return;
            }
        }
        self.buf[self.pos..self.pos + n].copy_from_slice(&src[a..e]);
        self.pos += n;
    }
}

/// The canonicaliser, in two passes. The first ([`Canon::read`]) parses and checks the
/// whole body, writing nothing: it notes each value on a tape of [`Node`]s (a string
/// or number by its input position, a container by where its subtree ends), and a
/// container whose input is already canonical — compact, keys in order, every value
/// canonical as written — becomes one input span. The second ([`Canon::emit`]) writes
/// the canonical form from the tape, each object's members in key order, so every
/// output byte is written once: no object is written in input order and reassembled.
struct Canon<'a, 'm> {
    p: Parser<'a>,
    b: &'a [u8],
    nodes: Vec<Node>,
    /// Members of every object being read, innermost last.
    members: Vec<Member>,
    /// Each object's key nodes in canonical order (see [`Kind::Obj`]).
    order: Vec<usize>,
    side: Vec<u8>,
    /// See [`write_canonical`].
    known: Option<&'m mut ValueMemo<Box<[u8]>>>,
}

impl<'a> Canon<'a, '_> {
    #[inline]
    fn push(&mut self, kind: Kind, a: usize, e: usize) {
        self.nodes.push(Node {
            kind,
            esc: Esc::None,
            a,
            e,
            x: 0,
        });
    }

    /// First pass: the value at the cursor, onto the tape.
    #[allow(clippy::inline_always)] // in both container loops: the call is the cost
    #[inline(always)]
    fn read(&mut self, ctx: Ctx) -> Result<()> {
        let a = self.p.i;
        match self.p.peek() {
            Some(b'"') => {
                self.p.i += 1;
                let s = self.side.len();
                let (close, esc) = self
                    .p
                    .scan_as::<true, false, true>(&mut self.side, &mut String::new())?;
                if esc == Esc::Other {
                    self.push(Kind::Side, s, self.side.len());
                } else {
                    self.push(Kind::Span, a, close + 1);
                }
            }
            Some(b'{') => {
                self.p.enter()?;
                let r = self.read_object(a, ctx);
                self.p.leave();
                r?;
            }
            Some(b'[') => {
                self.p.enter()?;
                let r = self.read_array(a, ctx);
                self.p.leave();
                r?;
            }
            Some(b'n') => {
                self.p.expect(b"null")?;
                self.push(Kind::Null, a, a + 4);
            }
            Some(b't') => {
                self.p.expect(b"true")?;
                self.push(Kind::Span, a, a + 4);
            }
            Some(b'f') => {
                self.p.expect(b"false")?;
                self.push(Kind::Span, a, a + 5);
            }
            _ => {
                // An integer that fits an `i64` is written as the input spells it (the
                // grammar allows no leading zeros or `+`; `-0` parses as a float).
                match self.p.value()? {
                    Value::Int(_) => self.push(Kind::Span, a, self.p.i),
                    v => {
                        let s = self.side.len();
                        write_scalar(&v, &mut self.side);
                        self.push(Kind::Side, s, self.side.len());
                    }
                }
            }
        }
        Ok(())
    }

    /// The canonical length of the node at `i` when it is an input span, else `None`.
    #[inline]
    fn span_len(&self, i: usize) -> Option<usize> {
        let n = &self.nodes[i];
        // (Not `then_some`: a container's `e` is a node index, below its input `a`.)
        if n.kind == Kind::Span || n.kind == Kind::Null {
            Some(n.e - n.a)
        } else {
            None
        }
    }

    /// After a container that began at input `a` and node `at`: make it one input span
    /// when `canonical` (its input is exactly its canonical form), dropping its subtree.
    #[inline]
    fn close_container(&mut self, at: usize, a: usize, canonical: bool) {
        let e = self.p.i;
        if canonical {
            self.nodes.truncate(at + 1);
            self.nodes[at] = Node {
                kind: Kind::Span,
                esc: Esc::None,
                a,
                e,
                x: 0,
            };
        } else {
            self.nodes[at].e = self.nodes.len();
        }
    }

    fn read_array(&mut self, a: usize, ctx: Ctx) -> Result<()> {
        let at = self.nodes.len();
        self.push(Kind::Arr, a, 0);
        let item = if ctx == Ctx::Messages {
            Ctx::Message
        } else {
            Ctx::Other
        };
        // Length of the canonical form if every item is an input span (`None` once one
        // is not, or from the start where the array is rewritten).
        let mut len = (ctx == Ctx::Other).then_some(1usize);
        if !self.p.empty(b']') {
            loop {
                let v = self.nodes.len();
                self.read(item)?;
                if let Some(l) = len {
                    len = self.span_len(v).map(|n| l + n + 1);
                }
                if !self.p.next_or_close(b']')? {
                    break;
                }
            }
        } else if len.is_some() {
            len = Some(2);
        }
        let canonical = len == Some(self.p.i - a);
        self.close_container(at, a, canonical);
        Ok(())
    }

    fn read_object(&mut self, open: usize, ctx: Ctx) -> Result<()> {
        let at = self.nodes.len();
        self.push(Kind::Obj, open, 0);
        let mut len = (ctx == Ctx::Other).then_some(1usize);
        let mut sorted = true;
        let base = self.members.len();
        if !self.p.empty(b'}') {
            loop {
                let (q, close, esc) = self.p.key_span()?;
                let k = self.nodes.len();
                let pfx = if esc == Esc::None {
                    key_prefix(&self.b[q + 1..close], self.b.get(q + 1..))
                } else {
                    self.decoded_prefix(q, close, esc)
                };
                self.nodes.push(Node {
                    kind: Kind::Key,
                    esc,
                    a: q,
                    e: close + 1,
                    x: pfx,
                });
                let m = Member { pfx, k };
                if let Some(last) = self.members[base..].last() {
                    sorted &= self.key_cmp(last, &m) == Ordering::Less;
                }
                self.members.push(m);
                let inner = if ctx == Ctx::Top && self.key_is(k, "messages") {
                    Ctx::Messages
                } else {
                    Ctx::Other
                };
                if ctx == Ctx::Top && self.known.is_some() && self.key_is(k, "tools") {
                    self.read_tools()?;
                } else {
                    self.read(inner)?;
                }
                if let Some(sum) = len {
                    len = match self.span_len(k + 1) {
                        Some(v) if esc != Esc::Other => Some(sum + (close + 1 - q) + v + 2),
                        _ => None,
                    };
                }
                if !self.p.next_or_close(b'}')? {
                    break;
                }
            }
        } else if len.is_some() {
            len = Some(2);
        }
        let canonical = sorted && len == Some(self.p.i - open);
        if canonical {
            self.close_container(at, open, true);
        } else {
            // Sorted here, while the members are at hand, for the second pass to follow.
            if !sorted {
                self.sort_members(base);
            }
            let from = self.order.len();
            self.order.extend(self.members[base..].iter().map(|m| m.k));
            let end = self.nodes.len();
            let to = self.order.len() as u64;
            let n = &mut self.nodes[at];
            (n.a, n.e, n.x) = (from, end, to);
        }
        self.members.truncate(base);
        Ok(())
    }

    /// A top-level `tools` value (see [`write_canonical`]'s `known`): one sent before is
    /// its canonical form, onto the side buffer, and the cursor past it; any other is
    /// read, and an array kept with its canonical form as the second pass will write it.
    fn read_tools(&mut self) -> Result<()> {
        let a = self.p.i;
        if let Some((n, canon)) = self.known.as_deref().and_then(|k| k.find(&self.b[a..])) {
            let s = self.side.len();
            self.side.extend_from_slice(canon);
            self.push(Kind::Side, s, self.side.len());
            self.p.i += n;
            return Ok(());
        }
        let at = self.nodes.len();
        self.read(Ctx::Other)?;
        let raw = &self.b[a..self.p.i];
        if raw.first() == Some(&b'[') && raw.len() <= 1 << 16 {
            // The bound `write_canonical` sizes its output by, for this value alone.
            let mut buf = vec![0; raw.len() + self.side.len() + 16];
            let mut o = Out {
                buf: &mut buf,
                pos: 0,
            };
            self.emit(at, &mut o, Ctx::Other);
            let end = o.pos;
            buf.truncate(end);
            if let Some(known) = self.known.as_deref_mut() {
                known.keep(raw, buf.into_boxed_slice());
            }
        }
        Ok(())
    }

    /// Whether the key at node `k` is `lit`.
    #[allow(clippy::inline_always)] // a compare with a short constant, no call
    #[inline(always)]
    fn key_is(&self, k: usize, lit: &str) -> bool {
        let n = &self.nodes[k];
        if n.esc == Esc::None {
            &self.b[n.a + 1..n.e - 1] == lit.as_bytes()
        } else {
            self.key_text_decoded(k) == lit
        }
    }

    /// The decoded key at node `k`.
    #[inline]
    fn key_text(&self, k: usize) -> std::borrow::Cow<'a, str> {
        let n = &self.nodes[k];
        if n.esc == Esc::None {
            std::borrow::Cow::Borrowed(self.p.text(n.a + 1, n.e - 1))
        } else {
            self.key_text_decoded(k)
        }
    }

    #[inline(never)]
    fn key_text_decoded(&self, k: usize) -> std::borrow::Cow<'a, str> {
        let n = &self.nodes[k];
        self.p.jstr(n.a, n.e - 1, n.esc).text()
    }

    /// Order of decoded key bytes, from the prefixes of [`key_prefix`] when they decide it.
    #[allow(clippy::inline_always)] // per member and per sort step; mostly one compare
    #[inline(always)]
    fn key_cmp(&self, a: &Member, b: &Member) -> Ordering {
        if a.pfx != b.pfx {
            return a.pfx.cmp(&b.pfx);
        }
        let (x, y) = (&self.nodes[a.k], &self.nodes[b.k]);
        if x.esc == Esc::None && y.esc == Esc::None {
            self.b[x.a + 1..x.e - 1].cmp(&self.b[y.a + 1..y.e - 1])
        } else {
            self.key_cmp_decoded(a, b)
        }
    }

    #[inline(never)]
    fn key_cmp_decoded(&self, a: &Member, b: &Member) -> Ordering {
        self.key_text(a.k)
            .as_bytes()
            .cmp(self.key_text(b.k).as_bytes())
    }

    /// [`key_prefix`] of a key with escapes, decoded (cold: keys rarely have escapes).
    #[inline(never)]
    fn decoded_prefix(&self, q: usize, close: usize, esc: Esc) -> u64 {
        let text = self.p.jstr(q, close, esc).text();
        key_prefix(text.as_bytes(), None)
    }

    /// Second pass: write the value at node `i`; the node after its subtree.
    #[allow(clippy::inline_always)] // in every container loop: the call is the cost
    #[inline(always)]
    fn emit(&self, i: usize, out: &mut Out<'_>, ctx: Ctx) -> usize {
        let n = self.nodes[i];
        match n.kind {
            Kind::Span | Kind::Null => out.span(self.b, n.a, n.e),
            Kind::Side => out.span(&self.side, n.a, n.e),
            Kind::Arr => {
                self.emit_array(i, n.e, out, ctx);
                return n.e;
            }
            Kind::Obj => {
                self.emit_object(i, out, ctx);
                return n.e;
            }
            Kind::Key => unreachable!("keys are written by their object"),
        }
        i + 1
    }

    fn emit_array(&self, i: usize, end: usize, out: &mut Out<'_>, ctx: Ctx) {
        let item = if ctx == Ctx::Messages {
            Ctx::Message
        } else {
            Ctx::Other
        };
        out.byte(b'[');
        let mut j = i + 1;
        if j < end {
            loop {
                j = self.emit(j, out, item);
                if j >= end {
                    break;
                }
                out.byte(b',');
            }
        }
        out.byte(b']');
    }

    /// The key at node `k` with its `:`.
    #[allow(clippy::inline_always)] // per member
    #[inline(always)]
    fn emit_key(&self, k: usize, out: &mut Out<'_>) {
        let n = &self.nodes[k];
        if n.esc == Esc::Other {
            let mut key = Vec::new();
            self.p.jstr(n.a, n.e - 1, n.esc).write_json(&mut key);
            out.span(&key, 0, key.len());
            out.byte(b':');
        } else if self.b.get(n.e) == Some(&b':') {
            // Compact input: the colon follows the quote, one copy for both.
            out.span(self.b, n.a, n.e + 1);
        } else {
            out.span(self.b, n.a, n.e);
            out.byte(b':');
        }
    }

    /// The member whose key is node `k`; where its value starts in `out`.
    #[allow(clippy::inline_always)] // per member
    #[inline(always)]
    fn emit_member(&self, k: usize, out: &mut Out<'_>, ctx: Ctx) -> usize {
        let (n, v) = (self.nodes[k], self.nodes[k + 1]);
        if v.kind == Kind::Span && n.esc != Esc::Other && v.a == n.e + 1 {
            // `"key":value` as compact input spells it (the one byte between the key
            // and the value is the colon): one copy.
            let start = out.pos + (v.a - n.a);
            out.span(self.b, n.a, v.e);
            start
        } else {
            self.emit_key(k, out);
            let start = out.pos;
            self.emit(k + 1, out, ctx);
            start
        }
    }

    fn emit_object(&self, i: usize, out: &mut Out<'_>, ctx: Ctx) {
        let Node { a: from, x: to, .. } = self.nodes[i];
        let members = from..to as usize;
        out.byte(b'{');
        match ctx {
            Ctx::Top => self.emit_top_members(members, out),
            Ctx::Message => self.emit_message_members(members, out),
            _ => self.emit_members(members, out),
        }
        out.byte(b'}');
    }

    fn emit_members(&self, members: std::ops::Range<usize>, out: &mut Out<'_>) {
        let mut first = true;
        for &k in &self.order[members] {
            if !first {
                out.byte(b',');
            }
            first = false;
            self.emit_member(k, out, Ctx::Other);
        }
    }

    /// Step 5 on one message's members (`order[members]`).
    fn emit_message_members(&self, members: std::ops::Range<usize>, out: &mut Out<'_>) {
        const HEAD: &[u8] = br#"[{"text":"#;
        const TAIL: &[u8] = br#","type":"text"}]"#;
        let mut first = true;
        for &k in &self.order[members] {
            if self.nodes[k + 1].kind == Kind::Null {
                continue;
            }
            if !first {
                out.byte(b',');
            }
            first = false;
            let start = self.emit_member(k, out, Ctx::Other);
            let v = &out.buf[start..out.pos];
            if v.len() > HEAD.len() + TAIL.len()
                && v.starts_with(HEAD)
                && v.ends_with(TAIL)
                && self.key_is(k, "content")
                && is_one_string(&v[HEAD.len()..v.len() - TAIL.len()])
            {
                // A one-part text list: its string alone.
                let e = out.pos - TAIL.len();
                out.buf.copy_within(start + HEAD.len()..e, start);
                out.pos = e - HEAD.len();
            }
        }
    }

    /// Steps 2–4 on the top-level members (`order[members]`): each is written, then
    /// taken back if its canonical value is the field's default.
    fn emit_top_members(&self, members: std::ops::Range<usize>, out: &mut Out<'_>) {
        let has_tools = self.order[members.clone()].iter().any(|&k| {
            let v = &self.nodes[k + 1];
            let non_empty_array = match v.kind {
                Kind::Arr => v.e > k + 2,
                Kind::Span => self.b[v.a] == b'[' && v.e - v.a > 2,
                Kind::Side => self.side[v.a] == b'[' && v.e - v.a > 2,
                _ => false,
            };
            non_empty_array && self.key_is(k, "tools")
        });
        let mut first = true;
        for &k in &self.order[members] {
            let vn = self.nodes[k + 1];
            if vn.kind == Kind::Null {
                continue;
            }
            let n = &self.nodes[k];
            let rule = if n.esc == Esc::None {
                TopRule::of(&self.b[n.a + 1..n.e - 1])
            } else {
                TopRule::of(self.key_text_decoded(k).as_bytes())
            };
            if rule == TopRule::Transport {
                continue;
            }
            let mark = out.pos;
            if !first {
                out.byte(b',');
            }
            self.emit_key(k, out);
            let wrap = rule == TopRule::Stop
                && match vn.kind {
                    Kind::Span => self.b[vn.a] == b'"',
                    Kind::Side => self.side[vn.a] == b'"',
                    _ => false,
                };
            if wrap {
                out.byte(b'[');
            }
            let inner = if rule == TopRule::Messages {
                Ctx::Messages
            } else {
                Ctx::Other
            };
            let start = out.pos;
            self.emit(k + 1, out, inner);
            let v = &out.buf[start..out.pos];
            let default = match rule {
                TopRule::Default(d) => v == d,
                TopRule::Stop => v == b"[]",
                TopRule::ToolChoice => {
                    v == if has_tools {
                        &br#""auto""#[..]
                    } else {
                        br#""none""#
                    }
                }
                _ => false,
            };
            if default {
                out.pos = mark;
            } else {
                if wrap {
                    out.byte(b']');
                }
                first = false;
            }
        }
    }

    /// [`Canon::sort_members`] of three members (most tool objects and the messages with
    /// a third key) as the insertion sort's three steps, unrolled; `false`, with nothing
    /// moved, when two keys are equal (the general path then keeps the last).
    fn sort_three(&mut self, base: usize) -> bool {
        let [mut x, mut y, mut z] = [
            self.members[base],
            self.members[base + 1],
            self.members[base + 2],
        ];
        match self.key_cmp(&x, &y) {
            Ordering::Equal => return false,
            Ordering::Greater => std::mem::swap(&mut x, &mut y),
            Ordering::Less => {}
        }
        match self.key_cmp(&y, &z) {
            Ordering::Equal => return false,
            Ordering::Greater => {
                std::mem::swap(&mut y, &mut z);
                match self.key_cmp(&x, &y) {
                    Ordering::Equal => return false,
                    Ordering::Greater => std::mem::swap(&mut x, &mut y),
                    Ordering::Less => {}
                }
            }
            Ordering::Less => {}
        }
        self.members[base] = x;
        self.members[base + 1] = y;
        self.members[base + 2] = z;
        true
    }

    /// Sort the members from `base` by key and keep the last of each run of equal keys.
    /// Insertion sort, stable (equal keys stay in input order): objects have a handful of
    /// members, often nearly in order. A key equal to an earlier one stops its insertion
    /// right after it, so that is where repeats are seen.
    fn sort_members(&mut self, base: usize) {
        if self.members.len() == base + 2 {
            // Two members out of order (a `role`, `content` message): one swap, unless
            // the keys are equal, where the last wins.
            let (x, y) = (self.members[base], self.members[base + 1]);
            if self.key_cmp(&x, &y) == Ordering::Equal {
                self.members.truncate(base);
                self.members.push(y);
            } else {
                self.members[base] = y;
                self.members[base + 1] = x;
            }
            return;
        }
        if self.members.len() == base + 3 && self.sort_three(base) {
            return;
        }
        // Out of `self` while sorted: a slice the loop indexes, beside the key data
        // `key_cmp` reads.
        let mut all = std::mem::take(&mut self.members);
        let ms = &mut all[base..];
        let mut repeats = false;
        for i in 1..ms.len() {
            let m = ms[i];
            let mut j = i;
            while j > 0 {
                let o = self.key_cmp(&ms[j - 1], &m);
                if o != Ordering::Greater {
                    repeats |= o == Ordering::Equal;
                    break;
                }
                ms[j] = ms[j - 1];
                j -= 1;
            }
            ms[j] = m;
        }
        self.members = all;
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

/// What steps 2–4 do with a top-level field, by its name (one `match`: the names are
/// tested once per member, not once per rule).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TopRule {
    /// In [`TRANSPORT_FIELDS`]: dropped.
    Transport,
    /// Dropped when its canonical value is these bytes.
    Default(&'static [u8]),
    /// `stop`: dropped when `[]`; a string is written as a one-element array.
    Stop,
    /// `tool_choice`: its default depends on `tools`.
    ToolChoice,
    Messages,
    Plain,
}

impl TopRule {
    fn of(key: &[u8]) -> Self {
        match key {
            b"stream" | b"stream_options" | b"user" | b"metadata" | b"store" | b"service_tier"
            | b"timeout" | b"request_id" | b"idempotency_key" | b"prompt_cache_key"
            | b"safety_identifier" => TopRule::Transport,
            b"temperature" | b"top_p" | b"n" => TopRule::Default(b"1"),
            b"presence_penalty" | b"frequency_penalty" => TopRule::Default(b"0"),
            b"logprobs" => TopRule::Default(b"false"),
            b"parallel_tool_calls" => TopRule::Default(b"true"),
            b"response_format" => TopRule::Default(br#"{"type":"text"}"#),
            b"tools" | b"functions" => TopRule::Default(b"[]"),
            b"logit_bias" => TopRule::Default(b"{}"),
            b"stop" => TopRule::Stop,
            b"tool_choice" => TopRule::ToolChoice,
            b"messages" => TopRule::Messages,
            _ => TopRule::Plain,
        }
    }
}

/// The first eight bytes of the (decoded) key `key`, big-endian, zero-padded: keys
/// whose prefixes differ are ordered as their prefixes (a shorter key's padding sorts
/// before any byte, and where a key's own byte is zero the prefixes do not differ), so
/// most comparisons are one compare of integers. `ahead`: the input from the key's first
/// byte when it is `key` itself, for one eight-byte load in place of a copy.
#[inline]
fn key_prefix(key: &[u8], ahead: Option<&[u8]>) -> u64 {
    let n = key.len().min(8);
    if n == 0 {
        return 0;
    }
    let w = if let Some(w) = ahead.and_then(<[u8]>::first_chunk::<8>) {
        u64::from_be_bytes(*w)
    } else {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(&key[..n]);
        u64::from_be_bytes(w)
    };
    // Keep the key's `n` bytes (the top ones), zero the rest.
    w & (u64::MAX << (8 * (8 - n)))
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
        Value::Int(i) => write_int(i128::from(*i), out),
        Value::UInt(u) => write_f64(*u as f64, out),
        Value::Float(f) => write_f64(*f, out),
        Value::Str(s) => s.write_json(out),
        Value::Arr(_) | Value::Obj(_) => unreachable!("scalars only"),
    }
}

/// 2^63 as f64: integral values in `[-2^63, 2^63)` fit an `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Canonical text of a finite `f64` (see the module documentation).
pub fn format_f64(f: f64) -> String {
    let mut out = Vec::new();
    write_f64(f, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A number as the canonical form writes it (rule 6).
pub(crate) fn write_f64(f: f64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        write_int(i128::from(f as i64), out);
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

/// The tree-building canonicaliser the two-pass one replaced: the oracle of its tests.
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

    /// The rule table names every transport field, and nothing else as one.
    #[test]
    fn transport_rules_match_the_documented_list() {
        for f in TRANSPORT_FIELDS {
            assert!(TopRule::of(f.as_bytes()) == TopRule::Transport, "{f}");
        }
        for f in ["model", "messages", "stop", "tools", "seed", "streams", ""] {
            assert!(TopRule::of(f.as_bytes()) != TopRule::Transport, "{f}");
        }
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
        let mut rng = crate::mutate::XorShift(0x9E37_79B9_7F4A_7C15);
        let mut ints = vec![0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN, 1 << 53];
        let mut floats = vec![0.7, -0.0, 1e20, 1e300, -2.5, 9_223_372_036_854_775_808.0];
        for _ in 0..20_000 {
            let x = rng.next_u64();
            ints.push((x as i64) >> (x % 64));
            let f = f64::from_bits(x);
            if f.is_finite() {
                floats.push(f);
            }
        }
        for i in ints {
            let mut out = Vec::new();
            write_int(i128::from(i), &mut out);
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

    /// The two-pass canonicaliser writes what the tree-building one wrote, on chat
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
        let mut rng = crate::mutate::XorShift(0x5DEE_CE66_D1CE_4E5B);
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..rng.below(6) {
                text.push_str(PIECES[rng.below(PIECES.len())]);
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

    /// A small deterministic generator (xorshift).
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'p>(&mut self, xs: &[&'p str]) -> &'p str {
            xs[self.next(xs.len())]
        }

        /// Whitespace or none (a compact body takes the one-span paths).
        fn ws(&mut self) -> &'static str {
            ["", "", "", " ", "\n "][self.next(5)]
        }

        /// A JSON value, nested up to `depth`: sorted and unsorted objects, repeated
        /// and escaped keys, every string escape class, numbers that need rewriting.
        fn value(&mut self, depth: u32) -> String {
            const LEAVES: &[&str] = &[
                "null",
                "true",
                "false",
                "0",
                "-7",
                "12",
                "1.0",
                "-0",
                "0.5",
                "1e3",
                "18446744073709551615",
                r#""""#,
                r#""x""#,
                r#""a\nb\"c""#,
                r#""\u00e9\/""#,
                r#""\u001f""#,
                r#""\u001F""#,
                r#""é""#,
                r#""text""#,
                r#""auto""#,
            ];
            const KEYS: &[&str] = &[
                "a", "b", "type", "text", "c", "\\u0061", "a\\n", "é", "", "role",
            ];
            let w = self.ws();
            match (depth, self.next(4)) {
                (0, _) | (_, 0) => self.pick(LEAVES).to_string(),
                (_, 1) => {
                    let n = self.next(4);
                    let items: Vec<String> = (0..n).map(|_| self.value(depth - 1)).collect();
                    format!("[{w}{}{w}]", items.join(&format!("{w},")))
                }
                _ => {
                    let n = self.next(5);
                    let mut keys: Vec<&str> = (0..n).map(|_| self.pick(KEYS)).collect();
                    if self.next(2) == 0 {
                        keys.sort_unstable();
                        keys.dedup();
                    }
                    let members: Vec<String> = keys
                        .iter()
                        .map(|k| format!("\"{k}\"{w}:{w}{}", self.value(depth - 1)))
                        .collect();
                    format!("{{{w}{}{w}}}", members.join(","))
                }
            }
        }

        /// A message object: the usual keys and others, in any order, repeated, null,
        /// escaped, with one-part and other content lists.
        fn message(&mut self) -> String {
            const KEYS: &[&str] = &[
                "role",
                "content",
                "name",
                "tool_calls",
                "tool_call_id",
                "\\u0063ontent",
                "x",
                "content",
            ];
            const CONTENT: &[&str] = &[
                r#""hi""#,
                r#""a\n\"q\" \u2014""#,
                "null",
                r#"[{"type":"text","text":"x"}]"#,
                r#"[{"text":"x","type":"text"}]"#,
                r#"[ {"type" : "text", "text" : "y\u00e9"} ]"#,
                r#"[{"type":"text","text":"x"},{"type":"text","text":"y"}]"#,
                r#"[{"type":"text","text":"x","extra":null}]"#,
                r#"[{"type":"text","text":5}]"#,
                r#"[{"type":"image","text":"x"}]"#,
                r#"[{"type":"text","text":"a","text":"b"}]"#,
                "[]",
            ];
            let n = 1 + self.next(5);
            let members: Vec<String> = (0..n)
                .map(|_| {
                    let k = self.pick(KEYS);
                    let v = if k.ends_with("ontent") {
                        self.pick(CONTENT).to_string()
                    } else {
                        self.value(2)
                    };
                    format!("\"{k}\":{}{v}", self.ws())
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }

    /// Generated chat bodies (messages with every key arrangement, nested values sorted
    /// or not, compact or spaced, and top-level fields at and off their defaults)
    /// canonicalise as the tree canonicaliser does.
    #[test]
    fn generated_bodies_match_tree() {
        const TOP: &[&str] = &[
            "\"model\":\"m\"",
            "\"temperature\":1.0",
            "\"temperature\":0.7",
            "\"n\":1",
            "\"stop\":\"x\"",
            "\"stop\":[]",
            "\"tools\":[]",
            "\"tools\":[{\"type\":\"function\"}]",
            "\"tool_choice\":\"auto\"",
            "\"tool_choice\":\"none\"",
            "\"response_format\":{\"type\":\"text\"}",
            "\"response_format\":{ \"type\" : \"text\" }",
            "\"logit_bias\":{}",
            "\"stream\":true",
            "\"user\":null",
            "\"seed\":3",
        ];
        let mut g = Gen(0x1234_5678_9ABC_DEF1);
        for _ in 0..20_000 {
            let n = g.next(6);
            let messages: Vec<String> = (0..n).map(|_| g.message()).collect();
            let mut members = vec![format!("\"messages\":[{}]", messages.join(","))];
            for _ in 0..g.next(4) {
                members.push(g.pick(TOP).to_string());
            }
            if g.next(3) == 0 {
                members.push(format!("\"x\":{}", g.value(4)));
            }
            let at = g.next(members.len());
            members.swap(0, at);
            let body = format!("{{{}}}", members.join(","));
            let ours = canonical_request(body.as_bytes()).unwrap();
            let theirs = tree_canon(body.as_bytes()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{body}"
            );
        }
    }

    /// A body with bytes that are not UTF-8 is refused wherever they sit (the all-ASCII
    /// path must not let them through), and non-ASCII text is kept as it is.
    #[test]
    fn non_ascii_bodies_are_checked() {
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"\xc3\":1}",
            b"{\"a\":1}\xff",
            b"{\"a\":\xe9}",
            b"{\"a\":\"\xed\xa0\x80\"}",
        ] {
            assert!(canonical_request(bad).is_err(), "{bad:?}");
            assert!(request_key(bad, "").is_err(), "{bad:?}");
        }
        let body = "{\"b\":\"é\",\"a\":\"\\u00e9\"}";
        assert_eq!(canon(body), "{\"a\":\"é\",\"b\":\"é\"}");
        assert_eq!(
            canonical_request(body.as_bytes()).unwrap(),
            tree_canon(body.as_bytes()).unwrap()
        );
    }

    /// Two-member objects take a swap, not the insertion sort: out of order, repeated
    /// (the last wins, escaped or not), at every depth and in messages.
    #[test]
    fn two_member_objects() {
        for (body, want) in [
            (r#"{"b":1,"a":2}"#, r#"{"a":2,"b":1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"\u0061":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"a":1,"\u0061":2}"#, r#"{"a":2}"#),
            (
                r#"{"x":{"b":1,"a":{"d":null,"c":[]}}}"#,
                r#"{"x":{"a":{"c":[],"d":null},"b":1}}"#,
            ),
            (
                r#"{"x":{"a":1,"a":{"d":1,"d":2}}}"#,
                r#"{"x":{"a":{"d":2}}}"#,
            ),
            (
                r#"{"abcdefghij":1,"abcdefghi":2}"#,
                r#"{"abcdefghi":2,"abcdefghij":1}"#,
            ),
            (
                r#"{"messages":[{"role":"user","content":"a"},{"content":"b","content":null}]}"#,
                r#"{"messages":[{"content":"a","role":"user"},{}]}"#,
            ),
        ] {
            assert_eq!(canon(body), want, "{body}");
            assert_eq!(
                canonical_request(body.as_bytes()).unwrap(),
                tree_canon(body.as_bytes()).unwrap(),
                "{body}"
            );
        }
    }

    /// Three-member objects take the unrolled sort: every sequence of three keys from a
    /// set with an escaped repeat and a shared eight-byte prefix, at the top, nested and
    /// in a message, canonicalises as the tree canonicaliser does.
    #[test]
    fn three_member_objects() {
        const KEYS: &[&str] = &["a", "b", "\\u0061", "role", "abcdefghij", "abcdefghik"];
        for x in KEYS {
            for y in KEYS {
                for z in KEYS {
                    let obj = format!(r#"{{"{x}":1,"{y}":{{"c":2,"b":null,"a":[]}},"{z}":"v"}}"#);
                    for body in [
                        obj.clone(),
                        format!(r#"{{"x":{obj}}}"#),
                        format!(r#"{{"messages":[{obj},{obj}]}}"#),
                    ] {
                        assert_eq!(
                            canonical_request(body.as_bytes()).unwrap(),
                            tree_canon(body.as_bytes()).unwrap(),
                            "{body}"
                        );
                    }
                }
            }
        }
        assert_eq!(canon(r#"{"c":1,"b":2,"a":3}"#), r#"{"a":3,"b":2,"c":1}"#);
        assert_eq!(canon(r#"{"b":1,"a":2,"b":3}"#), r#"{"a":2,"b":3}"#);
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
    /// Tools sent again are keyed from their kept canonical form: every key equals the
    /// one written afresh, whatever else the body holds and wherever the tools sit.
    #[test]
    fn tools_sent_before_key_as_afresh() {
        const TOOLS: &[&str] = &[
            "[]",
            "[1]",
            r#"[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":[1.0,2,"\u00e9"]}}}]"#,
            r#"[ {"z":null, "y" : [ ] } ]"#,
            r#"[{"type":"function","function":{"name":"g"}}]"#,
            r#"{"not":"an array"}"#,
        ];
        const OTHER: &[&str] = &[
            r#""tool_choice":"auto""#,
            r#""tool_choice":"none""#,
            r#""tools":null"#,
            r#""temperature":1.0"#,
            r#""messages":[{"role":"user","content":"x","name":null}]"#,
        ];
        let fresh = |body: &[u8]| {
            let mut buf = 1u64.to_le_bytes().to_vec();
            buf.push(b't');
            buf.extend_from_slice(&canonical_request(body).unwrap());
            xxh3_128(&buf).to_be_bytes()
        };
        let mut g = Gen(0x0DDB_A11C_AFE0_0001);
        for _ in 0..3000 {
            let mut members = vec![r#""model":"m""#.to_string()];
            for _ in 0..=g.next(2) {
                members.push(format!("\"tools\" : {}", g.pick(TOOLS)));
            }
            for _ in 0..g.next(3) {
                members.push(g.pick(OTHER).to_string());
            }
            let at = g.next(members.len());
            members.swap(0, at);
            let body = format!("{{{}}}", members.join(","));
            assert_eq!(
                request_key(body.as_bytes(), "t").unwrap(),
                fresh(body.as_bytes()),
                "{body}"
            );
            assert_eq!(
                canonical_request(body.as_bytes()).unwrap(),
                tree_canon(body.as_bytes()).unwrap(),
                "{body}"
            );
        }
    }

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
