//! Test support: a fixed-seed generator ([`XorShift`]) and deterministic random mutations
//! of JSON bodies, for differential tests of a fast path against its slower oracle.

/// xorshift64 (13, 7, 17): the fixed-seed randomness of the core's tests.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next value below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The bytes a mutation inserts or substitutes: JSON structure, escapes, digits and the
/// letters of literals, so mutants stay close to the grammar's edges.
pub(crate) const ALPHABET: &[u8] = br#" {}[]:,"\0123456789-.etnulfasx"#;

/// [`ALPHABET`] widened for the parser's own tests: every kind of whitespace, exponent
/// and escape letters, control bytes, DEL and bytes that break UTF-8.
pub(crate) const PARSER_ALPHABET: &[u8] =
    b" \t\n\r{}[]:,\"\\/-+.0123456789eEabfnrtuDdc\x00\x1f\x7f\xc3\xa9\xff";

/// `rounds` bodies: the seeds themselves first, then each seed (in turn) with one to
/// three single-byte deletions, substitutions or insertions of `alphabet` bytes, from an
/// xorshift generator started at `state`. Yields `(round, body)`.
pub(crate) fn mutated_bodies(
    seeds: &'static [&'static str],
    rounds: usize,
    state: u64,
    alphabet: &'static [u8],
) -> impl Iterator<Item = (usize, Vec<u8>)> {
    let mut rng = XorShift(state);
    let mut next = move |n: usize| rng.below(n);
    (0..rounds).map(move |round| {
        let mut body = seeds[round % seeds.len()].as_bytes().to_vec();
        if round >= seeds.len() {
            for _ in 0..=next(2) {
                let at = next(body.len() + 1);
                match next(3) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = alphabet[next(alphabet.len())],
                    _ => body.insert(at, alphabet[next(alphabet.len())]),
                }
            }
        }
        (round, body)
    })
}
