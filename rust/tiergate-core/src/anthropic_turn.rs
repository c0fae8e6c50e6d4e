//! An agent's turn on the Anthropic surface read in one pass: the body of
//! [`crate::anthropic_request`] with, besides, the tools offered, the assistant's
//! `tool_use` blocks and the user's `tool_result` blocks, handed back as the reading
//! [`crate::turn`] gives of an `OpenAI` turn, so that what follows (the request the
//! Python side builds of it, the provider's body written in the core) is the same.
//!
//! The messages are the canonical ones `parse_anthropic_request` (Python,
//! `server/parse_anthropic.py`) builds: the system prompt one `system` message; a user
//! turn's `tool_result` blocks a `tool` message each, in order, then a `user` message of
//! its text; an assistant turn's `tool_use` blocks its calls, their `input` as
//! `orjson.dumps` writes it, its thinking blocks dropped. `tools` and `tool_choice` are
//! handed back as byte ranges, which the caller reads (and remembers by their bytes).
//! Anything the tuple of a [`TurnMessage`] cannot say (a message of several text
//! parts, an image), any value the Python parser would refuse or read otherwise (a
//! structured output), returns
//! `None` and the Python parser decides: it is the oracle of the differential tests
//! (`tests/test_anthropic_turn.py`).
//!
//! The prompt-token estimate is counted as the body is read, by the rule of
//! [`estimate_anthropic_tokens`](crate::tokens::estimate_anthropic_tokens), which counts
//! the blocks as sent (a tool result's text blocks each, not joined; no `Error: `).

use crate::anthropic_request::{system, Options, Scalars};
use crate::ingest;
use crate::memo::{TextMemo, ValueMemo};
use crate::policy::CAP_STREAMING;
use crate::rawjson::{JStr, Parser, Value};
use crate::request::Role;
use crate::tokens::{
    anthropic_tools_millitokens, call_millitokens, orjson_text, round_tokens, text_millitokens,
    PER_MESSAGE_MILLI, REPLY_PRIMING_MILLI,
};
use crate::turn::{member_span, Call, Span, TurnMessage};

/// An Anthropic agent's turn, as `parse_anthropic_request` reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicTurn {
    pub model: String,
    /// The canonical messages, the system prompt's first.
    pub messages: Vec<TurnMessage>,
    pub max_tokens: i64,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The non-empty stop sequences.
    pub stop: Vec<String>,
    pub stream: bool,
    /// The value of `tools` (the last, when repeated); `None` when absent or `null`.
    pub tools: Option<Span>,
    /// The value of `tool_choice` (the last, when repeated); `None` when absent or
    /// `null`.
    pub tool_choice: Option<Span>,
    /// Milli-tokens the estimate counts of the system prompt and the messages (the
    /// tools are counted apart, by their bytes: see [`ingest_anthropic_turn_with`]).
    pub counted: u64,
}

/// A message's content as sent: a string, or blocks.
enum Content<'a> {
    Text(JStr<'a>),
    Blocks(Vec<Block<'a>>),
}

/// One content block, checked as `parse_anthropic_request` checks it for its type (the
/// turn's role, which may come after the content, is checked later).
enum Block<'a> {
    Text(JStr<'a>),
    /// A `tool_use` block: its call, and the milli-tokens the estimate counts of it.
    Use(Call, u64),
    /// A `tool_result` block: the call it answers, its text (`Error: ` before it for
    /// an error) and the milli-tokens the estimate counts of its content.
    Result(String, String, u64),
    /// `thinking` or `redacted_thinking`: not forwarded, not counted.
    Thinking,
}

// The members a block may have, by type (anything else sends the body to the Python
// parser: a member it reads for one type may be one the estimate counts for another).
const TYPE: u16 = 1;
const TEXT: u16 = 1 << 1;
const ID: u16 = 1 << 2;
const NAME: u16 = 1 << 3;
const INPUT: u16 = 1 << 4;
const USE_ID: u16 = 1 << 5;
const CONTENT: u16 = 1 << 6;
const IS_ERROR: u16 = 1 << 7;
const CACHE: u16 = 1 << 8;
const THOUGHT: u16 = 1 << 9;

/// What the reader needs besides the bytes: the token estimates of texts seen lately.
struct Reader<'m> {
    memo: &'m mut TextMemo<u64>,
}

impl Reader<'_> {
    fn tokens(&mut self, text: &str) -> u64 {
        self.memo.get_or(text, text_millitokens)
    }

    /// The system prompt: no message for `null`, `""` or no blocks, else one message of
    /// its one text (several blocks are several parts: `None`).
    fn system(&mut self, p: &mut Parser<'_>) -> Option<(Option<TurnMessage>, u64)> {
        let (_, texts) = system(p, &mut false)?;
        match texts.as_slice() {
            [] => Some((None, 0)),
            [one] => {
                let text = one.text().into_owned();
                let milli = PER_MESSAGE_MILLI + text_millitokens("system") + self.tokens(&text);
                Some((Some(message(Role::System, Some(text))), milli))
            }
            _ => None,
        }
    }

    /// The canonical messages of a non-empty `messages` array, and their milli-tokens.
    fn turns(&mut self, p: &mut Parser<'_>) -> Option<(Vec<TurnMessage>, u64)> {
        let (mut out, mut milli) = (Vec::new(), 0);
        p.each_item(|p| {
            milli += self.turn(p, &mut out)?;
            Some(())
        })?;
        (!out.is_empty()).then_some((out, milli))
    }

    /// One entry of `messages`: its canonical messages appended to `out`, and what the
    /// estimate counts of it. Members besides `role` and `content` are ignored (as the
    /// Python parser and the estimate ignore them).
    fn turn(&mut self, p: &mut Parser<'_>, out: &mut Vec<TurnMessage>) -> Option<u64> {
        let (mut who, mut content) = (None, None);
        p.each_member(|p, key| {
            match key {
                "role" => who = Some(p.value().ok()?),
                "content" => {
                    content = Some(if p.peek()? == b'[' {
                        let mut blocks = Vec::new();
                        p.each_item(|p| {
                            blocks.push(self.block(p)?);
                            Some(())
                        })?;
                        Content::Blocks(blocks)
                    } else {
                        match p.value().ok()? {
                            Value::Str(s) => Content::Text(s),
                            _ => return None,
                        }
                    });
                }
                _ => p.skip().ok()?,
            }
            Some(())
        })?;
        let role = match who? {
            v if v.is_str("user") => Role::User,
            v if v.is_str("assistant") => Role::Assistant,
            _ => return None,
        };
        let own = PER_MESSAGE_MILLI + text_millitokens(role.name());
        let blocks = match content? {
            Content::Text(s) if s.raw().is_empty() => return None,
            Content::Text(s) => {
                let text = s.text().into_owned();
                let milli = own + self.tokens(&text);
                out.push(message(role, Some(text)));
                return Some(milli);
            }
            Content::Blocks(b) if b.is_empty() => return None,
            Content::Blocks(b) => b,
        };
        let (mut text, mut calls, mut milli) = (None, Vec::new(), 0);
        let mut only_results = true;
        for block in blocks {
            only_results &= matches!(block, Block::Result(..));
            match (block, role) {
                // A second text part: a message the tuple cannot hold.
                (Block::Text(_), _) if text.is_some() => return None,
                (Block::Text(s), _) => {
                    let s = s.text().into_owned();
                    milli += self.tokens(&s);
                    text = Some(s);
                }
                (Block::Use(call, counted), Role::Assistant) => {
                    milli += counted;
                    calls.push(call);
                }
                (Block::Result(id, result, counted), Role::User) => {
                    milli += PER_MESSAGE_MILLI + text_millitokens("tool") + counted;
                    out.push(TurnMessage {
                        role: Role::Tool,
                        text: (!result.is_empty()).then_some(result),
                        calls: Vec::new(),
                        call_id: Some(id),
                    });
                }
                (Block::Thinking, Role::Assistant) => {}
                _ => return None, // refused by the Python parser for this role
            }
        }
        if role == Role::User {
            // Tool results alone make no user message (nor does the estimate count one).
            if only_results {
                return Some(milli);
            }
            out.push(message(role, text));
            return Some(milli + own);
        }
        if calls.is_empty() && text.as_deref().is_none_or(str::is_empty) {
            return None; // refused by the Python parser: nothing said
        }
        out.push(TurnMessage {
            role,
            text,
            calls,
            call_id: None,
        });
        Some(milli + own)
    }

    /// One content block, read for whichever role its turn turns out to have.
    fn block<'a>(&mut self, p: &mut Parser<'a>) -> Option<Block<'a>> {
        let (mut kind, mut text, mut id, mut name) = (None, None, None, None);
        let (mut input, mut use_id, mut content, mut error) = (None, None, None, false);
        let mut seen = 0;
        p.each_member(|p, key| {
            seen |= match key {
                "type" => {
                    kind = Some(p.value().ok()?);
                    TYPE
                }
                "text" => {
                    text = Some(p.value().ok()?);
                    TEXT
                }
                "id" => {
                    id = Some(p.value().ok()?);
                    ID
                }
                "name" => {
                    name = Some(p.value().ok()?);
                    NAME
                }
                "input" => {
                    // `input` must be an object (orjson writes an absent one `{}`).
                    if p.peek()? != b'{' {
                        return None;
                    }
                    input = Some(orjson_text(p)?);
                    INPUT
                }
                "tool_use_id" => {
                    use_id = Some(p.value().ok()?);
                    USE_ID
                }
                "content" => {
                    content = Some(self.result_content(p)?);
                    CONTENT
                }
                "is_error" => {
                    error = matches!(p.value().ok()?, Value::Bool(true));
                    IS_ERROR
                }
                "cache_control" => {
                    p.skip().ok()?;
                    CACHE
                }
                "thinking" | "signature" | "data" => {
                    p.skip().ok()?;
                    THOUGHT
                }
                _ => return None,
            };
            Some(())
        })?;
        let kind = kind?;
        let allowed = if kind.is_str("text") {
            TEXT | CACHE
        } else if kind.is_str("tool_use") {
            ID | NAME | INPUT | CACHE
        } else if kind.is_str("tool_result") {
            USE_ID | CONTENT | IS_ERROR | CACHE
        } else if kind.is_str("thinking") || kind.is_str("redacted_thinking") {
            THOUGHT
        } else {
            return None; // an image, a document, a server tool's block…
        };
        if seen & !(allowed | TYPE) != 0 {
            return None;
        }
        if allowed & TEXT != 0 {
            return match text? {
                Value::Str(s) => Some(Block::Text(s)),
                _ => None,
            };
        }
        if allowed & NAME != 0 {
            let name = tool_name(&name?)?;
            let arguments = input.unwrap_or_else(|| "{}".to_owned());
            let counted = call_millitokens(&name, &arguments);
            let id = nonempty(&id?)?;
            return Some(Block::Use(
                Call {
                    id,
                    name,
                    arguments,
                },
                counted,
            ));
        }
        if allowed & USE_ID != 0 {
            let id = nonempty(&use_id?)?;
            let (mut text, counted) = content.unwrap_or_default();
            if error {
                text.insert_str(0, "Error: ");
            }
            return Some(Block::Result(id, text, counted));
        }
        Some(Block::Thinking)
    }

    /// A tool result's `content`: a string, or text blocks joined with `"\n"`; with
    /// what the estimate counts of it (each text as sent).
    fn result_content(&mut self, p: &mut Parser<'_>) -> Option<(String, u64)> {
        if p.peek()? != b'[' {
            return match p.value().ok()? {
                Value::Str(s) => {
                    let text = s.text().into_owned();
                    let counted = self.tokens(&text);
                    Some((text, counted))
                }
                _ => None,
            };
        }
        let (mut joined, mut counted, mut first) = (String::new(), 0, true);
        for s in crate::anthropic_request::blocks(p, &mut false)? {
            let text = s.text();
            counted += self.tokens(&text);
            if !first {
                joined.push('\n');
            }
            first = false;
            joined.push_str(&text);
        }
        Some((joined, counted))
    }
}

fn message(role: Role, text: Option<String>) -> TurnMessage {
    TurnMessage {
        role,
        text,
        calls: Vec::new(),
        call_id: None,
    }
}

/// A non-empty string's text.
fn nonempty(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) if !s.raw().is_empty() => Some(s.text().into_owned()),
        _ => None,
    }
}

/// A tool's name as `check_tool_name` takes it: 1 to 64 ASCII letters, digits, `_` or
/// `-`. (Its pattern ends in `$`, which also takes a name followed by one newline: left
/// to it.)
fn tool_name(v: &Value<'_>) -> Option<String> {
    let name = nonempty(v)?;
    let ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(name)
}

#[derive(Default)]
struct Members<'a> {
    scalars: Scalars<'a>,
    system: Option<(Option<TurnMessage>, u64)>,
    messages: Option<(Vec<TurnMessage>, u64)>,
    tools: Option<Span>,
    tool_choice: Option<Span>,
}

/// The members of the body, a repeated one's last value counting (as `orjson` reads
/// it); a `tools` value kept in `known` is skipped by its bytes.
fn members<'a, V>(body: &'a str, known: &ValueMemo<V>, r: &mut Reader<'_>) -> Option<Members<'a>> {
    let mut p = Parser::of_str(body);
    let mut m = Members::default();
    p.each_member(|p, name| {
        match name {
            "system" => m.system = Some(r.system(p)?),
            "messages" => m.messages = Some(r.turns(p)?),
            "tools" | "tool_choice" => {
                let (start, end) = member_span(p, (name == "tools").then_some(known))?;
                // `null` is no tools and the default choice to the Python parser.
                let span = (&p.input()[start..end] != b"null").then_some((start, end));
                if name == "tools" {
                    m.tools = span;
                } else {
                    m.tool_choice = span;
                }
            }
            // A structured output: the Python parser's to read.
            "output_config" | "output_format" => {
                if p.peek()? != b'n' {
                    return None;
                }
                p.skip().ok()?;
            }
            other => {
                if !m.scalars.read_member(p, other)? {
                    p.skip().ok()?; // ignored by the Python parser and the estimate
                }
            }
        }
        Some(())
    })?;
    p.finish().ok()?;
    Some(m)
}

/// The agent's turn in `body`, or `None` when the Python parser must read it.
pub fn anthropic_turn(body: &[u8]) -> Option<AnthropicTurn> {
    anthropic_turn_with(body, &mut TextMemo::none(), &ValueMemo::<()>::new(0, 0))
}

/// [`anthropic_turn`], the token estimates of texts seen lately taken from `memo` and a
/// `tools` value kept in `known` not parsed again.
pub fn anthropic_turn_with<V>(
    body: &[u8],
    memo: &mut TextMemo<u64>,
    known: &ValueMemo<V>,
) -> Option<AnthropicTurn> {
    let body = std::str::from_utf8(body).ok()?;
    let m = members(body, known, &mut Reader { memo })?;
    let Options {
        model,
        max_tokens,
        temperature,
        top_p,
        stop,
        stream,
    } = m.scalars.read()?;
    let (turns, turns_milli) = m.messages?;
    let (system, system_milli) = m.system.unwrap_or((None, 0));
    let mut messages = Vec::with_capacity(turns.len() + 1);
    messages.extend(system);
    messages.extend(turns);
    Some(AnthropicTurn {
        model,
        messages,
        max_tokens,
        temperature,
        top_p,
        stop,
        stream,
        tools: m.tools,
        tool_choice: m.tool_choice,
        counted: REPLY_PRIMING_MILLI + system_milli + turns_milli,
    })
}

/// What the request side needs of an Anthropic agent's turn.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicTurnIngested {
    pub turn: AnthropicTurn,
    /// The idempotency key, when a scope was given.
    pub key: Option<[u8; 16]>,
    /// Equal to [`estimate_anthropic_tokens`](crate::tokens::estimate_anthropic_tokens)
    /// of the body.
    pub prompt_tokens: u64,
    /// `CAP_*` bits the core knows of: streaming. Whether tools are required depends on
    /// the tools' and the tool choice's values, which the caller reads.
    pub required_caps: u64,
}

/// [`crate::anthropic_request::ingest_anthropic`] of an agent's turn: its key (under
/// `scope` with the stream mark, as there; `None` skips it) and its token estimate
/// besides. `None` when the Python parser must read the body (or the key cannot be
/// computed, so that the general path meets the same error).
pub fn ingest_anthropic_turn(body: &[u8], scope: Option<&str>) -> Option<AnthropicTurnIngested> {
    ingest_anthropic_turn_with(
        body,
        scope,
        &mut TextMemo::none(),
        &mut ValueMemo::new(0, 0),
    )
}

/// [`ingest_anthropic_turn`], the token estimates of texts seen lately taken from
/// `memo`, and a `tools` array sent lately found in `tools` (by its bytes) with its
/// token count.
pub fn ingest_anthropic_turn_with(
    body: &[u8],
    scope: Option<&str>,
    memo: &mut TextMemo<u64>,
    tools: &mut ValueMemo<Option<u64>>,
) -> Option<AnthropicTurnIngested> {
    let turn = anthropic_turn_with(body, memo, tools)?;
    let key = ingest::scoped_key(body, scope, turn.stream, |_| None)?;
    let mut milli = turn.counted;
    if let Some((a, e)) = turn.tools {
        milli +=
            ingest::tools_counted(&body[a..e], tools, |t| anthropic_tools_millitokens(t).ok())?;
    }
    let required_caps = if turn.stream { CAP_STREAMING } else { 0 };
    Some(AnthropicTurnIngested {
        turn,
        key,
        prompt_tokens: round_tokens(milli),
        required_caps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash;
    use crate::tokens::estimate_anthropic_tokens;

    const AGENT: &str = r#"{"model":"auto","max_tokens":16,"system":"You are a bank's agent.",
        "tools":[{"name":"list_transactions","description":"Look up.","input_schema":{"type":"object",
        "properties":{"account_id":{"type":"string"}}}}],
        "messages":[{"role":"user","content":"Why was I charged twice?"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},
        {"type":"tool_use","id":"toolu_1","name":"list_transactions","input":{"b":[1,{"c":"\u00e9\n"}],"a":2,"b":null}},
        {"type":"tool_use","id":"toolu_2","name":"get"}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"[1,2]"},
        {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"is_error":true},
        {"type":"tool_result","tool_use_id":"toolu_3","content":""},
        {"type":"text","text":"The coffee one."}]}],
        "tool_choice":{"type":"auto","disable_parallel_tool_use":true},"metadata":{"user_id":"u"}}"#;

    /// Every field of the ingest as the separate calls give it.
    fn check(body: &str) -> AnthropicTurnIngested {
        let scope = "t\0anthropic\0";
        let got = ingest_anthropic_turn(body.as_bytes(), Some(scope)).unwrap();
        let mark = if got.turn.stream { "s" } else { "n" };
        assert_eq!(Some(&got.turn), anthropic_turn(body.as_bytes()).as_ref());
        assert_eq!(
            got.key.unwrap(),
            hash::request_key(body.as_bytes(), &format!("{scope}{mark}")).unwrap()
        );
        assert_eq!(
            got.prompt_tokens,
            estimate_anthropic_tokens(body.as_bytes()).unwrap(),
            "{body}"
        );
        let caps = if got.turn.stream { CAP_STREAMING } else { 0 };
        assert_eq!(got.required_caps, caps);
        assert_eq!(
            ingest_anthropic_turn(body.as_bytes(), None).unwrap().key,
            None
        );
        got
    }

    fn call(id: &str, name: &str, arguments: &str) -> Call {
        Call {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn tool(id: &str, text: Option<&str>) -> TurnMessage {
        TurnMessage {
            role: Role::Tool,
            text: text.map(Into::into),
            calls: Vec::new(),
            call_id: Some(id.into()),
        }
    }

    #[test]
    fn reads_an_agents_turn() {
        let t = check(AGENT).turn;
        assert_eq!(
            (t.model.as_str(), t.max_tokens, t.stream),
            ("auto", 16, false)
        );
        let (a, e) = t.tools.unwrap();
        assert!(AGENT[a..e].starts_with("[{\"name\"") && AGENT[a..e].ends_with("}}}}]"));
        let (a, e) = t.tool_choice.unwrap();
        assert_eq!(
            &AGENT[a..e],
            r#"{"type":"auto","disable_parallel_tool_use":true}"#
        );
        assert_eq!(
            t.messages,
            [
                message(Role::System, Some("You are a bank's agent.".into())),
                message(Role::User, Some("Why was I charged twice?".into())),
                TurnMessage {
                    role: Role::Assistant,
                    text: None,
                    calls: vec![
                        // orjson's: key order kept, the last of a repeated key.
                        call("toolu_1", "list_transactions", "{\"b\":null,\"a\":2}"),
                        call("toolu_2", "get", "{}"),
                    ],
                    call_id: None,
                },
                tool("toolu_1", Some("[1,2]")),
                tool("toolu_2", Some("Error: a\nb")),
                tool("toolu_3", None),
                message(Role::User, Some("The coffee one.".into())),
            ]
        );
    }

    #[test]
    fn reads_the_shapes_the_tuples_hold() {
        for (turns, want) in [
            // Tool results alone: no user message.
            (
                r#"{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","is_error":true}]}"#,
                vec![tool("t", Some("Error: "))],
            ),
            (
                r#"{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[],"is_error":1}]}"#,
                vec![tool("t", None)],
            ),
            // One empty text part is a part.
            (
                r#"{"role":"user","content":[{"type":"text","text":""}]}"#,
                vec![message(Role::User, Some(String::new()))],
            ),
            (
                r#"{"role":"assistant","content":[{"type":"text","text":""},
                {"type":"tool_use","id":"c","name":"f","input":{}}]}"#,
                vec![TurnMessage {
                    role: Role::Assistant,
                    text: Some(String::new()),
                    calls: vec![call("c", "f", "{}")],
                    call_id: None,
                }],
            ),
            (
                r#"{"content":[{"type":"redacted_thinking","data":"x"},{"text":"hi","type":"text"}],"role":"assistant","x":1}"#,
                vec![message(Role::Assistant, Some("hi".into()))],
            ),
            (
                r#"{"role":"assistant","content":[{"type":"tool_use","id":"c","name":"f-_9",
                "input":{"s":"\"\\\/\u0001\u007f\u2028日本","n":[-1,18446744073709551615,true,false,{}]}}]}"#,
                vec![TurnMessage {
                    role: Role::Assistant,
                    text: None,
                    calls: vec![call(
                        "c",
                        "f-_9",
                        "{\"s\":\"\\\"\\\\/\\u0001\u{7f}\u{2028}日本\",\"n\":[-1,18446744073709551615,true,false,{}]}",
                    )],
                    call_id: None,
                }],
            ),
        ] {
            let body = format!(
                r#"{{"model":"m","max_tokens":3,"system":[{{"type":"text","text":""}}],"messages":[{turns}]}}"#
            );
            let t = check(&body).turn;
            assert_eq!(t.messages[0], message(Role::System, Some(String::new())));
            assert_eq!(t.messages[1..], want, "{body}");
        }
    }

    /// The tools and the tool choice are handed over as sent (a `null` as absent); the
    /// options are read as the plain reader reads them.
    #[test]
    fn hands_over_the_tools_and_reads_the_options() {
        let body = r#"{"model":"m","max_tokens":3,"tools":[],"tool_choice":"x","tools":null,
            "messages":[{"role":"user","content":"q"}],"temperature":0.5,"top_p":1,
            "stop_sequences":["","END"],"stream":true,"output_config":null,"output_format":null}"#;
        let t = check(body).turn;
        assert_eq!(
            (t.tools, t.temperature, t.top_p),
            (None, Some(0.5), Some(1.0))
        );
        let (a, e) = t.tool_choice.unwrap();
        assert_eq!(&body[a..e], "\"x\"");
        assert_eq!(t.stop, ["END"]);
        assert!(t.stream);
        assert_eq!(check(body).required_caps, CAP_STREAMING);
    }

    /// A tools array kept is skipped by its bytes, its count taken from the memo; the
    /// turn read and its estimate are the same.
    #[test]
    fn tools_sent_before_are_not_read_again() {
        let mut memo = TextMemo::new(16);
        let mut tools = ValueMemo::new(2, 1 << 16);
        let want = check(AGENT);
        for _ in 0..3 {
            let got = ingest_anthropic_turn_with(
                AGENT.as_bytes(),
                Some("t\0anthropic\0"),
                &mut memo,
                &mut tools,
            )
            .unwrap();
            assert_eq!(got, want);
        }
        let other = AGENT.replace("Look up.", "Look it up.");
        let got =
            ingest_anthropic_turn_with(other.as_bytes(), None, &mut memo, &mut tools).unwrap();
        assert_eq!(got.prompt_tokens, check(&other).prompt_tokens);
        assert_ne!(got.prompt_tokens, want.prompt_tokens);
    }

    #[test]
    fn writes_an_inputs_numbers_as_orjson_does() {
        // orjson reads `-0` as the integer 0, an integer past 64 bits as a float, and
        // writes a float's shortest text (an exponent from 1e16, with its sign).
        for (number, arguments) in [
            ("1.50", r#"{"a":1.5}"#),
            ("1e2", r#"{"a":100.0}"#),
            ("-0", r#"{"a":0}"#),
            ("-0.0", r#"{"a":-0.0}"#),
            ("1E16", r#"{"a":1e+16}"#),
            ("0.0000001", r#"{"a":1e-7}"#),
            ("18446744073709551616", r#"{"a":1.8446744073709552e+19}"#),
        ] {
            let body = format!(
                r#"{{"model":"m","max_tokens":4,"messages":[{{"role":"assistant","content":[{{"type":"tool_use","id":"c","name":"f","input":{{"a":{number}}}}}]}}]}}"#
            );
            let turn = anthropic_turn(body.as_bytes()).expect(number);
            assert_eq!(turn.messages[0].calls[0].arguments, arguments, "{number}");
        }
    }

    #[test]
    fn leaves_everything_else_to_python() {
        let ok = r#""model":"m","max_tokens":4,"messages":[{"role":"user","content":"x"}]"#;
        assert!(anthropic_turn(format!("{{{ok}}}").as_bytes()).is_some());
        let in_assistant =
            |content: &str| format!(r#""messages":[{{"role":"assistant","content":{content}}}]"#);
        let in_user =
            |content: &str| format!(r#""messages":[{{"role":"user","content":{content}}}]"#);
        let tool_use =
            |members: &str| in_assistant(&format!(r#"[{{"type":"tool_use",{members}}}]"#));
        let tool_result =
            |members: &str| in_user(&format!(r#"[{{"type":"tool_result",{members}}}]"#));
        for extra in [
            r#""output_config":{}"#.to_owned(),
            r#""output_format":{"type":"json_schema","schema":{}}"#.to_owned(),
            r#""system":[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#.to_owned(),
            r#""max_tokens":0"#.to_owned(),
            r#""model":"""#.to_owned(),
            r#""temperature":2"#.to_owned(),
            r#""messages":[]"#.to_owned(),
            r#""messages":[{"role":"system","content":"x"}]"#.to_owned(),
            in_user(r#""""#),
            in_user("[]"),
            in_user("null"),
            in_user(r#"[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#),
            in_user(r#"[{"type":"text","text":1}]"#),
            in_user(r#"[{"type":"text","text":"a","citations":[]}]"#),
            in_user(r#"[{"type":"image","source":{"type":"url","url":"https://x.test/a.png"}}]"#),
            in_user(r#"[{"type":"tool_use","id":"c","name":"f","input":{}}]"#),
            in_user(r#"[{"type":"thinking","thinking":"t"}]"#),
            in_assistant(r#"[{"type":"tool_result","tool_use_id":"t"}]"#),
            in_assistant(r#"[{"type":"text","text":""}]"#),
            in_assistant(r#"[{"type":"thinking","thinking":"t","signature":"s"}]"#),
            in_assistant(r#"[{"type":"thinking","thinking":"t","text":"counted"}]"#),
            in_assistant(r#"[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#),
            tool_use(r#""id":"","name":"f""#),
            tool_use(r#""id":"c","name":"""#),
            tool_use(r#""id":"c","name":"a b""#),
            tool_use(&format!(r#""id":"c","name":"{}""#, "f".repeat(65))),
            tool_use(r#""id":"c","name":"f\n""#),
            tool_use(r#""name":"f""#),
            tool_use(r#""id":"c","name":"f","input":null"#),
            tool_use(r#""id":"c","name":"f","input":[]"#),
            tool_use(r#""id":"c","name":"f","input":{"a":"\ud800"}"#),
            tool_use(r#""id":"c","name":"f","text":"x""#),
            tool_result(r#""tool_use_id":"""#),
            tool_result(r#""content":"x""#),
            tool_result(r#""tool_use_id":"t","content":null"#),
            tool_result(r#""tool_use_id":"t","content":7"#),
            tool_result(r#""tool_use_id":"t","content":[{"type":"image","source":{}}]"#),
            tool_result(r#""tool_use_id":"t","content":["x"]"#),
            tool_result(r#""tool_use_id":"t","name":"f""#),
        ] {
            // The extra member comes last, so that it is the one that counts.
            let body = format!("{{{ok},{extra}}}");
            assert_eq!(anthropic_turn(body.as_bytes()), None, "{body}");
        }
        for body in ["", "{", "[]", &format!("{{{ok}}} x"), &format!("{{{ok},}}")] {
            assert_eq!(anthropic_turn(body.as_bytes()), None, "{body}");
        }
    }

    /// Mutations of agents' turns are read or left alone, never a panic; what is read
    /// has the separate calls' key and estimate.
    #[test]
    fn mutated_bodies_never_panic() {
        let mut read = 0;
        let mut memo = TextMemo::keeping(64, 240);
        let mut tools = ValueMemo::new(4, 1 << 16);
        for (_, body) in
            crate::mutate::mutated_bodies(&[AGENT], 20_000, 0x7a2c_0a15, crate::mutate::ALPHABET)
        {
            let got =
                ingest_anthropic_turn_with(&body, Some("t\0anthropic\0"), &mut memo, &mut tools);
            if let Some(got) = got {
                read += 1;
                assert_eq!(Ok(got.prompt_tokens), estimate_anthropic_tokens(&body));
                let mark = if got.turn.stream { "s" } else { "n" };
                assert_eq!(
                    got.key,
                    hash::request_key(&body, &format!("t\0anthropic\0{mark}")).ok()
                );
                assert_eq!(Some(got.turn), anthropic_turn(&body));
            }
        }
        assert!(read > 1000, "{read}");
    }
}
