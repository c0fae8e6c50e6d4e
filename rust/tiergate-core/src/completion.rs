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

use crate::json::write_escaped;
use crate::rawjson::Value;
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
    out.extend_from_slice(created.to_string().as_bytes());
    out.extend_from_slice(b",\"model\":");
    write_escaped(model, out);
}

/// `obj.get(key) or ""` when that is a string (`None` for any other truthy value).
fn text_or_empty(obj: &Value<'_>, key: &str) -> Option<String> {
    match obj.get(key).filter(|v| v.truthy()) {
        None => Some(String::new()),
        Some(Value::Str(s)) => Some(s.text().into_owned()),
        Some(_) => None,
    }
}

/// `obj.get(key)` when absent, `null` or a string: `Some(None)` / `Some(Some(text))`.
#[allow(clippy::option_option)] // outer: read here or not; inner: the field's value
fn opt_text(obj: &Value<'_>, key: &str) -> Option<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Str(s)) => Some(Some(s.text().into_owned())),
        Some(_) => None,
    }
}

/// `(obj.get(key) or {})` when that is an object (`Some(None)` for the empty default).
#[allow(clippy::option_option)] // outer: read here or not; inner: the field's value
fn obj_or_empty<'v, 'a>(obj: Option<&'v Value<'a>>, key: &str) -> Option<Option<&'v Value<'a>>> {
    match obj.and_then(|o| o.get(key)).filter(|v| v.truthy()) {
        None => Some(None),
        Some(v @ Value::Obj(_)) => Some(Some(v)),
        Some(_) => None,
    }
}

/// `usage_openai`'s `_int`: an integer, else 0 (booleans and huge integers not read).
fn count(obj: Option<&Value<'_>>, key: &str) -> Option<i64> {
    match obj.and_then(|o| o.get(key)) {
        Some(Value::Int(i)) => Some(*i),
        Some(Value::Bool(_) | Value::UInt(_)) => None,
        _ => Some(0),
    }
}

fn usage(doc: &Value<'_>) -> Option<Usage> {
    let Some(u) = obj_or_empty(Some(doc), "usage")? else {
        return Some(Usage::default());
    };
    let pd = obj_or_empty(Some(u), "prompt_tokens_details")?;
    let cd = obj_or_empty(Some(u), "completion_tokens_details")?;
    Some(Usage {
        input_tokens: count(Some(u), "prompt_tokens")?,
        output_tokens: count(Some(u), "completion_tokens")?,
        cached_tokens: count(pd, "cached_tokens")?,
        reasoning_tokens: count(cd, "reasoning_tokens")?,
    })
}

fn tool_calls(message: &Value<'_>) -> Option<Vec<ToolCall>> {
    let Some(raw) = message.get("tool_calls").filter(|v| v.truthy()) else {
        return Some(Vec::new());
    };
    let Value::Arr(items) = raw else {
        return None;
    };
    let mut calls = Vec::with_capacity(items.len());
    for c in items {
        if !matches!(c, Value::Obj(_)) {
            return None;
        }
        let function = obj_or_empty(Some(c), "function")?;
        let (name, arguments) = match function {
            Some(f) => (
                text_or_empty(f, "name")?,
                match f.get("arguments") {
                    Some(Value::Str(s)) => s.text().into_owned(),
                    _ => return None, // serialised by Python (orjson keeps key order)
                },
            ),
            None => return None,
        };
        calls.push((text_or_empty(c, "id")?, name, arguments));
    }
    Some(calls)
}

/// The canonical fields of an `OpenAI` chat-completion body, or `None` when the body
/// is not one in a shape read here (the Python parser then decides).
pub fn parse_openai_completion(body: &[u8]) -> Option<Completion> {
    let doc = Value::parse(body).ok()?;
    let Value::Obj(_) = doc else {
        return None;
    };
    let Some(Value::Arr(choices)) = doc.get("choices") else {
        return None;
    };
    let choice = choices.first()?;
    let message = choice.get("message")?;
    if !matches!(message, Value::Obj(_)) {
        return None;
    }
    let tool_calls = tool_calls(message)?;
    let mut reason = match choice.get("finish_reason") {
        None | Some(Value::Null) => "stop",
        Some(Value::Str(s)) => finish_reason(&s.text()),
        Some(_) => return None,
    };
    if !tool_calls.is_empty() && reason == "stop" {
        reason = "tool_calls";
    }
    Some(Completion {
        text: opt_text(message, "content")?,
        finish_reason: reason.to_owned(),
        usage: usage(&doc)?,
        model: text_or_empty(&doc, "model")?,
        tool_calls,
        refusal: opt_text(message, "refusal")?,
        id: text_or_empty(&doc, "id")?,
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
    let u = c.usage;
    let total = i128::from(u.input_tokens) + i128::from(u.output_tokens);
    if total < i128::from(i64::MIN) || total > i128::from(u64::MAX) {
        return Err(CoreError::invalid("total_tokens outside 64 bits"));
    }
    let mut out = Vec::with_capacity(
        400 + c.text.as_ref().map_or(0, String::len)
            + c.tool_calls.iter().map(|t| t.2.len() + 64).sum::<usize>(),
    );
    write_object_head(&mut out, response_id, "chat.completion", created, model);
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
    out.extend_from_slice(
        format!(
            ",\"logprobs\":null}}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\
             \"total_tokens\":{total},\"prompt_tokens_details\":{{\"cached_tokens\":{}}},\
             \"completion_tokens_details\":{{\"reasoning_tokens\":{}}}}}}}",
            u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens
        )
        .as_bytes(),
    );
    Ok(out)
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
