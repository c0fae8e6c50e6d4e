//! A non-streaming `OpenAI` chat completion: the provider's body read into the fields of
//! the canonical answer, and the canonical answer written as the `OpenAI` surface's body.
//!
//! Reading gives what `parse_openai_response` (Python, `providers/openai.py`) gives
//! for the bodies providers send: choice 0's text, refusal and tool calls, the
//! canonical finish reason (`tool_calls` when calls came with a plain stop), usage as
//! `usage_openai` counts it, model and id. Any other shape (an error, a field of
//! another JSON type, a body that is not JSON) is left to the Python parser, which
//! decides what it is: [`parse_openai_completion`] returns `None`.
//!
//! Writing gives the bytes `orjson.dumps(render_openai_completion(...))` gives.

use crate::json::{escaped_room, write_escaped, write_int};
use crate::rawjson::{Parser, Value};
use crate::relay::{finish_reason, Usage};
use crate::{CoreError, Result};

/// One tool call: id, function name, arguments (JSON text).
pub type ToolCall = (String, String, String);

/// The canonical fields of a chat completion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub text: Option<String>,
    pub finish_reason: String,
    pub usage: Usage,
    pub model: String,
    pub tool_calls: Vec<ToolCall>,
    pub refusal: Option<String>,
    pub id: String,
}

/// `{"id":…,"object":…,"created":…,"model":…` — the head every `OpenAI` completion and
/// stream chunk starts with (the caller writes the rest and the closing brace).
pub(crate) fn write_object_head(
    out: &mut Vec<u8>,
    response_id: &str,
    object: &str,
    created: i64,
    model: &str,
) {
    out.extend_from_slice(b"{\"id\":");
    write_escaped(response_id, out);
    out.extend_from_slice(b",\"object\":\"");
    out.extend_from_slice(object.as_bytes());
    out.extend_from_slice(b"\",\"created\":");
    write_int(i128::from(created), out);
    out.extend_from_slice(b",\"model\":");
    write_escaped(model, out);
}

/// Where a value starts in the body (`None`: the member is absent).
type At = Option<usize>;

/// At an object's `{`: past the object (checked as [`Value::parse`] checks it, nothing
/// built), `on(p, k)` called at the value of each member named `keys[k]` (it moves past
/// the value; a later member of the same name calls it again, so the last one counts,
/// as the tree's duplicate rule has it), the others skipped.
fn walk<'a, const N: usize>(
    p: &mut Parser<'a>,
    keys: [&str; N],
    mut on: impl FnMut(&mut Parser<'a>, usize) -> Option<()>,
) -> Option<()> {
    p.enter().ok()?;
    if !p.empty(b'}') {
        loop {
            let key = p.key().ok()?;
            match keys.iter().position(|name| key.is(name)) {
                Some(k) => on(p, k)?,
                None => p.skip().ok()?,
            }
            if !p.next_or_close(b'}').ok()? {
                break;
            }
        }
    }
    p.leave();
    Some(())
}

/// Where the value at the cursor starts, and past it.
fn note(p: &mut Parser<'_>, at: &mut At) -> Option<()> {
    *at = Some(p.i);
    p.skip().ok()
}

/// At an object's `{`: past it, and where the values of the members named `keys` start.
fn members<const N: usize>(p: &mut Parser<'_>, keys: [&str; N]) -> Option<[At; N]> {
    let mut at = [None; N];
    walk(p, keys, |p, k| note(p, &mut at[k]))?;
    Some(at)
}

/// Where the members a completion is read from start, noted in one pass over the body
/// (`None`: absent). A later member of a name replaces what an earlier one noted,
/// within it too (its fields are cleared first).
#[derive(Default)]
struct Seen {
    /// `choices` is an array whose first item is an object with an object `message`.
    message: bool,
    content: At,
    refusal: At,
    tool_calls: At,
    finish_reason: At,
    usage: At,
    prompt: At,
    completion: At,
    prompt_details: At,
    cached: At,
    completion_details: At,
    reasoning: At,
    model: At,
    id: At,
}

impl Seen {
    fn choices(&mut self, p: &mut Parser<'_>) -> Option<()> {
        self.message = false;
        (
            self.content,
            self.refusal,
            self.tool_calls,
            self.finish_reason,
        ) = (None, None, None, None);
        if p.peek()? != b'[' {
            return p.skip().ok();
        }
        p.enter().ok()?;
        if !p.empty(b']') {
            let mut first = true;
            loop {
                if first && p.peek()? == b'{' {
                    walk(p, ["message", "finish_reason"], |p, k| {
                        if k == 0 {
                            self.message(p)
                        } else {
                            note(p, &mut self.finish_reason)
                        }
                    })?;
                } else {
                    p.skip().ok()?;
                }
                first = false;
                if !p.next_or_close(b']').ok()? {
                    break;
                }
            }
        }
        p.leave();
        Some(())
    }

    fn message(&mut self, p: &mut Parser<'_>) -> Option<()> {
        (self.content, self.refusal, self.tool_calls) = (None, None, None);
        self.message = p.peek()? == b'{';
        if !self.message {
            return p.skip().ok();
        }
        walk(p, ["content", "refusal", "tool_calls"], |p, k| {
            note(
                p,
                match k {
                    0 => &mut self.content,
                    1 => &mut self.refusal,
                    _ => &mut self.tool_calls,
                },
            )
        })
    }

    fn usage(&mut self, p: &mut Parser<'_>) -> Option<()> {
        self.usage = Some(p.i);
        (self.prompt, self.completion) = (None, None);
        (self.prompt_details, self.cached) = (None, None);
        (self.completion_details, self.reasoning) = (None, None);
        if p.peek()? != b'{' {
            return p.skip().ok();
        }
        let keys = [
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        ];
        walk(p, keys, |p, k| match k {
            0 => note(p, &mut self.prompt),
            1 => note(p, &mut self.completion),
            2 => details(
                p,
                &mut self.prompt_details,
                "cached_tokens",
                &mut self.cached,
            ),
            _ => details(
                p,
                &mut self.completion_details,
                "reasoning_tokens",
                &mut self.reasoning,
            ),
        })
    }
}

/// A `*_tokens_details` member: where it starts, and where its count `key` does.
fn details(p: &mut Parser<'_>, at: &mut At, key: &str, count: &mut At) -> Option<()> {
    *at = Some(p.i);
    *count = None;
    if p.peek()? != b'{' {
        return p.skip().ok();
    }
    walk(p, [key], |p, _| note(p, count))
}

/// What a value is, read at its start: a scalar is built (no allocation), a container
/// only told apart and whether it is empty (Python truthiness is all the readers ask of
/// a container they do not descend into).
enum Read<'a> {
    Absent,
    Scalar(Value<'a>),
    Obj { empty: bool },
    Arr { empty: bool },
}

impl Read<'_> {
    fn truthy(&self) -> bool {
        match self {
            Read::Absent => false,
            Read::Scalar(v) => v.truthy(),
            Read::Obj { empty } | Read::Arr { empty } => !empty,
        }
    }
}

/// The value at `at` (the body was checked whole before any read).
fn read<'a>(p: &mut Parser<'a>, at: At) -> Option<Read<'a>> {
    let Some(i) = at else {
        return Some(Read::Absent);
    };
    p.i = i;
    let empty = |p: &mut Parser<'a>, close| {
        p.i = i + 1;
        p.empty(close)
    };
    Some(match p.peek()? {
        b'{' => Read::Obj {
            empty: empty(p, b'}'),
        },
        b'[' => Read::Arr {
            empty: empty(p, b']'),
        },
        _ => Read::Scalar(p.value().ok()?),
    })
}

/// `obj.get(key) or ""` when that is a string (`None` for any other truthy value).
fn text_or_empty(p: &mut Parser<'_>, at: At) -> Option<String> {
    match read(p, at)? {
        r if !r.truthy() => Some(String::new()),
        Read::Scalar(Value::Str(s)) => Some(s.text().into_owned()),
        _ => None,
    }
}

/// `obj.get(key)` when absent, `null` or a string: `Some(None)` / `Some(Some(text))`.
#[allow(clippy::option_option)] // outer: read here or not; inner: the field's value
fn opt_text(p: &mut Parser<'_>, at: At) -> Option<Option<String>> {
    match read(p, at)? {
        Read::Absent | Read::Scalar(Value::Null) => Some(None),
        Read::Scalar(Value::Str(s)) => Some(Some(s.text().into_owned())),
        _ => None,
    }
}

/// `(obj.get(key) or {})` when that is an object: where it starts (`Some(None)` for the
/// empty default).
#[allow(clippy::option_option)] // outer: read here or not; inner: the field's value
fn obj_or_empty(p: &mut Parser<'_>, at: At) -> Option<At> {
    match read(p, at)? {
        r if !r.truthy() => Some(None),
        Read::Obj { .. } => Some(at),
        _ => None,
    }
}

/// `usage_openai`'s `_int`: an integer, else 0 (booleans and huge integers not read).
fn count(p: &mut Parser<'_>, at: At) -> Option<i64> {
    match read(p, at)? {
        Read::Scalar(Value::Int(i)) => Some(i),
        Read::Scalar(Value::Bool(_) | Value::UInt(_)) => None,
        _ => Some(0),
    }
}

fn usage(p: &mut Parser<'_>, seen: &Seen) -> Option<Usage> {
    if obj_or_empty(p, seen.usage)?.is_none() {
        return Some(Usage::default());
    }
    // `(u.get(...) or {}).get(...)`: a count inside a details object that is falsy is 0.
    let cached = obj_or_empty(p, seen.prompt_details)?.and(seen.cached);
    let reasoning = obj_or_empty(p, seen.completion_details)?.and(seen.reasoning);
    Some(Usage {
        input_tokens: count(p, seen.prompt)?,
        output_tokens: count(p, seen.completion)?,
        cached_tokens: count(p, cached)?,
        reasoning_tokens: count(p, reasoning)?,
    })
}

fn tool_calls(p: &mut Parser<'_>, at: At) -> Option<Vec<ToolCall>> {
    match read(p, at)? {
        r if !r.truthy() => return Some(Vec::new()),
        Read::Arr { .. } => {}
        _ => return None,
    }
    // Each item's start, then each item read (the reads move the cursor).
    let mut items = Vec::new();
    p.i = at?;
    p.enter().ok()?;
    p.ws();
    loop {
        if p.peek()? != b'{' {
            return None;
        }
        items.push(p.i);
        p.skip().ok()?;
        if !p.next_or_close(b']').ok()? {
            break;
        }
    }
    p.leave();
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        p.i = item;
        let [id, function] = members(p, ["id", "function"])?;
        // `(c.get("function") or {})` then `fn.get("arguments")`: no function, no string.
        p.i = obj_or_empty(p, function)??;
        let [name, arguments] = members(p, ["name", "arguments"])?;
        let name = text_or_empty(p, name)?;
        let Read::Scalar(Value::Str(arguments)) = read(p, arguments)? else {
            return None; // serialised by Python (orjson keeps key order)
        };
        calls.push((text_or_empty(p, id)?, name, arguments.text().into_owned()));
    }
    Some(calls)
}

/// The canonical fields of an `OpenAI` chat-completion body, or `None` when the body
/// is not one in a shape read here (the Python parser then decides).
///
/// One pass checks the whole body, descending only into `choices[0].message` and
/// `usage`, and notes where the members read start; each is then read where it lies.
/// No tree is built and no byte is scanned twice but those of the values read.
pub fn parse_openai_completion(body: &[u8]) -> Option<Completion> {
    let mut p = Parser::new(body).ok()?;
    if p.peek()? != b'{' {
        return None;
    }
    let mut seen = Seen::default();
    walk(
        &mut p,
        ["choices", "usage", "model", "id"],
        |p, k| match k {
            0 => seen.choices(p),
            1 => seen.usage(p),
            2 => note(p, &mut seen.model),
            _ => note(p, &mut seen.id),
        },
    )?;
    p.finish().ok()?;
    if !seen.message {
        return None;
    }
    let p = &mut p;
    let tool_calls = tool_calls(p, seen.tool_calls)?;
    let mut reason = match read(p, seen.finish_reason)? {
        Read::Absent | Read::Scalar(Value::Null) => "stop",
        Read::Scalar(Value::Str(s)) => finish_reason(&s.text()),
        _ => return None,
    };
    if !tool_calls.is_empty() && reason == "stop" {
        reason = "tool_calls";
    }
    Some(Completion {
        text: opt_text(p, seen.content)?,
        finish_reason: reason.to_owned(),
        usage: usage(p, &seen)?,
        model: text_or_empty(p, seen.model)?,
        tool_calls,
        refusal: opt_text(p, seen.refusal)?,
        id: text_or_empty(p, seen.id)?,
    })
}

fn write_opt(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => write_escaped(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// The `OpenAI` surface's chat-completion body for `c` (its `id` and `model` unused:
/// the caller's `response_id` and `model` name it). A total token count outside
/// 64 bits is refused, as `orjson` refuses to write it.
pub fn render_openai_completion(
    c: &Completion,
    response_id: &str,
    model: &str,
    created: i64,
) -> Result<Vec<u8>> {
    Ok(with_completion_head(
        response_id,
        created,
        &render_openai_completion_tail(c, model)?,
    ))
}

/// [`render_openai_completion`]'s body from `,"model":` on: all of it the provider's
/// answer decides, written as the answer is read, before the caller's id and the time
/// of the answer are known ([`with_completion_head`] puts them in front).
pub fn render_openai_completion_tail(c: &Completion, model: &str) -> Result<Vec<u8>> {
    let u = c.usage;
    let total = i128::from(u.input_tokens) + i128::from(u.output_tokens);
    if total < i128::from(i64::MIN) || total > i128::from(u64::MAX) {
        return Err(CoreError::invalid("total_tokens outside 64 bits"));
    }
    let mut out = Vec::with_capacity(
        300 + model.len()
            + c.text.as_ref().map_or(0, |t| escaped_room(t.len()))
            + c.tool_calls
                .iter()
                .map(|t| escaped_room(t.2.len()) + 64)
                .sum::<usize>(),
    );
    out.extend_from_slice(b",\"model\":");
    write_escaped(model, &mut out);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    write_opt(c.text.as_deref(), &mut out);
    out.extend_from_slice(b",\"refusal\":");
    write_opt(c.refusal.as_deref(), &mut out);
    if !c.tool_calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, (id, name, arguments)) in c.tool_calls.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_escaped(id, &mut out);
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            write_escaped(name, &mut out);
            out.extend_from_slice(b",\"arguments\":");
            write_escaped(arguments, &mut out);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"finish_reason\":");
    write_escaped(&c.finish_reason, &mut out);
    out.extend_from_slice(b",\"logprobs\":null}],\"usage\":{\"prompt_tokens\":");
    write_int(i128::from(u.input_tokens), &mut out);
    out.extend_from_slice(b",\"completion_tokens\":");
    write_int(i128::from(u.output_tokens), &mut out);
    out.extend_from_slice(b",\"total_tokens\":");
    write_int(total, &mut out);
    out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
    write_int(i128::from(u.cached_tokens), &mut out);
    out.extend_from_slice(b"},\"completion_tokens_details\":{\"reasoning_tokens\":");
    write_int(i128::from(u.reasoning_tokens), &mut out);
    out.extend_from_slice(b"}}}");
    Ok(out)
}

/// `{"id":…,"object":"chat.completion","created":…` then `tail` (as
/// [`render_openai_completion_tail`] wrote it): the whole body.
pub fn with_completion_head(response_id: &str, created: i64, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + response_id.len() + tail.len());
    out.extend_from_slice(b"{\"id\":");
    write_escaped(response_id, &mut out);
    out.extend_from_slice(b",\"object\":\"chat.completion\",\"created\":");
    write_int(i128::from(created), &mut out);
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        br#"{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m-1",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hi\n","tool_calls":[
        {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
        "finish_reason":"stop","logprobs":null}],
        "usage":{"prompt_tokens":60,"completion_tokens":2,"total_tokens":62,
        "prompt_tokens_details":{"cached_tokens":4}}}"#;

    #[test]
    fn reads_the_canonical_fields() {
        let c = parse_openai_completion(BODY).unwrap();
        assert_eq!(c.text.as_deref(), Some("Hi\n"));
        assert_eq!(c.finish_reason, "tool_calls"); // calls with a plain stop
        assert_eq!((c.usage.input_tokens, c.usage.cached_tokens), (60, 4));
        assert_eq!((c.model.as_str(), c.id.as_str()), ("m-1", "chatcmpl-1"));
        assert_eq!(
            c.tool_calls,
            [("c1".into(), "f".into(), "{\"a\":1}".into())]
        );
        assert_eq!(c.refusal, None);
    }

    #[test]
    fn leaves_other_shapes_to_python() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"choices":[]}"#,
            br#"{"choices":[{"message":"x"}]}"#,
            br#"{"choices":[{"message":{"content":5}}]}"#,
            br#"{"choices":[{"message":{"tool_calls":[{"function":{"arguments":{}}}]}}]}"#,
            br#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":true}}"#,
            br#"{"choices":[{"message":{}}],"model":3}"#,
        ] {
            assert_eq!(parse_openai_completion(body), None, "{body:?}");
        }
    }

    #[test]
    fn the_tail_after_the_head_is_the_body() {
        let c = parse_openai_completion(BODY).unwrap();
        let mut head = Vec::new();
        write_object_head(&mut head, "chatcmpl-\"x", "chat.completion", -5, "m\n");
        let tail = render_openai_completion_tail(&c, "m\n").unwrap();
        let whole = with_completion_head("chatcmpl-\"x", -5, &tail);
        assert!(
            whole.starts_with(&head),
            "{}",
            String::from_utf8_lossy(&whole)
        );
        assert_eq!(
            whole,
            render_openai_completion(&c, "chatcmpl-\"x", "m\n", -5).unwrap()
        );
        let mut odd = c;
        (odd.usage.input_tokens, odd.usage.output_tokens) = (i64::MAX, i64::MAX);
        assert!(render_openai_completion_tail(&odd, "m").is_ok()); // a total up to u64::MAX
        (odd.usage.input_tokens, odd.usage.output_tokens) = (i64::MIN, -1);
        assert!(render_openai_completion_tail(&odd, "m").is_err());
    }

    #[test]
    fn writes_the_surface_body() {
        let c = parse_openai_completion(BODY).unwrap();
        let out = String::from_utf8(render_openai_completion(&c, "chatcmpl-x", "m-1", 5).unwrap())
            .unwrap();
        assert_eq!(
            out,
            concat!(
                r#"{"id":"chatcmpl-x","object":"chat.completion","created":5,"model":"m-1","#,
                r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hi\n","refusal":null,"#,
                r#""tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"#,
                r#""finish_reason":"tool_calls","logprobs":null}],"usage":{"prompt_tokens":60,"#,
                r#""completion_tokens":2,"total_tokens":62,"prompt_tokens_details":{"cached_tokens":4},"#,
                r#""completion_tokens_details":{"reasoning_tokens":0}}}"#
            )
        );
    }
}
