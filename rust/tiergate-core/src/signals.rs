//! Difficulty signals of one prompt text for the heuristic quality prior (used until a
//! learned model is loaded): code markers and multi-step wording. One call replaces
//! eight substring searches and a lowered copy on the Python side.

use std::sync::OnceLock;

use memchr::memmem;

/// The text carries code: a fence, a Python `def ` or a `function ` keyword.
pub const SIG_CODE: u32 = 1;
/// The text asks for multi-step work: prove, step by step, derive, optimi(s|z)e,
/// analy(s|z)e — ASCII case-insensitive.
pub const SIG_HARD: u32 = 2;

const CODE: [&[u8]; 3] = [b"```", b"def ", b"function "];
const HARD: [&[u8]; 5] = [b"prove", b"step by step", b"derive", b"optimi", b"analy"];

/// [`SIG_CODE`] and [`SIG_HARD`] bits of `text`.
#[must_use]
pub fn text_signals(text: &str) -> u32 {
    let (code, hard) = finders();
    let bytes = text.as_bytes();
    let mut bits = 0;
    if code.iter().any(|f| f.find(bytes).is_some()) {
        bits |= SIG_CODE;
    }
    // Lowercasing ASCII only: the words are ASCII, and a non-ASCII letter never lowers
    // to one of their letters except U+0130 (İ → i + dot), which we ignore.
    let lowered = bytes.to_ascii_lowercase();
    if hard.iter().any(|f| f.find(&lowered).is_some()) {
        bits |= SIG_HARD;
    }
    bits
}

type Finders = [memmem::Finder<'static>];

/// The searchers of `CODE` and `HARD`, built once (building one costs more than
/// searching a prompt).
fn finders() -> &'static (Box<Finders>, Box<Finders>) {
    static F: OnceLock<(Box<Finders>, Box<Finders>)> = OnceLock::new();
    F.get_or_init(|| (build(&CODE), build(&HARD)))
}

fn build(words: &[&'static [u8]]) -> Box<Finders> {
    words.iter().map(|&w| memmem::Finder::new(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_marker_and_word() {
        assert_eq!(text_signals(""), 0);
        assert_eq!(text_signals("plain question?"), 0);
        for code in ["```py", "def f(x)", "a function that"] {
            assert_eq!(text_signals(code), SIG_CODE, "{code}");
        }
        for hard in [
            "Prove it",
            "STEP BY STEP",
            "derive x",
            "Optimise",
            "ANALYZE this",
        ] {
            assert_eq!(text_signals(hard), SIG_HARD, "{hard}");
        }
        assert_eq!(text_signals("def prove():"), SIG_CODE | SIG_HARD);
    }

    #[test]
    fn case_matters_for_code_markers_only() {
        assert_eq!(text_signals("DEF f"), 0);
        assert_eq!(text_signals("Function x"), 0);
        assert_eq!(text_signals("déf prövé"), 0);
        assert_eq!(text_signals("ünïcode analysis"), SIG_HARD);
    }
}
