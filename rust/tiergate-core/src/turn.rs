//! An agent's turn read in one pass: the plain body of [`crate::request`] and, besides,
//! the tools offered, the assistant's tool calls and the tools' results.
//!
//! An agent sends the same tools, system prompt and earlier turns with every request;
//! the Python parser (`server/parse_openai.py`) would build a dict of all of it and walk
//! it again. Here the messages are read as the bytes are walked and the `tools` and
//! `tool_choice` members are handed back as their byte ranges, which the caller reads
//! (and remembers by their bytes). What comes out is what the Python parser reads of
//! the same body; anything it would read otherwise, or refuse, returns `None` and the
//! Python parser decides (it is the oracle of the differential tests).

use crate::memo::ValueMemo;
use crate::rawjson::{Parser, Value};
use crate::request::{bound, Role};
use crate::sampling::{Sampling, SamplingValues};

/// The byte range of the value at the cursor, stepped over: a value held in `known`
/// (tools sent before: an agent's every turn) ends where it ended, read no further.
pub(crate) fn member_span<V>(p: &mut Parser<'_>, known: Option<&ValueMemo<V>>) -> Option<Span> {
    let start = p.i;
    match known.and_then(|k| k.find(&p.input()[start..])) {
        Some((n, _)) => p.i += n,
        None => p.skip().ok()?,
    }
    Some((start, p.i))
}

/// One tool call of an assistant message: id, function name, arguments (JSON text) as
/// sent (absent: empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Call {
    /// The arguments as the Python parser reads them: an empty text as `{}`.
    pub fn arguments_or_empty_object(&self) -> &str {
        if self.arguments.is_empty() {
            "{}"
        } else {
            &self.arguments
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnMessage {
    pub role: Role,
    /// The one text part; `None` for none (a tool call's or a tool result's empty
    /// content).
    pub text: Option<String>,
    /// The tool calls of an assistant message (empty for any other).
    pub calls: Vec<Call>,
    /// The call a tool message answers (`None` for any other).
    pub call_id: Option<String>,
}

impl TurnMessage {
    /// Whether the message is one text and nothing else (what the plain reader takes).
    pub fn is_plain(&self) -> bool {
        self.calls.is_empty() && self.call_id.is_none() && self.text.is_some()
    }
}

/// A byte range of the body: a member's value, from its first byte to past its last.
pub type Span = (usize, usize);

#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub model: String,
    pub messages: Vec<TurnMessage>,
    pub max_tokens: Option<i64>,
    pub stream: bool,
    /// The value of `tools` (the last, when repeated).
    pub tools: Option<Span>,
    /// The value of `tool_choice` (the last, when repeated).
    pub tool_choice: Option<Span>,
    /// `parallel_tool_calls` (absent or `null`: `None`).
    pub parallel_tool_calls: Option<bool>,
    /// The value of `response_format` (the last, when repeated), for the caller to
    /// read with the Python parser's own checks.
    pub response_format: Option<Span>,
    /// The sampling options, read as the Python parser reads them.
    pub sampling: Sampling,
}

#[derive(Default)]
struct Members<'a> {
    model: Option<Value<'a>>,
    messages: Option<Vec<TurnMessage>>,
    max_tokens: Option<Value<'a>>,
    max_completion_tokens: Option<Value<'a>>,
    stream: Option<Value<'a>>,
    parallel: Option<Value<'a>>,
    tools: Option<Span>,
    tool_choice: Option<Span>,
    response_format: Option<Span>,
    sampling: SamplingValues<'a>,
}

fn members<'a, V>(body: &'a str, known: &ValueMemo<V>) -> Option<Members<'a>> {
    let mut p = Parser::of_str(body);
    let mut m = Members::default();
    p.each_member(|p, name| {
        match name {
            "model" => m.model = Some(p.value().ok()?),
            "messages" => m.messages = Some(messages(p)?),
            "max_tokens" => m.max_tokens = Some(p.value().ok()?),
            "max_completion_tokens" => m.max_completion_tokens = Some(p.value().ok()?),
            "stream" => m.stream = Some(p.value().ok()?),
            "parallel_tool_calls" => m.parallel = Some(p.value().ok()?),
            "tools" | "tool_choice" => {
                let span = Some(member_span(p, (name == "tools").then_some(known))?);
                if name == "tools" {
                    m.tools = span;
                } else {
                    m.tool_choice = span;
                }
            }
            "response_format" => {
                let start = p.i;
                p.skip().ok()?;
                m.response_format = Some((start, p.i));
            }
            other => {
                if !m.sampling.read_member(p, other)? {
                    p.skip().ok()?; // ignored by the Python parser too
                }
            }
        }
        Some(())
    })?;
    p.finish().ok()?;
    Some(m)
}

/// A non-empty string's text.
fn nonempty(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) if !s.raw().is_empty() => Some(s.text().into_owned()),
        _ => None,
    }
}

fn messages(p: &mut Parser<'_>) -> Option<Vec<TurnMessage>> {
    let mut out = Vec::new();
    p.each_item(|p| {
        out.push(message(p)?);
        Some(())
    })?;
    Some(out)
}

/// One message, a repeated key's last value counting. Members the Python parser
/// ignores are skipped; `name` (which it reads) and a member it ignores for this role
/// but which is read here (`tool_calls` off an assistant, `tool_call_id` off a tool
/// message) send the body to it.
fn message(p: &mut Parser<'_>) -> Option<TurnMessage> {
    let (mut who, mut content, mut calls, mut call_id) = (None, None, None, None);
    p.each_member(|p, key| {
        match key {
            "role" => who = Some(p.value().ok()?),
            "content" => content = Some(p.value().ok()?),
            "tool_call_id" => call_id = Some(p.value().ok()?),
            "tool_calls" => {
                calls = Some(if p.peek() == Some(b'n') {
                    p.expect(b"null").ok()?;
                    Vec::new()
                } else {
                    tool_calls(p)?
                });
            }
            "name" => return None,
            _ => p.skip().ok()?,
        }
        Some(())
    })?;
    let role = Role::of(&who?)?;
    let content = content.unwrap_or(Value::Null);
    match role {
        Role::Assistant => {
            if call_id.is_some() {
                return None;
            }
            let calls = calls.unwrap_or_default();
            let text = match content {
                Value::Null => None,
                Value::Str(s) if s.raw().is_empty() => None,
                Value::Str(s) => Some(s.text().into_owned()),
                _ => return None,
            };
            if text.is_none() && calls.is_empty() {
                return None; // refused by the Python parser: content is required
            }
            Some(TurnMessage {
                role,
                text,
                calls,
                call_id: None,
            })
        }
        Role::Tool => {
            if calls.is_some() {
                return None;
            }
            let text = match content {
                Value::Null => None,
                Value::Str(s) if s.raw().is_empty() => None,
                Value::Str(s) => Some(s.text().into_owned()),
                _ => return None,
            };
            Some(TurnMessage {
                role,
                text,
                calls: Vec::new(),
                call_id: Some(nonempty(&call_id?)?),
            })
        }
        _ => {
            if calls.is_some() || call_id.is_some() {
                return None;
            }
            Some(TurnMessage {
                role,
                text: Some(nonempty(&content)?),
                calls: Vec::new(),
                call_id: None,
            })
        }
    }
}

/// An assistant's `tool_calls` array: each `{id, type, function: {name, arguments}}`
/// (`type` unread, as the Python parser leaves it).
fn tool_calls(p: &mut Parser<'_>) -> Option<Vec<Call>> {
    let mut out = Vec::new();
    p.each_item(|p| {
        let (mut id, mut function) = (None, None);
        p.each_member(|p, key| {
            match key {
                "id" => id = Some(p.value().ok()?),
                "function" => {
                    let (mut name, mut arguments) = (None, None);
                    p.each_member(|p, key| {
                        match key {
                            "name" => name = Some(p.value().ok()?),
                            "arguments" => arguments = Some(p.value().ok()?),
                            _ => p.skip().ok()?,
                        }
                        Some(())
                    })?;
                    function = Some((name, arguments));
                }
                _ => p.skip().ok()?,
            }
            Some(())
        })?;
        let (name, arguments) = function?;
        let arguments = match arguments {
            None => String::new(),
            Some(Value::Str(s)) => s.text().into_owned(),
            Some(_) => return None,
        };
        out.push(Call {
            id: nonempty(&id?)?,
            name: nonempty(&name?)?,
            arguments,
        });
        Some(())
    })?;
    Some(out)
}

/// The agent's turn in `body`, or `None` when the Python parser must read it.
pub fn chat_turn(body: &[u8]) -> Option<Turn> {
    chat_turn_with(body, &ValueMemo::<()>::new(0, 0))
}

/// [`chat_turn`], a `tools` value kept in `known` (as [`ValueMemo`] keeps values: read
/// and checked where a `tools` array is) not parsed again.
pub fn chat_turn_with<V>(body: &[u8], known: &ValueMemo<V>) -> Option<Turn> {
    let body = std::str::from_utf8(body).ok()?;
    let m = members(body, known)?;
    let model = match &m.model {
        Some(v) => nonempty(v)?,
        None => return None,
    };
    let messages = m.messages?;
    if messages.is_empty() {
        return None;
    }
    let completion = bound(m.max_completion_tokens.as_ref())?;
    let max_tokens = match completion {
        Some(n) => Some(n),
        None => bound(m.max_tokens.as_ref())?,
    };
    let stream = match &m.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    let parallel_tool_calls = match &m.parallel {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return None,
    };
    Some(Turn {
        model,
        messages,
        max_tokens,
        stream,
        tools: m.tools,
        tool_choice: m.tool_choice,
        parallel_tool_calls,
        response_format: m.response_format,
        sampling: m.sampling.read()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"{"model":"auto","tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object"}}}],
        "messages":[{"role":"developer","content":"Use the tools."},{"role":"user","content":"Why?"},
        {"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}},
        {"id":"c2","type":"function","function":{"name":"get"}}]},
        {"role":"tool","tool_call_id":"c1","content":"[1,2]"},{"role":"tool","tool_call_id":"c2","content":""}],
        "tool_choice":"auto","parallel_tool_calls":false,"max_tokens":64,"user":"u"}"#;

    #[test]
    fn reads_an_agents_turn() {
        let t = chat_turn(AGENT.as_bytes()).unwrap();
        assert_eq!(t.model, "auto");
        assert_eq!((t.max_tokens, t.stream), (Some(64), false));
        assert_eq!(t.parallel_tool_calls, Some(false));
        let (a, e) = t.tools.unwrap();
        assert!(AGENT[a..e].starts_with("[{\"type\"") && AGENT[a..e].ends_with("}}]"));
        let (a, e) = t.tool_choice.unwrap();
        assert_eq!(&AGENT[a..e], "\"auto\"");
        let roles: Vec<_> = t.messages.iter().map(|m| m.role.name()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
        assert!(t.messages[0].is_plain() && t.messages[1].is_plain());
        let calls = &t.messages[2].calls;
        assert_eq!(t.messages[2].text, None);
        assert_eq!(calls[1].arguments_or_empty_object(), "{}");
        assert_eq!(
            calls,
            &[
                Call {
                    id: "c1".into(),
                    name: "get".into(),
                    arguments: "{\"a\":1}".into()
                },
                Call {
                    id: "c2".into(),
                    name: "get".into(),
                    arguments: String::new()
                }
            ]
        );
        assert_eq!(t.messages[3].text.as_deref(), Some("[1,2]"));
        assert_eq!(t.messages[3].call_id.as_deref(), Some("c1"));
        assert_eq!(t.messages[4].text, None);
        assert!(!t.messages[4].is_plain());
    }

    #[test]
    fn reads_the_options() {
        let body = br#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"x"}],
            "seed":1,"response_format":{"type":"json_object"},"temperature":null,"stop":"END"}"#;
        let t = chat_turn(body).unwrap();
        let (a, e) = t.response_format.unwrap();
        assert_eq!(&body[a..e], br#"{"type":"json_object"}"#);
        assert_eq!(t.sampling.temperature, None); // the last of the repeated key
        assert_eq!(t.sampling.seed, Some(1));
        assert_eq!(t.sampling.stop, ["END"]);
        // A value the Python parser would refuse leaves the body to it.
        assert_eq!(
            chat_turn(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#),
            None
        );
    }

    /// A tools array kept is skipped by its bytes; the turn read is the same, and a
    /// body whose tools differ is read as it is.
    #[test]
    fn tools_sent_before_are_not_read_again() {
        let t = chat_turn(AGENT.as_bytes()).unwrap();
        let (a, e) = t.tools.unwrap();
        let mut known = ValueMemo::new(2, 1 << 16);
        known.keep(&AGENT.as_bytes()[a..e], ());
        assert_eq!(chat_turn_with(AGENT.as_bytes(), &known), Some(t));
        let other = AGENT.replace(
            r#""name":"get","parameters""#,
            r#""name":"put","parameters""#,
        );
        let t = chat_turn_with(other.as_bytes(), &known).unwrap();
        let (a, e) = t.tools.unwrap();
        assert!(other[a..e].contains("put"));
        assert_eq!(Some(t), chat_turn(other.as_bytes()));
        let broken = AGENT.replace(r"}}}],", r"}}}]],");
        assert_eq!(chat_turn_with(broken.as_bytes(), &known), None);
    }

    #[test]
    fn takes_plain_bodies_too() {
        let t =
            chat_turn(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#)
                .unwrap();
        assert!(t.stream && t.tools.is_none() && t.tool_choice.is_none());
        assert_eq!(t.messages[0].text.as_deref(), Some("x"));
    }

    #[test]
    fn leaves_everything_else_to_python() {
        for body in [
            &b"{nope"[..],
            b"[]",
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":""}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x","name":"n"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x","tool_call_id":"c"}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","content":null}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","content":"x","tool_call_id":"c"}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"","function":{"name":"f"}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":""}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":{}}}]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":{}}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"c","content":[]}]}"#,
            br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"c","tool_calls":null}]}"#,
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"parallel_tool_calls":1}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[1,}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]} x"#,
        ] {
            assert_eq!(chat_turn(body), None, "{:?}", String::from_utf8_lossy(body));
        }
    }

    /// A repeated key counts its last value, as in the dict the Python parser reads.
    #[test]
    fn the_last_of_a_repeated_key_counts() {
        let body = br#"{"model":"m","tools":[],"messages":[{"role":"tool","role":"assistant","content":"x",
            "tool_calls":[],"tool_calls":null}],"tools":null,"parallel_tool_calls":true,"parallel_tool_calls":null}"#;
        let t = chat_turn(body).unwrap();
        assert_eq!(t.messages[0].role, Role::Assistant);
        assert!(t.messages[0].is_plain());
        let (a, e) = t.tools.unwrap();
        assert_eq!(&body[a..e], b"null");
        assert_eq!(t.parallel_tool_calls, None);
    }
}
