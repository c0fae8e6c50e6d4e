//! Request features of the quality classifier (issue 6): the same code computes them
//! when a model is trained (through `features_batch` in the bindings) and when a request
//! is scored, so training and serving cannot drift apart.
//!
//! # The document
//! A chat-completions body becomes a [`Doc`]: the text of every message (a string
//! `content`, or the `text` of each content part) joined with `\n`, then for each tool
//! definition `\n` + `function.name` + ` ` + `function.description`; plus the number of
//! tools, of messages, and whether `response_format.type` is `json_schema`. A plain
//! text (a data-set prompt) is a document of one message, no tools, no schema.
//!
//! # Hashed n-grams (indices `0 .. dim`)
//! * Words: the text's bytes with ASCII `A-Z` lowered; a word is a maximal run of bytes
//!   that are neither ASCII whitespace nor ASCII punctuation (so every non-ASCII
//!   character belongs to a word). Unigram hash `h = mix(fnv1a64(word, basis ^ seed))`
//!   (FNV-1a 64, offset basis `0xcbf29ce484222325` xor the seed); for `word_ngrams >= 2`,
//!   each adjacent pair hashes as `mix(h_prev · GOLDEN ^ h ^ seed ^ 1)`.
//! * Characters: over the last `char_window` bytes of the lowered text (all of it when
//!   0), every byte n-gram with `char_min <= n <= char_max <= 8`, read as a
//!   little-endian integer `g`, hashes as `mix(g ^ mix(seed ^ (0x100 + n)))`.
//! * `mix` is murmur3's 64-bit finaliser, `GOLDEN = 0x9E3779B97F4A7C15`, arithmetic
//!   wraps at 2^64; a hash `h` falls in bucket `((h >> 32) · dim) >> 32` (no division).
//! * Each occurrence adds `1 / sqrt(occurrences in its block)` (words and characters
//!   are separate blocks), so a block's vector has a norm near 1 whatever the length.
//!
//! # Structure features (indices `dim .. dim + STRUCTURE.len()`)
//! In the order of [`STRUCTURE`]; `ln` is the natural log, chars are Unicode scalar
//! values, digits and letters ASCII.
//!
//! | name | value |
//! |------|-------|
//! | `log_chars` | `ln(1 + chars) / 8` |
//! | `log_words` | `ln(1 + words) / 7` |
//! | `code_block` | 1 if the text holds a triple backtick |
//! | `numbers` | `ln(1 + maximal runs of ASCII digits) / 5` |
//! | `digit_share` | ASCII digits / chars |
//! | `questions` | `ln(1 + count of '?') / 3` |
//! | `lines` | `ln(1 + count of '\n') / 6` |
//! | `non_ascii_share` | non-ASCII chars / chars (a language signal) |
//! | `upper_share` | ASCII upper-case letters / ASCII letters |
//! | `json_schema` | 1 if `response_format.type == "json_schema"` |
//! | `tools` | `ln(1 + tools) / 2` |
//! | `messages` | `ln(1 + messages) / 3` |
//!
//! Shares of an empty text are 0.

use serde_json::Value;

use crate::error::{CoreError, Result};

/// Names of the structure features, in index order after the hashed block.
pub const STRUCTURE: [&str; 12] = [
    "log_chars",
    "log_words",
    "code_block",
    "numbers",
    "digit_share",
    "questions",
    "lines",
    "non_ascii_share",
    "upper_share",
    "json_schema",
    "tools",
    "messages",
];

/// Default hashed dimension (2^16).
pub const DEFAULT_DIM: u32 = 1 << 16;
/// Default hashing seed.
pub const DEFAULT_SEED: u64 = 0x7469_6572_6761_7465; // "tiergate"
/// Default longest word n-gram (unigrams and bigrams).
pub const DEFAULT_WORD_NGRAMS: u32 = 2;
/// Default character n-gram lengths.
pub const DEFAULT_CHAR_MIN: u32 = 4;
pub const DEFAULT_CHAR_MAX: u32 = 4;
/// Default: character n-grams over the last 512 bytes (where a prompt's question sits).
pub const DEFAULT_CHAR_WINDOW: u32 = 512;
/// Largest accepted hashed dimension (2^24).
pub const MAX_DIM: u32 = 1 << 24;

/// How a document becomes a sparse vector. Stored in the model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureConfig {
    /// Hashed buckets (`0 .. dim`); structure features follow.
    pub dim: u32,
    pub seed: u64,
    /// 0 = no word features, 1 = unigrams, 2 = unigrams and bigrams.
    pub word_ngrams: u32,
    /// Character n-gram lengths; `char_max == 0` = no character features.
    pub char_min: u32,
    pub char_max: u32,
    /// Bytes at the end of the text the character n-grams cover; 0 = all.
    pub char_window: u32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            dim: DEFAULT_DIM,
            seed: DEFAULT_SEED,
            word_ngrams: DEFAULT_WORD_NGRAMS,
            char_min: DEFAULT_CHAR_MIN,
            char_max: DEFAULT_CHAR_MAX,
            char_window: DEFAULT_CHAR_WINDOW,
        }
    }
}

fn field_u64(v: &Value, key: &str, default: u64) -> Result<u64> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_u64()
            .ok_or_else(|| CoreError::invalid(format!("features.{key} must be an integer >= 0"))),
    }
}

fn field_u32(v: &Value, key: &str, default: u32) -> Result<u32> {
    let x = field_u64(v, key, u64::from(default))?;
    u32::try_from(x).map_err(|_| CoreError::invalid(format!("features.{key} is too large")))
}

impl FeatureConfig {
    /// Read the `features` object of a model file; absent keys take the defaults.
    /// A `structure` list, when given, must equal [`STRUCTURE`].
    pub fn from_value(v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(CoreError::invalid("features must be an object"));
        }
        let c = Self {
            dim: field_u32(v, "dim", DEFAULT_DIM)?,
            seed: field_u64(v, "seed", DEFAULT_SEED)?,
            word_ngrams: field_u32(v, "word_ngrams", DEFAULT_WORD_NGRAMS)?,
            char_min: field_u32(v, "char_min", DEFAULT_CHAR_MIN)?,
            char_max: field_u32(v, "char_max", DEFAULT_CHAR_MAX)?,
            char_window: field_u32(v, "char_window", DEFAULT_CHAR_WINDOW)?,
        };
        if let Some(s) = v.get("structure") {
            let names: Option<Vec<&str>> = s
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            if names.as_deref() != Some(&STRUCTURE[..]) {
                return Err(CoreError::invalid(format!(
                    "features.structure must be {STRUCTURE:?} (this core's structure features)"
                )));
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Parse a JSON object (the model file's `features`).
    pub fn from_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| CoreError::invalid(format!("invalid feature config JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(CoreError::invalid(format!(
                "features.dim must be in 1..={MAX_DIM}, got {}",
                self.dim
            )));
        }
        if self.word_ngrams > 2 {
            return Err(CoreError::invalid("features.word_ngrams must be 0, 1 or 2"));
        }
        if self.char_max > 0 && (self.char_min == 0 || self.char_min > self.char_max) {
            return Err(CoreError::invalid(
                "features.char_min must be in 1..=char_max when char_max > 0",
            ));
        }
        if self.char_max > 8 {
            return Err(CoreError::invalid("features.char_max must be <= 8"));
        }
        Ok(())
    }

    /// Total width: hashed buckets then structure features.
    pub fn width(&self) -> usize {
        self.dim as usize + STRUCTURE.len()
    }

    /// The JSON object stored in a model file.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "dim": self.dim,
            "seed": self.seed,
            "word_ngrams": self.word_ngrams,
            "char_min": self.char_min,
            "char_max": self.char_max,
            "char_window": self.char_window,
            "structure": STRUCTURE,
        })
    }
}

/// What the classifier reads of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc {
    pub text: String,
    pub tools: u32,
    pub messages: u32,
    pub json_schema: bool,
}

impl Doc {
    /// A plain prompt: one message, no tools, no schema.
    pub fn from_text(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            tools: 0,
            messages: 1,
            json_schema: false,
        }
    }

    /// The document of a chat-completions body (`ValueError` for invalid JSON or a
    /// non-object). Missing or odd-shaped fields contribute nothing; a key given twice
    /// counts as its last occurrence (as in a parsed JSON object).
    ///
    /// Read in one pass ([`body`]): only the strings it keeps are copied, no tree of the
    /// body is built.
    pub fn from_body(body: &[u8]) -> Result<Self> {
        body::read(body)
    }

    /// [`Doc::from_body`] through a parsed `serde_json::Value`: the reference the fast
    /// reader is tested against, and its fallback.
    pub fn from_value_body(body: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(body)?;
        if !v.is_object() {
            return Err(CoreError::invalid("the body must be a JSON object"));
        }
        let mut doc = Doc::default();
        let mut first = true;
        let mut push = |doc: &mut Doc, s: &str| {
            if !first {
                doc.text.push('\n');
            }
            first = false;
            doc.text.push_str(s);
        };
        if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
            for m in msgs {
                doc.messages += 1;
                match m.get("content") {
                    Some(Value::String(s)) => push(&mut doc, s),
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            if let Some(s) = p.get("text").and_then(Value::as_str) {
                                push(&mut doc, s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(tools) = v.get("tools").and_then(Value::as_array) {
            for t in tools {
                doc.tools += 1;
                let f = t.get("function").unwrap_or(t);
                let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                let desc = f.get("description").and_then(Value::as_str).unwrap_or("");
                push(&mut doc, &format!("{name} {desc}"));
            }
        }
        doc.json_schema = v
            .get("response_format")
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
            == Some("json_schema");
        Ok(doc)
    }
}

/// The reader of [`Doc::from_body`]: one strict pass over the body that keeps the
/// strings the document needs and skips everything else, with the parsed-value reader
/// behind it for whatever that pass is not sure of.
mod body {
    use super::Doc;
    use crate::error::Result;

    /// Pieces joined with `\n`, counted (an empty piece still takes a separator).
    #[derive(Default)]
    struct Pieces {
        /// UTF-8 by construction (valid slices of the body, encoded escapes).
        text: Vec<u8>,
        count: u32,
    }

    impl Pieces {
        fn mark(&self) -> (usize, u32) {
            (self.text.len(), self.count)
        }

        fn restore(&mut self, (len, count): (usize, u32)) {
            self.text.truncate(len);
            self.count = count;
        }

        /// Starts a new piece (after a separator unless it is the first).
        fn start(&mut self) -> &mut Vec<u8> {
            if self.count > 0 {
                self.text.push(b'\n');
            }
            self.count += 1;
            &mut self.text
        }
    }

    #[derive(Default)]
    struct Acc {
        messages: Pieces,
        n_messages: u32,
        tools: Pieces,
        n_tools: u32,
        json_schema: bool,
    }

    /// The fast strict reader ([`fast`]); whatever it is not sure of (invalid JSON,
    /// escaped keys, large exponents, deep nesting, lone surrogates) goes to the
    /// reader of a parsed `serde_json::Value`, which gives the same document or the
    /// error.
    pub(super) fn read(body: &[u8]) -> Result<Doc> {
        if let Some(doc) = std::str::from_utf8(body)
            .ok()
            .and_then(fast::read)
            .and_then(finish)
        {
            return Ok(doc);
        }
        Doc::from_value_body(body)
    }

    /// Whether the fast reader reads `body` itself (tests).
    #[cfg(test)]
    pub(super) fn fast_accepts(body: &[u8]) -> bool {
        std::str::from_utf8(body).is_ok_and(|t| fast::read(t).is_some())
    }

    fn finish(acc: Acc) -> Option<Doc> {
        let Acc {
            messages: mut m,
            n_messages,
            tools: t,
            n_tools,
            json_schema,
        } = acc;
        if t.count > 0 {
            if m.count > 0 {
                m.text.push(b'\n');
            }
            m.text.extend_from_slice(&t.text);
        }
        Some(Doc {
            // always UTF-8 (see `Pieces`); checked rather than assumed
            text: String::from_utf8(m.text).ok()?,
            tools: n_tools,
            messages: n_messages,
            json_schema,
        })
    }

    /// A strict hand-written reader of the common body: `None` (fall back) on anything
    /// it does not accept. It accepts only valid JSON (UTF-8 checked once up front,
    /// RFC 8259 grammar, no control characters in strings, valid `\u` pairs), so a body
    /// it reads is one serde would read to the same document. Strings are scanned 8
    /// bytes at a time for `"`, `\` and control characters and copied straight into
    /// the document's text.
    mod fast {
        use super::{Acc, Pieces};

        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        /// Deeper nesting goes to serde (which stops at 128).
        const MAX_DEPTH: u32 = 100;

        pub(super) fn read(s: &str) -> Option<Acc> {
            let mut p = P {
                s,
                b: s.as_bytes(),
                i: 0,
                depth: 0,
            };
            let mut acc = Acc::default();
            p.ws();
            if p.peek()? != b'{' {
                return None;
            }
            p.object(|p, key| match key {
                b"messages" => {
                    acc.messages = Pieces::default();
                    // the text is never longer than what is left of the body
                    acc.messages.text.reserve(p.b.len() - p.i);
                    acc.n_messages = 0;
                    p.messages(&mut acc)
                }
                b"tools" => {
                    acc.tools = Pieces::default();
                    acc.n_tools = 0;
                    p.tools(&mut acc)
                }
                b"response_format" => {
                    acc.json_schema = p.schema()?;
                    Some(())
                }
                _ => p.skip(),
            })?;
            p.ws();
            (p.i == p.b.len()).then_some(acc)
        }

        /// The lowest byte of `x` that is `"`, `\` or below 0x20 has its high bit set
        /// (bytes above it may be flagged falsely; only the lowest is used).
        #[inline]
        fn special(x: u64) -> u64 {
            let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
            zero(x ^ (ONES * u64::from(b'"')))
                | zero(x ^ (ONES * u64::from(b'\\')))
                | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
        }

        struct P<'a> {
            s: &'a str,
            b: &'a [u8],
            i: usize,
            depth: u32,
        }

        impl<'a> P<'a> {
            #[inline]
            fn peek(&self) -> Option<u8> {
                self.b.get(self.i).copied()
            }

            #[inline]
            fn ws(&mut self) {
                while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
                    self.i += 1;
                }
            }

            fn lit(&mut self, word: &[u8]) -> Option<()> {
                if self.b[self.i..].starts_with(word) {
                    self.i += word.len();
                    Some(())
                } else {
                    None
                }
            }

            /// Index of the next `"`, `\` or control byte at or after `self.i`.
            /// Inlined into the string loop, which calls it once per escape.
            #[inline(always)]
            #[allow(clippy::inline_always)]
            fn scan(&self) -> Option<usize> {
                let mut i = self.i;
                // 16 bytes a round (two words, one branch), then 8, then bytes
                while let Some(chunk) = self.b.get(i..i + 16) {
                    let (mut lo, mut hi) = ([0u8; 8], [0u8; 8]);
                    lo.copy_from_slice(&chunk[..8]);
                    hi.copy_from_slice(&chunk[8..]);
                    let (lo, hi) = (
                        special(u64::from_le_bytes(lo)),
                        special(u64::from_le_bytes(hi)),
                    );
                    if lo | hi != 0 {
                        let at = if lo != 0 {
                            lo.trailing_zeros() / 8
                        } else {
                            8 + hi.trailing_zeros() / 8
                        };
                        return Some(i + at as usize);
                    }
                    i += 16;
                }
                while let Some(chunk) = self.b.get(i..i + 8) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(chunk);
                    let hit = special(u64::from_le_bytes(w));
                    if hit != 0 {
                        return Some(i + (hit.trailing_zeros() / 8) as usize);
                    }
                    i += 8;
                }
                while let Some(&c) = self.b.get(i) {
                    if c == b'"' || c == b'\\' || c < 0x20 {
                        return Some(i);
                    }
                    i += 1;
                }
                None
            }

            /// A string (at its opening quote), appended unescaped to `out` if given:
            /// each run up to the next quote, backslash or control byte is found 8 bytes
            /// at a time and copied whole.
            fn string(&mut self, mut out: Option<&mut Vec<u8>>) -> Option<()> {
                self.i += 1; // the opening quote
                loop {
                    let at = self.scan()?;
                    if let Some(o) = out.as_deref_mut() {
                        o.extend_from_slice(&self.b[self.i..at]);
                    }
                    self.i = at + 1;
                    match self.b[at] {
                        b'"' => return Some(()),
                        b'\\' => {
                            let c = self.escape()?;
                            if let Some(o) = out.as_deref_mut() {
                                match u8::try_from(c) {
                                    Ok(ascii) if ascii.is_ascii() => o.push(ascii),
                                    _ => o.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                                }
                            }
                        }
                        _ => return None, // a control character
                    }
                }
            }

            fn hex4(&mut self) -> Option<u32> {
                let digits = self.s.get(self.i..self.i + 4)?;
                if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                self.i += 4;
                u32::from_str_radix(digits, 16).ok()
            }

            /// The character of the escape after a backslash.
            fn escape(&mut self) -> Option<char> {
                let c = *self.b.get(self.i)?;
                self.i += 1;
                Some(match c {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = self.hex4()?;
                        if (0xD800..0xDC00).contains(&hi) {
                            self.lit(b"\\u")?;
                            let lo = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return None;
                            }
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        } else {
                            char::from_u32(hi)? // a lone low surrogate is None
                        }
                    }
                    _ => return None,
                })
            }

            /// A key without escapes (an escaped key falls back).
            fn key(&mut self) -> Option<&'a [u8]> {
                if self.peek()? != b'"' {
                    return None;
                }
                let start = self.i + 1;
                self.i = start;
                let at = self.scan()?;
                if self.b[at] != b'"' {
                    return None;
                }
                self.i = at + 1;
                Some(&self.b[start..at])
            }

            fn number(&mut self) -> Option<()> {
                let digits = |p: &mut Self| {
                    let start = p.i;
                    while let Some(b'0'..=b'9') = p.peek() {
                        p.i += 1;
                    }
                    p.i > start
                };
                if self.peek() == Some(b'-') {
                    self.i += 1;
                }
                match self.peek()? {
                    b'0' => self.i += 1,
                    b'1'..=b'9' => {
                        digits(self);
                    }
                    _ => return None,
                }
                if self.peek() == Some(b'.') {
                    self.i += 1;
                    if !digits(self) {
                        return None;
                    }
                }
                // an exponent of at most two digits cannot overflow f64 (which serde
                // rejects) whatever the mantissa: a longer one goes to serde
                if let Some(b'e' | b'E') = self.peek() {
                    self.i += 1;
                    if let Some(b'+' | b'-') = self.peek() {
                        self.i += 1;
                    }
                    let start = self.i;
                    digits(self);
                    if !(1..=2).contains(&(self.i - start)) {
                        return None;
                    }
                }
                Some(())
            }

            /// Any value, checked and skipped.
            fn skip(&mut self) -> Option<()> {
                match self.peek()? {
                    b'"' => self.string(None),
                    b'{' => self.object(|p, _| p.skip()),
                    b'[' => self.array(Self::skip),
                    b't' => self.lit(b"true"),
                    b'f' => self.lit(b"false"),
                    b'n' => self.lit(b"null"),
                    _ => self.number(),
                }
            }

            /// An object (at `{`): `each(self, key)` reads every value.
            fn object(
                &mut self,
                mut each: impl FnMut(&mut Self, &[u8]) -> Option<()>,
            ) -> Option<()> {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    let key = self.key()?;
                    self.ws();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    each(self, key)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            self.depth -= 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }

            /// An array (at `[`): `each(self)` reads every element.
            fn array(&mut self, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    each(self)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            self.depth -= 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }

            /// A string value pushed as one piece; anything else skipped.
            fn piece(&mut self, out: &mut Pieces) -> Option<()> {
                if self.peek()? != b'"' {
                    return self.skip();
                }
                self.string(Some(out.start()))
            }

            fn messages(&mut self, acc: &mut Acc) -> Option<()> {
                if self.peek()? != b'[' {
                    return self.skip();
                }
                self.array(|p| {
                    acc.n_messages += 1;
                    if p.peek()? != b'{' {
                        return p.skip();
                    }
                    let start = acc.messages.mark();
                    p.object(|p, key| {
                        if key != b"content" {
                            return p.skip();
                        }
                        acc.messages.restore(start); // the last `content` wins
                        match p.peek()? {
                            b'"' => p.piece(&mut acc.messages),
                            b'[' => p.array(|p| {
                                if p.peek()? != b'{' {
                                    return p.skip();
                                }
                                let part = acc.messages.mark();
                                p.object(|p, key| {
                                    if key != b"text" {
                                        return p.skip();
                                    }
                                    acc.messages.restore(part);
                                    p.piece(&mut acc.messages)
                                })
                            }),
                            _ => p.skip(),
                        }
                    })
                })
            }

            /// Sets `slot` to a string value, or to `None` for any other value.
            fn text(&mut self, slot: &mut Option<String>) -> Option<()> {
                if self.peek()? != b'"' {
                    *slot = None;
                    return self.skip();
                }
                let mut out = Vec::new();
                self.string(Some(&mut out))?;
                *slot = Some(String::from_utf8(out).ok()?);
                Some(())
            }

            /// `(name, description)` strings of an object; with `nested`, a
            /// `function` key (whatever its value) replaces them by its own.
            fn named(&mut self, nested: bool) -> Option<(Option<String>, Option<String>)> {
                if self.peek()? != b'{' {
                    self.skip()?;
                    return Some((None, None));
                }
                let (mut name, mut desc, mut function) = (None, None, None);
                self.object(|p, key| {
                    match key {
                        b"name" => p.text(&mut name)?,
                        b"description" => p.text(&mut desc)?,
                        b"function" if nested => function = Some(p.named(false)?),
                        _ => p.skip()?,
                    }
                    Some(())
                })?;
                Some(function.unwrap_or((name, desc)))
            }

            fn tools(&mut self, acc: &mut Acc) -> Option<()> {
                if self.peek()? != b'[' {
                    return self.skip();
                }
                self.array(|p| {
                    acc.n_tools += 1;
                    let (name, desc) = p.named(true)?;
                    let out = acc.tools.start();
                    out.extend_from_slice(name.as_deref().unwrap_or("").as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(desc.as_deref().unwrap_or("").as_bytes());
                    Some(())
                })
            }

            fn schema(&mut self) -> Option<bool> {
                if self.peek()? != b'{' {
                    self.skip()?;
                    return Some(false);
                }
                let mut schema = false;
                self.object(|p, key| {
                    if key == b"type" {
                        let mut kind = None;
                        p.text(&mut kind)?;
                        schema = kind.as_deref() == Some("json_schema");
                        Some(())
                    } else {
                        p.skip()
                    }
                })?;
                Some(schema)
            }
        }
    }
}

const WORD: u8 = 1;
const DIGIT: u8 = 2;
const UPPER: u8 = 4;
const LOWER: u8 = 8;

/// Byte classes, one lookup instead of a chain of range tests on the hot path.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if !(b.is_ascii_whitespace() || b.is_ascii_punctuation()) {
            c |= WORD;
        }
        if b.is_ascii_digit() {
            c |= DIGIT;
        }
        if b.is_ascii_uppercase() {
            c |= UPPER;
        }
        if b.is_ascii_lowercase() {
            c |= LOWER;
        }
        t[i] = c;
        i += 1;
    }
    t
};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// murmur3's 64-bit finaliser.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn pair_hash(a: u64, b: u64, seed: u64) -> u64 {
    mix(a.wrapping_mul(GOLDEN) ^ b ^ seed ^ 1)
}

/// The bucket of a hash in `0 .. dim` (multiply-shift, no division).
#[inline]
pub fn bucket(h: u64, dim: u32) -> u32 {
    (((h >> 32) * u64::from(dim)) >> 32) as u32
}

/// ASCII `A-Z` lowered, every other byte unchanged: one lookup per byte, so the n-gram
/// passes read the text in place instead of a lowered copy.
static LOWERED: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// What [`WORD_LOWERED`] holds for a byte that is not a word byte: `A`, which lowers to
/// `a`, so no word byte maps to it.
const NOT_WORD: u8 = b'A';

/// A word byte lowered, or [`NOT_WORD`]: one lookup (and one table register) per byte
/// for both questions of the word scan.
static WORD_LOWERED: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if CLASS[i] & WORD != 0 {
            LOWERED[i]
        } else {
            NOT_WORD
        };
        i += 1;
    }
    t
};

/// Calls `word(hash)` for every word n-gram and `chars(hash)` for every character
/// n-gram of `text` as if ASCII-lowered (lowered on the fly), in text order; returns
/// the counts and the words of the text (`None` when word n-grams are off).
#[inline]
fn for_each_gram(
    cfg: &FeatureConfig,
    text: &[u8],
    word: impl FnMut(u64),
    mut chars: impl FnMut(u64),
) -> (u32, u32, Option<u64>) {
    let (n_word, words) = match cfg.word_ngrams {
        0 => (0, None),
        1 => {
            let w = word_grams::<false>(text, cfg.seed, word);
            (w as u32, Some(w))
        }
        _ => {
            let w = word_grams::<true>(text, cfg.seed, word);
            (w.saturating_mul(2).saturating_sub(1) as u32, Some(w))
        }
    };
    let mut n_char = 0u32;
    if cfg.char_max > 0 {
        let w = cfg.char_window as usize;
        let tail = if w == 0 || text.len() <= w {
            text
        } else {
            &text[text.len() - w..]
        };
        for n in cfg.char_min..=cfg.char_max {
            let seed = mix(cfg.seed ^ (0x100 + u64::from(n)));
            // the default length, over the default window, gets a loop of its own
            n_char += if n == 4 && tail.len() <= LOWERED_TAIL {
                char_4grams(tail, seed, &mut chars)
            } else {
                char_grams(tail, n as usize, seed, &mut chars)
            };
        }
    }
    (n_word, n_char, words)
}

/// The word n-grams of `text` (see the module docs), unigrams and (with `BIGRAMS`)
/// bigrams in text order; returns the number of words. A `const` flag, so the loop
/// carries no test of the config per word.
#[inline]
fn word_grams<const BIGRAMS: bool>(text: &[u8], seed: u64, mut word: impl FnMut(u64)) -> u64 {
    let basis = FNV_BASIS ^ seed;
    // an iterator rather than an index: two registers (position, end) instead of
    // three in a loop that has none to spare
    let mut bytes = text.iter();
    let Some(mut prev) = next_word(&mut bytes, basis) else {
        return 0;
    };
    word(prev);
    // the first word is out of the loop, so the loop has no test for a previous one
    let mut words = 1u64;
    while let Some(h) = next_word(&mut bytes, basis) {
        word(h);
        if BIGRAMS {
            word(pair_hash(prev, h, seed));
        }
        prev = h;
        words += 1;
    }
    words
}

/// The unigram hash of the next word of `bytes` (FNV-1a from `basis` over the lowered
/// word while scanning it, then `mix`), the byte that ends it consumed with it; `None`
/// at the end.
#[inline]
fn next_word(bytes: &mut std::slice::Iter<'_, u8>, basis: u64) -> Option<u64> {
    let first = loop {
        let t = WORD_LOWERED[*bytes.next()? as usize];
        if t != NOT_WORD {
            break t;
        }
    };
    let mut h = (basis ^ u64::from(first)).wrapping_mul(FNV_PRIME);
    for &b in bytes.by_ref() {
        let t = WORD_LOWERED[b as usize];
        if t == NOT_WORD {
            break;
        }
        h = (h ^ u64::from(t)).wrapping_mul(FNV_PRIME);
    }
    Some(mix(h))
}

/// Longest tail [`char_4grams`] takes (the default window), lowered on the stack.
const LOWERED_TAIL: usize = DEFAULT_CHAR_WINDOW as usize;

/// [`char_grams`] for `n == 4` and a tail of at most [`LOWERED_TAIL`] bytes: the tail
/// is lowered once into a buffer (a vectorised pass), so each 4-gram is one 4-byte load
/// instead of a lookup and a shift per byte; and with `g` known to fit 32 bits, the
/// first step of `mix` (`h ^ h >> 33`) folds into the seed.
fn char_4grams(tail: &[u8], seed: u64, chars: &mut impl FnMut(u64)) -> u32 {
    let mut buf = [0u8; LOWERED_TAIL];
    let low = &mut buf[..tail.len()];
    for (d, &b) in low.iter_mut().zip(tail) {
        *d = b | (u8::from(b.wrapping_sub(b'A') < 26) << 5);
    }
    let mut count = 0;
    for w in low.windows(4) {
        let g = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        chars(mix(u64::from(g) ^ seed));
        count += 1;
    }
    count
}

/// The character `n`-grams of `tail` (`mix(g ^ seed)`); returns how many.
fn char_grams(tail: &[u8], n: usize, seed: u64, chars: &mut impl FnMut(u64)) -> u32 {
    if n == 0 || tail.len() < n {
        return 0;
    }
    // The little-endian value of the last n lowered bytes, kept directly: each byte
    // enters at the top and the oldest falls off the bottom.
    let top = 8 * (n as u32 - 1);
    let mut g = 0u64;
    for &b in &tail[..n - 1] {
        g = (g >> 8) | (u64::from(LOWERED[b as usize]) << top);
    }
    for &b in &tail[n - 1..] {
        g = (g >> 8) | (u64::from(LOWERED[b as usize]) << top);
        chars(mix(g ^ seed));
    }
    (tail.len() + 1 - n) as u32
}

/// `CLASS[b] & WORD != 0` without a table lookup (so counting loops vectorise): not
/// ASCII whitespace (`\t \n \x0C \r` and space) and not ASCII punctuation.
#[inline]
#[allow(clippy::nonminimal_bool, clippy::needless_bitwise_bool)] // branch-free on purpose
fn word_byte(b: u8) -> bool {
    // `|`, not `||`: no branches, so the callers' loops vectorise.
    let ws = (b == b' ') | (b == b'\t') | (b == b'\n') | (b == 0x0C) | (b == b'\r');
    let punct = (b.wrapping_sub(33) < 15) // ! .. /
        | (b.wrapping_sub(58) < 7) // : .. @
        | (b.wrapping_sub(91) < 6) // [ .. `
        | (b.wrapping_sub(123) < 4); // { .. ~
    !(ws | punct)
}

#[inline]
fn digit_byte(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

/// Per-byte statistics of one byte `b` preceded by `p`, as 0/1: chars, non-ASCII,
/// digits, upper, lower, `?`, `\n`, digit-run starts. (Word starts come from the
/// n-gram pass, which finds every word anyway; [`count_words`] without it.)
#[inline]
#[allow(clippy::cast_possible_wrap, clippy::needless_bitwise_bool)] // sign bit; branch-free
fn byte_stats(p: u8, b: u8) -> [u8; 8] {
    let digit = digit_byte(b);
    [
        // a char starts at each byte that is not a UTF-8 continuation byte (10xxxxxx)
        u8::from((b as i8) >= -64),
        u8::from(b >= 0xC0),
        u8::from(digit),
        u8::from(b.wrapping_sub(b'A') < 26),
        u8::from(b.wrapping_sub(b'a') < 26),
        u8::from(b == b'?'),
        u8::from(b == b'\n'),
        u8::from(digit & !digit_byte(p)),
    ]
}

/// [`byte_stats`] summed over `text` (the first byte preceded by a space), in two
/// passes of four statistics: eight byte-wide counters and their constants would not
/// fit the 16 SSE2 registers, and the spills cost more than reading the text twice.
fn text_stats(text: &[u8]) -> [u64; 8] {
    let [chars, non_ascii, questions, lines] = pair_counts(text, |_, b| {
        let s = byte_stats(b' ', b);
        [s[0], s[1], s[5], s[6]]
    });
    let [digits, upper, lower, digit_runs] = pair_counts(text, |p, b| {
        let s = byte_stats(p, b);
        [s[2], s[3], s[4], s[7]]
    });
    [
        chars, non_ascii, digits, upper, lower, questions, lines, digit_runs,
    ]
}

/// Sums of `stat(previous byte, byte)` (each 0 or 1) over `text`, the first byte
/// preceded by a space. Sixteen byte-wide counters per statistic, over 16 bytes at a
/// time (one SSE2 register each; flushed before they can wrap), then the tail byte by
/// byte: it vectorises on the baseline x86-64 target.
#[inline]
fn pair_counts<const N: usize>(text: &[u8], stat: impl Fn(u8, u8) -> [u8; N]) -> [u64; N] {
    const V: usize = 16;
    let mut total = [0u64; N];
    let Some(&first) = text.first() else {
        return total;
    };
    let add = |total: &mut [u64; N], s: [u8; N]| {
        for (t, v) in total.iter_mut().zip(s) {
            *t += u64::from(v);
        }
    };
    add(&mut total, stat(b' ', first));
    let (prev, cur) = (&text[..text.len() - 1], &text[1..]);
    let mut pc = prev.chunks_exact(V);
    let mut cc = cur.chunks_exact(V);
    let mut acc = [[0u8; V]; N];
    let mut rounds = 0;
    let flush = |total: &mut [u64; N], acc: &mut [[u8; V]; N]| {
        for (t, a) in total.iter_mut().zip(acc.iter_mut()) {
            *t += a.iter().map(|&x| u64::from(x)).sum::<u64>();
            *a = [0; V];
        }
    };
    for (p, b) in (&mut pc).zip(&mut cc) {
        for i in 0..V {
            let s = stat(p[i], b[i]);
            for (a, v) in acc.iter_mut().zip(s) {
                a[i] += v;
            }
        }
        rounds += 1;
        if rounds == 255 {
            flush(&mut total, &mut acc);
            rounds = 0;
        }
    }
    flush(&mut total, &mut acc);
    for (&p, &b) in pc.remainder().iter().zip(cc.remainder()) {
        add(&mut total, stat(p, b));
    }
    total
}

/// Words of `text`: maximal runs of word bytes (the n-gram pass's unigrams).
#[allow(clippy::needless_bitwise_bool)] // branch-free on purpose
fn count_words(text: &[u8]) -> u64 {
    let Some(&first) = text.first() else {
        return 0;
    };
    let mut total = u64::from(word_byte(first));
    for (pc, cc) in text.chunks(255).zip(text[1..].chunks(255)) {
        let mut acc = 0u8;
        for (&p, &b) in pc.iter().zip(cc) {
            acc = acc.wrapping_add(u8::from(word_byte(b) & !word_byte(p)));
        }
        total += u64::from(acc);
    }
    total
}

/// Whether `text` holds a triple backtick.
fn has_fence(text: &[u8]) -> bool {
    // most texts hold no backtick at all: one `memchr` pass (SIMD) settles them
    memchr::memchr_iter(b'`', text).any(|i| text[i..].starts_with(b"```"))
}

/// The structure features of a document, in [`STRUCTURE`] order (one vectorised pass
/// for the counts, one for the code fence, one for the words).
pub fn structure(doc: &Doc) -> [f64; STRUCTURE.len()] {
    structure_with_words(doc, count_words(doc.text.as_bytes()))
}

/// [`structure`] given the document's word count.
fn structure_with_words(doc: &Doc, words: u64) -> [f64; STRUCTURE.len()] {
    let text = doc.text.as_bytes();
    let [chars, non_ascii, digits, upper, lower, questions, lines, digit_runs] = text_stats(text);
    let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let ln1 = |x: u64| (x as f64).ln_1p();
    [
        ln1(chars) / 8.0,
        ln1(words) / 7.0,
        if has_fence(text) { 1.0 } else { 0.0 },
        ln1(digit_runs) / 5.0,
        share(digits, chars),
        ln1(questions) / 3.0,
        ln1(lines) / 6.0,
        share(non_ascii, chars),
        share(upper, upper + lower),
        if doc.json_schema { 1.0 } else { 0.0 },
        ln1(u64::from(doc.tools)) / 2.0,
        ln1(u64::from(doc.messages)) / 3.0,
    ]
}

/// Hashed and structure features of one document as `(index, value)` pairs, indices
/// ascending and unique (duplicate buckets summed).
pub fn sparse(cfg: &FeatureConfig, doc: &Doc) -> Vec<(u32, f32)> {
    let dim = cfg.dim;
    let mut words: Vec<u32> = Vec::new();
    let mut chars: Vec<u32> = Vec::new();
    let (nw, nc, n_words) = for_each_gram(
        cfg,
        doc.text.as_bytes(),
        |h| words.push(bucket(h, dim)),
        |h| chars.push(bucket(h, dim)),
    );
    let mut pairs: Vec<(u32, f64)> = Vec::with_capacity(words.len() + chars.len() + 12);
    let (sw, sc) = (scale(nw), scale(nc));
    pairs.extend(words.iter().map(|&i| (i, sw)));
    pairs.extend(chars.iter().map(|&i| (i, sc)));
    pairs.sort_unstable_by_key(|p| p.0);
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(pairs.len() + STRUCTURE.len());
    let mut k = 0;
    while k < pairs.len() {
        let idx = pairs[k].0;
        let mut v = 0.0;
        while k < pairs.len() && pairs[k].0 == idx {
            v += pairs[k].1;
            k += 1;
        }
        out.push((idx, v as f32));
    }
    let n_words = n_words.unwrap_or_else(|| count_words(doc.text.as_bytes()));
    for (j, v) in structure_with_words(doc, n_words).into_iter().enumerate() {
        if v != 0.0 {
            out.push((cfg.dim + j as u32, v as f32));
        }
    }
    out
}

/// CSR arrays of many documents: `(indices, values, indptr)` with
/// `indptr.len() == docs.len() + 1`, as `scipy.sparse.csr_matrix` takes them.
pub fn batch(cfg: &FeatureConfig, docs: &[Doc]) -> (Vec<i32>, Vec<f32>, Vec<i64>) {
    let mut indices = Vec::new();
    let mut values = Vec::new();
    let mut indptr = Vec::with_capacity(docs.len() + 1);
    indptr.push(0i64);
    for d in docs {
        for (i, v) in sparse(cfg, d) {
            indices.push(i as i32);
            values.push(v);
        }
        indptr.push(indices.len() as i64);
    }
    (indices, values, indptr)
}

/// Lanes of one [`Block`]: 16 `f32` = one 64-byte cache line.
pub const LANES: usize = 16;

/// 16 weights on one cache line: a row of a table with 9 to 16 outputs, or a part of a
/// wider row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub struct Block(pub [f32; LANES]);

/// A row of a table with up to 4 outputs: 4 rows a cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(16))]
pub struct Row4(pub [f32; 4]);

/// A row of a table with 5 to 8 outputs: 2 rows a cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(32))]
pub struct Row8(pub [f32; 8]);

/// A weight table: one row of `h` output weights per feature, zero-padded to 4, 8 or a
/// multiple of 16 lanes, rows never straddling a cache line. With few outputs the rows
/// are narrow and the table small (4 outputs over 2^16 buckets: 1 MiB against 4 MiB
/// at one row a line), so it stays in the caches of a busy machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Table {
    Four(Vec<Row4>),
    Eight(Vec<Row8>),
    /// `blocks` blocks a row.
    Wide {
        blocks: usize,
        rows: Vec<Block>,
    },
}

/// Lanes of one row for `h` outputs: 4, 8, or a multiple of 16.
pub fn row_lanes(h: usize) -> usize {
    match h {
        0..=4 => 4,
        5..=8 => 8,
        _ => h.div_ceil(LANES) * LANES,
    }
}

impl Table {
    /// Lay out `weights` (`rows × h`, row-major).
    pub fn pack(weights: &[f32], h: usize) -> Self {
        let h = h.max(1);
        let rows = weights.chunks_exact(h);
        match row_lanes(h) {
            4 => Table::Four(
                rows.map(|r| {
                    let mut x = [0.0; 4];
                    x[..h].copy_from_slice(r);
                    Row4(x)
                })
                .collect(),
            ),
            8 => Table::Eight(
                rows.map(|r| {
                    let mut x = [0.0; 8];
                    x[..h].copy_from_slice(r);
                    Row8(x)
                })
                .collect(),
            ),
            lanes => {
                let blocks = lanes / LANES;
                let mut out = vec![Block::default(); weights.len() / h * blocks];
                for (r, row) in rows.enumerate() {
                    for (f, &w) in row.iter().enumerate() {
                        out[r * blocks + f / LANES].0[f % LANES] = w;
                    }
                }
                Table::Wide { blocks, rows: out }
            }
        }
    }

    /// Rows of the table.
    pub fn rows(&self) -> usize {
        match self {
            Table::Four(r) => r.len(),
            Table::Eight(r) => r.len(),
            Table::Wide { blocks, rows } => rows.len() / blocks,
        }
    }

    /// Output `f` of row `row`.
    #[inline]
    pub fn weight(&self, row: usize, f: usize) -> f32 {
        match self {
            Table::Four(r) => r[row].0[f],
            Table::Eight(r) => r[row].0[f],
            Table::Wide { blocks, rows } => rows[row * blocks + f / LANES].0[f % LANES],
        }
    }
}

/// Most outputs [`accumulate`] takes (4 blocks).
pub const MAX_ACC_FAMILIES: usize = 4 * LANES;

/// A row of `W` lanes.
trait Lanes<const W: usize> {
    fn lanes(&self) -> &[f32; W];
}

impl Lanes<4> for Row4 {
    #[inline]
    fn lanes(&self) -> &[f32; 4] {
        &self.0
    }
}

impl Lanes<8> for Row8 {
    #[inline]
    fn lanes(&self) -> &[f32; 8] {
        &self.0
    }
}

impl Lanes<LANES> for Block {
    #[inline]
    fn lanes(&self) -> &[f32; LANES] {
        &self.0
    }
}

/// The row of a hash in the hashed part of a table.
trait Rows<R> {
    fn row(&self, h: u64) -> &R;
}

/// Any `dim`: [`bucket`], then a checked index.
struct AnyDim<'a, R> {
    rows: &'a [R],
    dim: u32,
}

impl<R> Rows<R> for AnyDim<'_, R> {
    #[inline]
    fn row(&self, h: u64) -> &R {
        &self.rows[bucket(h, self.dim) as usize]
    }
}

/// `dim == 2^16` (the default): `bucket(h, 2^16) == ((h >> 32) << 16) >> 32 == h >> 48`,
/// and a 16-bit index into an array of 2^16 rows needs no bounds check: one shift per
/// n-gram instead of a multiply, two shifts and a compare.
struct Dim16<'a, R> {
    rows: &'a [R; 1 << 16],
}

impl<R> Rows<R> for Dim16<'_, R> {
    #[inline]
    fn row(&self, h: u64) -> &R {
        &self.rows[(h >> 48) as usize]
    }
}

/// The running sum of the rows of one block of n-grams (words or characters). Each
/// row is added as its n-gram is hashed: the loads do not depend on each other, so
/// they overlap anyway, and the hashing between two adds hides the add's latency.
struct Sums<'a, T, const W: usize> {
    rows: &'a T,
    sum: [f32; W],
}

impl<'a, T, const W: usize> Sums<'a, T, W> {
    fn new(rows: &'a T) -> Self {
        Self {
            rows,
            sum: [0.0; W],
        }
    }

    #[inline]
    fn push<R: Lanes<W>>(&mut self, h: u64)
    where
        T: Rows<R>,
    {
        for (a, x) in self.sum.iter_mut().zip(self.rows.row(h).lanes()) {
            *a += *x;
        }
    }
}

/// Adds the rows of `table` (`width` rows for `h` outputs, see [`Table::pack`])
/// selected by the document's features, each scaled by its value, into `acc` (length
/// `h <= MAX_ACC_FAMILIES`). The serving path: no sort, no allocation (up to 16
/// outputs), the text read in place; buckets are hashed a batch at a time and then
/// summed, so the row loads overlap.
pub fn accumulate(cfg: &FeatureConfig, doc: &Doc, table: &Table, h: usize, acc: &mut [f64]) {
    debug_assert_eq!(acc.len(), h);
    debug_assert!(h <= MAX_ACC_FAMILIES);
    debug_assert_eq!(table.rows(), cfg.width());
    let g = match table {
        Table::Four(rows) => sums::<_, 4>(cfg, doc, rows),
        Table::Eight(rows) => sums::<_, 8>(cfg, doc, rows),
        Table::Wide { blocks: 1, rows } => sums::<_, LANES>(cfg, doc, rows),
        Table::Wide { blocks, rows } => wide_sums(cfg, doc, rows, *blocks),
    };
    let (sw, sc) = (scale(g.n_word), scale(g.n_char));
    for (f, a) in acc.iter_mut().enumerate() {
        *a += f64::from(g.words[f]) * sw + f64::from(g.chars[f]) * sc;
    }
    for (j, v) in structure_with_words(doc, g.n_words).into_iter().enumerate() {
        if v != 0.0 {
            let row = cfg.dim as usize + j;
            for (f, a) in acc.iter_mut().enumerate() {
                *a += f64::from(table.weight(row, f)) * v;
            }
        }
    }
}

/// What the n-gram pass of [`accumulate`] found: the sums of the word and character
/// rows, their counts, and the words of the text.
struct Grams {
    words: [f32; MAX_ACC_FAMILIES],
    chars: [f32; MAX_ACC_FAMILIES],
    n_word: u32,
    n_char: u32,
    n_words: u64,
}

/// [`Grams`] over a table of `W`-lane rows.
fn sums<R: Lanes<W>, const W: usize>(cfg: &FeatureConfig, doc: &Doc, table: &[R]) -> Grams {
    if cfg.dim == 1 << 16 {
        if let Some(rows) = table.get(..1 << 16).and_then(|r| r.try_into().ok()) {
            return sums_in::<R, _, W>(cfg, doc, &Dim16 { rows });
        }
    }
    let rows = AnyDim {
        rows: table,
        dim: cfg.dim,
    };
    sums_in::<R, _, W>(cfg, doc, &rows)
}

#[inline]
fn sums_in<R: Lanes<W>, T: Rows<R>, const W: usize>(
    cfg: &FeatureConfig,
    doc: &Doc,
    rows: &T,
) -> Grams {
    let mut words = Sums::<T, W>::new(rows);
    let mut chars = Sums::<T, W>::new(rows);
    let (nw, nc, n_words) = for_each_gram(
        cfg,
        doc.text.as_bytes(),
        |g| words.push::<R>(g),
        |g| chars.push::<R>(g),
    );
    let mut g = Grams {
        words: [0.0; MAX_ACC_FAMILIES],
        chars: [0.0; MAX_ACC_FAMILIES],
        n_word: nw,
        n_char: nc,
        n_words: n_words.unwrap_or_else(|| count_words(doc.text.as_bytes())),
    };
    g.words[..W].copy_from_slice(&words.sum);
    g.chars[..W].copy_from_slice(&chars.sum);
    g
}

/// [`sums`] for rows of more than one block (more than 16 outputs).
fn wide_sums(cfg: &FeatureConfig, doc: &Doc, table: &[Block], blocks: usize) -> Grams {
    let dim = cfg.dim;
    let (mut word_rows, mut char_rows) = (Vec::new(), Vec::new());
    let (nw, nc, n_words) = for_each_gram(
        cfg,
        doc.text.as_bytes(),
        |g| word_rows.push(bucket(g, dim) as usize),
        |g| char_rows.push(bucket(g, dim) as usize),
    );
    let gather = |rows: &[usize]| {
        let mut out = [0.0f32; MAX_ACC_FAMILIES];
        for b in 0..blocks {
            let mut s = [0.0f32; LANES];
            for &r in rows {
                for (a, x) in s.iter_mut().zip(&table[r * blocks + b].0) {
                    *a += *x;
                }
            }
            out[b * LANES..(b + 1) * LANES].copy_from_slice(&s);
        }
        out
    };
    Grams {
        words: gather(&word_rows),
        chars: gather(&char_rows),
        n_word: nw,
        n_char: nc,
        n_words: n_words.unwrap_or_else(|| count_words(doc.text.as_bytes())),
    }
}

/// `1 / sqrt(n)`: each occurrence's value in a block of `n` n-grams (0 for none).
fn scale(n: u32) -> f64 {
    if n > 0 {
        1.0 / f64::from(n).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values by construction
mod tests {
    use super::*;

    fn cfg(dim: u32) -> FeatureConfig {
        FeatureConfig {
            dim,
            ..FeatureConfig::default()
        }
    }

    #[test]
    fn body_and_text_agree_for_one_message() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"What is 2+2?"}]}"#;
        let doc = Doc::from_body(body).unwrap();
        assert_eq!(doc, Doc::from_text("What is 2+2?"));
        let c = cfg(1 << 10);
        assert_eq!(
            sparse(&c, &doc),
            sparse(&c, &Doc::from_text("What is 2+2?"))
        );
    }

    #[test]
    fn body_reads_parts_tools_and_schema() {
        let body = br#"{"messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url"}]}],
            "tools":[{"type":"function","function":{"name":"get","description":"fetch it"}}],
            "response_format":{"type":"json_schema","json_schema":{}}}"#;
        let doc = Doc::from_body(body).unwrap();
        assert_eq!(doc.text, "be brief\nhi\nget fetch it");
        assert_eq!((doc.messages, doc.tools, doc.json_schema), (2, 1, true));
        assert!(Doc::from_body(b"[1]").is_err());
        assert!(Doc::from_body(b"{").is_err());
    }

    #[test]
    fn body_reader_matches_the_value_reader() {
        let cases: &[&str] = &[
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"tools":[{"function":{"name":"a","description":"b"}}],"messages":[{"content":"x"}]}"#,
            r#"{"messages":[{"content":"a"},{"content":"b"}],"messages":[{"content":"c"}]}"#,
            r#"{"messages":[{"content":"a","content":["x",{"text":"y"},{"text":1},{"text":"z","text":"w"}]}]}"#,
            r#"{"messages":{"content":"a"}}"#,
            r#"{"messages":[1,"s",null,[{"content":"q"}],{"content":{"text":"t"}},{"content":null}]}"#,
            r#"{"messages":[{"content":""},{"content":[]},{"content":[{"text":""}]}]}"#,
            r#"{"tools":[1,{"name":"top","description":"d"},{"function":3,"name":"n"},{"function":{"name":"f"}},{"name":"x","function":{"description":"only"}}]}"#,
            r#"{"tools":{"function":{"name":"a"}},"tools":[{"function":{"name":"b","name":"c"}}]}"#,
            r#"{"response_format":{"type":"json_schema"}}"#,
            r#"{"response_format":{"type":"json_schema","type":"text"}}"#,
            r#"{"response_format":{"type":"text"},"response_format":{"type":"json_schema"}}"#,
            r#"{"response_format":"json_schema","model":"m","n":1.5,"stream":true,"x":[{"y":[null]}]}"#,
            r#"{"m\u0065ssages":[{"cont\u0065nt":"esc\n\"aped\" \ud83d\ude00 é"}]}"#,
            "{}",
            r#"  {"messages":[{"content":"sp"}]}  "#,
        ];
        for c in cases {
            let want = Doc::from_value_body(c.as_bytes()).unwrap();
            assert_eq!(Doc::from_body(c.as_bytes()).unwrap(), want, "{c}");
        }
        for bad in [
            "[1]",
            "1",
            "\"s\"",
            "null",
            "{",
            "{} x",
            "",
            "{\"messages\":[}",
        ] {
            assert!(Doc::from_value_body(bad.as_bytes()).is_err(), "{bad}");
            assert!(Doc::from_body(bad.as_bytes()).is_err(), "{bad}");
        }
        let err = Doc::from_body(b"[1]").unwrap_err().to_string();
        assert!(err.contains("JSON object"), "{err}");
    }

    #[test]
    fn fast_body_reader_takes_the_common_body_and_defers_the_rest() {
        let common = br#"{"model":"m","temperature":0.7,"top_p":1E-2,"x":5e+1,"max_tokens":64,"stream":false,
            "messages":[{"role":"system","content":"Be \"brief\".\n\u00e9\ud83d\ude00/\/"},
            {"role":"user","content":[{"type":"text","text":"a\tb"},{"type":"image_url","image_url":{"url":"x"}}]}],
            "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object","properties":{}}}}],
            "response_format":{"type":"json_schema","json_schema":{"name":"s","strict":true}},"stop":null,"n":-1}"#;
        assert!(body::fast_accepts(common));
        let doc = Doc::from_body(common).unwrap();
        assert_eq!(doc, Doc::from_value_body(common).unwrap());
        assert_eq!(doc.text, "Be \"brief\".\n\u{e9}\u{1F600}//\na\tb\nf d");
        for deferred in [
            r#"{"m\u0065ssages":[]}"#,  // escaped key
            r#"{"temperature":1e300}"#, // a long exponent
            r#"{"a":"\ud800"}"#,        // lone surrogate
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            "{\"a\":\"\u{1}\"}", // raw control character
            "[1]",
        ] {
            assert!(!body::fast_accepts(deferred.as_bytes()), "{deferred}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(120), "]".repeat(120));
        assert!(!body::fast_accepts(deep.as_bytes()));
        assert_eq!(
            Doc::from_body(deep.as_bytes()).unwrap(),
            Doc::from_value_body(deep.as_bytes()).unwrap()
        );
    }

    #[test]
    fn body_readers_agree_on_mutated_bodies() {
        let seeds: [&[u8]; 3] = [
            br#"{"messages":[{"role":"user","content":"Q: 2+2?\nA) 3 B) 4 \u00e9"},{"content":[{"text":"x"},{"text":5}]}],"tools":[{"function":{"name":"n","description":"d"}}],"response_format":{"type":"json_schema"},"t":-0.5}"#,
            br#"{"messages":[],"tools":{},"x":[true,false,null,{"y":"\ud83d\ude00"}]}"#,
            br#"{"messages":[{"content":"plain"}],"messages":[{"content":"last"}]}"#,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,\\ u0123456789abcdefnrtlsE.-+e\x01\xc3\xa9";
        for _ in 0..20_000 {
            let mut b = seeds[(next() % 3) as usize].to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() % (b.len() as u64 + 1)) as usize;
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, c),
                }
            }
            match (Doc::from_body(&b), Doc::from_value_body(&b)) {
                (Ok(x), Ok(y)) => assert_eq!(x, y, "{}", String::from_utf8_lossy(&b)),
                (Err(_), Err(_)) => {}
                (x, y) => panic!("{}: {x:?} vs {y:?}", String::from_utf8_lossy(&b)),
            }
        }
    }

    #[test]
    fn indices_sorted_unique_and_in_range() {
        let c = cfg(64);
        let doc = Doc::from_text("the cat the cat the cat sat on the mat ```x``` 12 34?");
        let s = sparse(&c, &doc);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(s.iter().all(|&(i, _)| (i as usize) < c.width()));
    }

    #[test]
    fn case_insensitive_ascii() {
        let c = cfg(1 << 12);
        let a = sparse(&c, &Doc::from_text("Hello World"));
        let b = sparse(&c, &Doc::from_text("hello world"));
        // hashed parts equal; upper_share differs
        let hashed = |v: &[(u32, f32)]| {
            v.iter()
                .filter(|p| p.0 < c.dim)
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(hashed(&a), hashed(&b));
    }

    #[test]
    fn structure_values() {
        let s = structure(&Doc::from_text("Is 12 > 3?\n```py\nx=1\n```"));
        assert_eq!(s[2], 1.0);
        assert!((s[3] - (3f64).ln_1p() / 5.0).abs() < 1e-12);
        assert!((s[5] - (1f64).ln_1p() / 3.0).abs() < 1e-12);
        assert_eq!(structure(&Doc::from_text(""))[4], 0.0);
        assert!((structure(&Doc::from_text("é"))[7] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn accumulate_matches_sparse_dot() {
        let c = FeatureConfig {
            dim: 97,
            char_min: 3,
            char_max: 5,
            char_window: 20,
            ..FeatureConfig::default()
        };
        let long = "Which of THESE is a mammal? A) shark B) whale C) trout, 42 ``` ".repeat(9);
        for text in [
            "Which of these is a mammal? A) shark B) whale C) trout, 42 ```",
            &long,
        ] {
            let doc = Doc::from_text(text);
            for k in [1, 3, 4, 6, 8, 11, 16, 18, 40] {
                assert_accumulate_is_sparse_dot(&c, &doc, k);
            }
        }
    }

    /// `accumulate` over a `k`-lane table of fixed pseudo-random weights adds what the
    /// dot product of those weights with the training features (`sparse`) gives.
    fn assert_accumulate_is_sparse_dot(c: &FeatureConfig, doc: &Doc, k: usize) {
        let weights: Vec<f32> = (0..c.width() * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut acc = vec![0.0; k];
        accumulate(c, doc, &Table::pack(&weights, k), k, &mut acc);
        let mut want = vec![0.0f64; k];
        for (i, v) in sparse(c, doc) {
            for f in 0..k {
                want[f] += f64::from(v) * f64::from(weights[i as usize * k + f]);
            }
        }
        for f in 0..k {
            assert!(
                (acc[f] - want[f]).abs() < 1e-4,
                "{c:?} k={k}: {acc:?} vs {want:?}"
            );
        }
    }

    /// The default `dim` (2^16) takes the shift-only row lookup, other `dim`s the
    /// multiply-shift one; both, with every word and character n-gram setting, add the
    /// rows `sparse` (the training features) selects.
    #[test]
    fn accumulate_matches_sparse_dot_at_the_default_dim() {
        let text = "Which of THESE is a mammal? A) shark B) whale, 42 ``` é\u{1F600}x ".repeat(5);
        let configs = [
            FeatureConfig::default(),
            FeatureConfig {
                word_ngrams: 1,
                char_min: 2,
                char_max: 6,
                ..FeatureConfig::default()
            },
            FeatureConfig {
                word_ngrams: 0,
                char_window: 0,
                ..FeatureConfig::default()
            },
            FeatureConfig {
                char_max: 0,
                ..FeatureConfig::default()
            },
            FeatureConfig {
                dim: 1 << 15,
                ..FeatureConfig::default()
            },
        ];
        for c in configs {
            for t in ["", "a", " ,x", &text[..7], &text] {
                let doc = Doc::from_text(t);
                for k in [3, 6, 11] {
                    assert_accumulate_is_sparse_dot(&c, &doc, k);
                }
            }
        }
    }

    #[test]
    fn word_grams_match_a_split_reference() {
        let seed = DEFAULT_SEED;
        for text in [
            "",
            " ",
            "a",
            "  Two WORDS ",
            "x1,y2;z3 ...\n\tend",
            "é à",
            "a\u{b}b",
        ] {
            let (mut want, mut want_uni) = (Vec::new(), Vec::new());
            let mut prev: Option<u64> = None;
            for w in text
                .as_bytes()
                .split(|&b| !word_byte(b))
                .filter(|w| !w.is_empty())
            {
                let mut h = FNV_BASIS ^ seed;
                for &b in w {
                    h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
                }
                let h = mix(h);
                want.push(h);
                want_uni.push(h);
                if let Some(p) = prev {
                    want.push(pair_hash(p, h, seed));
                }
                prev = Some(h);
            }
            let mut got = Vec::new();
            let words = word_grams::<true>(text.as_bytes(), seed, |h| got.push(h));
            assert_eq!(got, want, "{text:?}");
            assert_eq!(words, count_words(text.as_bytes()), "{text:?}");
            let mut uni = Vec::new();
            let words = word_grams::<false>(text.as_bytes(), seed, |h| uni.push(h));
            assert_eq!(uni, want_uni, "{text:?}");
            assert_eq!(words, want_uni.len() as u64, "{text:?}");
        }
    }

    #[test]
    fn packed_rows_pad_to_whole_lanes() {
        let k = 18;
        let flat: Vec<f32> = (0..3 * k).map(|i| i as f32).collect();
        let Table::Wide { blocks, rows } = Table::pack(&flat, k) else {
            panic!("18 outputs take whole blocks")
        };
        assert_eq!((row_lanes(k), blocks, rows.len()), (32, 2, 6));
        assert_eq!(rows[2].0[0], 18.0); // row 1, family 0
        assert_eq!(rows[3].0[1], 35.0); // row 1, family 17
        assert_eq!(rows[3].0[2], 0.0); // padding
        assert_eq!(std::mem::align_of::<Block>(), 64);
        assert_eq!(std::mem::size_of::<Row4>(), 16);
        assert_eq!(std::mem::size_of::<Row8>(), 32);
        assert_eq!(std::mem::align_of::<Row8>(), 32);
        let t = Table::pack(&(0..5 * 3).map(|i| i as f32).collect::<Vec<_>>(), 3);
        assert_eq!(t.rows(), 5);
        assert_eq!(
            t,
            Table::Four(
                (0..5)
                    .map(|r| {
                        let r = r as f32 * 3.0;
                        Row4([r, r + 1.0, r + 2.0, 0.0])
                    })
                    .collect()
            )
        );
        let t = Table::pack(&(0..3 * 6).map(|i| i as f32).collect::<Vec<_>>(), 6);
        assert_eq!((t.rows(), t.weight(1, 5), t.weight(2, 0)), (3, 11.0, 12.0));
    }

    #[test]
    fn text_stats_match_a_byte_by_byte_count() {
        let long = "Q? 12 ab\nÉé x9y 3.5 `` ``` \u{1F600} AB ".repeat(400); // > 255 × 16 bytes
        for text in ["", "1", "?\n", "a1b22c333", &long, &long[..4097]] {
            let t = text.as_bytes();
            let mut want = [0u64; 8];
            let mut p = b' ';
            for &b in t {
                for (w, v) in want.iter_mut().zip(byte_stats(p, b)) {
                    *w += u64::from(v);
                }
                p = b;
            }
            assert_eq!(text_stats(t), want, "{}", text.len());
        }
    }

    #[test]
    fn word_count_is_the_unigram_count() {
        for text in ["", " ", "a", "  two words ", "x1,y2;z3 ...\n\tend", "é à"] {
            let got = count_words(text.as_bytes());
            let (_, _, words) =
                for_each_gram(&FeatureConfig::default(), text.as_bytes(), |_| {}, |_| {});
            assert_eq!(Some(got), words, "{text:?}");
            let uni = FeatureConfig {
                word_ngrams: 1,
                ..FeatureConfig::default()
            };
            let (_, _, words) = for_each_gram(&uni, text.as_bytes(), |_| {}, |_| {});
            assert_eq!(Some(got), words, "{text:?}");
        }
    }

    #[test]
    fn branch_free_classes_match_the_table() {
        for b in 0..=255u8 {
            assert_eq!(word_byte(b), CLASS[b as usize] & WORD != 0, "{b}");
            assert_eq!(digit_byte(b), CLASS[b as usize] & DIGIT != 0, "{b}");
            let lowered = if word_byte(b) {
                b.to_ascii_lowercase()
            } else {
                NOT_WORD
            };
            assert_eq!(WORD_LOWERED[b as usize], lowered, "{b}");
        }
    }

    #[test]
    fn char_4grams_match_the_rolling_loop() {
        let all: Vec<u8> = (0..=255u8)
            .chain(b"ABCxyz Q? \xc3\xa9 Z@[`{".iter().copied())
            .collect();
        let long = all.repeat(3);
        for len in [0, 1, 3, 4, 5, 17, 255, 511, 512] {
            for tail in [&all[..len.min(all.len())], &long[..len]] {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                let n = char_4grams(tail, 0x1234, &mut |h| got.push(h));
                let m = char_grams(tail, 4, 0x1234, &mut |h| want.push(h));
                assert_eq!((n, &got), (m, &want), "{len}");
                assert_eq!(got.len(), tail.len().saturating_sub(3));
            }
        }
    }

    #[test]
    fn fence_is_any_triple_backtick() {
        for text in [
            "", "`", "``", "```", "`` `", "a``b``", "x ``` y", "````", "`a```",
        ] {
            let want = text.as_bytes().windows(3).any(|w| w == b"```");
            assert_eq!(has_fence(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn structure_counts_runs_across_chunks() {
        // runs spanning the 255-byte chunk boundary count once
        let text = format!("{} 12{}", "a".repeat(253), "3".repeat(300));
        let s = structure(&Doc::from_text(&text));
        assert!((s[1] - (2f64).ln_1p() / 7.0).abs() < 1e-12); // two words
        assert!((s[3] - (1f64).ln_1p() / 5.0).abs() < 1e-12); // one digit run
        assert!((s[0] - ((text.len() as f64).ln_1p() / 8.0)).abs() < 1e-12);
    }

    #[test]
    fn config_round_trip_and_validation() {
        let c = FeatureConfig::default();
        assert_eq!(FeatureConfig::from_value(&c.to_value()).unwrap(), c);
        assert!(FeatureConfig::from_json(r#"{"dim":0}"#).is_err());
        assert!(FeatureConfig::from_json(r#"{"char_min":5,"char_max":4}"#).is_err());
        assert!(FeatureConfig::from_json(r#"{"structure":["x"]}"#).is_err());
        assert!(FeatureConfig::from_json("[]").is_err());
    }

    #[test]
    fn batch_csr_shape() {
        let c = cfg(256);
        let docs = [
            Doc::from_text("a b"),
            Doc::from_text(""),
            Doc::from_text("c"),
        ];
        let (idx, val, ptr) = batch(&c, &docs);
        assert_eq!(ptr.len(), 4);
        assert_eq!(idx.len(), val.len());
        assert_eq!(*ptr.last().unwrap() as usize, idx.len());
    }
}
