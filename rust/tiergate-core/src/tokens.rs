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
//!
//! # Anthropic Messages bodies
//! [`estimate_anthropic_tokens`] of an Anthropic body is [`estimate_tokens`] of the
//! chat-completions body the same request would be, built as `parse_anthropic_request`
//! reads it (Python, `server/parse_anthropic.py`):
//!
//! * `system`, a string or an array of blocks, is the first message, of role `system`
//!   with that content (an empty string or array is no message);
//! * each entry of `messages` becomes, in order, a tool message per `tool_result` block
//!   (its `content`, a string or blocks, as the message's), then its own message of its
//!   role (as spelled) whose parts are its other blocks (a text block its `text`, an
//!   `image` block an `image_url` part, a thinking block nothing) and whose tool calls
//!   are its `tool_use` blocks (`name`, and `orjson.dumps(input)` as `arguments`; `{}`
//!   when absent) — left out for a `user` turn whose blocks are all tool results;
//! * each entry of `tools` is a function tool of its `name`, `description` and
//!   `input_schema` as `parameters`;
//! * a structured output's schema `S` (`output_config.format.schema` when
//!   `output_config` is present and not null, else `output_format.schema`) is
//!   `response_format.json_schema` `{"name": "response", "schema": S, "strict": true}`.
//!
//! Nothing else counts (`tool_choice`, a `response_format` member, which the parser
//! ignores). The parser's rewording of a result (texts joined by newlines, `Error: `
//! before a failed one) is not applied: a result counts its texts as parts.

use crate::bytemask::{ascii_letters, token_masks, TokenMasks};
use crate::error::{CoreError, Result};
use crate::rawjson::{decode_into, Esc, JStr, Parser, Value};

mod anthropic;
pub(crate) use anthropic::orjson_text;
pub use anthropic::{anthropic_tools_millitokens, estimate_anthropic_tokens};

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

const fn ascii_class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Digit,
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => Class::Space,
        _ => Class::Punct,
    }
}

const ASCII_CLASS: [Class; 128] = {
    let mut t = [Class::Punct; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

fn class(c: char) -> Class {
    if c.is_ascii() {
        ASCII_CLASS[c as usize]
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

/// Class and UTF-8 length of the character starting at byte `i` (`i < s.len()`).
#[allow(clippy::inline_always)] // called per character; the ASCII path is two loads
#[inline(always)]
fn class_at(s: &str, i: usize) -> (Class, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        (ASCII_CLASS[b as usize], 1)
    } else {
        class_at_non_ascii(s, i)
    }
}

#[inline(never)]
fn class_at_non_ascii(s: &str, i: usize) -> (Class, usize) {
    let c = s[i..].chars().next().unwrap_or(' ');
    (class(c), c.len_utf8())
}

fn seg_cost(table: &[u64; 17], len: usize) -> u64 {
    if len < table.len() {
        table[len]
    } else {
        table[16] + SLOPE * (len - 16) as u64
    }
}

fn seg_millitokens(prefix: u8, s: &[u8]) -> u64 {
    if s.len() >= 2 && s.iter().all(u8::is_ascii_uppercase) {
        return 1000 + 450 * (s.len() as u64 - 2) + if prefix == 2 { 600 } else { 0 };
    }
    seg_cost(lower_table(prefix), s.len())
}

fn lower_table(prefix: u8) -> &'static [u64; 17] {
    const TABLES: [&[u64; 17]; 3] = [&NOSPACE_LOWER, &SPACE_LOWER, &OTHER_LOWER];
    TABLES[usize::from(prefix.min(2))]
}

/// `prefix`: 0 none, 1 a space, 2 anything else. Segments split at lower→upper.
fn ascii_word_cost(prefix: u8, w: &[u8]) -> u64 {
    let mut total = 0;
    let mut start = 0;
    let mut p = prefix;
    for i in 1..w.len() {
        if w[i].is_ascii_uppercase() && w[i - 1].is_ascii_lowercase() {
            total += seg_millitokens(p, &w[start..i]);
            p = 0;
            start = i;
        }
    }
    total + seg_millitokens(p, &w[start..])
}

fn word_cost(prefix: u8, w: &str, ascii: bool) -> u64 {
    if ascii {
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

/// `body`: the punctuation characters (no leading space, no trailing newlines).
fn punct_cost(body: &str, newline: bool) -> u64 {
    let ascii = body.bytes().filter(u8::is_ascii).count();
    let non_ascii = if ascii == body.len() {
        0
    } else {
        body.chars().count() - ascii
    };
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

/// End of the run of `class` characters starting at byte `j`; also whether it is ASCII.
#[inline]
fn run_end(s: &str, mut j: usize, class: Class) -> (usize, bool) {
    let b = s.as_bytes();
    let mut ascii = true;
    while j < b.len() {
        if b[j] < 0x80 {
            if ASCII_CLASS[b[j] as usize] != class {
                break;
            }
            j += 1;
        } else {
            let (cl, n) = class_at(s, j);
            if cl != class {
                break;
            }
            ascii = false;
            j += n;
        }
    }
    (j, ascii)
}

fn is_newline(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// Scan the letter run starting at byte `start`; return its end and cost.
#[inline]
fn letter_run(s: &str, start: usize, prefix: u8) -> (usize, u64) {
    let bytes = s.as_bytes();
    let mut j = start;
    let mut ascii = true;
    loop {
        while j < bytes.len() && bytes[j].is_ascii_alphabetic() {
            j += 1;
        }
        if j < bytes.len() && bytes[j] >= 0x80 {
            let (cl, n) = class_at(s, j);
            if cl == Class::Letter {
                ascii = false;
                j += n;
                continue;
            }
        }
        break;
    }
    let w = &s[start..j];
    let cost = if !ascii {
        word_cost(prefix, w, false)
    } else if w.as_bytes()[1..].iter().any(u8::is_ascii_uppercase) {
        ascii_word_cost(prefix, w.as_bytes())
    } else {
        seg_cost(lower_table(prefix), w.len())
    };
    (j, cost)
}

/// End of the ASCII letter run starting at `start` (an ASCII letter), whether a letter
/// after the first is upper-case, and whether the byte at the end is non-ASCII. Sixteen
/// bytes at a time ([`ascii_letters`]): most words end in the first load, so the loop
/// exit is predictable where a per-byte loop's is not.
///
/// `padded` is the text (`padded[..len]`) and what the caller has after it, which must
/// begin with a byte that is not a letter when there is any: loads may then run past the
/// text's end (into a JSON string's closing quote, say), and short texts and the words
/// at a text's end take the same path as the others.
#[inline]
fn ascii_letter_run(padded: &[u8], len: usize, start: usize) -> (usize, bool, bool) {
    let mut end = start;
    let mut upper = 0u32;
    let mut not_first = !1u32;
    while let Some(chunk) = padded.get(end..).and_then(<[u8]>::first_chunk::<16>) {
        let (letters, up) = ascii_letters(chunk);
        let up = up & not_first;
        not_first = !0;
        let non_letter = !letters & 0xFFFF;
        if non_letter == 0 {
            upper |= up;
            end += 16;
            continue;
        }
        let n = non_letter.trailing_zeros() as usize;
        upper |= up & ((1 << n) - 1);
        return (end + n, upper != 0, chunk[n] >= 0x80);
    }
    let mut any_upper = upper != 0;
    while end < len && padded[end].is_ascii_alphabetic() {
        any_upper |= end > start && padded[end].is_ascii_uppercase();
        end += 1;
    }
    (end, any_upper, end < len && padded[end] >= 0x80)
}

/// Milli-token cost of a letter run without inner capitals, by prefix kind (0 none,
/// 1 a space, 2 anything else) and length, for lengths below [`COST_LEN`]: one load in
/// place of [`lower_table`] and [`seg_cost`].
const COST_LEN: usize = 64;
const LOWER_COST: [[u64; COST_LEN]; 3] = {
    let tables = [&NOSPACE_LOWER, &SPACE_LOWER, &OTHER_LOWER];
    let mut t = [[0u64; COST_LEN]; 3];
    let mut p = 0;
    while p < 3 {
        let mut len = 0;
        while len < COST_LEN {
            t[p][len] = if len < 17 {
                tables[p][len]
            } else {
                tables[p][16] + SLOPE * (len as u64 - 16)
            };
            len += 1;
        }
        p += 1;
    }
    t
};

/// [`seg_cost`]`(lower_table(prefix), len)` for `prefix` ≤ 2.
#[inline]
fn lower_cost(prefix: u8, len: usize) -> u64 {
    match LOWER_COST[usize::from(prefix)].get(len) {
        Some(&c) => c,
        None => seg_cost(lower_table(prefix), len),
    }
}

/// Byte flags of the fast path: one table lookup classes a byte.
const F_LETTER: u8 = 1;
const F_DIGIT: u8 = 2;
const F_SPACE: u8 = 4;
const F_PUNCT: u8 = 8;
/// A byte of a non-ASCII character: its class needs decoding (the general path).
const F_WIDE: u8 = 16;

const FLAGS: [u8; 256] = {
    let mut t = [F_WIDE; 256];
    let mut i = 0;
    while i < 128 {
        t[i] = match ascii_class(i as u8) {
            Class::Letter => F_LETTER,
            Class::Digit => F_DIGIT,
            Class::Space => F_SPACE,
            Class::Punct => F_PUNCT,
        };
        i += 1;
    }
    t
};

/// The ASCII letter run starting at `start` after a prefix of kind `prefix`: its end and
/// cost (rule 2), or `None` when it ends at a non-ASCII byte (which may be a letter).
#[allow(clippy::inline_always)] // two call sites in the per-chunk loop; a call costs more
#[inline(always)]
fn ascii_word<const ASCII: bool>(
    bytes: &[u8],
    padded: &[u8],
    start: usize,
    prefix: u8,
) -> Option<(usize, u64)> {
    let (end, upper, wide) = ascii_letter_run(padded, bytes.len(), start);
    if !ASCII && wide {
        return None; // the run may go on with non-ASCII letters
    }
    let cost = if upper {
        ascii_word_cost(prefix, &bytes[start..end])
    } else {
        lower_cost(prefix, end - start)
    };
    Some((end, cost))
}

/// The ASCII chunks of the (up to) 64 bytes of a text from the chunk start `p`, all
/// classified at once ([`token_masks`]) and their boundaries found with bit operations,
/// where the per-chunk walk pays a dispatch and a loop per chunk: prose as people write
/// it, words broken every few by a comma, a full stop, a figure or a newline.
///
/// Returns the end of the chunks summed (`p` when none), their cost, and where the
/// caller's per-chunk walk hands back to this one. The block stops at the first byte it
/// does not class (a non-ASCII byte, a `'` not after a letter: see [`rare_bytes`]; the
/// per-chunk walk then goes past it) and keeps only chunks that bytes after the known
/// ones cannot change: not the one holding the last known byte, nor those of a
/// whitespace run reaching it (how a run splits depends on where it ends). Each chunk's
/// cost is counted at a bit inside it, so that the chunks kept are the bits below
/// `keep`; most cost one token, and are counted together ([`u64::count_ones`]).
#[inline]
fn block(bytes: &[u8], padded: &[u8], p: usize) -> (usize, u64, usize) {
    let avail = bytes.len() - p;
    let masks = match padded.get(p..).and_then(<[u8]>::first_chunk::<64>) {
        Some(window) => token_masks(window),
        None => tail_masks(&bytes[p..]),
    };
    let full = avail.min(64);
    let rare = rare_bytes(&bytes[p..], masks.rare, masks.letters, full);
    let lim = rare.lim;
    let (nl, tabs) = (rare.newlines, rare.tabs);
    let valid = low_bits(lim);
    let lets = masks.letters & valid & !rare.contracted;
    let digs = masks.digits & valid;
    let sp = masks.spaces & valid;
    let nn = sp | tabs; // whitespace but newlines
    let white = nn | nl;
    let pu = valid & !(lets | digs | white | rare.contractions | rare.contracted);

    // Rule 2: a letter run; the byte before is its prefix when it is a space, a tab, or
    // punctuation beginning its chunk (not after punctuation, or a space, which take it).
    let first = lets & !(lets << 1);
    let before = first >> 1;
    let spaced = sp & before;
    let glued = (tabs & before) | (pu & before & !((pu | sp) << 1));
    let bare = first & !((spaced | glued) << 1);
    // Rule 3: digit runs in groups of three from their first.
    let d3 = digs & (digs << 1) & (digs << 2);
    let mut group = digs & !(digs << 1);
    let mut groups = group;
    while group != 0 {
        group = (group << 3) & d3;
        groups |= group;
    }
    // Rule 4: punctuation runs but prefixes, with the space before them, and the
    // newlines after them (carried through each run of newlines after punctuation).
    let runs = pu & !(pu << 1) & !glued;
    let punct = (runs & !(sp << 1)) | ((runs & (sp << 1)) >> 1);
    let trailing = (nl.wrapping_add(nl & (pu << 1)) ^ nl) & nl;
    // Rule 5 on the whitespace left: a run's chunk up to its last newline (counted at its
    // first newline, found by carrying through the run's leading non-newlines); then,
    // of what follows its last newline (or of a run without one), the last character
    // alone (or a word's or a punctuation run's prefix, counted once at the same bit) and
    // the rest before it (counted at the character before the last).
    let ws = white & !trailing;
    let ws_first = ws & !(ws << 1);
    let first_nl = (nn.wrapping_add(ws_first & nn) | ws_first) & nl;
    let tail = ws & !(ws >> 1) & nn;
    let rest = (tail & (nn << 1)) >> 1;

    // Keep the chunks before the one holding the last known byte, or before the
    // whitespace run ending there: `keep`, up to the last chunk start at or before it.
    let starts = spaced | glued | bare | groups | punct | ws_first | rare.contractions;
    let known = if lim == 0 {
        0
    } else if white >> (lim - 1) & 1 == 1 {
        64 - (!white & valid).leading_zeros() as usize
    } else {
        lim - 1
    };
    let up_to = starts & low_bits(known + 1);
    let kept = if up_to == 0 {
        0
    } else {
        up_to.ilog2() as usize
    };
    let keep = low_bits(kept);

    // Most chunks cost one token: words up to the tables' first step, figures,
    // whitespace, punctuation runs of one or two.
    let ones =
        (spaced | glued | bare | groups | punct | first_nl | tail | rest | rare.contractions)
            & keep;
    let mut cost = 1000 * u64::from(ones.count_ones());
    cost += word_extras(&bytes[p..], lets, masks.caps, spaced, glued, keep);
    // Punctuation runs of three or more, or of two before a newline.
    let mut odd = runs & (pu >> 1) & ((pu >> 2) | (nl >> 2)) & keep;
    while odd != 0 {
        let s = odd.trailing_zeros() as usize;
        odd &= odd - 1;
        let n = (!pu >> s).trailing_zeros() as usize;
        cost += ascii_punct_cost(n, nl >> (s + n) & 1 == 1) - 1000;
    }

    let resume = if lim < full {
        p + lim + 1 // past the byte not classed
    } else if full < 64 {
        usize::MAX // the text's end: its last chunks are the per-chunk walk's
    } else {
        p + kept.max(1) // a chunk longer than the window: the per-chunk walk's
    };
    (p + kept, cost, resume)
}

/// The bytes of a [`block`] its masks leave undecided, looked at one by one (a few per
/// paragraph of prose).
struct Rare {
    /// The bytes known: up to the first the block does not class (or the window's end).
    lim: usize,
    newlines: u64,
    /// `\t`, `\x0b`, `\x0c`: whitespace but not newlines.
    tabs: u64,
    /// The `'` of contractions after a letter (rule 1: `'s`, `'ll`, ...): one token each.
    contractions: u64,
    /// The letters of those contractions: not a word's.
    contracted: u64,
}

/// [`Rare`] of the `full` (≤ 64) bytes of `text` whose bits are set in `rare`; `letters`:
/// its letters. A `'` after a letter begins a chunk: a contraction, or punctuation like
/// any other when none follows; elsewhere (after a space or punctuation, which may take
/// it, or too near the window's end to tell) it ends what the block knows, as does a
/// non-ASCII byte.
#[inline]
fn rare_bytes(text: &[u8], mut rare: u64, letters: u64, full: usize) -> Rare {
    let mut r = Rare {
        lim: full,
        newlines: 0,
        tabs: 0,
        contractions: 0,
        contracted: 0,
    };
    rare &= low_bits(full);
    while rare != 0 {
        let j = rare.trailing_zeros() as usize;
        rare &= rare - 1;
        match text[j] {
            b'\n' | b'\r' => r.newlines |= 1 << j,
            b'\t' | 0x0b | 0x0c => r.tabs |= 1 << j,
            0..=0x1f => {} // punctuation
            b'\'' if j >= 1 && j + 2 < full && letters >> (j - 1) & 1 == 1 => {
                // `| 0x20` lower-cases letters and makes no letter of anything else.
                let n = match [text[j + 1] | 0x20, text[j + 2] | 0x20] {
                    [b'l', b'l'] | [b'v' | b'r', b'e'] => 2,
                    [b's' | b'd' | b'm' | b't', _] => 1,
                    _ => 0, // punctuation
                };
                if n > 0 {
                    r.contractions |= 1 << j;
                    r.contracted |= low_bits(n) << (j + 1);
                }
            }
            _ => {
                r.lim = j;
                break;
            }
        }
    }
    r
}

/// What the words of a [`block`] cost beyond one token each: the words past their
/// table's first step (counted at their first letter), and those with capitals inside.
/// `text`: the block's bytes on; `lets`, `caps`: its letters and bytes with bit 5 clear;
/// `spaced`, `glued`: the prefixes of its words after a space and after anything else;
/// `keep`: the bytes of the chunks kept.
#[inline]
fn word_extras(text: &[u8], lets: u64, caps: u64, spaced: u64, glued: u64, keep: u64) -> u64 {
    let first = lets & !(lets << 1);
    let (spaced_at, glued_at) = (spaced << 1, glued << 1);
    let bare = first & !(spaced_at | glued_at);
    let mut inner = caps & lets & (lets << 1) & keep;
    let mut capped = 0u64;
    while inner != 0 {
        let i = inner.trailing_zeros() as usize;
        inner &= inner - 1;
        capped |= 1 << (first & low_bits(i + 1)).ilog2();
    }
    let others = !lets;
    let mut cost = 0;
    // Words without capitals inside, by prefix: one table each, no test per word.
    let l2 = lets & (lets >> 1);
    let l3 = l2 & (lets >> 2);
    let l6 = l3 & (l3 >> 3);
    let kinds = [bare & l3, spaced_at & l6, glued_at & l2];
    for (table, words) in LOWER_COST.iter().zip(kinds) {
        let mut words = words & keep & !capped;
        while words != 0 {
            let a = words.trailing_zeros() as usize;
            words &= words - 1;
            let n = (others >> a).trailing_zeros() as usize;
            cost += table[n & (COST_LEN - 1)] - 1000;
        }
    }
    while capped != 0 {
        let a = capped.trailing_zeros() as usize;
        capped &= capped - 1;
        let n = (others >> a).trailing_zeros() as usize;
        let prefix = if spaced_at >> a & 1 == 1 {
            1
        } else {
            2 * u8::from(glued_at >> a & 1 == 1)
        };
        cost += ascii_word_cost(prefix, &text[a..a + n]) - 1000;
    }
    cost
}

/// [`token_masks`] of the last bytes of a text (fewer than 64).
#[cold]
fn tail_masks(rest: &[u8]) -> TokenMasks {
    let mut block = [0u8; 64];
    block[..rest.len()].copy_from_slice(rest);
    token_masks(&block)
}

/// Milli-tokens of a run of `n` ASCII punctuation characters (rule 4), `newline`: with
/// newlines after it.
#[inline]
fn ascii_punct_cost(n: usize, newline: bool) -> u64 {
    let cost = if n < PUNCT.len() {
        PUNCT[n]
    } else {
        500 * n as u64
    };
    cost + if newline && n >= 2 { 100 } else { 0 }
}

/// The mask of bits below `n` (`n` ≤ 64).
#[inline]
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        !0
    } else {
        (1 << n) - 1
    }
}

/// Fast path: the chunk at `i` and its cost when every character that decides it is
/// ASCII — rules 2 to 5 of [`text_millitokens`] (a contraction is left to the general
/// path); `None` when a non-ASCII character (or a `'` before a letter) is involved.
#[inline]
fn ascii_chunk<const ASCII: bool>(bytes: &[u8], padded: &[u8], i: usize) -> Option<(usize, u64)> {
    let len = bytes.len();
    let c0 = bytes[i];
    let f0 = FLAGS[c0 as usize];
    if f0 & F_LETTER != 0 {
        return ascii_word::<ASCII>(bytes, padded, i, 0);
    }
    // The class of the next character decides the rest (0 at the end).
    let f1 = bytes.get(i + 1).map_or(0, |&b| FLAGS[b as usize]);
    if f0 & F_DIGIT != 0 {
        // Rule 3: up to three digits.
        let mut j = i + 1;
        while j < len && j < i + 3 && bytes[j].is_ascii_digit() {
            j += 1;
        }
        return Some((j, 1000));
    }
    if !ASCII && (f0 | f1) & F_WIDE != 0 {
        return None;
    }
    if f1 & F_LETTER != 0 && !is_newline(c0) {
        if c0 == b'\'' {
            return None; // a contraction, perhaps
        }
        // Rule 2: one leading non-letter, non-digit, non-newline character.
        return ascii_word::<ASCII>(bytes, padded, i + 1, if c0 == b' ' { 1 } else { 2 });
    }
    if f0 & F_PUNCT != 0 || (c0 == b' ' && f1 & F_PUNCT != 0) {
        // Rule 4: a punctuation run, an optional leading space, trailing newlines.
        let start = if f0 & F_PUNCT != 0 { i } else { i + 1 };
        let mut j = start + 1;
        while j < len && FLAGS[bytes[j] as usize] == F_PUNCT {
            j += 1;
        }
        if !ASCII && j < len && bytes[j] >= 0x80 {
            return None; // the run may go on with non-ASCII punctuation
        }
        let n = j - start;
        while j < len && is_newline(bytes[j]) {
            j += 1;
        }
        return Some((j, ascii_punct_cost(n, j > start + n)));
    }
    // Rule 5: an ASCII whitespace run (see `whitespace_end`).
    let mut j = i + 1;
    let mut last_nl = if is_newline(c0) { Some(i) } else { None };
    while j < len && FLAGS[bytes[j] as usize] == F_SPACE {
        if is_newline(bytes[j]) {
            last_nl = Some(j);
        }
        j += 1;
    }
    if j == len {
        return Some((j, 1000));
    }
    if !ASCII && bytes[j] >= 0x80 {
        return None; // the run may go on with non-ASCII whitespace
    }
    let end = match last_nl {
        Some(nl) => nl + 1,
        None if j - i >= 2 => j - 1,
        None => j,
    };
    Some((end, 1000))
}

/// Millitokens the chat format adds once per request (the reply's priming) and once per
/// message (its framing), as `cl100k_base` chat requests count them.
pub const REPLY_PRIMING_MILLI: u64 = 3000;
pub const PER_MESSAGE_MILLI: u64 = 3000;

/// Whole tokens of a request's millitokens (the priming included), rounded.
pub fn round_tokens(milli: u64) -> u64 {
    (milli + 500) / 1000
}

/// Estimated milli-tokens of one text.
pub fn text_millitokens(s: &str) -> u64 {
    padded_millitokens(s, s.as_bytes())
}

/// [`text_millitokens`] of `s`, `padded` being `s` and what follows it in the caller's
/// buffer (see [`ascii_letter_run`]: it must begin with a byte that is not a letter).
#[inline]
fn padded_millitokens(s: &str, padded: &[u8]) -> u64 {
    debug_assert!(padded.starts_with(s.as_bytes()));
    debug_assert!(!padded.get(s.len()).is_some_and(u8::is_ascii_alphabetic));
    // An all-ASCII text (one vectorised test) drops the fast path's non-ASCII checks.
    if s.is_ascii() {
        millitokens::<true, true>(s, padded)
    } else {
        millitokens::<true, false>(s, padded)
    }
}

/// [`text_millitokens`], with the ASCII fast paths (64 bytes at a time, [`block`], else
/// chunk by chunk, [`ascii_chunk`]) or (`FAST = false`, the oracle of their tests) the
/// general rules alone; `ASCII`: the text is all ASCII (the fast path then
/// skips its tests for non-ASCII bytes).
#[inline]
fn millitokens<const FAST: bool, const ASCII: bool>(s: &str, padded: &[u8]) -> u64 {
    let bytes = s.as_bytes();
    let len = bytes.len();
    let mut total = 0u64;
    let mut i = 0;
    // Where the per-chunk walk hands back to the block walk; how far it goes on at least
    // when the block walk summed nothing (doubling while it sums nothing: a text mostly
    // not ASCII costs a few tries, not one per chunk).
    let (mut resume, mut backoff) = (0, 64);
    while i < len {
        if FAST {
            if i >= resume {
                let (end, cost, next) = block(bytes, padded, i);
                total += cost;
                resume = next;
                if end > i {
                    i = end;
                    backoff = 64;
                    continue;
                }
                resume = resume.max(i.saturating_add(backoff));
                backoff = (backoff * 2).min(1 << 12);
            }
            if let Some((end, cost)) = ascii_chunk::<ASCII>(bytes, padded, i) {
                total += cost;
                i = end;
                continue;
            }
        }
        let (cl, n) = class_at(s, i);
        let c0 = bytes[i];
        let next_i = i + n;
        let next = if next_i < len {
            Some(class_at(s, next_i).0)
        } else {
            None
        };
        // 1. contractions: 's 'd 'm 't 'll 've 're (ASCII, any case)
        if c0 == b'\'' && next_i < len {
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
        // 2. letters, with one optional leading non-letter, non-digit, non-newline
        let prefix = if cl == Class::Letter {
            Some(0)
        } else if cl != Class::Digit && !is_newline(c0) && next == Some(Class::Letter) {
            Some(if c0 == b' ' { 1 } else { 2 })
        } else {
            None
        };
        if let Some(prefix) = prefix {
            let start = if prefix == 0 { i } else { next_i };
            let (j, cost) = letter_run(s, start, prefix);
            total += cost;
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
        if cl == Class::Punct || (c0 == b' ' && next == Some(Class::Punct)) {
            let start = if cl == Class::Punct { i } else { next_i };
            let (mut j, _) = run_end(
                s,
                start + if cl == Class::Punct { n } else { 0 },
                Class::Punct,
            );
            let body_end = j;
            while j < len && is_newline(bytes[j]) {
                j += 1;
            }
            total += punct_cost(&s[start..body_end], j > body_end);
            i = j;
            continue;
        }
        // 5. whitespace
        total += 1000;
        i = whitespace_end(s, i);
    }
    total
}

/// Rule 5: a whitespace run starting at `i` goes to the end of the text, else up to its
/// last newline, else all but its last character (which prefixes what follows), else one.
fn whitespace_end(s: &str, i: usize) -> usize {
    let bytes = s.as_bytes();
    let len = bytes.len();
    let mut j = i;
    let mut last_nl = None;
    let mut count = 0usize;
    let mut last_len = 0;
    while j < len {
        let (cl, n) = class_at(s, j);
        if cl != Class::Space {
            break;
        }
        if is_newline(bytes[j]) {
            last_nl = Some(j);
        }
        count += 1;
        last_len = n;
        j += n;
    }
    if j == len {
        j
    } else if let Some(nl) = last_nl {
        nl + 1
    } else if count >= 2 {
        j - last_len
    } else {
        j
    }
}

/// Estimated tokens of one text (no message overhead).
pub fn estimate_text_tokens(s: &str) -> u64 {
    (text_millitokens(s) + 500) / 1000
}

/// The streaming walk under [`estimate_tokens`]: it reads only the fields it counts and
/// validates the rest without building a tree. A repeated key counts once, its last
/// occurrence (as `serde_json::Map` and Python's `json` read it): a field's slot is
/// overwritten, and `json(v)` drops all but the last of equal keys.
/// Appended to a decoded text so that [`ascii_letter_run`] can load sixteen bytes from
/// any position in it (quotes: not letters).
const PAD: &str = "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";

struct Walk<'a> {
    p: Parser<'a>,
    /// `(key, cost)` of the members of every object `json` is inside, innermost last.
    keys: Vec<(JStr<'a>, u64)>,
    /// The decoded text of the last escaped string counted.
    buf: String,
}

impl<'a> Walk<'a> {
    /// A walk of one member's value `value` (its JSON text).
    fn of(value: &'a str) -> Self {
        Walk {
            p: Parser::of_str(value),
            keys: Vec::new(),
            buf: String::new(),
        }
    }

    /// A walk of a whole request body: an error for invalid JSON or a non-object body.
    #[inline]
    fn of_body(body: &'a [u8]) -> Result<Self> {
        let p = Parser::new(body)?;
        if p.peek() != Some(b'{') {
            // Reject bad JSON as bad JSON before saying it is not an object.
            Value::parse(body)?;
            return Err(CoreError::invalid("request body must be a JSON object"));
        }
        Ok(Walk {
            p,
            keys: Vec::new(),
            buf: String::with_capacity(body.len()),
        })
    }

    /// At an object: `f(self, key)` per member, with the cursor at its value (which `f`
    /// must consume). Anything but an object is skipped, and `f` never called.
    #[inline]
    fn object(&mut self, mut f: impl FnMut(&mut Self, JStr<'a>) -> Result<()>) -> Result<()> {
        if self.p.peek() != Some(b'{') {
            return self.p.skip();
        }
        self.p.enter()?;
        if !self.p.empty(b'}') {
            loop {
                let key = self.p.key()?;
                f(self, key)?;
                if !self.p.next_or_close(b'}')? {
                    break;
                }
            }
        }
        self.p.leave();
        Ok(())
    }

    /// At an array: `f(self)` per item, with the cursor at it. Anything but an array is
    /// skipped.
    #[inline]
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.p.peek() != Some(b'[') {
            return self.p.skip();
        }
        self.p.enter()?;
        if !self.p.empty(b']') {
            loop {
                f(self)?;
                if !self.p.next_or_close(b']')? {
                    break;
                }
            }
        }
        self.p.leave();
        Ok(())
    }

    /// The string at the cursor, or `None` (and the value skipped).
    #[inline]
    fn string(&mut self) -> Result<Option<JStr<'a>>> {
        if self.p.peek() == Some(b'"') {
            self.p.i += 1;
            self.p.string().map(Some)
        } else {
            self.p.skip().map(|()| None)
        }
    }

    /// Milli-tokens of the string at the cursor, or `None` for any other value. An
    /// escaped text is decoded into the walk's buffer by the scan that reads it.
    #[inline]
    fn text(&mut self) -> Result<Option<u64>> {
        if self.p.peek() != Some(b'"') {
            return self.p.skip().map(|()| None);
        }
        self.p.i += 1;
        let start = self.p.i;
        let (close, esc) = self.p.scan::<false, true>(&mut Vec::new(), &mut self.buf)?;
        Ok(Some(if esc == Esc::None {
            // The closing quote follows the text: the fast path may load past its end.
            padded_millitokens(self.p.text(start, close), &self.p.input()[start..])
        } else {
            let n = self.buf.len();
            self.buf.push_str(PAD);
            padded_millitokens(&self.buf[..n], self.buf.as_bytes())
        }))
    }

    /// `s` (the inside of a string of the body) and the body after it, which begins with
    /// the closing quote; `s` alone if it is not in the body.
    #[inline]
    fn with_rest(&self, s: &'a str) -> &'a [u8] {
        let body = self.p.input();
        let off = (s.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        match body.get(off..) {
            // `s` starts inside the body's allocation, so it is these bytes.
            Some(rest) if rest.len() >= s.len() => rest,
            _ => s.as_bytes(),
        }
    }

    /// Milli-tokens of a string's text, decoded into the walk's one buffer when escaped.
    #[inline]
    fn millitokens(&mut self, s: &JStr<'a>) -> u64 {
        if s.esc() == Esc::None {
            padded_millitokens(s.raw(), self.with_rest(s.raw()))
        } else {
            self.buf.clear();
            decode_into(s.raw(), &mut self.buf);
            let n = self.buf.len();
            self.buf.push_str(PAD);
            padded_millitokens(&self.buf[..n], self.buf.as_bytes())
        }
    }

    /// `json(v)` of the value at the cursor (see the module documentation).
    fn json(&mut self) -> Result<u64> {
        match self.p.peek() {
            Some(b'{') => {
                let base = self.keys.len();
                self.object(|w, key| {
                    let cost = w.millitokens(&key) + 1000 + w.json()?;
                    w.keys.push((key, cost));
                    Ok(())
                })?;
                let sum = last_of_each_key(&mut self.keys[base..]);
                self.keys.truncate(base);
                Ok(1000 + sum)
            }
            Some(b'[') => {
                let mut t = 1000;
                self.array(|w| {
                    t += w.json()?;
                    Ok(())
                })?;
                Ok(t)
            }
            Some(b'"') => Ok(self.text()?.unwrap_or(0) + 1000),
            _ => self.p.skip().map(|()| 1000),
        }
    }

    fn message(&mut self) -> Result<u64> {
        let (mut role, mut content, mut name, mut calls) = (0, 0, None, 0);
        self.object(|w, key| {
            if key.is("role") {
                role = w.text()?.unwrap_or(0);
            } else if key.is("content") {
                content = w.content()?;
            } else if key.is("name") {
                name = w.text()?;
            } else if key.is("tool_calls") {
                calls = 0;
                w.array(|w| {
                    calls += 3000;
                    let mut f = 0;
                    w.object(|w, key| {
                        if key.is("function") {
                            f = w.fields(["name", "arguments"])?;
                        } else {
                            w.p.skip()?;
                        }
                        Ok(())
                    })?;
                    calls += f;
                    Ok(())
                })?;
            } else {
                w.p.skip()?;
            }
            Ok(())
        })?;
        Ok(PER_MESSAGE_MILLI + role + content + name.map_or(0, |n| 1000 + n) + calls)
    }

    fn content(&mut self) -> Result<u64> {
        if self.p.peek() == Some(b'"') {
            return Ok(self.text()?.unwrap_or(0));
        }
        let mut t = 0;
        self.array(|w| {
            let (mut text, mut image) = (None, false);
            w.object(|w, key| {
                if key.is("text") {
                    text = w.text()?;
                } else if key.is("type") {
                    image = w.string()?.is_some_and(|s| s.is("image_url"));
                } else {
                    w.p.skip()?;
                }
                Ok(())
            })?;
            t += text.unwrap_or(if image { IMAGE_TOKENS * 1000 } else { 0 });
            Ok(())
        })?;
        Ok(t)
    }

    /// The summed text of the string members `names` of the object at the cursor.
    fn fields(&mut self, names: [&str; 2]) -> Result<u64> {
        let mut costs = [0; 2];
        self.object(|w, key| {
            match names.iter().position(|n| key.is(n)) {
                Some(i) => costs[i] = w.text()?.unwrap_or(0),
                None => w.p.skip()?,
            }
            Ok(())
        })?;
        Ok(costs[0] + costs[1])
    }

    fn tool(&mut self) -> Result<u64> {
        let mut f = 0;
        self.object(|w, key| {
            if !key.is("function") {
                return w.p.skip();
            }
            f = w.function("parameters")?;
            Ok(())
        })?;
        Ok(8000 + f)
    }

    /// `name + description + json(schema)` of a function's definition, its schema under
    /// `schema_key` (`parameters` in a chat-completions tool, `input_schema` in an
    /// Anthropic one).
    fn function(&mut self, schema_key: &str) -> Result<u64> {
        let (mut name, mut description, mut schema) = (0, 0, 0);
        self.object(|w, key| {
            if key.is("name") {
                name = w.text()?.unwrap_or(0);
            } else if key.is("description") {
                description = w.text()?.unwrap_or(0);
            } else if key.is(schema_key) {
                schema = w.json()?;
            } else {
                w.p.skip()?;
            }
            Ok(())
        })?;
        Ok(name + description + schema)
    }
}

/// Sum of the costs of `(key, cost)` members, counting only the last of equal keys.
fn last_of_each_key(ms: &mut [(JStr<'_>, u64)]) -> u64 {
    fn same(a: &JStr<'_>, b: &JStr<'_>) -> bool {
        if a.esc() == Esc::None && b.esc() == Esc::None {
            a.raw() == b.raw()
        } else {
            a.text() == b.text()
        }
    }
    if ms.len() <= 16 {
        return (0..ms.len())
            .filter(|&i| !ms[i + 1..].iter().any(|(k, _)| same(k, &ms[i].0)))
            .map(|i| ms[i].1)
            .sum();
    }
    // Stable: equal keys stay in input order, so the last of each run is the one kept.
    ms.sort_by(|a, b| a.0.text().as_bytes().cmp(b.0.text().as_bytes()));
    (0..ms.len())
        .filter(|&i| i + 1 == ms.len() || !same(&ms[i].0, &ms[i + 1].0))
        .map(|i| ms[i].1)
        .sum()
}

/// Estimated prompt tokens of a chat-completions body. Errors only on invalid JSON or a
/// non-object body; unknown shapes inside count what they can.
pub fn estimate_tokens(body: &[u8]) -> Result<u64> {
    let mut w = Walk::of_body(body)?;
    let (mut messages, mut tools, mut schema) = (0, 0, 0);
    w.object(|w, key| {
        if key.is("messages") {
            messages = 0;
            w.array(|w| {
                messages += w.message()?;
                Ok(())
            })
        } else if key.is("tools") {
            tools = 0;
            w.array(|w| {
                tools += w.tool()?;
                Ok(())
            })
        } else if key.is("response_format") {
            schema = 0;
            w.object(|w, key| {
                if key.is("json_schema") {
                    schema = w.json()?;
                    Ok(())
                } else {
                    w.p.skip()
                }
            })
        } else {
            w.p.skip()
        }
    })?;
    w.p.finish()?;
    Ok(round_tokens(
        REPLY_PRIMING_MILLI + messages + tools + schema,
    ))
}

/// The milli-tokens [`estimate_tokens`] counts for a body's `tools` member of value
/// `value` (its JSON text): what a turn's tools add to its estimate (`crate::ingest`
/// keeps it by the text, as agents send the same tools with every turn).
pub fn tools_millitokens(value: &str) -> Result<u64> {
    let mut w = Walk::of(value);
    let mut tools = 0;
    w.array(|w| {
        tools += w.tool()?;
        Ok(())
    })?;
    w.p.finish()?;
    Ok(tools)
}

/// The milli-tokens [`estimate_tokens`] counts for a body's `response_format` member of
/// value `value` (its JSON text): its `json_schema`, if any.
pub fn response_format_millitokens(value: &str) -> Result<u64> {
    let mut w = Walk::of(value);
    let mut schema = 0;
    w.object(|w, key| {
        if key.is("json_schema") {
            schema = w.json()?;
            Ok(())
        } else {
            w.p.skip()
        }
    })?;
    w.p.finish()?;
    Ok(schema)
}

/// The milli-tokens [`estimate_tokens`] counts for one tool call of a message: its
/// `function`'s `name` and `arguments` as sent.
pub fn call_millitokens(name: &str, arguments: &str) -> u64 {
    3000 + text_millitokens(name) + text_millitokens(arguments)
}

/// The tree-walking estimator the streaming one replaced: the oracle of its tests.
#[cfg(test)]
mod tree {
    use super::{text_millitokens, IMAGE_TOKENS};
    use crate::error::Result;
    use crate::rawjson::{parse_object, JStr, Value};

    fn json_millitokens(v: &Value<'_>) -> u64 {
        match v {
            Value::Obj(o) => {
                1000 + o
                    .iter()
                    .map(|m| text_millitokens(&m.key) + 1000 + json_millitokens(&m.value))
                    .sum::<u64>()
            }
            Value::Arr(a) => 1000 + a.iter().map(json_millitokens).sum::<u64>(),
            Value::Str(s) => text_millitokens(&s.text()) + 1000,
            _ => 1000,
        }
    }

    fn str_field<'v, 'a>(v: &'v Value<'a>, key: &str) -> Option<&'v JStr<'a>> {
        v.get(key).and_then(Value::as_jstr)
    }

    fn str_cost(v: &Value<'_>, key: &str) -> u64 {
        str_field(v, key).map_or(0, |s| text_millitokens(&s.text()))
    }

    fn message_millitokens(m: &Value<'_>) -> u64 {
        let mut t = 3000 + str_cost(m, "role");
        match m.get("content") {
            Some(Value::Str(s)) => t += text_millitokens(&s.text()),
            Some(Value::Arr(parts)) => {
                for p in parts {
                    if let Some(s) = str_field(p, "text") {
                        t += text_millitokens(&s.text());
                    } else if str_field(p, "type").is_some_and(|s| s.is("image_url")) {
                        t += IMAGE_TOKENS * 1000;
                    }
                }
            }
            _ => {}
        }
        if let Some(name) = str_field(m, "name") {
            t += 1000 + text_millitokens(&name.text());
        }
        if let Some(Value::Arr(calls)) = m.get("tool_calls") {
            for call in calls {
                t += 3000;
                if let Some(f) = call.get("function") {
                    t += str_cost(f, "name") + str_cost(f, "arguments");
                }
            }
        }
        t
    }

    pub(super) fn estimate_tokens(body: &[u8]) -> Result<u64> {
        let v = parse_object(body)?;
        let mut t = 3000;
        if let Some(Value::Arr(messages)) = v.get("messages") {
            t += messages.iter().map(message_millitokens).sum::<u64>();
        }
        if let Some(Value::Arr(tools)) = v.get("tools") {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general rules alone: the oracle of the fast path.
    fn general_millitokens(s: &str) -> u64 {
        millitokens::<false, false>(s, s.as_bytes())
    }

    #[test]
    fn simple_texts() {
        assert_eq!(estimate_text_tokens(""), 0);
        assert_eq!(estimate_text_tokens("hello world"), 2);
        assert_eq!(estimate_text_tokens("it's 12345"), 5); // it 's ␣ 123 45
        assert_eq!(estimate_text_tokens("a\n\n  b"), 4); // a \n\n ␣ ␣b
        assert!(estimate_text_tokens("日本語のテキスト") >= 8);
    }

    /// The streaming estimator counts what the tree-walking one counted, on bodies with
    /// every counted field, repeated keys and odd shapes, and on random mutations of them.
    #[test]
    fn streaming_matches_tree() {
        const SEEDS: &[&str] = &[
            r#"{"model":"m","messages":[{"role":"system","content":"Be brief.\nOK \"x\" \u00e9"},{"role":"user","name":"dana","content":[{"type":"text","text":"hi there"},{"type":"image_url","image_url":{"url":"u"}},{"text":5,"type":"image_url"},7]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}},{"function":3},5]},{"role":"tool","content":"42"},null,[1]],"tools":[{"type":"function","function":{"name":"get","description":"Get it.","parameters":{"type":"object","properties":{"a":{"type":"integer"},"b":{"enum":["x","y"]}},"required":["a"],"type":"object"}}},{"function":"x"},1],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"k":[1,true,null,"v"]}}}}"#,
            r#"{"messages":[{"role":"user","content":"a","content":"longer text here","\u0072ole":"assistant","name":"x","name":7}],"messages":[{"content":[{"text":"b","text":"c d"}],"tool_calls":[{"function":{"name":"n","name":"m2","arguments":"{}"},"function":{"arguments":"[1,2]"}}]}],"tools":[{"function":{"parameters":{"a":1,"b":2,"a":"three","\u0062":[{"c":1,"c":2}]}}}],"tools":{"x":1},"response_format":{"json_schema":{"a":1},"json_schema":[1,2,{"q":"r"}]}}"#,
            r#"{"tools":[{"function":{"name":"f","parameters":{"k01":1,"k02":2,"k03":3,"k04":4,"k05":5,"k06":6,"k07":7,"k08":8,"k09":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k03":"again","k01":{"x":"y"}}}}],"messages":"no","response_format":"text"}"#,
        ];
        let mut ok = 0;
        for (round, body) in crate::mutate::mutated_bodies(
            SEEDS,
            30_000,
            0x9E37_79B9_7F4A_7C15,
            crate::mutate::ALPHABET,
        ) {
            // The raw body as one text: the fast path against the general rules.
            let text = String::from_utf8_lossy(&body);
            assert_eq!(
                text_millitokens(&text),
                general_millitokens(&text),
                "{text:?}"
            );
            let ours = estimate_tokens(&body);
            let theirs = tree::estimate_tokens(&body);
            assert!(round >= SEEDS.len() || ours.is_ok(), "seed {round}");
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    ok += 1;
                    assert_eq!(a, b, "{}", String::from_utf8_lossy(&body));
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

    /// The ASCII fast path counts what the general rules alone count, on random texts
    /// mixing every class the rules tell apart (ASCII and not).
    #[test]
    fn fast_path_matches_general_rules() {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "word",
            "Camel",
            "camelCase",
            "ABC",
            "x",
            "9",
            "12345",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\x0b",
            ".",
            ",",
            "**",
            "'",
            "'s",
            "'LL",
            "'ve",
            "-",
            "(",
            "`",
            "\"",
            "é",
            "日本",
            "—",
            "’",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "×",
            "😀",
            "¿",
        ];
        let mut rng = crate::mutate::XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..50_000 {
            let mut s = String::new();
            for _ in 0..rng.below(12) {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
            assert_eq!(text_millitokens(&s), general_millitokens(&s), "{s:?}");
        }
    }

    /// The fast path counts what the general rules alone count on random texts of every
    /// length below 300 drawn from small alphabets (ASCII only, and ASCII with the
    /// non-ASCII characters the rules tell apart), so that every class boundary falls at
    /// every position of a 64-byte window and runs grow longer than a window.
    #[test]
    fn fast_path_matches_general_rules_every_length() {
        const ASCII: &[&str] = &[
            "a", "b", "z", "A", "Q", "Z", "0", "7", "9", " ", " ", "\t", "\n", "\r", "\x0b",
            "\x0c", ".", ",", "'", "-", "_", "(", "`", "\"", "~", "\x7f", "\x00", "s", "t", "l",
            "v", "e", "r", "d", "m",
        ];
        const WIDE: &[&str] = &[
            "é", "日", "—", "’", "\u{a0}", "\u{85}", "\u{3000}", "\u{2028}", "×", "÷", "😀", "¿",
            "\u{ff01}", "\u{2190}", "\u{205f}", "Ω",
        ];
        let mut rng = crate::mutate::XorShift(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: usize| rng.below(n);
        for round in 0..40 {
            for len in 0..300 {
                let mut s = String::new();
                // Some texts favour one piece, so that runs get long.
                let favourite = ASCII[next(ASCII.len())];
                let wide = round % 2 == 1;
                while s.len() < len {
                    let r = next(16);
                    let piece = if r < 5 {
                        favourite
                    } else if wide && r == 15 {
                        WIDE[next(WIDE.len())]
                    } else {
                        ASCII[next(ASCII.len())]
                    };
                    s.push_str(piece);
                }
                let general = general_millitokens(&s);
                assert_eq!(text_millitokens(&s), general, "{s:?}");
                // With a closing quote and letters after the text, as in a body.
                let padded = format!("{s}\"abcdefghijklmnopqrstuvwxyz\"}}");
                assert_eq!(padded_millitokens(&s, padded.as_bytes()), general, "{s:?}");
                let short = format!("{s}\"}}");
                assert_eq!(padded_millitokens(&s, short.as_bytes()), general, "{s:?}");
            }
        }
    }

    /// The fast path counts what the general rules count on prose: words of every
    /// length (some capitalised, some with capitals inside, a few not ASCII) between
    /// single spaces, now and then a double space, punctuation, a newline, a number or
    /// a contraction, in texts long enough for many 64-byte blocks.
    #[test]
    fn fast_path_matches_general_rules_on_prose() {
        const ODD: &[&str] = &[
            "  ", ", ", ". ", "\n", " 42 ", "'s", "n't", " é", "日", " (", "—", "  \n", " -",
        ];
        let mut rng = crate::mutate::XorShift(0x5851_F42D_4C95_7F2D);
        for round in 0..3_000 {
            let mut s = String::new();
            let target = rng.below(700);
            let odd_rate = 1 + round % 40; // one word in odd_rate has something odd after it
            while s.len() < target {
                s.push(' ');
                let longest = if rng.below(10) == 0 { 70 } else { 12 };
                let n = 1 + rng.below(longest);
                for k in 0..n {
                    let c = b'a' + rng.below(26) as u8;
                    let upper = match rng.below(30) {
                        0 => true,
                        1 | 2 => k == 0,
                        _ => false,
                    };
                    s.push(char::from(if upper { c.to_ascii_uppercase() } else { c }));
                }
                if rng.below(odd_rate) == 0 {
                    s.push_str(ODD[rng.below(ODD.len())]);
                }
            }
            let general = general_millitokens(&s);
            assert_eq!(text_millitokens(&s), general, "{s:?}");
            let padded = format!("{s}\"abcdefghijklmnopqrstuvwxyz\"}}");
            assert_eq!(padded_millitokens(&s, padded.as_bytes()), general, "{s:?}");
        }
    }

    /// The block walk counts what the general rules count on prose broken as people break
    /// it: words (lower, Capitalised, ALL CAPS, camelCase, long), punctuation runs of one
    /// to eight (before and after words and spaces), figures of one to eight digits,
    /// runs of spaces, tabs and newlines, and now and then a contraction (or a `'` that is
    /// none) or a non-ASCII character; each text also shifted by 0 to 63 bytes of filler, so that every chunk
    /// boundary falls at every position of a 64-byte window, and cut at every length.
    #[test]
    fn block_walk_matches_general_rules_on_broken_prose() {
        const WORDS: &[&str] = &[
            "a",
            "of",
            "the",
            "sites",
            "survey",
            "reported",
            "approximately",
            "The",
            "In",
            "APR",
            "US",
            "iPhone",
            "McDonald",
            "incomprehensibilities",
            "x",
        ];
        const PUNCT: &[&str] = &[
            ",", ".", "(", ")", "%", "$", ";", ":", "-", "\"", "...", "?!", "**", "--->", "[", "]",
            "/", ".,;:!?()",
        ];
        const SPACES: &[&str] = &[
            " ", " ", " ", "  ", "   ", "\n", "\n\n", " \n", "\n ", "\t", " \t", "\r\n", "\n\n  ",
            "\x0b", "\x0c", "\t\n\t",
        ];
        const QUOTED: &[&str] = &[
            "'s", "'t", "'ll", "'x", "'m", "'re", "'ve", "'d", "'S", "'LL", "'st", "'l", "'",
        ];
        const WIDE: &[&str] = &["é", "—", "\u{a0}", "’", "\x00", "\x7f"];
        let mut rng = crate::mutate::XorShift(0xD1B5_4A32_D192_ED03);
        let mut next = move |n: usize| rng.below(n);
        for round in 0..2_500 {
            let mut s = String::new();
            let target = 40 + next(260);
            let wide = round % 3 == 0;
            while s.len() < target {
                match next(10) {
                    0..=4 => s.push_str(WORDS[next(WORDS.len())]),
                    5 | 6 => s.push_str(PUNCT[next(PUNCT.len())]),
                    7 => {
                        for _ in 0..=next(8) {
                            s.push(char::from(b'0' + next(10) as u8));
                        }
                    }
                    8 if next(2) == 0 => s.push_str(QUOTED[next(QUOTED.len())]),
                    8 if wide => s.push_str(WIDE[next(WIDE.len())]),
                    _ => {}
                }
                // Often a space, but pieces glued too: "(word", "word,", "5th", "$25".
                if next(5) < 3 {
                    s.push_str(SPACES[next(SPACES.len())]);
                }
            }
            for shift in 0..64 {
                let filler = ["x", " ", ".", "1", "\n"][next(5)].repeat(shift);
                let t = format!("{filler}{s}");
                assert_eq!(text_millitokens(&t), general_millitokens(&t), "{t:?}");
            }
            for cut in 0..s.len() {
                if let Some(t) = s.get(..cut) {
                    assert_eq!(text_millitokens(t), general_millitokens(t), "{t:?}");
                    let padded = format!("{t}\"abcdefghijklmnopqrstuvwxyz\"}}");
                    let general = general_millitokens(t);
                    assert_eq!(padded_millitokens(t, padded.as_bytes()), general, "{t:?}");
                }
            }
        }
    }

    /// The fast path counts what the general rules count on every string of the 4 KB
    /// bench body (decoded) and on the body itself, and the body's count is known.
    #[test]
    fn fast_path_matches_general_rules_bench_body() {
        let body = include_str!("../benches/body_4k.json").to_owned();
        assert_eq!(estimate_tokens(body.as_bytes()).unwrap(), 960);
        assert_eq!(tree::estimate_tokens(body.as_bytes()).unwrap(), 960);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut texts = vec![body.clone()];
        let mut stack = vec![&v];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(s) => texts.push(s.clone()),
                serde_json::Value::Array(a) => stack.extend(a),
                serde_json::Value::Object(o) => {
                    texts.extend(o.keys().cloned());
                    stack.extend(o.values());
                }
                _ => {}
            }
        }
        for t in &texts {
            assert_eq!(text_millitokens(t), general_millitokens(t), "{t:?}");
        }
    }

    /// The count the implementation before the one ASCII fast path gave (known answer).
    #[test]
    fn known_answer() {
        let body = br#"{"user":"u","model":"m","messages":[{"role":"user","content":"a\/b \u00e9\u2014\ud83d\ude00 \u0041\u001F\u000a \\ \"q\" \t"},{"content":[{"type":"text","text":"x\u2019y"}],"role":"assistant"}],"temperature":0.7,"stop":"\u0045ND"}"#;
        assert_eq!(estimate_tokens(body).unwrap(), 27);
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
