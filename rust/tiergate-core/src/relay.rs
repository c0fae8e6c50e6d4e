//! An `OpenAI` chat-completions stream (from `OpenAI` or a compatible server) relayed
//! to a caller of the `OpenAI` surface in one pass: SSE bytes in, the caller's frames out.
//!
//! The general stream path parses each provider event into a canonical delta (a Python
//! object), hands it through two async generators, then renders it as a chunk: in the
//! overhead benchmark's seven-event stream that cost ~164k instructions more than this
//! module's one pass. Between the two `OpenAI` dialects the deltas are only a waypoint,
//! so this module does both halves, with the same results:
//!
//! * parsing as `OpenAIStreamParser.feed` (Python, `providers/openai.py`): text deltas
//!   of choice 0, tool-call deltas, refusal pieces, the last finish reason and usage,
//!   the model the provider names; `[DONE]` ends the stream, and so does the body's end
//!   once a finish reason and usage were seen; anything else is a cut stream;
//! * rendering as `OpenAIStreamRenderer` (`server/render_openai.py`): the role chunk
//!   before the first delta, one chunk per delta, then refusal, finish, usage (when the
//!   caller asked for it) and `[DONE]`, with the sidecar's id, model and time;
//! * or, for a caller of the Anthropic surface ([`OpenAiRelay::begin_anthropic`]),
//!   rendering as `AnthropicStreamRenderer` (`server/render_anthropic.py`; the frames
//!   are [`crate::anthropic_stream`]'s);
//! * what accounting reads: the text delivered, how many text deltas were rendered, and
//!   the end (canonical finish reason, usage, model).
//!
//! A field whose JSON type the Python parser cannot use (it would fail on it, or carry
//! it into a later failure) makes the chunk malformed here ([`FAIL_SHAPE`]).

use crate::anthropic_stream::AnthropicFrames;
use crate::completion::write_object_head;
use crate::json::{write_escaped, write_int};
use std::borrow::Cow;

use crate::chunk::{self, Delta, Refused};
use crate::sse::{Flow, SseLines};
use crate::{CoreError, Result};

/// The event was not JSON.
pub const FAIL_NOT_JSON: u32 = 1;
/// The event was JSON but not an object.
pub const FAIL_NOT_OBJECT: u32 = 2;
/// The event was an `{"error": ...}` object (the detail is its text).
pub const FAIL_ERROR_OBJECT: u32 = 3;
/// The stream ended without its end (`[DONE]` before a finish reason, or the body's
/// end before a finish reason and usage).
pub const FAIL_CUT: u32 = 4;
/// A field had a JSON type the protocol does not allow (the detail names it).
pub const FAIL_SHAPE: u32 = 5;
/// One event (or an unterminated line) grew past [`MAX_EVENT_BYTES`].
pub const FAIL_TOO_LARGE: u32 = 6;

/// The most bytes one streamed event may hold. Chunks are small; the largest real ones
/// carry an image in base64 (a few MB). Past this the stream is malformed, rather than
/// the sidecar's memory the provider's to fill. The Python stream parser and the
/// non-streamed answer use the same bound (`providers._http.MAX_ANSWER_BYTES`).
pub const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// Why the stream failed: one of the `FAIL_*` codes and a detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u32,
    pub detail: String,
}

/// Token counts as the provider reported them (`usage_openai`'s fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
}

/// Every provider's stop reason → the canonical one (`normalise.FINISH_REASONS`; a
/// Python test keeps the two tables equal). Unknown reasons are a normal stop.
const FINISH_REASONS: &[(&str, &str)] = &[
    ("stop", "stop"),
    ("length", "length"),
    ("tool_calls", "tool_calls"),
    ("function_call", "tool_calls"),
    ("content_filter", "content_filter"),
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    ("guardrail_intervened", "content_filter"),
    ("content_filtered", "content_filter"),
    ("STOP", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"),
    ("OTHER", "stop"),
    ("MAX_TOKENS", "length"),
    ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"),
    ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"),
    ("LANGUAGE", "content_filter"),
    ("eos_token", "stop"),
];

/// The canonical finish reason of a provider's stop reason.
pub fn finish_reason(raw: &str) -> &'static str {
    FINISH_REASONS
        .iter()
        .find(|(k, _)| *k == raw)
        .map_or("stop", |(_, v)| v)
}

/// What the provider's events said so far.
#[derive(Debug)]
struct Parsed {
    model: String,
    finish: Option<String>,
    usage: Usage,
    usage_seen: bool,
    refusal: String,
    pending: Vec<Delta>,
    done: bool,
    failure: Option<Failure>,
    /// The last event's leading members, for the next event to skip (`chunk::Head`).
    head: chunk::Head,
    slots: chunk::ToolSlots,
}

/// One relayed stream. Feed it the provider's body as it arrives; after [`Self::begin`]
/// each [`Self::render`] returns the frames of the deltas parsed since the last one.
#[derive(Debug)]
pub struct OpenAiRelay {
    sse: SseLines,
    parsed: Parsed,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…` (no `}`).
    head: Vec<u8>,
    /// The Anthropic surface's frames, when the caller speaks it (else the `OpenAI`
    /// surface's, from `head`).
    anthropic: Option<AnthropicFrames>,
    include_usage: bool,
    started: bool,
    ended: bool,
    text: String,
    delivered: usize,
    /// [`MAX_EVENT_BYTES`], lowered in tests.
    max_event_bytes: usize,
}

const ROLE: &[u8] = br#","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}

"#;
const TEXT_MID: &[u8] = br#","choices":[{"index":0,"delta":{"content":"#;
const DELTA_TAIL: &[u8] = b"},\"finish_reason\":null,\"logprobs\":null}]}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

impl OpenAiRelay {
    /// `model`: the deployment's model id, the end's model unless the provider names one.
    pub fn new(model: &str) -> Self {
        Self {
            sse: SseLines::new(),
            parsed: Parsed {
                model: model.to_owned(),
                finish: None,
                usage: Usage::default(),
                usage_seen: false,
                refusal: String::new(),
                pending: Vec::new(),
                done: false,
                failure: None,
                head: chunk::Head::default(),
                slots: chunk::ToolSlots::default(),
            },
            head: Vec::new(),
            anthropic: None,
            include_usage: false,
            started: false,
            ended: false,
            text: String::new(),
            delivered: 0,
            max_event_bytes: MAX_EVENT_BYTES,
        }
    }

    /// Parse one piece of the body; returns how many deltas wait to be rendered. Stops
    /// reading at the end or at a failure.
    pub fn feed(&mut self, chunk: &[u8]) -> usize {
        let parsed = &mut self.parsed;
        if !parsed.done && parsed.failure.is_none() {
            self.sse.feed(chunk, |data| parsed.event(data));
            if self.sse.held() > self.max_event_bytes && parsed.failure.is_none() {
                parsed.fail(FAIL_TOO_LARGE, "");
            }
        }
        parsed.pending.len()
    }

    /// The body ended: the end when a finish reason and usage were seen, else a cut.
    /// Returns how many deltas wait to be rendered.
    pub fn finish(&mut self) -> usize {
        let p = &mut self.parsed;
        if !p.done && p.failure.is_none() {
            if p.finish.is_some() && p.usage_seen {
                p.pending.push(Delta::End);
                p.done = true;
            } else {
                p.fail(FAIL_CUT, "");
            }
        }
        p.pending.len()
    }

    /// Whether nothing more is read: the end was parsed, or the stream failed.
    pub fn stopped(&self) -> bool {
        self.parsed.done || self.parsed.failure.is_some()
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.parsed.failure.as_ref()
    }

    /// Name the caller's stream: its id, model, creation time, and whether its last
    /// chunk reports usage (`stream_options.include_usage`).
    pub fn begin(&mut self, response_id: &str, model: &str, created: i64, include_usage: bool) {
        let mut head = Vec::with_capacity(96 + response_id.len() + model.len());
        head.extend_from_slice(b"data: ");
        write_object_head(
            &mut head,
            response_id,
            "chat.completion.chunk",
            created,
            model,
        );
        self.head = head;
        self.include_usage = include_usage;
    }

    /// Name the caller's stream as a caller of the Anthropic surface: its frames are
    /// Anthropic Messages stream events with this message id and model.
    pub fn begin_anthropic(&mut self, message_id: &str, model: &str) {
        self.anthropic = Some(AnthropicFrames::new(message_id, model));
    }

    /// The frames of every delta parsed since the last call.
    pub fn render(&mut self) -> Result<Vec<u8>> {
        if self.anthropic.is_some() {
            return Ok(self.render_anthropic());
        }
        if self.head.is_empty() {
            return Err(CoreError::invalid("render before begin"));
        }
        let mut out = Vec::with_capacity(self.parsed.pending.len() * 200);
        let pending = std::mem::take(&mut self.parsed.pending);
        for delta in pending {
            if !self.started {
                self.started = true;
                out.extend_from_slice(&self.head);
                out.extend_from_slice(ROLE);
            }
            match delta {
                Delta::Text(text) => {
                    out.extend_from_slice(&self.head);
                    out.extend_from_slice(TEXT_MID);
                    write_escaped(&text, &mut out);
                    out.extend_from_slice(DELTA_TAIL);
                    self.text.push_str(&text);
                    self.delivered += 1;
                }
                Delta::Tool {
                    index,
                    id,
                    name,
                    arguments,
                } => {
                    self.open_delta(&mut out);
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    // Placed when read (`Parsed::event`): never None here.
                    write_int(i128::from(index.unwrap_or_default()), &mut out);
                    if let Some(id) = id {
                        out.extend_from_slice(b",\"id\":");
                        write_escaped(&id, &mut out);
                        out.extend_from_slice(b",\"type\":\"function\"");
                    }
                    out.extend_from_slice(b",\"function\":{\"arguments\":");
                    write_escaped(&arguments, &mut out);
                    if let Some(name) = name {
                        out.extend_from_slice(b",\"name\":");
                        write_escaped(&name, &mut out);
                    }
                    out.extend_from_slice(b"}}]");
                    out.extend_from_slice(DELTA_TAIL);
                }
                Delta::End => self.render_end(&mut out),
            }
        }
        Ok(out)
    }

    fn render_anthropic(&mut self) -> Vec<u8> {
        let Some(frames) = self.anthropic.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(self.parsed.pending.len() * 160);
        let pending = std::mem::take(&mut self.parsed.pending);
        for delta in pending {
            if !self.started {
                self.started = true;
                frames.start(&mut out);
            }
            match delta {
                Delta::Text(text) => {
                    frames.text(&text, &mut out);
                    self.text.push_str(&text);
                    self.delivered += 1;
                }
                Delta::Tool {
                    index,
                    id,
                    name,
                    arguments,
                } => frames.tool(
                    index.unwrap_or_default(), // placed when read (`Parsed::event`)
                    id.as_deref(),
                    name.as_deref(),
                    &arguments,
                    &mut out,
                ),
                Delta::End => {
                    let p = &self.parsed;
                    let finish = p.finish.as_deref().map_or("stop", finish_reason);
                    frames.end(finish, &p.refusal, p.usage, &mut out);
                    self.ended = true;
                }
            }
        }
        out
    }

    fn open_delta(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
    }

    fn render_end(&mut self, out: &mut Vec<u8>) {
        let p = &self.parsed;
        if !p.refusal.is_empty() {
            self.open_delta(out);
            out.extend_from_slice(b"{\"refusal\":");
            write_escaped(&p.refusal, out);
            out.extend_from_slice(DELTA_TAIL);
        }
        self.open_delta(out);
        out.extend_from_slice(b"{},\"finish_reason\":\"");
        out.extend_from_slice(self.finish_reason().as_bytes());
        out.extend_from_slice(b"\",\"logprobs\":null}]}\n\n");
        if self.include_usage {
            let u = p.usage;
            let total = i128::from(u.input_tokens) + i128::from(u.output_tokens);
            out.extend_from_slice(&self.head);
            out.extend_from_slice(
                format!(
                    ",\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\
                     \"total_tokens\":{total},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\
                     \"completion_tokens_details\":{{\"reasoning_tokens\":{}}}}}}}\n\n",
                    u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(DONE);
        self.ended = true;
    }

    /// Whether the end's frames were rendered.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Text deltas rendered so far.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The text rendered so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The canonical finish reason (a normal stop when none was sent).
    pub fn finish_reason(&self) -> &'static str {
        self.parsed.finish.as_deref().map_or("stop", finish_reason)
    }

    pub fn usage(&self) -> Usage {
        self.parsed.usage
    }

    /// The model the provider named last (else the deployment's).
    pub fn model(&self) -> &str {
        &self.parsed.model
    }
}

impl Parsed {
    fn fail(&mut self, code: u32, detail: &str) {
        self.failure = Some(Failure {
            code,
            detail: detail.to_owned(),
        });
    }

    /// One SSE event's data.
    fn event(&mut self, data: &[u8]) -> Flow {
        if data == b"[DONE]" {
            if self.finish.is_some() {
                self.pending.push(Delta::End);
                self.done = true;
            } else {
                self.fail(FAIL_CUT, "");
            }
            return Flow::Stop;
        }
        // As Python decodes each line: invalid UTF-8 becomes U+FFFD.
        let text = match std::str::from_utf8(data) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(data),
        };
        let from = self.pending.len();
        match chunk::read(&text, &mut self.pending, &mut self.refusal, &mut self.head) {
            Ok(said) => {
                for delta in &mut self.pending[from..] {
                    if let Delta::Tool { index, id, .. } = delta {
                        *index = Some(self.slots.place(*index, id.as_deref()));
                    }
                }
                // Every event names the model: replaced only when it changes.
                if let Some(model) = said.model.filter(|m| *m != self.model) {
                    self.model = model.into_owned();
                }
                if let Some(usage) = said.usage {
                    self.usage = usage;
                    self.usage_seen = true;
                }
                if let Some(reason) = said.finish {
                    self.finish = Some(reason.into_owned());
                }
                Flow::Continue
            }
            Err(refused) => {
                match refused {
                    Refused::NotJson => self.fail(FAIL_NOT_JSON, ""),
                    Refused::NotObject => self.fail(FAIL_NOT_OBJECT, ""),
                    Refused::ErrorObject => self.fail(FAIL_ERROR_OBJECT, &text),
                    Refused::Shape(field) => self.fail(FAIL_SHAPE, field),
                }
                Flow::Stop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_past_the_bound_fails_the_stream() {
        let chunk = br#"data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        // Within the bound: events of any number, split anywhere, pass.
        let mut r = OpenAiRelay::new("m");
        r.max_event_bytes = chunk.len() + 1;
        for piece in chunk.chunks(7) {
            r.feed(piece);
        }
        r.feed(b"\n\n");
        assert!(r.failure().is_none());
        // A line that never ends, an event that never ends (many data lines).
        for (first, more) in [
            (&b"data: x"[..], &b"yyyyyyyy"[..]),
            (b"data: x\n", b"data: y\n"),
        ] {
            let mut r = OpenAiRelay::new("m");
            r.max_event_bytes = 64;
            r.feed(first);
            for _ in 0..100 {
                r.feed(more);
            }
            assert_eq!(r.failure().map(|f| f.code), Some(FAIL_TOO_LARGE));
            assert!(r.stopped());
        }
    }

    fn relay(wire: &[&[u8]], include_usage: bool) -> (OpenAiRelay, String) {
        let mut r = OpenAiRelay::new("dep-model");
        r.begin("chatcmpl-x", "dep-model", 7, include_usage);
        let mut out = Vec::new();
        for c in wire {
            r.feed(c);
            out.extend(r.render().unwrap());
            if r.stopped() {
                break;
            }
        }
        if !r.stopped() {
            r.finish();
            out.extend(r.render().unwrap());
        }
        (r, String::from_utf8(out).unwrap())
    }

    const HEAD: &str = r#"data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":7,"model":"dep-model""#;

    #[test]
    fn text_stream_with_usage() {
        let wire = concat!(
            r#"data: {"id":"u","model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{"content":"He\"l\n"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"end_turn"}]}"#,
            "\n\n",
            r#"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            "\n\ndata: [DONE]\n\ndata: ignored\n\n",
        );
        let (r, out) = relay(&[wire.as_bytes()], true);
        let expected = [
            format!(r#"{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null,"logprobs":null}}]}}"#),
            format!(r#"{HEAD},"choices":[{{"index":0,"delta":{{"content":"He\"l\n"}},"finish_reason":null,"logprobs":null}}]}}"#),
            format!(r#"{HEAD},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop","logprobs":null}}]}}"#),
            format!(r#"{HEAD},"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{{"cached_tokens":1}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#),
            "data: [DONE]".to_owned(),
        ]
        .join("\n\n")
            + "\n\n";
        assert_eq!(out, expected);
        assert!(r.ended());
        assert_eq!((r.delivered(), r.text(), r.model()), (1, "He\"l\n", "m-1"));
        assert_eq!(r.finish_reason(), "stop");
        assert_eq!(r.usage().cached_tokens, 1);
    }

    #[test]
    fn tool_calls_and_refusal() {
        let wire = concat!(
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c1","function":{"name":"f","arguments":""}}]}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":1}"}}],"refusal":"no"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":1,"delta":{"content":"other choice"}},{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "\n\ndata: [DONE]\n\n",
        );
        let (r, out) = relay(&[wire.as_bytes()], false);
        assert!(out.contains(r#""delta":{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"arguments":"","name":"f"}}]}"#));
        assert!(out.contains(
            r#""delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":1}"}}]}"#
        ));
        assert!(out.contains(r#""delta":{"refusal":"no"},"finish_reason":null"#));
        assert!(!out.contains("usage"));
        assert!(!out.contains("other choice"));
        assert_eq!((r.delivered(), r.finish_reason()), (0, "tool_calls"));
    }

    #[test]
    fn tool_calls_without_an_index_are_placed() {
        // Ollama: whole calls, two in one event, ids and no index; then SGLang-like
        // pieces: an id and a name, then arguments with neither id nor index (null).
        let wire = concat!(
            r#"data: {"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}},{"id":"b","function":{"name":"g","arguments":"{\"x\":1}"}}]}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":null,"id":"c","function":{"name":"h","arguments":""}}]}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":null,"function":{"arguments":"{\"y\":"}}]}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"tool_calls":[{"id":"c","function":{"arguments":"2}"}}]}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "\n\ndata: [DONE]\n\n",
        );
        let (_, out) = relay(&[wire.as_bytes()], false);
        let placed: Vec<&str> = out
            .match_indices(r#""tool_calls":[{"index":"#)
            .map(|(at, m)| &out[at + m.len()..=at + m.len()])
            .collect();
        assert_eq!(placed, ["0", "1", "2", "2", "2"]);
        assert!(out.contains(r#"{"index":1,"id":"b","type":"function","function":{"arguments":"{\"x\":1}","name":"g"}}"#));
    }

    #[test]
    fn failures() {
        let cases: [(&[u8], u32); 6] = [
            (b"data: {nope\n\n", FAIL_NOT_JSON),
            (b"data: [1]\n\n", FAIL_NOT_OBJECT),
            (
                b"data: {\"error\":{\"message\":\"x\"}}\n\n",
                FAIL_ERROR_OBJECT,
            ),
            (b"data: [DONE]\n\n", FAIL_CUT),
            (b"data: {\"choices\":{\"a\":1}}\n\n", FAIL_SHAPE),
            (
                b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
                FAIL_CUT,
            ),
        ];
        for (wire, code) in cases {
            let (r, _) = relay(&[wire], false);
            assert_eq!(r.failure().map(|f| f.code), Some(code), "{wire:?}");
            assert!(!r.ended());
        }
    }

    #[test]
    fn end_of_body_after_finish_and_usage_is_the_end() {
        let wire = concat!(
            r#"data: {"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}"#,
            "\n\n",
            r#"data: {"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            "\n\n",
        );
        let (r, out) = relay(&[wire.as_bytes()], false);
        assert!(r.ended() && r.failure().is_none());
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(r.finish_reason(), "length");
    }

    #[test]
    fn a_failed_event_delivers_none_of_itself() {
        let wire = br#"data: {"choices":[{"delta":{"content":"a"}},{"delta":{"content":5}}]}

"#;
        let mut r = OpenAiRelay::new("m");
        assert_eq!(r.feed(wire), 0);
        assert_eq!(r.failure().map(|f| f.detail.as_str()), Some("content"));
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("eos_token"), "stop");
        assert_eq!(finish_reason("MAX_TOKENS"), "length");
        assert_eq!(finish_reason("whatever"), "stop");
    }

    #[test]
    fn anthropic_frames_of_a_text_stream() {
        let wire = concat!(
            r#"data: {"model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{"content":"He\"l"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{"content":"lo","refusal":"no"},"finish_reason":"length"}]}"#,
            "\n\n",
            r#"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            "\n\ndata: [DONE]\n\n",
        );
        let mut r = OpenAiRelay::new("dep-model");
        r.begin_anthropic("msg_x", "dep-model");
        let mut out = Vec::new();
        // Split mid-event: the frames are the same whatever the pieces.
        for piece in wire.as_bytes().chunks(13) {
            r.feed(piece);
            out.extend(r.render().unwrap());
        }
        let out = String::from_utf8(out).unwrap();
        let expected = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_x\",",
            "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"dep-model\",\"content\":[],",
            "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,",
            "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"He\\\"l\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"no\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",",
            "\"stop_sequence\":null},\"usage\":{\"input_tokens\":4,\"output_tokens\":2,",
            "\"cache_read_input_tokens\":1,\"cache_creation_input_tokens\":0}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(out, expected);
        assert!(r.ended());
        // The refusal is not a delivered text delta, as in the Python stream loop.
        assert_eq!((r.delivered(), r.text(), r.model()), (2, "He\"llo", "m-1"));
        assert_eq!(r.finish_reason(), "length");
    }

    #[test]
    fn render_needs_begin() {
        assert!(OpenAiRelay::new("m").render().is_err());
    }
}
