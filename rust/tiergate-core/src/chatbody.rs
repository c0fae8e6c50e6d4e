//! The `OpenAI` chat-completions body sent to a provider for a request whose messages
//! are all plain text: the bytes `orjson.dumps(build_openai_request(...))` gives
//! (Python, `providers/openai.py`), written without a dict per message.
//!
//! The members after the output bound (tools, response format, sampling, stop, seed)
//! are rare and of many types; the caller hands them over already written (`rest`, the
//! JSON object orjson wrote of them), and they follow the bound unchanged.

use crate::json::{escaped_room, write_escaped, write_int};
use crate::{CoreError, Result};

/// `{"model":…,"messages":[{"role":…,"content":…},…],"<limit_key>":<limit>,…rest}`:
/// the members of `rest` (an object's JSON; `None` or `{}` for none) after the bound.
pub fn write_openai_chat_body(
    model: &str,
    messages: &[(&str, &str)],
    limit_key: &str,
    limit: i64,
    rest: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let texts: usize = messages
        .iter()
        .map(|(r, t)| r.len() + escaped_room(t.len()) + 32)
        .sum();
    write_body(model, texts, limit_key, limit, rest, |out| {
        for (i, (role, text)) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"role\":");
            write_escaped(role, out);
            out.extend_from_slice(b",\"content\":");
            write_escaped(text, out);
            out.push(b'}');
        }
    })
}

/// A message of an agent's turn as `crate::turn` read it: the canonical role, the one
/// text (if any), the tool calls `(id, name, arguments)` and the call a tool result
/// answers.
#[derive(Clone, Debug, Default)]
pub struct TurnMessageRef<'a> {
    pub role: &'a str,
    pub text: Option<&'a str>,
    pub calls: Vec<(&'a str, &'a str, &'a str)>,
    pub call_id: Option<&'a str>,
}

/// [`write_openai_chat_body`] of an agent's turn: each message as
/// `build_openai_messages` (Python) builds it and orjson writes it. A tool result is
/// `{"role":"tool","tool_call_id":…,"content":…}` (its text, or `""`); an assistant
/// message with tool calls has `"content"` (its text, or `null`) then `"tool_calls"`,
/// each `{"id":…,"type":"function","function":{"name":…,"arguments":…}}`; any other
/// message is `{"role":…,"content":…}`.
pub fn write_openai_turn_body(
    model: &str,
    messages: &[TurnMessageRef<'_>],
    limit_key: &str,
    limit: i64,
    rest: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let texts: usize = messages
        .iter()
        .map(|m| {
            let calls: usize = m
                .calls
                .iter()
                .map(|(i, n, a)| i.len() + n.len() + escaped_room(a.len()) + 64)
                .sum();
            m.text.map_or(0, |t| escaped_room(t.len())) + calls + 48
        })
        .sum();
    write_body(model, texts, limit_key, limit, rest, |out| {
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"role\":");
            write_escaped(m.role, out);
            if m.role == "tool" {
                out.extend_from_slice(b",\"tool_call_id\":");
                write_escaped(m.call_id.unwrap_or(""), out);
            }
            out.extend_from_slice(b",\"content\":");
            match m.text {
                Some(text) if !text.is_empty() => write_escaped(text, out),
                _ if !m.calls.is_empty() => out.extend_from_slice(b"null"),
                _ => out.extend_from_slice(b"\"\""),
            }
            if !m.calls.is_empty() {
                out.extend_from_slice(b",\"tool_calls\":[");
                for (j, (id, name, arguments)) in m.calls.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"id\":");
                    write_escaped(id, out);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    write_escaped(name, out);
                    out.extend_from_slice(b",\"arguments\":");
                    write_escaped(arguments, out);
                    out.extend_from_slice(b"}}");
                }
                out.push(b']');
            }
            out.push(b'}');
        }
    })
}

/// The body around its messages (written by `messages` into the buffer).
fn write_body(
    model: &str,
    texts: usize,
    limit_key: &str,
    limit: i64,
    rest: Option<&[u8]>,
    messages: impl FnOnce(&mut Vec<u8>),
) -> Result<Vec<u8>> {
    let rest = match rest {
        None => &b"{}"[..],
        Some(r) if r.len() >= 2 && r[0] == b'{' && r[r.len() - 1] == b'}' => r,
        Some(_) => return Err(CoreError::invalid("rest must be a JSON object")),
    };
    let mut out = Vec::with_capacity(64 + model.len() + texts + rest.len());
    out.extend_from_slice(b"{\"model\":");
    write_escaped(model, &mut out);
    out.extend_from_slice(b",\"messages\":[");
    messages(&mut out);
    out.extend_from_slice(b"],");
    write_escaped(limit_key, &mut out);
    out.push(b':');
    write_int(i128::from(limit), &mut out);
    if rest.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&rest[1..]);
    } else {
        out.push(b'}');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_json_writes_of_the_dict() {
        let messages = [("system", "be \"terse\"\n"), ("user", "héllo\u{1}")];
        let got =
            write_openai_chat_body("m/1", &messages, "max_tokens", 16, Some(b"{\"seed\":-3}"))
                .unwrap();
        let want = serde_json::json!({
            "model": "m/1",
            "messages": [
                {"role": "system", "content": "be \"terse\"\n"},
                {"role": "user", "content": "héllo\u{1}"},
            ],
            "max_tokens": 16,
            "seed": -3,
        });
        // serde_json's map is sorted unless preserve_order: compare as values, and the
        // key order by hand.
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&got).unwrap(),
            want
        );
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with(
            r#"{"model":"m/1","messages":[{"role":"system","content":"be \"terse\"\n"}"#
        ));
        assert!(text.ends_with(r#""max_tokens":16,"seed":-3}"#));
    }

    #[test]
    fn writes_a_turn_as_the_dict_path_builds_it() {
        let messages = [
            TurnMessageRef {
                role: "user",
                text: Some("why \"twice\"?"),
                ..TurnMessageRef::default()
            },
            TurnMessageRef {
                role: "assistant",
                calls: vec![("c1", "get", "{\"a\":1}"), ("c2", "put", "{}")],
                ..TurnMessageRef::default()
            },
            TurnMessageRef {
                role: "assistant",
                text: Some("Looking."),
                calls: vec![("c3", "get", "{}")],
                ..TurnMessageRef::default()
            },
            TurnMessageRef {
                role: "tool",
                text: Some("[1]"),
                call_id: Some("c1"),
                ..TurnMessageRef::default()
            },
            TurnMessageRef {
                role: "tool",
                call_id: Some("c2"),
                ..TurnMessageRef::default()
            },
        ];
        let got = write_openai_turn_body("m", &messages, "max_tokens", 8, None).unwrap();
        let call = |id: &str, name: &str, args: &str| {
            format!(
                r#"{{"id":"{id}","type":"function","function":{{"name":"{name}","arguments":{}}}}}"#,
                serde_json::to_string(args).unwrap()
            )
        };
        let want = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"why \"twice\"?"}},{{"role":"assistant","content":null,"tool_calls":[{},{}]}},{{"role":"assistant","content":"Looking.","tool_calls":[{}]}},{{"role":"tool","tool_call_id":"c1","content":"[1]"}},{{"role":"tool","tool_call_id":"c2","content":""}}],"max_tokens":8}}"#,
            call("c1", "get", "{\"a\":1}"),
            call("c2", "put", "{}"),
            call("c3", "get", "{}"),
        );
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn no_rest_closes_after_the_bound() {
        for rest in [None, Some(&b"{}"[..])] {
            let got = write_openai_chat_body("m", &[], "max_completion_tokens", -1, rest).unwrap();
            assert_eq!(
                got,
                br#"{"model":"m","messages":[],"max_completion_tokens":-1}"#
            );
        }
    }

    #[test]
    fn rest_that_is_not_an_object_is_refused() {
        for rest in [&b""[..], b"[]", b"{", b"1"] {
            assert!(write_openai_chat_body("m", &[], "max_tokens", 1, Some(rest)).is_err());
        }
    }
}
