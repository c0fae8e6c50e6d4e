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

/// Difficulty in [0, 1] of a request for the heuristic quality prior: prompt length
/// (up to 0.4 at 3,200 tokens), code (+0.2), tools (+0.1), a JSON schema (+0.1) and
/// multi-step wording (+0.2) in the last message. Added in that order, as the Python
/// heuristic it replaces did, so that the sums round alike.
#[must_use]
pub fn difficulty(prompt_tokens: u64, signals: u32, tools: bool, json_schema: bool) -> f64 {
    #[allow(clippy::cast_precision_loss)] // token counts are far below 2^52
    let mut d = (prompt_tokens as f64 / 8000.0).min(0.4);
    if signals & SIG_CODE != 0 {
        d += 0.2;
    }
    if tools {
        d += 0.1;
    }
    if json_schema {
        d += 0.1;
    }
    if signals & SIG_HARD != 0 {
        d += 0.2;
    }
    d.min(1.0)
}

/// Each prior lowered for a request of difficulty `d`: `prior^(1 + d)`. Small models
/// lose more on hard requests.
#[must_use]
pub fn heuristic_qualities(priors: impl Iterator<Item = f64>, d: f64) -> Vec<f64> {
    let exponent = 1.0 + d;
    priors.map(|p| p.powf(exponent)).collect()
}

/// The searchers of `CODE` and `HARD`, built once (building one costs more than
/// searching a prompt). A substring search per word (each a vectorised pass) costs a
/// long prompt less than one pass of an automaton of all five in any case (measured:
/// about 0.3 against 20 instructions a byte).
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
    fn difficulty_adds_its_signals_and_stops_at_one() {
        assert!(difficulty(0, 0, false, false).abs() < f64::EPSILON);
        assert!((difficulty(800, 0, false, false) - 0.1).abs() < 1e-12);
        assert!((difficulty(1_000_000, 0, false, false) - 0.4).abs() < 1e-12);
        assert!((difficulty(0, SIG_CODE, true, true) - 0.4).abs() < 1e-12);
        assert!((difficulty(10_000, SIG_CODE | SIG_HARD, true, true) - 1.0).abs() < 1e-12);
        assert!(difficulty(u64::MAX, SIG_CODE | SIG_HARD, true, true) <= 1.0);
    }

    #[test]
    fn qualities_are_priors_raised_by_difficulty() {
        let q = heuristic_qualities([0.7, 0.95, 1.0].into_iter(), 0.5);
        assert!((q[0] - 0.7_f64.powf(1.5)).abs() < 1e-15);
        assert!((q[1] - 0.95_f64.powf(1.5)).abs() < 1e-15);
        assert!((q[2] - 1.0).abs() < 1e-15);
        assert!((heuristic_qualities([0.8].into_iter(), 0.0)[0] - 0.8).abs() < 1e-15);
    }

    #[test]
    fn case_matters_for_code_markers_only() {
        assert_eq!(text_signals("DEF f"), 0);
        assert_eq!(text_signals("Function x"), 0);
        assert_eq!(text_signals("déf prövé"), 0);
        assert_eq!(text_signals("ünïcode analysis"), SIG_HARD);
    }
}
