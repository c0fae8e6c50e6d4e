//! What the core computed of the long texts seen lately, by their 128-bit hash: system
//! prompts, documents and the earlier turns of a conversation come back with every
//! request, and their per-byte work (the token estimate, the safety scan) need not.
//! (And of JSON values sent again byte for byte, an agent's tools: [`ValueMemo`].)
//!
//! [`TextMemo`] is a direct-mapped table: a slot per hash's low bits, the newest text wins it. A value
//! is what the computation gives for the text, so a memo changes no result, only what
//! a repeat costs. Texts shorter than [`MIN_BYTES`] are computed afresh every time
//! (but short ones a memo keeps too, [`TextMemo::keeping`]): a user's question seldom
//! repeats, and hashing costs a few percent of the work, which is all a text that never
//! repeats loses.

use xxhash_rust::xxh3::xxh3_128;

/// Texts shorter than this are not kept (by a memo made with [`TextMemo::new`]).
pub const MIN_BYTES: usize = 512;

/// Texts of at most this many bytes are kept by the safety scan's and the token
/// estimate's memos too (besides those of [`MIN_BYTES`] and more). Measured under
/// callgrind: the scan of a short text can cost several thousand instructions (digits
/// and quotes, as tool-call arguments and short prompts have, set its patterns to
/// work), its token estimate about 20 a byte, while xxh3 hashes up to 240 bytes on its
/// short path in a few dozen; a conversation sends its earlier turns back with every
/// request, and an agent its tool calls, short prompts and questions. A text between this and `MIN_BYTES` would be hashed
/// on xxh3's long path, a thousand or more, which one that never repeats (the plain
/// benchmark's question) loses: it is scanned afresh, as before.
pub const SHORT_BYTES: usize = 240;

pub struct TextMemo<V: Copy> {
    slots: Box<[Option<(u128, V)>]>,
    /// Texts of 1 to this many bytes are kept too.
    short_bytes: usize,
}

impl<V: Copy> TextMemo<V> {
    /// A memo of `slots` entries, rounded up to a power of two (0 keeps nothing).
    pub fn new(slots: usize) -> Self {
        Self::keeping(slots, 0)
    }

    /// [`TextMemo::new`] keeping texts of 1 to `short_bytes` bytes too.
    pub fn keeping(slots: usize, short_bytes: usize) -> Self {
        let n = if slots == 0 {
            0
        } else {
            slots.next_power_of_two()
        };
        TextMemo {
            slots: vec![None; n].into_boxed_slice(),
            short_bytes,
        }
    }

    /// A memo that keeps nothing (and allocates nothing).
    pub fn none() -> Self {
        TextMemo {
            slots: Box::new([]),
            short_bytes: 0,
        }
    }

    /// `compute(text)`, from the memo when `text` was seen lately.
    pub fn get_or(&mut self, text: &str, compute: impl FnOnce(&str) -> V) -> V {
        let n = text.len();
        if (n < MIN_BYTES && (n == 0 || n > self.short_bytes)) || self.slots.is_empty() {
            return compute(text);
        }
        let h = xxh3_128(text.as_bytes());
        let slot = &mut self.slots[(h as usize) & (self.slots.len() - 1)];
        if let Some((seen, value)) = *slot {
            if seen == h {
                return value;
            }
        }
        let value = compute(text);
        *slot = Some((h, value));
        value
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// JSON arrays and objects seen lately, by their exact bytes, with what was computed of
/// each: an agent's `tools` array comes back byte for byte with every turn, and a
/// reader at such a value need not parse it again to know where it ends (nor compute
/// again what it computed of it).
///
/// An entry is found by the bytes at a reader's cursor, which need no parse: an array
/// or object is delimited by its own brackets, so input that begins with an entry's
/// bytes holds exactly that value there (read with the same grammar, in the same place:
/// a caller keeps only values it read and checked, and looks them up where it read them).
/// Few entries, tried newest first, each a `memcmp`; bounded in bytes per entry.
pub struct ValueMemo<V> {
    entries: Vec<(Box<[u8]>, V)>,
    /// The slot the next entry takes once all are used.
    next: usize,
    slots: usize,
    max_bytes: usize,
}

impl<V> ValueMemo<V> {
    /// A memo of `slots` values of at most `max_bytes` each (0 slots keeps nothing).
    pub fn new(slots: usize, max_bytes: usize) -> Self {
        ValueMemo {
            entries: Vec::new(),
            next: 0,
            slots,
            max_bytes,
        }
    }

    /// The length of the entry `input` begins with, and its value.
    pub fn find(&self, input: &[u8]) -> Option<(usize, &V)> {
        self.entries
            .iter()
            .find(|(raw, _)| input.starts_with(raw))
            .map(|(raw, v)| (raw.len(), v))
    }

    /// Keep `value` for `raw`: an array or object the caller read and checked (anything
    /// else, or too long, is not kept).
    pub fn keep(&mut self, raw: &[u8], value: V) {
        let delimited = matches!(
            (raw.first(), raw.last()),
            (Some(b'['), Some(b']')) | (Some(b'{'), Some(b'}'))
        );
        if !delimited || raw.len() > self.max_bytes || self.slots == 0 {
            return;
        }
        let entry = (raw.to_vec().into_boxed_slice(), value);
        if self.entries.len() < self.slots {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % self.slots;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memo gives what the computation gives, whatever the texts and however often
    /// they collide in its slots (a two-slot memo is overwritten all the time).
    #[test]
    fn gives_what_the_computation_gives() {
        let mut rng = crate::mutate::XorShift(0x2545_F491_4F6C_DD1D);
        let words = [
            "the ", "Fee", " for", " a", "\n\n", "123", "é", "?! ", "  ", "ok.",
        ];
        let texts: Vec<String> = (0..40)
            .map(|_| {
                let n = rng.below(400);
                (0..n).map(|_| words[rng.below(words.len())]).collect()
            })
            .collect();
        let f = |t: &str| crate::tokens::text_millitokens(t) ^ t.len() as u64;
        for slots in [0, 1, 2, 1024] {
            let mut memo = TextMemo::new(slots);
            for _ in 0..400 {
                let text = &texts[rng.below(texts.len())];
                assert_eq!(memo.get_or(text, f), f(text), "{text:?}");
            }
        }
    }

    /// A value is found by the bytes it begins, whatever follows; only arrays and objects
    /// short enough are kept, the oldest replaced first.
    #[test]
    fn values_are_found_by_their_bytes() {
        let mut memo = ValueMemo::new(2, 16);
        memo.keep(b"[1,2]", 'a');
        memo.keep(b"{\"k\":[]}", 'b');
        memo.keep(b"\"string\"", 'x');
        memo.keep(b"[0,0,0,0,0,0,0,0,0]", 'x');
        assert_eq!(memo.find(b"[1,2],\"model\":1}"), Some((5, &'a')));
        assert_eq!(memo.find(b"{\"k\":[]}"), Some((8, &'b')));
        assert_eq!(memo.find(b"[1,2 ]"), None);
        assert_eq!(memo.find(b"[1,"), None);
        assert_eq!(memo.find(b"\"string\""), None);
        memo.keep(b"[3]", 'c');
        assert_eq!(memo.find(b"[1,2]"), None);
        assert_eq!(memo.find(b"[3]"), Some((3, &'c')));
        assert_eq!(memo.find(b"{\"k\":[]}"), Some((8, &'b')));
        let mut none = ValueMemo::new(0, 16);
        none.keep(b"[]", 1);
        assert_eq!(none.find(b"[]"), None);
    }

    /// Only long texts are kept, and a repeat is not computed again.
    #[test]
    fn keeps_long_texts_only() {
        let mut memo = TextMemo::new(8);
        let short = "x".repeat(MIN_BYTES - 1);
        let long = "word ".repeat(MIN_BYTES);
        assert_eq!(memo.get_or(&short, |_| 1), 1);
        assert_eq!(memo.kept(), 0);
        assert_eq!(memo.get_or(&long, |_| 2), 2);
        assert_eq!(memo.kept(), 1);
        assert_eq!(
            memo.get_or(&long, |_| unreachable!("a repeat is computed again")),
            2
        );
        assert_eq!(TextMemo::<u64>::none().slots.len(), 0);
        let mut scan = TextMemo::keeping(8, SHORT_BYTES);
        assert_eq!(scan.get_or("ok", |_| 3), 3);
        assert_eq!(scan.get_or("", |_| 4), 4);
        assert_eq!(scan.get_or(&short, |_| 5), 5);
        assert_eq!(scan.kept(), 1);
        assert_eq!(scan.get_or("ok", |_| unreachable!("kept")), 3);
        assert_eq!(TextMemo::<u64>::new(1000).slots.len(), 1024);
    }
}
