//! The `OpenAI` chat-completions body sent to a provider for a request whose messages
//! are all plain text: the bytes `orjson.dumps(build_openai_request(...))` gives
//! (Python, `providers/openai.py`), written without a dict per message.
//!
//! The members after the output bound (tools, response format, sampling, stop, seed)
//! are rare and of many types; the caller hands them over already written (`rest`, the
//! JSON object orjson wrote of them), and they follow the bound unchanged.

use crate::json::{write_escaped, write_int};
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
    let rest = match rest {
        None => &b"{}"[..],
        Some(r) if r.len() >= 2 && r[0] == b'{' && r[r.len() - 1] == b'}' => r,
        Some(_) => return Err(CoreError::invalid("rest must be a JSON object")),
    };
    let texts: usize = messages.iter().map(|(r, t)| r.len() + t.len() + 32).sum();
    let mut out = Vec::with_capacity(64 + model.len() + texts + rest.len());
    out.extend_from_slice(b"{\"model\":");
    write_escaped(model, &mut out);
    out.extend_from_slice(b",\"messages\":[");
    for (i, (role, text)) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"role\":");
        write_escaped(role, &mut out);
        out.extend_from_slice(b",\"content\":");
        write_escaped(text, &mut out);
        out.push(b'}');
    }
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
