//! The usual Anthropic Messages body read in one pass, with what the request side needs
//! of it: its idempotency key, prompt-token estimate and required capabilities.
//!
//! `parse_anthropic_request` (Python, `server/parse_anthropic.py`) reads any body over a
//! dict `orjson` built, naming the field of a bad one. Most bodies are a model, an output
//! bound, a system prompt and user/assistant turns of text (a string or text blocks),
//! with a few sampling options: read here from the bytes, that same request comes out of
//! one walk. Anything else (tools, images, tool use and results, thinking blocks, a
//! structured output, a value the Python parser would refuse, a body that is not JSON)
//! returns `None`, and the Python parser decides. It is the oracle of the differential
//! tests (`tests/test_anthropic_ingest.py`).

use crate::hash::{self, TRANSPORT_FIELDS};
use crate::ingest;
use crate::json::{escaped_room, write_escaped, write_int};
use crate::memo::TextMemo;
use crate::policy::CAP_STREAMING;
use crate::rawjson::{JStr, Parser, Value};
use crate::request::Role;
use crate::sampling;
use crate::tokens::{round_tokens, text_millitokens, PER_MESSAGE_MILLI, REPLY_PRIMING_MILLI};

/// Members whose presence sends the body to the Python parser: those it reads besides
/// the ones read here.
const PYTHON_READS: [&str; 4] = ["tools", "tool_choice", "output_config", "output_format"];

/// At most this many `stop_sequences` (the Python parser's limit).
pub const MAX_STOP_SEQUENCES: usize = 16;

/// A plain Anthropic request, as `parse_anthropic_request` reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicRequest {
    pub model: String,
    /// Every text of the canonical messages in order, with its message's role: the
    /// system prompt's blocks first (one `system` message), then each turn's.
    pub texts: Vec<(Role, String)>,
    /// The number of texts of each message, in order; empty when every message is one
    /// text (the usual body), so that `texts` is the messages.
    pub sizes: Vec<usize>,
    pub max_tokens: i64,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The non-empty stop sequences.
    pub stop: Vec<String>,
    pub stream: bool,
    /// How the body gave the system prompt (its canonical form keeps the shape).
    pub system: System,
    /// Whether the body holds nothing but the members read here (`stop_sequences` absent
    /// or `null`, no `cache_control`), transport fields ([`TRANSPORT_FIELDS`]) and `null`
    /// members, so that its canonical form can be written from what was read rather than
    /// read again from the bytes (see [`ingest_anthropic`]).
    pub only_known: bool,
}

/// The form of the `system` member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Absent or `null`.
    Absent,
    /// A string (perhaps empty: no system message, but a member of the canonical form).
    Text,
    /// An array of text blocks (perhaps none).
    Blocks,
}

/// A message's texts as they sit in the body (decoded only once the body is accepted).
enum Content<'a> {
    One(JStr<'a>),
    Blocks(Vec<JStr<'a>>),
}

impl Content<'_> {
    /// The number of texts.
    fn len(&self) -> usize {
        match self {
            Content::One(_) => 1,
            Content::Blocks(b) => b.len(),
        }
    }
}

/// The turns of `messages`: each with its role and content.
type Turns<'a> = Vec<(Role, Content<'a>)>;

/// The members every Anthropic body is read for alike (here and by
/// [`crate::anthropic_turn`]): the model, the output bound, the sampling options and
/// the stream flag, a repeated one's last value counting.
#[derive(Default)]
pub(crate) struct Scalars<'a> {
    model: Option<Value<'a>>,
    max_tokens: Option<Value<'a>>,
    temperature: Option<Value<'a>>,
    top_p: Option<Value<'a>>,
    stop: Option<Value<'a>>,
    stream: Option<Value<'a>>,
}

/// What [`Scalars`] holds, read as `parse_anthropic_request` reads it.
pub(crate) struct Options {
    pub model: String,
    pub max_tokens: i64,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The non-empty stop sequences.
    pub stop: Vec<String>,
    pub stream: bool,
}

impl<'a> Scalars<'a> {
    /// Read member `name` at the cursor if it is one of these: `Some(true)` then,
    /// `Some(false)` for any other member (left at the cursor), `None` for a value that
    /// is not JSON.
    pub(crate) fn read_member(&mut self, p: &mut Parser<'a>, name: &str) -> Option<bool> {
        let slot = match name {
            "model" => &mut self.model,
            "max_tokens" => &mut self.max_tokens,
            "temperature" => &mut self.temperature,
            "top_p" => &mut self.top_p,
            "stop_sequences" => &mut self.stop,
            "stream" => &mut self.stream,
            _ => return Some(false),
        };
        *slot = Some(p.value().ok()?);
        Some(true)
    }

    /// Whether `stop_sequences` is absent or `null` (see [`AnthropicRequest::only_known`]).
    fn no_stop(&self) -> bool {
        matches!(self.stop, None | Some(Value::Null))
    }

    /// The values read, or `None` when the Python parser must read them: a model that
    /// is a non-empty string, an output bound of at least 1, `opt_number(..., 0.0,
    /// 1.0)` and `stop_list(..., limit=16)` as the `OpenAI` surface's options are read, a
    /// boolean (or `null`) stream flag.
    pub(crate) fn read(&self) -> Option<Options> {
        let model = match &self.model {
            Some(Value::Str(s)) if !s.raw().is_empty() => s.text().into_owned(),
            _ => return None,
        };
        let max_tokens = match self.max_tokens {
            Some(Value::Int(n)) if n >= 1 => n,
            _ => return None,
        };
        let stream = match &self.stream {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return None,
        };
        Some(Options {
            model,
            max_tokens,
            temperature: sampling::number(self.temperature.as_ref(), 1.0)?,
            top_p: sampling::number(self.top_p.as_ref(), 1.0)?,
            stop: sampling::stop_list(self.stop.as_ref(), MAX_STOP_SEQUENCES)?,
            stream,
        })
    }
}

#[derive(Default)]
struct Members<'a> {
    scalars: Scalars<'a>,
    system: Option<(System, Vec<JStr<'a>>)>,
    messages: Option<Turns<'a>>,
    /// A member skipped that is neither a transport field nor `null`, or a block with
    /// `cache_control` (see [`AnthropicRequest::only_known`]).
    others: bool,
}

/// The members of the body, a repeated one's last value counting (as `orjson` reads it).
fn members(body: &str) -> Option<Members<'_>> {
    let mut p = Parser::of_str(body);
    let mut m = Members::default();
    p.each_member(|p, name| {
        match name {
            "system" => m.system = Some(system(p, &mut m.others)?),
            "messages" => m.messages = Some(turns(p, &mut m.others)?),
            other if m.scalars.read_member(p, other)? => {}
            other if PYTHON_READS.contains(&other) => return None,
            // Ignored by the Python parser (`metadata`, `top_k`, `service_tier`,
            // `response_format`, …) and by the token estimate. (Only `null` begins
            // with `n`.)
            other => {
                m.others |= !TRANSPORT_FIELDS.contains(&other) && p.peek() != Some(b'n');
                p.skip().ok()?;
            }
        }
        Some(())
    })?;
    p.finish().ok()?;
    Some(m)
}

/// The system prompt's texts: none for `null` or `""`, a string's text, or the text of
/// each text block of an array.
pub(crate) fn system<'a>(p: &mut Parser<'a>, others: &mut bool) -> Option<(System, Vec<JStr<'a>>)> {
    match p.peek()? {
        b'[' => Some((System::Blocks, blocks(p, others)?)),
        _ => match p.value().ok()? {
            Value::Null => Some((System::Absent, Vec::new())),
            Value::Str(s) if s.raw().is_empty() => Some((System::Text, Vec::new())),
            Value::Str(s) => Some((System::Text, vec![s])),
            _ => None,
        },
    }
}

/// An array of text blocks, each an object of `type` `"text"`, a string `text` and
/// perhaps `cache_control` (which the Python parser drops, as it is dropped here). Any
/// other block, or member, is the Python parser's to read.
/// `others` is set when a block has `cache_control`.
pub(crate) fn blocks<'a>(p: &mut Parser<'a>, others: &mut bool) -> Option<Vec<JStr<'a>>> {
    let mut out = Vec::new();
    p.each_item(|p| {
        let (mut kind, mut text) = (None, None);
        p.each_member(|p, key| {
            match key {
                "type" => kind = Some(p.value().ok()?),
                "text" => text = Some(p.value().ok()?),
                "cache_control" => {
                    *others = true;
                    p.skip().ok()?;
                }
                _ => return None,
            }
            Some(())
        })?;
        match (kind?, text?) {
            (kind, Value::Str(s)) if kind.is_str("text") => out.push(s),
            _ => return None,
        }
        Some(())
    })?;
    Some(out)
}

/// The `messages` array: a non-empty array of objects of exactly `role` (`user` or
/// `assistant`) and `content` (a non-empty string, or a non-empty array of text blocks;
/// an assistant's with some text).
fn turns<'a>(p: &mut Parser<'a>, others: &mut bool) -> Option<Turns<'a>> {
    let mut out = Vec::new();
    p.each_item(|p| {
        let (mut who, mut content) = (None, None);
        p.each_member(|p, key| {
            match key {
                "role" => who = Some(p.value().ok()?),
                "content" => {
                    content = Some(if p.peek()? == b'[' {
                        Content::Blocks(blocks(p, others)?)
                    } else {
                        match p.value().ok()? {
                            Value::Str(s) => Content::One(s),
                            _ => return None,
                        }
                    });
                }
                _ => return None,
            }
            Some(())
        })?;
        let role = match who? {
            v if v.is_str("user") => Role::User,
            v if v.is_str("assistant") => Role::Assistant,
            _ => return None,
        };
        let content = content?;
        let has_text = match &content {
            Content::One(s) => !s.raw().is_empty(),
            Content::Blocks(b) if b.is_empty() => return None,
            Content::Blocks(b) => role == Role::User || b.iter().any(|s| !s.raw().is_empty()),
        };
        if !has_text {
            return None;
        }
        out.push((role, content));
        Some(())
    })?;
    (!out.is_empty()).then_some(out)
}

/// The plain Anthropic request in `body`, or `None` when the Python parser must read it.
pub fn anthropic_request(body: &[u8]) -> Option<AnthropicRequest> {
    let body = std::str::from_utf8(body).ok()?;
    let m = members(body)?;
    let Options {
        model,
        max_tokens,
        temperature,
        top_p,
        stop,
        stream,
    } = m.scalars.read()?;
    let turns = m.messages?;
    let (form, system) = m.system.unwrap_or((System::Absent, Vec::new()));
    let only_known = !m.others && m.scalars.no_stop();
    let one_each = system.len() <= 1 && turns.iter().all(|(_, c)| c.len() == 1);
    let mut texts = Vec::with_capacity(system.len() + turns.len());
    let mut sizes = Vec::new();
    if !one_each {
        // An empty system prompt is no message.
        sizes.extend((!system.is_empty()).then_some(system.len()));
        sizes.extend(turns.iter().map(|(_, c)| c.len()));
    }
    texts.extend(system.iter().map(|s| (Role::System, s.text().into_owned())));
    for (role, content) in &turns {
        match content {
            Content::One(s) => texts.push((*role, s.text().into_owned())),
            Content::Blocks(b) => texts.extend(b.iter().map(|s| (*role, s.text().into_owned()))),
        }
    }
    Some(AnthropicRequest {
        model,
        texts,
        sizes,
        max_tokens,
        temperature,
        top_p,
        stop,
        stream,
        system: form,
        only_known,
    })
}

/// What the request side needs of a plain Anthropic body.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicIngested {
    pub request: AnthropicRequest,
    /// The idempotency key, when a scope was given.
    pub key: Option<[u8; 16]>,
    /// Equal to [`estimate_anthropic_tokens`](crate::tokens::estimate_anthropic_tokens)
    /// of the body.
    pub prompt_tokens: u64,
    /// `CAP_*` bits: a plain body asks for no tools, schema or image, so streaming alone.
    pub required_caps: u64,
}

/// The plain Anthropic request in `body` with its key, token estimate and required
/// capabilities, or `None` when the Python parser must read the body.
///
/// `scope` is the key's scope without its stream mark (`Idempotency.scope(tenant,
/// "anthropic")`): the key is [`hash::request_key`] of the body under `scope + "s"` for a
/// streamed request and `scope + "n"` otherwise, what `Idempotency.key` computes. `None`
/// skips the key. A body the key cannot be computed for returns `None` too, so that the
/// general path meets the same error.
pub fn ingest_anthropic(body: &[u8], scope: Option<&str>) -> Option<AnthropicIngested> {
    ingest_anthropic_with(body, scope, &mut TextMemo::none())
}

/// [`ingest_anthropic`], the token estimates of long texts taken from `memo` when it has
/// them.
pub fn ingest_anthropic_with(
    body: &[u8],
    scope: Option<&str>,
    memo: &mut TextMemo<u64>,
) -> Option<AnthropicIngested> {
    let request = anthropic_request(body)?;
    let key = ingest::scoped_key(body, scope, request.stream, |tenant| {
        request.only_known.then(|| plain_key(&request, tenant))
    })?;
    let prompt_tokens = prompt_tokens(&request, memo);
    let required_caps = if request.stream { CAP_STREAMING } else { 0 };
    Some(AnthropicIngested {
        request,
        key,
        prompt_tokens,
        required_caps,
    })
}

/// [`hash::request_key`] of a body that is [`AnthropicRequest::only_known`], written
/// from what was read: its canonical form has `max_tokens`, `messages` (each `{"content",
/// "role"}`, a content of one text block as its text), `model`, `system` as given (a
/// string, or text blocks `{"text", "type"}`), and `temperature` and `top_p` unless 1,
/// keys in that (sorted) order; `stream` and `metadata` are transport fields.
fn plain_key(r: &AnthropicRequest, tenant: &str) -> [u8; 16] {
    fn block(text: &str, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"text\":");
        write_escaped(text, buf);
        buf.extend_from_slice(b",\"type\":\"text\"}");
    }
    fn blocks<'t>(texts: impl Iterator<Item = &'t str>, buf: &mut Vec<u8>) {
        buf.push(b'[');
        for (i, text) in texts.enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            block(text, buf);
        }
        buf.push(b']');
    }
    #[allow(clippy::float_cmp)] // the canonical form drops exactly 1 (`1` and `1.0`)
    fn option(name: &[u8], value: Option<f64>, buf: &mut Vec<u8>) {
        if let Some(v) = value.filter(|&v| v != 1.0) {
            buf.extend_from_slice(name);
            buf.extend_from_slice(hash::format_f64(v).as_bytes());
        }
    }
    let texts: usize = r
        .texts
        .iter()
        .map(|(_, t)| escaped_room(t.len()) + 40)
        .sum();
    let mut buf = Vec::with_capacity(8 + tenant.len() + r.model.len() + texts + 128);
    buf.extend_from_slice(&(tenant.len() as u64).to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    buf.extend_from_slice(b"{\"max_tokens\":");
    write_int(r.max_tokens.into(), &mut buf);
    buf.extend_from_slice(b",\"messages\":[");
    let system = r
        .texts
        .iter()
        .take_while(|(role, _)| *role == Role::System)
        .count();
    let mut turns = r.texts[system..].iter();
    let mut sizes = r
        .sizes
        .iter()
        .skip(usize::from(system > 0 && !r.sizes.is_empty()));
    let mut first = true;
    while let Some((role, text)) = turns.next() {
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.extend_from_slice(b"{\"content\":");
        let n = sizes.next().copied().unwrap_or(1);
        if n == 1 {
            write_escaped(text, &mut buf);
        } else {
            let rest = turns.by_ref().take(n - 1).map(|(_, t)| t.as_str());
            blocks(std::iter::once(text.as_str()).chain(rest), &mut buf);
        }
        buf.extend_from_slice(b",\"role\":\"");
        buf.extend_from_slice(role.wire().as_bytes());
        buf.extend_from_slice(b"\"}");
    }
    buf.extend_from_slice(b"],\"model\":");
    write_escaped(&r.model, &mut buf);
    let mut system = r.texts[..system].iter().map(|(_, t)| t.as_str());
    match r.system {
        System::Absent => {}
        System::Text => {
            buf.extend_from_slice(b",\"system\":");
            write_escaped(system.next_back().unwrap_or(""), &mut buf);
        }
        System::Blocks => {
            buf.extend_from_slice(b",\"system\":");
            blocks(system, &mut buf);
        }
    }
    option(b",\"temperature\":", r.temperature, &mut buf);
    option(b",\"top_p\":", r.top_p, &mut buf);
    buf.push(b'}');
    hash::key_of(&buf)
}

/// `estimate_anthropic_tokens` of such a body: 3 for reply priming, and per message
/// of its canonical form (the system prompt's first, when not empty) 3, its role and
/// the text of each of its texts. Long texts' estimates come from `memo`: agents send
/// the same system prompt, and the earlier turns, with every request.
fn prompt_tokens(request: &AnthropicRequest, memo: &mut TextMemo<u64>) -> u64 {
    let mut milli = REPLY_PRIMING_MILLI;
    let mut sizes = request.sizes.iter();
    let mut left = 0; // texts of the current message not yet counted
    for (role, text) in &request.texts {
        if left == 0 {
            left = sizes.next().copied().unwrap_or(1);
            milli += PER_MESSAGE_MILLI + text_millitokens(role.wire());
        }
        left -= 1;
        milli += memo.get_or(text, text_millitokens);
    }
    round_tokens(milli)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::estimate_anthropic_tokens;

    fn read(body: &str) -> Option<AnthropicRequest> {
        anthropic_request(body.as_bytes())
    }

    /// Every field of the ingest as the separate calls give it.
    fn check(body: &str, scope: &str) -> AnthropicIngested {
        let got = ingest_anthropic(body.as_bytes(), Some(scope)).unwrap();
        let mark = if got.request.stream { "s" } else { "n" };
        assert_eq!(Some(&got.request), read(body).as_ref());
        assert_eq!(
            got.key.unwrap(),
            hash::request_key(body.as_bytes(), &format!("{scope}{mark}")).unwrap()
        );
        assert_eq!(
            got.prompt_tokens,
            estimate_anthropic_tokens(body.as_bytes()).unwrap(),
            "{body}"
        );
        let caps = if got.request.stream { CAP_STREAMING } else { 0 };
        assert_eq!(got.required_caps, caps);
        assert_eq!(ingest_anthropic(body.as_bytes(), None).unwrap().key, None);
        got
    }

    #[test]
    fn reads_the_usual_body() {
        let r = read(
            r#"{"model":"auto","max_tokens":16,"system":"You are terse.",
            "messages":[{"role":"user","content":"Hi \u00e9"}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "auto");
        assert_eq!(
            r.texts,
            [
                (Role::System, "You are terse.".to_owned()),
                (Role::User, "Hi é".to_owned())
            ]
        );
        assert!(r.sizes.is_empty());
        assert_eq!((r.max_tokens, r.stream), (16, false));
        assert_eq!((r.temperature, r.top_p), (None, None));
        assert!(r.stop.is_empty());
    }

    #[test]
    fn reads_text_blocks_and_options() {
        let r = read(
            r#"{"model":"m","max_tokens":5,"temperature":0.5,"top_p":1,"stream":true,
            "stop_sequences":["", "END"],"metadata":{"user_id":"u"},"top_k":3,
            "system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
                      {"text":"b","type":"text"}],
            "messages":[{"role":"user","content":[{"type":"text","text":"q"}]},
                        {"role":"assistant","content":[{"type":"text","text":""},{"type":"text","text":"r"}]},
                        {"content":"s","role":"user"}]}"#,
        )
        .unwrap();
        assert_eq!(r.sizes, [2, 1, 2, 1]);
        assert_eq!(
            r.texts
                .iter()
                .map(|(r, t)| (r.name(), t.as_str()))
                .collect::<Vec<_>>(),
            [
                ("system", "a"),
                ("system", "b"),
                ("user", "q"),
                ("assistant", ""),
                ("assistant", "r"),
                ("user", "s")
            ]
        );
        assert_eq!((r.temperature, r.top_p), (Some(0.5), Some(1.0)));
        assert_eq!(r.stop, ["END"]);
        assert!(r.stream);
        // One block each, an empty system prompt: the texts are the messages.
        for system in [r#""""#, "null", "[]", r#"[{"type":"text","text":"x"}]"#] {
            let body = format!(
                r#"{{"model":"m","max_tokens":5,"system":{system},"stop_sequences":"x",
                "messages":[{{"role":"user","content":[{{"type":"text","text":""}}]}}]}}"#
            );
            let r = read(&body).unwrap();
            assert!(r.sizes.is_empty(), "{body}");
            assert_eq!(r.stop, ["x"]);
        }
    }

    #[test]
    fn gives_what_the_separate_calls_give() {
        for body in [
            r#"{"model":"auto","max_tokens":16,"system":"You are terse.",
                "messages":[{"role":"user","content":"Say hello in one word. 17"}]}"#,
            r#"{"model":"auto","max_tokens":16,"system":[{"type":"text","text":"You are terse."}],
                "messages":[{"role":"user","content":[{"type":"text","text":"Say \"hi\"\n日本"}]}],
                "temperature":0.5,"stream":true}"#,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":"c"},{"role":"user","content":"d"}],"temperature":1,
                "metadata":{"user_id":"u"},"stop_sequences":["\u00e9"],"top_k":5}"#,
            r#"{"model":"m","max_tokens":1,"system":[{"type":"text","text":"s1"},{"type":"text","text":"s2"}],
                "messages":[{"role":"assistant","content":[{"type":"text","text":"",
                "text":"the last text counts"}]}]}"#,
        ] {
            check(body, "tenant\0anthropic\0");
        }
    }

    /// A body of known members, transport fields and nulls is keyed from what was read;
    /// any other member, a `stop_sequences` or a `cache_control` sends it to the
    /// canonicaliser. Both give `request_key`'s key (`check`).
    #[test]
    fn keys_written_from_the_request_match_the_canonical_form() {
        let two = r#"[{"type":"text","text":"a\u00e9"},{"text":"b\"\n","type":"text"}]"#;
        let one = r#"[{"type":"text","text":"\/one"}]"#;
        for (members, known) in [
            (r#""system":"S""#, true),
            (r#""system":"""#, true),
            (r#""system":null"#, true),
            (r#""system":[]"#, true),
            (&format!(r#""system":{one}"#), true),
            (&format!(r#""system":{two}"#), true),
            (
                &format!(r#""system":{two},"messages":[{{"role":"user","content":{two}}}]"#),
                true,
            ),
            (
                &format!(r#""system":{one},"messages":[{{"role":"user","content":{two}}}]"#),
                true,
            ),
            (
                &format!(
                    r#""messages":[{{"role":"user","content":{one}}},{{"role":"assistant","content":{two}}},
                {{"content":"x","role":"user"}}]"#
                ),
                true,
            ),
            (r#""temperature":1,"top_p":1.0"#, true),
            (r#""temperature":0,"top_p":0.0"#, true),
            (r#""temperature":0.7,"top_p":1e-300"#, true),
            (
                r#""stream":true,"metadata":{"user_id":"u"},"top_k":null,"stop_sequences":null"#,
                true,
            ),
            (
                r#""\u006dodel":"\u00e9","m\u0061x_tokens":7,"system":"x","system":null"#,
                true,
            ),
            (r#""stop_sequences":[]"#, false),
            (r#""response_format":{"type":"json_object"}"#, false),
            (r#""top_k":3"#, false),
            (r#""thinking":{"type":"disabled"}"#, false),
            (
                r#""system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}]"#,
                false,
            ),
        ] {
            let body = format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"q"}}],{members}}}"#
            );
            let got = check(&body, "t\0anthropic\0");
            assert_eq!(got.request.only_known, known, "{body}");
        }
    }

    /// With a memo, a long system prompt and earlier turns sent again are estimated as
    /// the separate call estimates the whole body.
    #[test]
    fn a_memo_changes_no_estimate() {
        let earlier = "You answer questions about card fees, in two sentences. ".repeat(40);
        let mut memo = TextMemo::new(16);
        for question in ["What is the late fee?", "Why?", "What is the late fee?"] {
            let body = format!(
                r#"{{"model":"auto","max_tokens":9,"system":"{earlier}","messages":[
                {{"role":"user","content":[{{"type":"text","text":"{earlier}"}},{{"type":"text","text":"{question}"}}]}}]}}"#
            );
            let got = ingest_anthropic_with(body.as_bytes(), None, &mut memo).unwrap();
            assert_eq!(
                got.prompt_tokens,
                estimate_anthropic_tokens(body.as_bytes()).unwrap()
            );
            assert_eq!(got, ingest_anthropic(body.as_bytes(), None).unwrap());
        }
    }

    /// The system prompt is counted as the chat-completions body's first message: a
    /// string or text blocks, none when empty.
    #[test]
    fn counts_the_system_prompt() {
        let long = "You answer questions about card fees. ".repeat(50);
        for (system, openai) in [
            ("null", None),
            (r#""""#, None),
            ("[]", None),
            (r#""Be terse.""#, Some(r#""Be terse.""#)),
            (&format!(r#""{long}""#), Some(&format!(r#""{long}""#))),
            (
                r#"[{"type":"text","text":"a b"},{"type":"text","text":"","cache_control":{"type":"ephemeral"}}]"#,
                Some(r#"[{"type":"text","text":"a b"},{"type":"text","text":""}]"#),
            ),
        ] {
            let body = format!(
                r#"{{"model":"m","max_tokens":5,"system":{system},"messages":[{{"role":"user","content":"q"}}]}}"#
            );
            let system = openai.map_or(String::new(), |c| {
                format!(r#"{{"role":"system","content":{c}}},"#)
            });
            let chat = format!(r#"{{"messages":[{system}{{"role":"user","content":"q"}}]}}"#);
            assert_eq!(
                check(&body, "t\0anthropic\0").prompt_tokens,
                crate::tokens::estimate_tokens(chat.as_bytes()).unwrap(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_stream_flag_marks_the_key() {
        let body = |stream: &str| {
            format!(
                r#"{{"model":"m","max_tokens":3,"messages":[{{"role":"user","content":"x"}}],"stream":{stream}}}"#
            )
        };
        let n = check(&body("false"), "t\0anthropic\0");
        let s = check(&body("true"), "t\0anthropic\0");
        assert_ne!(n.key, s.key);
        assert_eq!(s.required_caps, CAP_STREAMING);
    }

    #[test]
    fn leaves_everything_else_to_python() {
        let ok = r#""model":"m","max_tokens":4,"messages":[{"role":"user","content":"x"}]"#;
        assert!(read(&format!("{{{ok}}}")).is_some());
        for extra in [
            r#""tools":[]"#,
            r#""tool_choice":null"#,
            r#""output_config":{}"#,
            r#""output_format":null"#,
            r#""temperature":1.5"#,
            r#""temperature":-0.0"#,
            r#""temperature":-0"#,
            r#""temperature":true"#,
            r#""top_p":"1""#,
            r#""stream":1"#,
            r#""stop_sequences":[1]"#,
            r#""stop_sequences":{}"#,
            r#""stop_sequences":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]"#,
            r#""system":[{"type":"text"}]"#,
            r#""system":[{"type":"image","text":"x"}]"#,
            r#""system":[{"type":"text","text":"x","citations":[]}]"#,
            r#""system":["x"]"#,
            r#""system":7"#,
            r#""max_tokens":0"#,
            r#""max_tokens":16.0"#,
            r#""max_tokens":null"#,
            r#""max_tokens":9223372036854775808"#,
            r#""model":"""#,
            r#""model":null"#,
            r#""messages":[]"#,
            r#""messages":{}"#,
            r#""messages":[{"role":"user","content":""}]"#,
            r#""messages":[{"role":"user","content":[]}]"#,
            r#""messages":[{"role":"user"}]"#,
            r#""messages":[{"role":"system","content":"x"}]"#,
            r#""messages":[{"role":"user","content":"x","name":"n"}]"#,
            r#""messages":[{"role":"assistant","content":[{"type":"text","text":""}]}]"#,
            r#""messages":[{"role":"user","content":[{"type":"image","source":{}}]}]"#,
            r#""messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]"#,
            r#""messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t"}]}]"#,
            r#""messages":[{"role":"user","content":null}]"#,
            r#""messages":["x"]"#,
        ] {
            // The extra member comes last, so that it is the one that counts.
            let body = format!("{{{ok},{extra}}}");
            assert_eq!(read(&body), None, "{body}");
            assert_eq!(
                ingest_anthropic(body.as_bytes(), Some("t\0anthropic\0")),
                None
            );
        }
        for body in [
            "",
            "{",
            "[]",
            "null",
            &format!("{{{ok}}} x"),
            &format!("{{{ok},}}"),
        ] {
            assert_eq!(read(body), None, "{body}");
        }
        assert_eq!(anthropic_request(b"{\"model\":\"\xff\"}"), None);
    }

    /// Mutations of plain bodies are read or left alone, never a panic; what is read
    /// has the separate calls' key and estimate.
    #[test]
    fn mutated_bodies_never_panic() {
        const SEEDS: &[&str] = &[
            r#"{"model":"auto","max_tokens":16,"system":[{"type":"text","text":"S"}],
            "messages":[{"role":"user","content":[{"type":"text","text":"q \u00e9"}]},
            {"role":"assistant","content":"a"}],"temperature":0.5,"stop_sequences":["x"]}"#,
            r#"{"model":"a","max_tokens":1,"system":"s","messages":[{"role":"user","content":"q"}]}"#,
        ];
        let mut read = 0;
        for (_, body) in
            crate::mutate::mutated_bodies(SEEDS, 20_000, 0x05ee_da12, crate::mutate::ALPHABET)
        {
            if let Some(got) = ingest_anthropic(&body, Some("t\0anthropic\0")) {
                read += 1;
                assert_eq!(Ok(got.prompt_tokens), estimate_anthropic_tokens(&body));
                let mark = if got.request.stream { "s" } else { "n" };
                assert_eq!(
                    got.key,
                    hash::request_key(&body, &format!("t\0anthropic\0{mark}")).ok()
                );
            }
        }
        assert!(read > 1000, "{read}");
    }
}
