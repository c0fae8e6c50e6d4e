//! The Anthropic surface's answer to a plain request, written from the completion's
//! fields: the bytes `orjson.dumps(render_anthropic_message(...))` gives (Python,
//! `server/render_anthropic.py`) for an answer of text alone, without the dicts built
//! to write it. An answer with tool calls is written in Python.

use crate::json::{write_escaped, write_int};

/// The token counts of an answer, as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Input tokens read from the provider's cache (among `input_tokens`).
    pub cached_tokens: i64,
}

/// The Anthropic message of a text answer: `text` (none when `None` or empty: no
/// content block), `stop_reason` the Anthropic name of the finish reason. Anthropic counts
/// cache reads apart from `input_tokens`, so those are `input_tokens - cached_tokens`
/// (at least 0).
pub fn render_anthropic_message(
    message_id: &str,
    model: &str,
    text: Option<&str>,
    stop_reason: &str,
    usage: Usage,
) -> Vec<u8> {
    let text = text.filter(|t| !t.is_empty());
    let mut out =
        Vec::with_capacity(260 + message_id.len() + model.len() + text.map_or(0, str::len));
    out.extend_from_slice(b"{\"id\":");
    write_escaped(message_id, &mut out);
    out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    write_escaped(model, &mut out);
    out.extend_from_slice(b",\"content\":[");
    if let Some(text) = text {
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
        write_escaped(text, &mut out);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"stop_reason\":");
    write_escaped(stop_reason, &mut out);
    out.extend_from_slice(b",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    let uncached = i128::from(usage.input_tokens) - i128::from(usage.cached_tokens);
    write_int(uncached.max(0), &mut out);
    out.extend_from_slice(b",\"output_tokens\":");
    write_int(usage.output_tokens.into(), &mut out);
    out.extend_from_slice(b",\"cache_read_input_tokens\":");
    write_int(usage.cached_tokens.into(), &mut out);
    out.extend_from_slice(b",\"cache_creation_input_tokens\":0}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input_tokens: i64, output_tokens: i64, cached_tokens: i64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            cached_tokens,
        }
    }

    #[test]
    fn writes_the_message() {
        let got = render_anthropic_message(
            "msg_1",
            "mé",
            Some("Hi \"there\"\n\u{1}"),
            "end_turn",
            usage(120, 5, 20),
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            concat!(
                r#"{"id":"msg_1","type":"message","role":"assistant","model":"mé","#,
                r#""content":[{"type":"text","text":"Hi \"there\"\n\u0001"}],"#,
                r#""stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":100,"#,
                r#""output_tokens":5,"cache_read_input_tokens":20,"cache_creation_input_tokens":0}}"#
            )
        );
    }

    #[test]
    fn no_text_no_block_and_counts_at_their_edges() {
        for text in [None, Some("")] {
            let got = render_anthropic_message("i", "m", text, "max_tokens", usage(3, 0, 9));
            let got = String::from_utf8(got).unwrap();
            assert!(got.contains(r#""content":[],"#), "{got}");
            assert!(got.contains(r#""input_tokens":0,"#), "{got}");
        }
        let got =
            render_anthropic_message("i", "m", None, "s", usage(i64::MAX, i64::MIN, i64::MIN));
        let got = String::from_utf8(got).unwrap();
        assert!(
            got.contains(&format!(
                r#""input_tokens":{},"#,
                i128::from(i64::MAX) - i128::from(i64::MIN)
            )),
            "{got}"
        );
        assert!(
            got.contains(&format!(r#""output_tokens":{},"#, i64::MIN)),
            "{got}"
        );
    }
}
