//! A strict JSON parser for request bodies that keeps every string as the slice of input
//! between its quotes, and notes whether its escapes are already in canonical form.
//!
//! [`crate::hash`] copies such a slice to the canonical output unchanged, and
//! [`crate::tokens`] decodes only the strings it reads; neither pays for decoding and
//! re-escaping the long, escaped message texts that `json.dumps` produces (`\n`, `\"`).
//!
//! The grammar, UTF-8 checks, number range and nesting limit are `serde_json`'s (the
//! unit tests check acceptance against it on random inputs): whitespace is space, tab,
//! CR, LF; strings may hold no raw control character; `\uXXXX` surrogates must pair;
//! a number that overflows `f64` is an error; nesting 128 deep is an error.

use std::borrow::Cow;

use crate::bytemask::string_specials;
use crate::error::{CoreError, Result};

/// Nesting depth `serde_json` refuses (its `remaining_depth` starts at 128).
const MAX_DEPTH: u32 = 128;

/// How the escapes of a string compare with the canonical (`serde_json`) escaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Esc {
    /// No escapes: the raw slice is the text.
    None,
    /// Only `\" \\ \b \f \n \r \t` and lowercase `\u00xx` for the other control
    /// characters: the raw slice is already the canonical form.
    Canonical,
    /// Anything else (`\/`, `\u00e9`, uppercase hex…): decode, then escape again.
    Other,
}

/// A string value or key: the input between the quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JStr<'a> {
    /// The input from the opening quote to the closing one, both included.
    quoted: &'a str,
    esc: Esc,
}

impl<'a> JStr<'a> {
    /// The input between the quotes.
    #[inline]
    pub fn raw(&self) -> &'a str {
        &self.quoted[1..self.quoted.len() - 1]
    }

    #[inline]
    pub fn esc(&self) -> Esc {
        self.esc
    }

    /// The text, decoded (borrowed when the input had no escapes).
    pub fn text(&self) -> Cow<'a, str> {
        if self.esc == Esc::None {
            Cow::Borrowed(self.raw())
        } else {
            Cow::Owned(decode(self.raw()))
        }
    }

    /// Whether the decoded text equals `s`.
    #[allow(clippy::inline_always)]
    // callers test keys against literals: inlined, the
    // compare of a short constant needs no `bcmp` call
    #[inline(always)]
    pub fn is(&self, s: &str) -> bool {
        if self.esc == Esc::None {
            self.raw() == s
        } else {
            self.is_decoded(s)
        }
    }

    #[inline(never)]
    fn is_decoded(&self, s: &str) -> bool {
        decode(self.raw()) == s
    }

    /// Append the canonical JSON form (quoted, escaped as `serde_json` escapes).
    #[inline]
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if self.esc == Esc::Other {
            write_recoded(self.raw(), out);
        } else {
            let q = self.quoted.as_bytes();
            push_span(out, q, 0, q.len());
        }
    }
}

/// One member of an object: the decoded key (for ordering) and the raw key (for output).
#[derive(Clone, Debug, PartialEq)]
pub struct Member<'a> {
    pub key: Cow<'a, str>,
    pub raw_key: JStr<'a>,
    pub value: Value<'a>,
}

/// One JSON value. Object members are sorted by decoded key bytes, duplicates resolved
/// to the last occurrence (as `serde_json::Map` and Python's `json` do).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// Integers that fit an `i64`.
    Int(i64),
    /// Integers above `i64::MAX` (up to `u64::MAX`).
    UInt(u64),
    Float(f64),
    Str(JStr<'a>),
    Arr(Vec<Value<'a>>),
    Obj(Vec<Member<'a>>),
}

impl<'a> Value<'a> {
    /// Parse a whole body (trailing whitespace allowed, nothing else).
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut p = Parser::new(body)?;
        let v = p.value()?;
        p.finish()?;
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Obj(members) => members
                .binary_search_by(|m| m.key.as_bytes().cmp(key.as_bytes()))
                .ok()
                .map(|i| &members[i].value),
            _ => None,
        }
    }

    pub fn as_jstr(&self) -> Option<&JStr<'a>> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is the string `s`.
    pub fn is_str(&self, s: &str) -> bool {
        matches!(self, Value::Str(j) if j.is(s))
    }

    /// Python truthiness (what `obj.get(key) or default` tests), for the readers that
    /// follow the Python parsers' rules.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::UInt(u) => *u != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.raw().is_empty(),
            Value::Arr(a) => !a.is_empty(),
            Value::Obj(m) => !m.is_empty(),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// Parse a body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Value<'_>> {
    let v = Value::parse(body)?;
    if matches!(v, Value::Obj(_)) {
        Ok(v)
    } else {
        Err(CoreError::invalid("request body must be a JSON object"))
    }
}

/// The tokenizer under [`Value::parse`], also driven directly by the canonicaliser in
/// [`crate::hash`] and the token walk in [`crate::tokens`].
pub(crate) struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pub(crate) i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    /// Check UTF-8 and skip leading whitespace.
    pub(crate) fn new(body: &'a [u8]) -> Result<Self> {
        let s = std::str::from_utf8(body)
            .map_err(|e| CoreError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(Self::of_str(s))
    }

    /// [`Parser::new`] without the UTF-8 check's cost for the common all-ASCII body:
    /// ASCII is UTF-8, so such a body needs no `&str` of the whole, and each piece of text
    /// the parser hands out (numbers, strings, [`Parser::text`]) is made from its own
    /// bytes. Not for decoding scans (`D` in [`Parser::scan`]), which read the whole text.
    pub(crate) fn new_ascii_fast(body: &'a [u8]) -> Result<Self> {
        if !body.is_ascii() {
            return Self::new(body);
        }
        let mut p = Parser {
            s: "",
            b: body,
            i: 0,
            depth: MAX_DEPTH,
        };
        p.ws();
        Ok(p)
    }

    /// The text of `b[a..e]` (both at characters the parser read): a slice of the whole
    /// text, or for a parser of [`Parser::new_ascii_fast`], of those bytes (ASCII).
    #[inline]
    fn str_at(&self, a: usize, e: usize) -> &'a str {
        match self.s.get(a..e) {
            Some(t) => t,
            None => std::str::from_utf8(&self.b[a..e]).unwrap_or_default(),
        }
    }

    /// [`Parser::new`] for text already known to be UTF-8.
    pub(crate) fn of_str(s: &'a str) -> Self {
        let mut p = Parser {
            s,
            b: s.as_bytes(),
            i: 0,
            depth: MAX_DEPTH,
        };
        p.ws();
        p
    }

    /// A parser of the same input at byte `i`, for a second pass over a value this one
    /// already checked (its nesting too, so the depth starts afresh).
    pub(crate) fn at(&self, i: usize) -> Self {
        Parser {
            s: self.s,
            b: self.b,
            i,
            depth: MAX_DEPTH,
        }
    }

    /// After the top-level value: only whitespace may follow.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.err("trailing characters"))
        }
    }

    pub(crate) fn err(&self, what: &str) -> CoreError {
        CoreError::invalid(format!("invalid JSON body: {what} at byte {}", self.i))
    }

    /// Enter an array or object at its opening bracket (checks the nesting limit).
    #[inline]
    pub(crate) fn enter(&mut self) -> Result<()> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(self.too_deep());
        }
        self.i += 1;
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> CoreError {
        self.err("recursion limit exceeded")
    }

    #[inline]
    pub(crate) fn leave(&mut self) {
        self.depth += 1;
    }

    /// After a member or item: `true` past a `,`, `false` past the closing `close`.
    #[inline]
    pub(crate) fn next_or_close(&mut self, close: u8) -> Result<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            None => Err(self.err("EOF while parsing a list or object")),
            Some(_) => Err(self.err("expected `,` or a closing bracket")),
        }
    }

    /// At an object: `f(self, key)` per member with the cursor at its value (which `f`
    /// must consume); `None` when the value is not an object or `f` gives `None`. The
    /// readers that walk a body without building it (request.rs, turn.rs) read with it.
    #[inline]
    pub(crate) fn each_member(
        &mut self,
        mut f: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<()> {
        if self.peek() != Some(b'{') {
            return None;
        }
        self.enter().ok()?;
        if !self.empty(b'}') {
            loop {
                let key = self.key().ok()?;
                f(self, &key.text())?;
                if !self.next_or_close(b'}').ok()? {
                    break;
                }
            }
        }
        self.leave();
        Some(())
    }

    /// At an array: `f(self)` per item; `None` when the value is not an array or `f`
    /// gives `None`.
    #[inline]
    pub(crate) fn each_item(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.peek() != Some(b'[') {
            return None;
        }
        self.enter().ok()?;
        if !self.empty(b']') {
            loop {
                f(self)?;
                if !self.next_or_close(b']').ok()? {
                    break;
                }
            }
        }
        self.leave();
        Some(())
    }

    /// At a key: the key, then past the `:` and whitespace.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<JStr<'a>> {
        let (q, close, esc) = self.key_span()?;
        Ok(self.jstr(q, close, esc))
    }

    /// [`Parser::key`] as input positions: the key's opening and closing quotes and its
    /// escape class (no `&str` slicing, no `JStr` built, for callers that need neither).
    #[allow(clippy::inline_always)] // per member: the call would cost more than the scan
    #[inline(always)]
    pub(crate) fn key_span(&mut self) -> Result<(usize, usize, Esc)> {
        let q = self.i;
        match self.peek() {
            Some(b'"') => self.i += 1,
            None => return Err(self.err("EOF while parsing an object")),
            Some(_) => return Err(self.err("key must be a string")),
        }
        let (close, esc) = self.scan::<false, false>(&mut Vec::new(), &mut String::new())?;
        // Compact JSON puts the colon right after the quote.
        if self.b.get(close + 1) == Some(&b':') {
            self.i = close + 2;
        } else {
            self.ws();
            match self.peek() {
                Some(b':') => self.i += 1,
                None => return Err(self.err("EOF while parsing an object")),
                Some(_) => return Err(self.err("expected `:`")),
            }
        }
        self.ws();
        Ok((q, close, esc))
    }

    /// The whole input.
    #[inline]
    pub(crate) fn input(&self) -> &'a [u8] {
        self.b
    }

    /// The input between `a` and `e` (both at characters the parser read).
    #[inline]
    pub(crate) fn text(&self, a: usize, e: usize) -> &'a str {
        self.str_at(a, e)
    }

    /// The string between the quotes at `q` and `close` (as [`Parser::key_span`] gave them).
    #[inline]
    pub(crate) fn jstr(&self, q: usize, close: usize, esc: Esc) -> JStr<'a> {
        JStr {
            quoted: self.str_at(q, close + 1),
            esc,
        }
    }

    /// After an opening bracket: whether the container is empty (and if so, past it).
    #[inline]
    pub(crate) fn empty(&mut self, close: u8) -> bool {
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Past the literal `word` at the cursor.
    #[inline]
    pub(crate) fn expect(&mut self, word: &[u8]) -> Result<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected value"))
        }
    }

    /// Past the value at the cursor, checked as [`Value::parse`] checks it, nothing built.
    pub(crate) fn skip(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string().map(|_| ())
            }
            Some(b'[') => {
                self.enter()?;
                if !self.empty(b']') {
                    loop {
                        self.skip()?;
                        if !self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                self.leave();
                Ok(())
            }
            Some(b'{') => {
                self.enter()?;
                if !self.empty(b'}') {
                    loop {
                        self.key()?;
                        self.skip()?;
                        if !self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
                self.leave();
                Ok(())
            }
            _ => self.value().map(|_| ()),
        }
    }

    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn literal(&mut self, word: &[u8], v: Value<'a>) -> Result<Value<'a>> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("expected value"))
        }
    }

    /// The value at the cursor, built.
    pub(crate) fn value(&mut self) -> Result<Value<'a>> {
        match self.peek() {
            None => Err(self.err("EOF while parsing a value")),
            Some(b'"') => {
                self.i += 1;
                Ok(Value::Str(self.string()?))
            }
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected value")),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Value<'a>>) -> Result<Value<'a>> {
        self.enter()?;
        let v = f(self);
        self.leave();
        v
    }

    fn array(&mut self) -> Result<Value<'a>> {
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Arr(items));
                }
                None => return Err(self.err("EOF while parsing a list")),
                Some(_) => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self) -> Result<Value<'a>> {
        let mut members: Vec<Member<'a>> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Obj(members));
        }
        let mut sorted = true;
        loop {
            let raw_key = self.key()?;
            let value = self.value()?;
            let key = raw_key.text();
            if let Some(last) = members.last() {
                sorted &= last.key.as_bytes() < key.as_bytes();
            }
            members.push(Member {
                key,
                raw_key,
                value,
            });
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                None => return Err(self.err("EOF while parsing an object")),
                Some(_) => return Err(self.err("expected `,` or `}`")),
            }
        }
        if !sorted {
            // Stable sort keeps equal keys in input order; keep the last of each run.
            members.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
            members.dedup_by(|later, earlier| {
                if later.key == earlier.key {
                    std::mem::swap(later, earlier);
                    true
                } else {
                    false
                }
            });
        }
        Ok(Value::Obj(members))
    }

    /// After the opening quote: up to and past the closing one.
    #[inline]
    pub(crate) fn string(&mut self) -> Result<JStr<'a>> {
        let start = self.i;
        let (close, esc) = self.scan::<false, false>(&mut Vec::new(), &mut String::new())?;
        Ok(JStr {
            quoted: self.str_at(start - 1, close + 1),
            esc,
        })
    }

    /// After the opening quote: past the closing one; its index and the escape class.
    /// With `W`, the canonical form (quotes included) is appended to `out`. With `D`, a
    /// string with escapes is decoded into `dec` (cleared first) in the same pass, so the
    /// token walk does not search the text for its backslashes a second time; `dec` is
    /// left alone for a string without escapes (its raw text is the text).
    ///
    /// Sixteen bytes at a time, looking for a quote, a backslash or a control character
    /// at once (one pass, no call: the runs between escapes in message texts are a few
    /// dozen bytes, where a `memchr` call and a second pass for control characters cost
    /// more than the scan); escapes within a window are stepped over without loading it
    /// again, and a canonical one costs no more than a test.
    #[allow(clippy::inline_always)] // one copy per caller kind; the scan is their hot loop
    #[inline(always)]
    pub(crate) fn scan<const W: bool, const D: bool>(
        &mut self,
        out: &mut Vec<u8>,
        dec: &mut String,
    ) -> Result<(usize, Esc)> {
        self.scan_as::<W, D, false>(out, dec)
    }

    /// [`Parser::scan`]; with `L` (and `W`), the canonical form is written only for a
    /// string whose class is [`Esc::Other`] (for the others the input between the quotes
    /// is that form), in the same single pass: nothing is written until the first escape
    /// to rewrite, which writes the text before it.
    #[allow(clippy::inline_always)] // one copy per caller kind; the scan is their hot loop
    #[inline(always)]
    pub(crate) fn scan_as<const W: bool, const D: bool, const L: bool>(
        &mut self,
        out: &mut Vec<u8>,
        dec: &mut String,
    ) -> Result<(usize, Esc)> {
        let bytes = self.b;
        let mut run = self.i - 1; // output not yet written, from the opening quote
        let mut drun = self.i; // text not yet decoded
        if D {
            dec.clear();
        }
        let mut i = self.i;
        let mut esc = Esc::None;
        // Most keys and many values are a few plain bytes: their closing quote is the
        // first byte the loop below would stop at, in the first sixteen. A first sixteen
        // with no such byte is stepped over here, not tested again.
        if let Some(c) = bytes.get(i..).and_then(<[u8]>::first_chunk::<16>) {
            let m = string_specials(c);
            if m == 0 {
                i = if W { skip_plain(bytes, i + 16) } else { i + 16 };
            } else if c[m.trailing_zeros() as usize] == b'"' {
                let close = i + m.trailing_zeros() as usize;
                if W && !L {
                    push_span(out, bytes, run, close + 1);
                }
                self.i = close + 1;
                return Ok((close, esc));
            }
        }
        loop {
            let (mut m, width) = if let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk) {
                let m = string_specials(chunk);
                if W && m == 0 {
                    // A long run (values only: keys are short, and the token walk has its
                    // own costs).
                    i = skip_plain(bytes, i + 16);
                    continue;
                }
                (m, 16)
            } else {
                // The tail, a byte at a time (bits as in `string_specials`).
                let mut m = 0u32;
                for (j, &c) in bytes[i..].iter().enumerate() {
                    if c == b'"' || c == b'\\' || c < 0x20 {
                        m |= 1 << j;
                    }
                }
                if m == 0 {
                    self.i = bytes.len();
                    return Err(self.err("EOF while parsing a string"));
                }
                (m, bytes.len() - i)
            };
            let mut next = i + width;
            while m != 0 {
                let k = i + m.trailing_zeros() as usize;
                match bytes[k] {
                    b'"' => {
                        self.i = k + 1;
                        if W && (!L || esc == Esc::Other) {
                            push_span(out, bytes, run, k + 1);
                        }
                        if D && esc != Esc::None {
                            dec.push_str(&self.s[drun..k]);
                        }
                        return Ok((k, esc));
                    }
                    b'\\' => {
                        let after = if matches!(
                            bytes.get(k + 1),
                            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't')
                        ) {
                            if esc == Esc::None {
                                esc = Esc::Canonical;
                            }
                            if D {
                                dec.push_str(&self.s[drun..k]);
                                dec.push(short_escape(bytes[k + 1]));
                                drun = k + 2;
                            }
                            k + 2
                        } else {
                            self.long_escape::<W, D>(k, &mut esc, out, dec, &mut run, &mut drun)?
                        };
                        if after >= i + width {
                            next = after;
                            break;
                        }
                        m &= !((1u32 << (after - i)) - 1);
                    }
                    _ => {
                        self.i = k;
                        return Err(self.err("control character in string"));
                    }
                }
            }
            i = next;
        }
    }

    /// [`Parser::scan`] at a backslash at `k` that is not a two-byte canonical escape:
    /// past it (the position after it), its canonical form written (`W`) or its
    /// character decoded (`D`) with the text before it.
    #[allow(clippy::inline_always)] // per escaped character of non-ASCII text
    #[inline(always)]
    fn long_escape<const W: bool, const D: bool>(
        &mut self,
        k: usize,
        esc: &mut Esc,
        out: &mut Vec<u8>,
        dec: &mut String,
        run: &mut usize,
        drun: &mut usize,
    ) -> Result<usize> {
        let bytes = self.b;
        if let Some(c) = plain_unicode_escape(bytes, k) {
            // `\uXXXX` of a character written as itself: never canonical.
            *esc = Esc::Other;
            if W {
                push_span(out, bytes, *run, k);
                // All four bytes stored, the surplus cut off: a fixed-size store, where
                // a copy of the encoded length is a `memcpy` call.
                let mut utf8 = [0u8; 4];
                let n = c.encode_utf8(&mut utf8).len();
                let len = out.len();
                out.extend_from_slice(&utf8);
                out.truncate(len + n);
                *run = k + 6;
            }
            if D {
                dec.push_str(&self.s[*drun..k]);
                dec.push(c);
                *drun = k + 6;
            }
            return Ok(k + 6);
        }
        self.i = k;
        let canonical = self.escape()?;
        if !canonical {
            *esc = Esc::Other;
            if W {
                push_span(out, bytes, *run, k);
                *run = self.i;
                recode_escape(&bytes[k..*run], out);
            }
        } else if *esc == Esc::None {
            *esc = Esc::Canonical;
        }
        if D {
            dec.push_str(&self.s[*drun..k]);
            *drun = self.i;
            decode_escape(&bytes[k..], dec);
        }
        Ok(self.i)
    }

    /// At a backslash: check one escape, move past it; whether it is canonical.
    fn escape(&mut self) -> Result<bool> {
        self.i += 1;
        let Some(c) = self.peek() else {
            return Err(self.err("EOF while parsing a string"));
        };
        self.i += 1;
        match c {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(true),
            b'/' => Ok(false),
            b'u' => {
                let hex = self.hex4()?;
                let canonical = hex < 0x20
                    && !matches!(hex, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                    && !self.b[self.i - 4..self.i]
                        .iter()
                        .any(u8::is_ascii_uppercase);
                match hex {
                    0xD800..=0xDBFF => {
                        if self.b[self.i..].starts_with(b"\\u") {
                            self.i += 2;
                            let low = self.hex4()?;
                            if (0xDC00..=0xDFFF).contains(&low) {
                                return Ok(false);
                            }
                        }
                        Err(self.err("lone leading surrogate in hex escape"))
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone trailing surrogate in hex escape")),
                    _ => Ok(canonical),
                }
            }
            _ => Err(self.err("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let Some(h) = self.b.get(self.i..self.i + 4) else {
            self.i = self.b.len();
            return Err(self.err("EOF while parsing a string"));
        };
        let mut v = 0;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.err("invalid escape")),
            };
            v = v * 16 + u32::from(d);
        }
        self.i += 4;
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Value<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.err("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            None => return Err(self.err("EOF while parsing a value")),
            Some(_) => return Err(self.err("invalid number")),
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
            float = true;
        }
        if !float {
            if let Some(u) = decimal_u64(&self.b[int_start..int_end]) {
                return Ok(if !negative {
                    i64::try_from(u).map_or(Value::UInt(u), Value::Int)
                } else if u == 0 {
                    Value::Float(-0.0)
                } else if u <= 1 << 63 {
                    Value::Int((u as i64).wrapping_neg())
                } else {
                    Value::Float(-(u as f64))
                });
            }
        }
        let f: f64 = self
            .str_at(start, self.i)
            .parse()
            .map_err(|_| self.err("invalid number"))?;
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(self.err("number out of range"))
        }
    }
}

/// The value of ASCII decimal digits (as the grammar accepted them), `None` past
/// `u64::MAX` (what `str::parse::<u64>` gives, without its call).
#[inline]
fn decimal_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &d| {
        v.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The character of the `\\uXXXX` escape at `b[k]` when it is one `serde_json` writes
/// as itself (from U+0020, not `"` or `\\`, not a surrogate), else `None` (the checked
/// path then reads it, and reports what is wrong with it). Non-ASCII text encoded by
/// `json.dumps` is all such escapes, one per character.
#[inline]
fn plain_unicode_escape(bytes: &[u8], k: usize) -> Option<char> {
    let esc = bytes.get(k + 1..)?.first_chunk::<5>()?;
    if esc[0] != b'u' {
        return None;
    }
    let digit = |i: usize| u32::from(HEX_DIGIT[usize::from(esc[i])]);
    let digits = [digit(1), digit(2), digit(3), digit(4)];
    if digits.iter().any(|&v| v > 0xF) {
        return None;
    }
    let cp = digits[0] << 12 | digits[1] << 8 | digits[2] << 4 | digits[3];
    if cp < 0x20 || cp == 0x22 || cp == 0x5C {
        return None;
    }
    char::from_u32(cp) // `None` for a surrogate
}

/// The value of each hexadecimal digit; 0xFF for any other byte.
const HEX_DIGIT: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => c as u8 - b'a' + 10,
            b'A'..=b'F' => c as u8 - b'A' + 10,
            _ => 0xFF,
        };
        c += 1;
    }
    t
};

/// From `i`, past every thirty-two bytes that hold no byte [`string_specials`] stops at.
#[allow(clippy::inline_always)] // the scan's inner loop
#[inline(always)]
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    while let Some(c) = bytes.get(i..).and_then(<[u8]>::first_chunk::<32>) {
        let (a, b) = c.split_at(16);
        if string_specials(a.try_into().expect("16")) | string_specials(b.try_into().expect("16"))
            != 0
        {
            break;
        }
        i += 32;
    }
    i
}

/// Append `b[a..e]`. A span of at most sixteen bytes with sixteen readable bytes from
/// `a` goes as one fixed-size copy, then the surplus is cut off: keys and short values
/// are most spans, and a `memcpy` call costs more than the copy.
#[allow(clippy::inline_always)] // per key and string; a call costs as much as the copy
#[inline(always)]
pub(crate) fn push_span(out: &mut Vec<u8>, b: &[u8], a: usize, e: usize) {
    let n = e - a;
    if n <= 16 {
        if let Some(w) = b.get(a..).and_then(<[u8]>::first_chunk::<16>) {
            let len = out.len();
            out.extend_from_slice(w);
            out.truncate(len + n);
            return;
        }
    }
    out.extend_from_slice(&b[a..e]);
}

/// Position of the first backslash: the first sixteen bytes eight at a time (escapes in
/// message texts are often a few bytes apart, where a `memchr` call costs more than the
/// search), then `memchr`.
#[inline]
fn find_backslash(b: &[u8]) -> Option<usize> {
    let head = b.len().min(16);
    let mut chunks = b[..head].chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let s = u64::from_le_bytes(w) ^ (LO * u64::from(b'\\'));
        let m = s.wrapping_sub(LO) & !s & HI;
        if m != 0 {
            return Some(n * 8 + m.trailing_zeros() as usize / 8);
        }
    }
    let tail = chunks.remainder();
    if let Some(p) = tail.iter().position(|&c| c == b'\\') {
        return Some(head - tail.len() + p);
    }
    memchr::memchr(b'\\', &b[head..]).map(|p| head + p)
}

/// Append the canonical JSON form of a string whose raw inside (accepted by the parser)
/// has escapes `serde_json` would not write: canonical escapes are copied, `\/` becomes
/// `/`, and each `\uXXXX` (or surrogate pair) becomes its character, escaped again only
/// if `serde_json` escapes it. Equivalent to `write_escaped(&decode(raw))` in one pass.
fn write_recoded(raw: &str, out: &mut Vec<u8>) {
    out.reserve(raw.len() + 2);
    out.push(b'"');
    recode_into(raw.as_bytes(), out);
    out.push(b'"');
}

/// [`write_recoded`] without the quotes, of any run of whole characters and escapes.
fn recode_into(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(k) = find_backslash(&b[i..]) {
        out.extend_from_slice(&b[i..i + k]);
        i += k;
        i += recode_escape(&b[i..], out);
    }
    out.extend_from_slice(&b[i..]);
}

/// Write the canonical form of the one escape `b` starts with (a backslash the parser
/// accepted), as [`recode_into`] writes it; its length in the input. The scanner calls
/// this per non-canonical escape, with no search for the next one.
pub(crate) fn recode_escape(b: &[u8], out: &mut Vec<u8>) -> usize {
    match b[1] {
        b'/' => {
            out.push(b'/');
            2
        }
        b'u' => {
            let (cp, n) = unicode_escape(b);
            match cp {
                // Lossless: the arm only takes code points below 0x80.
                #[allow(clippy::cast_possible_truncation)]
                0..=0x1f | 0x22 | 0x5c => crate::json::push_escaped_ascii(cp as u8, out),
                _ => {
                    let c = char::from_u32(cp).unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
            n
        }
        // `\"`, `\\` and the short control escapes are already canonical.
        _ => {
            out.extend_from_slice(&b[..2]);
            2
        }
    }
}

/// Decode the raw inside of a string the parser accepted.
fn decode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    decode_into(raw, &mut out);
    out
}

/// [`decode`] appending to `out` (a caller decoding many strings reuses one buffer).
pub(crate) fn decode_into(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    out.reserve(raw.len());
    let mut i = 0;
    while let Some(k) = find_backslash(&b[i..]) {
        out.push_str(&raw[i..i + k]);
        i += k;
        i += decode_escape(&b[i..], out);
    }
    out.push_str(&raw[i..]);
}

/// The character of the two-byte escape whose second byte is `c` (`"`, `\\`, `b`, `f`,
/// `n`, `r` or `t`).
#[allow(clippy::inline_always)] // per escape in the decoding scan: a call costs more
#[inline(always)]
fn short_escape(c: u8) -> char {
    match c {
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        c => char::from(c),
    }
}

/// Push the character of the one escape `b` starts with (a backslash the parser
/// accepted); its length in the input.
#[inline]
fn decode_escape(b: &[u8], out: &mut String) -> usize {
    match b[1] {
        b'b' => out.push('\u{8}'),
        b'f' => out.push('\u{c}'),
        b'n' => out.push('\n'),
        b'r' => out.push('\r'),
        b't' => out.push('\t'),
        b'u' => {
            let (cp, n) = unicode_escape(b);
            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
            return n;
        }
        other => out.push(char::from(other)), // `"`, `\`, `/`
    }
    2
}

/// The code point of a validated `\uXXXX` escape at `b[0]` (a surrogate pair taking
/// two escapes) and the number of bytes it spans.
#[inline]
fn unicode_escape(b: &[u8]) -> (u32, usize) {
    let cp = hex(&b[2..6]);
    if (0xD800..0xDC00).contains(&cp) {
        let low = hex(&b[8..12]);
        (0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00), 12)
    } else {
        (cp, 6)
    }
}

fn hex(h: &[u8]) -> u32 {
    h.iter().fold(0, |v, &c| {
        v * 16
            + u32::from(match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => c - b'A' + 10,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(v: &'a Value<'a>) -> &'a JStr<'a> {
        v.as_jstr().unwrap()
    }

    #[test]
    fn strings_keep_their_raw_form() {
        let v = Value::parse(br#"{"b":"x","a":"y\n\"\u001f","c":"\/\u00e9\ud83d\ude00","b":"z"}"#)
            .unwrap();
        let Value::Obj(m) = &v else { panic!() };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].key, "a");
        assert_eq!(s(&m[0].value).esc(), Esc::Canonical);
        assert_eq!(s(&m[0].value).text(), "y\n\"\u{1f}");
        assert_eq!(s(&m[1].value).raw(), "z");
        assert_eq!(s(&m[2].value).esc(), Esc::Other);
        assert_eq!(s(&m[2].value).text(), "/é😀");
        for (input, canonical) in [
            (r#""\u001F""#, false),
            (r#""\u000a""#, false),
            (r#""\u0041""#, false),
            (r#""\u007f""#, false),
            (r#""\u0000\b\f""#, true),
        ] {
            let v = Value::parse(input.as_bytes()).unwrap();
            assert_eq!(s(&v).esc() == Esc::Canonical, canonical, "{input}");
            let mut out = Vec::new();
            s(&v).write_json(&mut out);
            let text: String = serde_json::from_slice(input.as_bytes()).unwrap();
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{input}");
        }
    }

    /// The one-pass recoder writes what decoding and escaping again write.
    #[test]
    fn recoding_matches_decode_then_escape() {
        const PIECES: &[&str] = &[
            "a",
            "\\/",
            "\\u00e9",
            "\\u0022",
            "\\u005C",
            "\\u001F",
            "\\u000a",
            "\\u0008",
            "\\u000C",
            "\\u000d",
            "\\u0009",
            "\\u007f",
            "\\ud83d\\ude00",
            "\\n",
            "\\\"",
            "\\\\",
            "\\t",
            "\\u0000",
            "\\u2014",
            "é",
            " x ",
        ];
        let mut rng = crate::mutate::XorShift(0x1234_5678_9ABC_DEF1);
        for _ in 0..5_000 {
            let mut s = String::from("\"");
            for _ in 0..rng.below(7) {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
            s.push('"');
            let v = Value::parse(s.as_bytes()).unwrap();
            let j = v.as_jstr().unwrap();
            let mut ours = Vec::new();
            write_recoded(j.raw(), &mut ours);
            let mut theirs = Vec::new();
            crate::json::write_escaped(&decode(j.raw()), &mut theirs);
            assert_eq!(ours, theirs, "{s}");
            let mut written = Vec::new();
            j.write_json(&mut written);
            assert_eq!(written, theirs, "{s}");
        }
    }

    /// The sixteen-byte window scan agrees with `serde_json` and with the escape classes
    /// of a byte-at-a-time reading, with every escape (and a bad one, a control character
    /// and the end of input) at every offset across two window edges.
    #[test]
    fn window_scan_at_every_offset() {
        for piece in [
            r#"\""#,
            r"\\",
            r"\n",
            r"\t",
            r"\b",
            r"\/",
            r"\u00e9",
            r"\u001f",
            r"\ud83d\ude00",
            "é",
            "\u{1}",
            r"\x",
            r"\u12",
            "",
        ] {
            for pad in 0..40 {
                for tail in [0, 1, 17] {
                    let body = format!("\"{}{piece}{}\"", "a".repeat(pad), "z".repeat(tail));
                    let ours = Value::parse(body.as_bytes());
                    let theirs = serde_json::from_str::<String>(&body);
                    assert_eq!(ours.is_ok(), theirs.is_ok(), "{body:?}");
                    let Ok(v) = ours else { continue };
                    let j = *v.as_jstr().unwrap();
                    let theirs = theirs.unwrap();
                    assert_eq!(j.text(), theirs, "{body:?}");
                    // The scan that decodes as it reads gives the same text.
                    let mut p = Parser::new(body.as_bytes()).unwrap();
                    p.i += 1;
                    let mut dec = String::from("stale");
                    let (close, esc) = p.scan::<false, true>(&mut Vec::new(), &mut dec).unwrap();
                    let text = if esc == Esc::None {
                        p.text(1, close)
                    } else {
                        &dec
                    };
                    assert_eq!(text, theirs, "{body:?}");
                    let expected = if !piece.starts_with('\\') {
                        Esc::None
                    } else if matches!(piece, r"\/" | r"\u00e9" | r"\ud83d\ude00") {
                        Esc::Other
                    } else {
                        Esc::Canonical
                    };
                    assert_eq!(j.esc(), expected, "{body:?}");
                    let unterminated = &body[..body.len() - 1];
                    assert!(Value::parse(unterminated.as_bytes()).is_err(), "{body:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_like_serde_json() {
        for (input, v) in [
            ("0", Value::Int(0)),
            ("-0", Value::Float(-0.0)),
            ("-9223372036854775808", Value::Int(i64::MIN)),
            ("9223372036854775808", Value::UInt(1 << 63)),
            (
                "-9223372036854775809",
                Value::Float(-9_223_372_036_854_775_809.0),
            ),
            (
                "18446744073709551616",
                Value::Float(18_446_744_073_709_551_616.0),
            ),
            ("1.5e3", Value::Float(1500.0)),
            ("1E-400", Value::Float(0.0)),
        ] {
            assert_eq!(Value::parse(input.as_bytes()).unwrap(), v, "{input}");
        }
        for bad in [
            "01", "1.", "-", "1e", "1e+", ".5", "1e400", "-1e400", "+1", "1x",
        ] {
            assert!(Value::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_limit_is_serde_jsons() {
        for depth in [126, 127, 128, 129] {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                Value::parse(body.as_bytes()).is_ok(),
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                "{depth}"
            );
        }
        let err = Value::parse("[".repeat(100_000).as_bytes()).unwrap_err();
        assert!(err.message.contains("recursion"));
    }

    /// The parser of an all-ASCII body (no whole-text `&str`) reads every body as the
    /// checked one does: the same values, the same failures.
    #[test]
    fn ascii_fast_parser_reads_as_the_checked_one() {
        const SEEDS: &[&str] = &[
            r#"{"a":[1,-2.5e3,true,false,null,{"b":"c\n\"\\\/\u00e9\ud83d\ude00"}],"d":{}}"#,
            "[0, -0, 1e5, 1E-5, 123456789012345678901234567890, 18446744073709551615, \"\\t\"]",
        ];
        let bodies = crate::mutate::mutated_bodies(
            SEEDS,
            20_000,
            0x2545_F491_4F6C_DD1D,
            crate::mutate::PARSER_ALPHABET,
        );
        for (_, body) in bodies {
            let theirs = Value::parse(&body);
            let ours = Parser::new_ascii_fast(&body).and_then(|mut p| {
                let v = p.value()?;
                p.finish()?;
                Ok(v)
            });
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&body)),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "{:?}: {ours:?} vs {theirs:?}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
    }

    /// Acceptance agrees with `serde_json` on random mutations of valid bodies.
    #[test]
    fn accepts_what_serde_json_accepts() {
        const SEEDS: &[&str] = &[
            r#"{"a":[1,-2.5e3,true,false,null,{"b":"c\n\"\\\/\u00e9\ud83d\ude00"}],"d":{}}"#,
            r#"{"messages":[{"role":"user","content":"hi\u0000"}], "n": 1 , "x":[ ] }"#,
            "[0, -0, 1e5, 1E-5, 123456789012345678901234567890, \"\\t\"]",
        ];
        let bodies = crate::mutate::mutated_bodies(
            SEEDS,
            20_000,
            0x9E37_79B9_7F4A_7C15,
            crate::mutate::PARSER_ALPHABET,
        );
        for (_, body) in bodies {
            let ours = Value::parse(&body);
            let theirs = serde_json::from_slice::<serde_json::Value>(&body);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{:?}: {ours:?} vs {theirs:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
