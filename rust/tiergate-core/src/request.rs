//! The usual `OpenAI` chat-completions body read in one pass: a model, plain-text
//! messages, at most an output bound, the stream flag and the sampling options.
//!
//! `parse_openai_request` (Python, `server/parse_openai.py`) reads any body, with an
//! error naming the field for a bad one, over a dict `orjson` built first. Most bodies
//! are the plain shape read here, where the same request comes out of one walk of the
//! bytes. Anything else (another field the parser reads, another shape, a value it
//! would refuse, a body that is not JSON) returns `None`: the Python parser decides.

use crate::hash::TRANSPORT_FIELDS;
use crate::rawjson::{Parser, Value};
use crate::sampling::{Sampling, SamplingValues};

/// Fields whose presence sends the body to the Python parser (or to the turn reader,
/// `crate::turn`): the ones it reads besides those read here (any other field is
/// ignored by both).
const PYTHON_READS: [&str; 4] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

/// A plain message's role as sent: `developer` is kept apart from `system` because the
/// token estimate counts the role's own text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    /// A tool's result (an agent's turn: `crate::turn`; never a plain request's).
    Tool,
}

impl Role {
    /// The canonical role (`developer` read as `system`, as the Python parser reads it).
    pub fn name(self) -> &'static str {
        match self {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The role as the body spelled it.
    pub fn wire(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            other => other.name(),
        }
    }

    /// The role a message's `role` value spells (`tool` among them: a plain request
    /// refuses it, a turn takes it).
    pub(crate) fn of(v: &Value<'_>) -> Option<Role> {
        let Value::Str(s) = v else { return None };
        match s.text().as_ref() {
            "system" => Some(Role::System),
            "developer" => Some(Role::Developer),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A plain chat request: the route, `(role, text)` messages, the output bound, the
/// stream flag and the sampling options.
#[derive(Clone, Debug, PartialEq)]
pub struct PlainRequest {
    pub model: String,
    pub messages: Vec<(Role, String)>,
    pub max_tokens: Option<i64>,
    pub stream: bool,
    pub sampling: Sampling,
    /// `max_completion_tokens` and `max_tokens` as the body has them (absent or `null`:
    /// `None`).
    pub bounds: (Option<i64>, Option<i64>),
    /// Whether the body holds nothing but the model, the messages, the output bounds
    /// and transport fields ([`TRANSPORT_FIELDS`]), so that its canonical form can be
    /// written from them (`crate::ingest`) rather than read again from the bytes.
    pub only_known: bool,
}

#[derive(Default)]
struct Members<'a> {
    model: Option<Value<'a>>,
    messages: Option<Vec<(Role, String)>>,
    max_tokens: Option<Value<'a>>,
    max_completion_tokens: Option<Value<'a>>,
    stream: Option<Value<'a>>,
    sampling: SamplingValues<'a>,
    /// A member skipped that is not a transport field (see [`PlainRequest::only_known`]).
    others: bool,
}

fn members(body: &str) -> Option<Members<'_>> {
    let mut p = Parser::of_str(body);
    let mut m = Members::default();
    p.each_member(|p, name| {
        match name {
            "model" => m.model = Some(p.value().ok()?),
            "messages" => m.messages = Some(messages(p)?),
            "max_tokens" => m.max_tokens = Some(p.value().ok()?),
            "max_completion_tokens" => m.max_completion_tokens = Some(p.value().ok()?),
            "stream" => m.stream = Some(p.value().ok()?),
            other if PYTHON_READS.contains(&other) => return None,
            other => {
                if !m.sampling.read_member(p, other)? {
                    m.others |= !TRANSPORT_FIELDS.contains(&other);
                    p.skip().ok()?;
                }
            }
        }
        Some(())
    })?;
    p.finish().ok()?;
    Some(m)
}

/// An output bound as `opt_int(..., minimum=1)` accepts it (an integer of at least
/// 1); `Some(None)` when absent or `null`, `None` for anything else.
/// The messages array at the cursor, read as it is walked (no tree of it is built): each
/// message an object of exactly `role` (one of the plain roles) and `content` (a
/// non-empty string, or an array of one text part holding one), a repeated key's last
/// value counting, as the Python parser reads it. `None` for anything else.
fn messages(p: &mut Parser<'_>) -> Option<Vec<(Role, String)>> {
    let mut out = Vec::new();
    p.each_item(|p| {
        let (mut who, mut content) = (None, None);
        p.each_member(|p, key| {
            match key {
                "role" => who = Some(p.value().ok()?),
                "content" => content = Some(p.value().ok()?),
                _ => return None,
            }
            Some(())
        })?;
        let who = Role::of(&who?).filter(|r| *r != Role::Tool)?;
        out.push((who, text(content?)?));
        Some(())
    })?;
    Some(out)
}

/// A message's content as plain text: a non-empty string, or an array of exactly one
/// part `{"type": "text", "text": s}` (nothing else in it) with `s` non-empty, which the
/// Python parser reads as the same message, the provider is sent as the same content
/// (`build_openai_messages` writes one text part as a string) and the idempotency key's
/// canonical form writes as the string (`crate::hash`, rule 5).
fn text(content: Value<'_>) -> Option<String> {
    let part = match content {
        Value::Str(s) if !s.raw().is_empty() => return Some(s.text().into_owned()),
        Value::Arr(mut parts) if parts.len() == 1 => parts.pop()?,
        _ => return None,
    };
    let Value::Obj(members) = part else {
        return None;
    };
    // Sorted by key, a repeated key's last value kept: exactly `text`, then `type`.
    match &members[..] {
        [text, kind]
            if text.key == "text"
                && kind.key == "type"
                && matches!(&kind.value, Value::Str(k) if k.is("text")) =>
        {
            match &text.value {
                Value::Str(s) if !s.raw().is_empty() => Some(s.text().into_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

#[allow(clippy::option_option)] // outer: read here or not; inner: the bound
pub(crate) fn bound(v: Option<&Value<'_>>) -> Option<Option<i64>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Int(i)) if *i >= 1 => Some(Some(*i)),
        Some(_) => None,
    }
}

/// The plain request in `body`, or `None` when the Python parser must read it.
pub fn plain_chat_request(body: &[u8]) -> Option<PlainRequest> {
    let body = std::str::from_utf8(body).ok()?;
    let m = members(body)?;
    let model = match &m.model {
        Some(Value::Str(s)) if !s.raw().is_empty() => s.text().into_owned(),
        _ => return None,
    };
    let messages = m.messages?;
    if messages.is_empty() {
        return None;
    }
    let completion = bound(m.max_completion_tokens.as_ref())?;
    // Read as the Python parser reads it only when `max_completion_tokens` is absent;
    // otherwise any value is let be (and the body is not `only_known`).
    let tokens = bound(m.max_tokens.as_ref());
    let max_tokens = match completion {
        Some(n) => Some(n),
        None => tokens?,
    };
    let stream = match &m.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    Some(PlainRequest {
        model,
        messages,
        max_tokens,
        stream,
        sampling: m.sampling.read()?,
        bounds: (completion, tokens.flatten()),
        only_known: !m.others && !m.sampling.keyed() && tokens.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plain_shape() {
        let body = br#"{"model":"auto","messages":[{"role":"developer","content":"Be terse."},
            {"content":"Hi \u00e9","role":"user"}],"max_tokens":16,"stream":true,"user":"u1"}"#;
        let r = plain_chat_request(body).unwrap();
        assert_eq!(r.model, "auto");
        assert_eq!(
            r.messages,
            [
                (Role::Developer, "Be terse.".to_owned()),
                (Role::User, "Hi é".to_owned())
            ]
        );
        assert_eq!(
            r.messages.iter().map(|(r, _)| r.name()).collect::<Vec<_>>(),
            ["system", "user"]
        );
        assert_eq!((r.max_tokens, r.stream), (Some(16), true));
        let r = plain_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":3,"max_tokens":"no"}"#,
        )
        .unwrap();
        assert_eq!(r.max_tokens, Some(3));
    }

    #[test]
    fn reads_one_text_part_and_the_sampling_options() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":[{"text":"Be \u00e9","type":"text"}]},
            {"role":"user","content":[{"type":"text","text":"x","type":"text"}]}],
            "temperature":0.2,"seed":7,"stop":"END","n":1,"stream_options":{"include_usage":true}}"#;
        let r = plain_chat_request(body).unwrap();
        assert_eq!(
            r.messages,
            [
                (Role::System, "Be \u{e9}".to_owned()),
                (Role::User, "x".to_owned())
            ]
        );
        assert_eq!(r.sampling.temperature, Some(0.2));
        assert_eq!(r.sampling.seed, Some(7));
        assert_eq!(r.sampling.stop, ["END"]);
        assert!(r.sampling.include_usage);
        // The options are written back into the key's canonical form (`crate::ingest`)...
        assert!(r.only_known);
        // ...but for a stop list holding an empty string, which the request drops.
        let r = plain_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["END",""]}"#,
        )
        .unwrap();
        assert_eq!(r.sampling.stop, ["END"]);
        assert!(!r.only_known);
        let r = plain_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":null,"stream_options":{}}"#,
        )
        .unwrap();
        assert_eq!(r.sampling, Sampling::default());
        assert!(r.only_known);
    }

    #[test]
    fn leaves_everything_else_to_python() {
        for body in [
            &b"{nope"[..],
            b"[]",
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":""}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x","name":"n"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":""}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","text":"x"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.0}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":1}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":null}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]} x"#,
        ] {
            assert_eq!(
                plain_chat_request(body),
                None,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
