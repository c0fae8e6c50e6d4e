//! The Anthropic Messages stream frames of a relayed stream ([`crate::relay`]), byte for
//! byte as `AnthropicStreamRenderer` (Python, `server/render_anthropic.py`) writes them
//! for the same canonical events: `message_start` and `ping` before the first delta,
//! each text run and each tool call its own content block numbered in order, the
//! refusal as a last text run, then `message_delta` (stop reason, usage) and
//! `message_stop`. The renderer writes its frames as `orjson` dumps their dicts (compact,
//! members in order); so does this module, from the same pieces.

use crate::json::{write_escaped, write_int};
use crate::relay::Usage;

const START: &[u8] = br#"event: message_start
data: {"type":"message_start","message":{"id":"#;
const START_MODEL: &[u8] = br#","type":"message","role":"assistant","model":"#;
const START_END: &[u8] = br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}

event: ping
data: {"type":"ping"}

"#;
const BLOCK_START: &[u8] = br#"event: content_block_start
data: {"type":"content_block_start","index":"#;
const TEXT_BLOCK: &[u8] = b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const TOOL_BLOCK: &[u8] = br#","content_block":{"type":"tool_use","id":"#;
const TOOL_BLOCK_NAME: &[u8] = br#","name":"#;
const TOOL_BLOCK_END: &[u8] = b",\"input\":{}}}\n\n";
const DELTA: &[u8] = br#"event: content_block_delta
data: {"type":"content_block_delta","index":"#;
const TEXT_DELTA: &[u8] = br#","delta":{"type":"text_delta","text":"#;
const JSON_DELTA: &[u8] = br#","delta":{"type":"input_json_delta","partial_json":"#;
const DELTA_END: &[u8] = b"}}\n\n";
const BLOCK_STOP: &[u8] = br#"event: content_block_stop
data: {"type":"content_block_stop","index":"#;
const BLOCK_STOP_END: &[u8] = b"}\n\n";
const MESSAGE_DELTA: &[u8] = br#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"#;
const MESSAGE_DELTA_USAGE: &[u8] = br#","stop_sequence":null},"usage":{"input_tokens":"#;
const MESSAGE_STOP: &[u8] = br#"}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// The Anthropic stop reason of a canonical finish reason (`STOP_REASON`).
fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// What kind of content block is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Tool,
}

/// One stream's frames: the renderer's state (the blocks numbered so far, the open one,
/// the tool calls' blocks).
#[derive(Debug)]
pub(crate) struct AnthropicFrames {
    message_id: String,
    model: String,
    next: usize,
    open: Open,
    /// The open block's index (meaningful while `open` is not `None`).
    open_index: usize,
    /// Canonical tool-call index → its block, in the order they came (a stream has few).
    tools: Vec<(i64, usize)>,
}

impl AnthropicFrames {
    pub(crate) fn new(message_id: &str, model: &str) -> Self {
        Self {
            message_id: message_id.to_owned(),
            model: model.to_owned(),
            next: 0,
            open: Open::None,
            open_index: 0,
            tools: Vec::new(),
        }
    }

    /// `message_start` and `ping`: before the first delta's frames.
    pub(crate) fn start(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(START);
        write_escaped(&self.message_id, out);
        out.extend_from_slice(START_MODEL);
        write_escaped(&self.model, out);
        out.extend_from_slice(START_END);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::None {
            self.open = Open::None;
            out.extend_from_slice(BLOCK_STOP);
            write_index(self.open_index, out);
            out.extend_from_slice(BLOCK_STOP_END);
        }
    }

    /// Close the open block, open the next one as `kind`; its index.
    fn begin(&mut self, kind: Open, out: &mut Vec<u8>) -> usize {
        self.close(out);
        self.open = kind;
        self.open_index = self.next;
        self.next += 1;
        out.extend_from_slice(BLOCK_START);
        write_index(self.open_index, out);
        self.open_index
    }

    pub(crate) fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = if self.open == Open::Text {
            self.open_index
        } else {
            let index = self.begin(Open::Text, out);
            out.extend_from_slice(TEXT_BLOCK);
            index
        };
        out.extend_from_slice(DELTA);
        write_index(index, out);
        out.extend_from_slice(TEXT_DELTA);
        write_escaped(text, out);
        out.extend_from_slice(DELTA_END);
    }

    /// A tool-call delta: its block opened on the call's first delta (`id` and `name`
    /// as given then, empty when absent), its arguments as a JSON delta when not empty.
    pub(crate) fn tool(
        &mut self,
        call: i64,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        out: &mut Vec<u8>,
    ) {
        let block = if let Some(&(_, block)) = self.tools.iter().find(|(c, _)| *c == call) {
            block
        } else {
            let block = self.begin(Open::Tool, out);
            out.extend_from_slice(TOOL_BLOCK);
            write_escaped(id.unwrap_or(""), out);
            out.extend_from_slice(TOOL_BLOCK_NAME);
            write_escaped(name.unwrap_or(""), out);
            out.extend_from_slice(TOOL_BLOCK_END);
            self.tools.push((call, block));
            block
        };
        if !arguments.is_empty() {
            out.extend_from_slice(DELTA);
            write_index(block, out);
            out.extend_from_slice(JSON_DELTA);
            write_escaped(arguments, out);
            out.extend_from_slice(DELTA_END);
        }
    }

    /// The end: the refusal (when any) as text, the open block closed, the stop reason
    /// and usage (cache reads apart from `input_tokens`, as Anthropic counts them).
    pub(crate) fn end(&mut self, finish: &str, refusal: &str, usage: Usage, out: &mut Vec<u8>) {
        if !refusal.is_empty() {
            self.text(refusal, out);
        }
        self.close(out);
        out.extend_from_slice(MESSAGE_DELTA);
        write_escaped(stop_reason(finish), out);
        out.extend_from_slice(MESSAGE_DELTA_USAGE);
        let input = i128::from(usage.input_tokens) - i128::from(usage.cached_tokens);
        write_int(input.max(0), out);
        out.extend_from_slice(b",\"output_tokens\":");
        write_int(i128::from(usage.output_tokens), out);
        out.extend_from_slice(b",\"cache_read_input_tokens\":");
        write_int(i128::from(usage.cached_tokens), out);
        out.extend_from_slice(b",\"cache_creation_input_tokens\":0");
        out.extend_from_slice(MESSAGE_STOP);
    }
}

fn write_index(index: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn text_tools_refusal_and_end() {
        let mut f = AnthropicFrames::new("msg_\"1", "m");
        let mut out = Vec::new();
        f.start(&mut out);
        f.text("a\n", &mut out);
        f.text("b", &mut out);
        f.tool(3, Some("c1"), None, "", &mut out);
        f.tool(3, None, None, "{\"x\"", &mut out);
        f.tool(0, None, Some("g"), "", &mut out);
        let usage = Usage {
            input_tokens: 2,
            output_tokens: 4,
            cached_tokens: 5,
            reasoning_tokens: 1,
        };
        f.end("tool_calls", "no", usage, &mut out);
        let expected = [
            r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_\"1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}"#,
            "event: ping\ndata: {\"type\":\"ping\"}",
            r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\n"}}"#,
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"b"}}"#,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
            r#"event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"c1","name":"","input":{}}}"#,
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\""}}"#,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}",
            r#"event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"","name":"g","input":{}}}"#,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}",
            r#"event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"text","text":""}}"#,
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"no"}}"#,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}",
            r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":0,"output_tokens":4,"cache_read_input_tokens":5,"cache_creation_input_tokens":0}}"#,
            "event: message_stop\ndata: {\"type\":\"message_stop\"}",
        ];
        assert_eq!(lines(&out), expected);
    }

    #[test]
    fn an_empty_answer_still_ends() {
        let mut f = AnthropicFrames::new("i", "m");
        let mut out = Vec::new();
        f.end("length", "", Usage::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_delta\n"));
        assert!(text.contains(r#""stop_reason":"max_tokens""#));
        assert!(!text.contains("content_block"));
    }

    #[test]
    fn usage_extremes_do_not_overflow() {
        let mut f = AnthropicFrames::new("i", "m");
        let mut out = Vec::new();
        let usage = Usage {
            input_tokens: i64::MAX,
            cached_tokens: i64::MIN,
            ..Usage::default()
        };
        f.end("stop", "", usage, &mut out);
        // i64::MAX - i64::MIN is u64::MAX, which orjson writes too.
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""input_tokens":18446744073709551615,"#));
        assert!(text.contains(r#""cache_read_input_tokens":-9223372036854775808"#));
    }
}
