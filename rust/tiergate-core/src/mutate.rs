//! Test support: deterministic random mutations of JSON bodies, for differential tests
//! of a fast path against its slower oracle.

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
    mut state: u64,
    alphabet: &'static [u8],
) -> impl Iterator<Item = (usize, Vec<u8>)> {
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
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
