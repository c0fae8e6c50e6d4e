//! Test support: deterministic random mutations of JSON bodies, for differential tests
//! of a fast path against its slower oracle.

/// The bytes a mutation inserts or substitutes: JSON structure, escapes, digits and the
/// letters of literals, so mutants stay close to the grammar's edges.
const ALPHABET: &[u8] = br#" {}[]:,"\0123456789-.etnulfasx"#;

/// `rounds` bodies: the seeds themselves first, then each seed (in turn) with one to
/// three single-byte deletions, substitutions or insertions, from an xorshift generator
/// started at `state`. Yields `(round, body)`.
pub(crate) fn mutated_bodies(
    seeds: &'static [&'static str],
    rounds: usize,
    mut state: u64,
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
                    1 if at < body.len() => body[at] = ALPHABET[next(ALPHABET.len())],
                    _ => body.insert(at, ALPHABET[next(ALPHABET.len())]),
                }
            }
        }
        (round, body)
    })
}
