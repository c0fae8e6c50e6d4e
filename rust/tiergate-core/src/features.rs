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
    /// non-object). Missing or odd-shaped fields contribute nothing.
    pub fn from_body(body: &[u8]) -> Result<Self> {
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

#[inline]
fn is_word_byte(b: u8) -> bool {
    CLASS[b as usize] & WORD != 0
}

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

/// Calls `word(hash)` for every word n-gram and `chars(hash)` for every character
/// n-gram of `lowered` (already ASCII-lowered), in text order; returns the counts.
fn for_each_gram(
    cfg: &FeatureConfig,
    lowered: &[u8],
    mut word: impl FnMut(u64),
    mut chars: impl FnMut(u64),
) -> (u32, u32) {
    let mut n_word = 0u32;
    if cfg.word_ngrams > 0 {
        let mut prev: Option<u64> = None;
        let mut i = 0;
        let n = lowered.len();
        while i < n {
            while i < n && !is_word_byte(lowered[i]) {
                i += 1;
            }
            if i == n {
                break;
            }
            // FNV-1a over the word while scanning it (one pass), then `mix`
            let mut h = FNV_BASIS ^ cfg.seed;
            while i < n && is_word_byte(lowered[i]) {
                h = (h ^ u64::from(lowered[i])).wrapping_mul(FNV_PRIME);
                i += 1;
            }
            let h = mix(h);
            word(h);
            n_word += 1;
            if cfg.word_ngrams >= 2 {
                if let Some(p) = prev {
                    word(pair_hash(p, h, cfg.seed));
                    n_word += 1;
                }
            }
            prev = Some(h);
        }
    }
    let mut n_char = 0u32;
    if cfg.char_max > 0 {
        let w = cfg.char_window as usize;
        let tail = if w == 0 || lowered.len() <= w {
            lowered
        } else {
            &lowered[lowered.len() - w..]
        };
        for n in cfg.char_min..=cfg.char_max {
            let seed = mix(cfg.seed ^ (0x100 + u64::from(n)));
            let n = n as usize;
            if tail.len() < n {
                continue;
            }
            // Rolling little-endian value of the last n bytes.
            let mask = if n == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            };
            let mut g = 0u64;
            for (i, &b) in tail.iter().enumerate() {
                g = ((g << 8) | u64::from(b)) & mask;
                if i + 1 >= n {
                    // g holds the bytes big-endian (first byte highest); swap to LE order.
                    let le = g.swap_bytes() >> (64 - 8 * n);
                    chars(mix(le ^ seed));
                    n_char += 1;
                }
            }
        }
    }
    (n_word, n_char)
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
/// digits, upper, lower, `?`, `\n`, word starts, digit-run starts.
#[inline]
#[allow(clippy::cast_possible_wrap, clippy::needless_bitwise_bool)] // sign bit; branch-free
fn byte_stats(p: u8, b: u8) -> [u8; 9] {
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
        u8::from(word_byte(b) & !word_byte(p)),
        u8::from(digit & !digit_byte(p)),
    ]
}

/// [`byte_stats`] summed over `text` (the first byte preceded by a space). One pass of
/// branch-free byte-wide sums over chunks of at most 255 bytes: it vectorises.
fn text_stats(text: &[u8]) -> [u64; 9] {
    let mut total = [0u64; 9];
    let Some(&first) = text.first() else {
        return total;
    };
    for (t, v) in total.iter_mut().zip(byte_stats(b' ', first)) {
        *t += u64::from(v);
    }
    let (prev, cur) = (&text[..text.len() - 1], &text[1..]);
    for (pc, cc) in prev.chunks(255).zip(cur.chunks(255)) {
        let mut acc = [0u8; 9];
        for (&p, &b) in pc.iter().zip(cc) {
            let s = byte_stats(p, b);
            for (a, v) in acc.iter_mut().zip(s) {
                *a = a.wrapping_add(v);
            }
        }
        for (t, a) in total.iter_mut().zip(acc) {
            *t += u64::from(a);
        }
    }
    total
}

/// Whether `text` holds a triple backtick (branch-free, vectorises).
#[allow(clippy::needless_bitwise_bool)] // branch-free on purpose
fn has_fence(text: &[u8]) -> bool {
    text.len() >= 3
        && text
            .iter()
            .zip(&text[1..])
            .zip(&text[2..])
            .fold(false, |a, ((&x, &y), &z)| {
                a | ((x == b'`') & (y == b'`') & (z == b'`'))
            })
}

/// The structure features of a document, in [`STRUCTURE`] order (one vectorised pass
/// for the counts, one for the code fence).
pub fn structure(doc: &Doc) -> [f64; STRUCTURE.len()] {
    let text = doc.text.as_bytes();
    let [chars, non_ascii, digits, upper, lower, questions, lines, words, digit_runs] =
        text_stats(text);
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

fn lowered(text: &str) -> Vec<u8> {
    text.as_bytes().to_ascii_lowercase()
}

/// Hashed and structure features of one document as `(index, value)` pairs, indices
/// ascending and unique (duplicate buckets summed).
pub fn sparse(cfg: &FeatureConfig, doc: &Doc) -> Vec<(u32, f32)> {
    let low = lowered(&doc.text);
    let dim = cfg.dim;
    let mut words: Vec<u32> = Vec::new();
    let mut chars: Vec<u32> = Vec::new();
    let (nw, nc) = for_each_gram(
        cfg,
        &low,
        |h| words.push(bucket(h, dim)),
        |h| chars.push(bucket(h, dim)),
    );
    let mut pairs: Vec<(u32, f64)> = Vec::with_capacity(words.len() + chars.len() + 12);
    let sw = if nw > 0 {
        1.0 / f64::from(nw).sqrt()
    } else {
        0.0
    };
    let sc = if nc > 0 {
        1.0 / f64::from(nc).sqrt()
    } else {
        0.0
    };
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
    for (j, v) in structure(doc).into_iter().enumerate() {
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

/// 16 weights on one cache line. A feature's row of `k` family weights is
/// `ceil(k / 16)` blocks, zero-padded, so a hashed n-gram touches whole lines only.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub struct Block(pub [f32; LANES]);

/// Blocks per row for `k` families.
pub fn blocks_per_row(k: usize) -> usize {
    k.div_ceil(LANES)
}

/// Lay out `weights` (`rows × k`, row-major) as [`Block`] rows.
pub fn pack_rows(weights: &[f32], k: usize) -> Vec<Block> {
    let bpr = blocks_per_row(k);
    let rows = weights.len() / k.max(1);
    let mut out = vec![Block::default(); rows * bpr];
    for (r, row) in weights.chunks_exact(k).enumerate() {
        for (f, &w) in row.iter().enumerate() {
            out[r * bpr + f / LANES].0[f % LANES] = w;
        }
    }
    out
}

/// Most families [`accumulate`] takes (4 blocks).
pub const MAX_ACC_FAMILIES: usize = 4 * LANES;

/// Sums the rows `rows` of `weights` (`bpr` blocks each), in order, into `out`
/// (`bpr` blocks): one block at a time, the running sum held in registers.
#[inline]
fn gather(rows: &[u32], weights: &[Block], bpr: usize, out: &mut [Block]) {
    for (b, o) in out.iter_mut().enumerate().take(bpr) {
        let mut sum = [0f32; LANES];
        for &r in rows {
            let w = &weights[r as usize * bpr + b].0;
            for (a, x) in sum.iter_mut().zip(w) {
                *a += *x;
            }
        }
        o.0 = sum;
    }
}

/// Adds the rows of `weights` (`width` rows of [`blocks_per_row`]`(k)` blocks, see
/// [`pack_rows`]) selected by the document's features, each scaled by its value, into
/// `acc` (length `k <= MAX_ACC_FAMILIES`). The serving path: no sort; the buckets are
/// hashed first and then gathered, so the row loads overlap.
pub fn accumulate(cfg: &FeatureConfig, doc: &Doc, weights: &[Block], k: usize, acc: &mut [f64]) {
    debug_assert_eq!(acc.len(), k);
    debug_assert!(k <= MAX_ACC_FAMILIES);
    let bpr = blocks_per_row(k);
    debug_assert_eq!(weights.len(), cfg.width() * bpr);
    let low = lowered(&doc.text);
    let dim = cfg.dim;
    let mut word_rows: Vec<u32> = Vec::with_capacity(low.len() / 2);
    let mut char_rows: Vec<u32> = Vec::with_capacity(cfg.char_window as usize + 8);
    let (nw, nc) = for_each_gram(
        cfg,
        &low,
        |h| word_rows.push(bucket(h, dim)),
        |h| char_rows.push(bucket(h, dim)),
    );
    let mut word_sum = [Block::default(); 4];
    let mut char_sum = [Block::default(); 4];
    gather(&word_rows, weights, bpr, &mut word_sum);
    gather(&char_rows, weights, bpr, &mut char_sum);
    let sw = if nw > 0 {
        1.0 / f64::from(nw).sqrt()
    } else {
        0.0
    };
    let sc = if nc > 0 {
        1.0 / f64::from(nc).sqrt()
    } else {
        0.0
    };
    for (f, a) in acc.iter_mut().enumerate() {
        let (b, l) = (f / LANES, f % LANES);
        *a += f64::from(word_sum[b].0[l]) * sw + f64::from(char_sum[b].0[l]) * sc;
    }
    for (j, v) in structure(doc).into_iter().enumerate() {
        if v != 0.0 {
            let row = (cfg.dim as usize + j) * bpr;
            for (f, a) in acc.iter_mut().enumerate() {
                *a += f64::from(weights[row + f / LANES].0[f % LANES]) * v;
            }
        }
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
        let k = 3;
        let weights: Vec<f32> = (0..c.width() * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let doc = Doc::from_text("Which of these is a mammal? A) shark B) whale C) trout, 42 ```");
        let mut acc = vec![0.0; k];
        accumulate(&c, &doc, &pack_rows(&weights, k), k, &mut acc);
        let mut want = vec![0.0f64; k];
        for (i, v) in sparse(&c, &doc) {
            for f in 0..k {
                want[f] += f64::from(v) * f64::from(weights[i as usize * k + f]);
            }
        }
        for f in 0..k {
            assert!((acc[f] - want[f]).abs() < 1e-4, "{acc:?} vs {want:?}");
        }
    }

    #[test]
    fn packed_rows_pad_to_whole_blocks() {
        let k = 18;
        let flat: Vec<f32> = (0..3 * k).map(|i| i as f32).collect();
        let packed = pack_rows(&flat, k);
        assert_eq!((blocks_per_row(k), packed.len()), (2, 6));
        assert_eq!(packed[2].0[0], 18.0); // row 1, family 0
        assert_eq!(packed[3].0[1], 35.0); // row 1, family 17
        assert_eq!(packed[3].0[2], 0.0); // padding
        assert_eq!(std::mem::align_of::<Block>(), 64);
    }

    #[test]
    fn branch_free_classes_match_the_table() {
        for b in 0..=255u8 {
            assert_eq!(word_byte(b), CLASS[b as usize] & WORD != 0, "{b}");
            assert_eq!(digit_byte(b), CLASS[b as usize] & DIGIT != 0, "{b}");
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
