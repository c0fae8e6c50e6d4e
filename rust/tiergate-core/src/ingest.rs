//! The usual chat request taken in by one call: everything the request side needs of the
//! body before dispatch, so the body crosses into the core once.
//!
//! For a body [`plain_chat_request`] reads, [`ingest`] returns that request, its
//! idempotency key ([`hash::request_key`] under the caller's scope and stream mark), its
//! prompt-token estimate (what [`tokens::estimate_tokens`] gives for the body, counted
//! from the messages already read rather than by another walk of the bytes) and the
//! capabilities it requires. Any other body returns `None`, as `plain_chat_request` does:
//! the Python parser reads it and the separate calls serve it.

use crate::hash;
use crate::json::{escaped_room, write_escaped, write_int};
use crate::memo::{TextMemo, ValueMemo};
use crate::policy::CAP_STREAMING;
use crate::request::{plain_chat_request, PlainRequest};
use crate::tokens::{
    call_millitokens, response_format_millitokens, round_tokens, text_millitokens,
    tools_millitokens, PER_MESSAGE_MILLI, REPLY_PRIMING_MILLI,
};
use crate::turn::{chat_turn_with, Turn};

/// What the request side needs of a plain body.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub request: PlainRequest,
    /// The idempotency key, when a scope was given.
    pub key: Option<[u8; 16]>,
    /// Equal to [`tokens::estimate_tokens`](crate::tokens::estimate_tokens) of the body.
    pub prompt_tokens: u64,
    /// `CAP_*` bits: a plain body asks for no tools, schema or image, so streaming alone.
    pub required_caps: u64,
}

/// The plain request in `body` with its key, token estimate and required capabilities,
/// or `None` when the Python parser must read the body.
///
/// `scope` is the key's scope without its stream mark: the key is
/// `request_key(body, scope + "s")` for a streamed request and `scope + "n"` otherwise
/// (the mark comes from the body, which only this call has read). `None` skips the key
/// (the caller sent its own, or the tenant was refused). A body the key cannot be
/// computed for also returns `None`, so that the general path meets the same error.
pub fn ingest(body: &[u8], scope: Option<&str>) -> Option<Ingested> {
    ingest_with(body, scope, &mut TextMemo::none())
}

/// [`ingest`], the token estimates of long texts taken from `memo` when it has them.
pub fn ingest_with(body: &[u8], scope: Option<&str>, memo: &mut TextMemo<u64>) -> Option<Ingested> {
    let request = plain_chat_request(body)?;
    let key = scoped_key(body, scope, request.stream, |tenant| {
        request.only_known.then(|| plain_key(&request, tenant))
    })?;
    let prompt_tokens = prompt_tokens(&request, memo);
    let required_caps = if request.stream { CAP_STREAMING } else { 0 };
    Some(Ingested {
        request,
        key,
        prompt_tokens,
        required_caps,
    })
}

/// What the request side needs of an agent's turn ([`chat_turn`](crate::turn::chat_turn)).
#[derive(Clone, Debug, PartialEq)]
pub struct TurnIngested {
    pub turn: Turn,
    /// The idempotency key, when a scope was given.
    pub key: Option<[u8; 16]>,
    /// [`estimate_tokens`](crate::tokens::estimate_tokens) of the body.
    pub prompt_tokens: u64,
    /// `CAP_*` bits the core knows of: streaming. Whether tools are required depends on
    /// the tools' and the tool choice's values, which the caller reads.
    pub required_caps: u64,
}

/// [`ingest`] of a body that is not plain but an agent's turn: tools offered, tool
/// calls and tool results among the messages. `None` when the Python parser must read
/// it (or the key cannot be computed, so that the general path meets the same error).
pub fn ingest_turn(body: &[u8], scope: Option<&str>) -> Option<TurnIngested> {
    ingest_turn_with(
        body,
        scope,
        &mut TextMemo::none(),
        &mut ValueMemo::new(0, 0),
    )
}

/// [`ingest_turn`], the token estimates of long texts taken from `memo`, and a `tools`
/// array sent lately found in `tools` (by its bytes) with its token count.
pub fn ingest_turn_with(
    body: &[u8],
    scope: Option<&str>,
    memo: &mut TextMemo<u64>,
    tools: &mut ValueMemo<Option<u64>>,
) -> Option<TurnIngested> {
    let turn = chat_turn_with(body, tools)?;
    let key = scoped_key(body, scope, turn.stream, |_| None)?;
    let prompt_tokens = turn_tokens(body, &turn, memo, tools)?;
    let required_caps = if turn.stream { CAP_STREAMING } else { 0 };
    Some(TurnIngested {
        turn,
        key,
        prompt_tokens,
        required_caps,
    })
}

/// [`estimate_tokens`] of a turn's body, counted from what [`chat_turn`] read: per
/// message 3, its role as spelled, its text and per tool call 3, the function's name and
/// arguments as sent; the tools as [`tools_millitokens`] counts them. Nothing else in
/// such a body is counted but a response format's schema.
fn turn_tokens(
    body: &[u8],
    turn: &Turn,
    memo: &mut TextMemo<u64>,
    tools: &mut ValueMemo<Option<u64>>,
) -> Option<u64> {
    let mut milli = REPLY_PRIMING_MILLI;
    for m in &turn.messages {
        milli += PER_MESSAGE_MILLI + text_millitokens(m.role.wire());
        if let Some(text) = &m.text {
            milli += memo.get_or(text, text_millitokens);
        }
        for c in &m.calls {
            milli += call_millitokens(&c.name, &c.arguments);
        }
    }
    if let Some((a, e)) = turn.response_format {
        milli += response_format_millitokens(std::str::from_utf8(&body[a..e]).ok()?).ok()?;
    }
    if let Some((a, e)) = turn.tools {
        milli += tools_counted(&body[a..e], tools, |t| tools_millitokens(t).ok())?;
    }
    Some(round_tokens(milli))
}

/// The milli-tokens `count` gives of a `tools` value's bytes `raw` (a value the reader
/// walked, of a body that is UTF-8), remembered by those bytes in `tools`: an agent
/// sends the same tools with every turn. `None`: not counted (nor, then, is the body:
/// the estimate fails).
pub(crate) fn tools_counted(
    raw: &[u8],
    tools: &mut ValueMemo<Option<u64>>,
    count: impl FnOnce(&str) -> Option<u64>,
) -> Option<u64> {
    match tools.find(raw) {
        Some((n, counted)) if n == raw.len() => *counted,
        _ => {
            let counted = count(std::str::from_utf8(raw).ok()?);
            tools.keep(raw, counted);
            counted
        }
    }
}

/// The idempotency key of `body` under `scope` with the stream mark (see [`ingest`]):
/// what `written` gives for the marked scope when it can write the canonical form from
/// what was read, else the canonicaliser's over the bytes. `Some(None)` without a scope;
/// `None` for a body the canonicaliser refuses.
#[allow(clippy::option_option)] // outer: keyed or refused; inner: a key asked for
pub(crate) fn scoped_key(
    body: &[u8],
    scope: Option<&str>,
    stream: bool,
    written: impl FnOnce(&str) -> Option<[u8; 16]>,
) -> Option<Option<[u8; 16]>> {
    let Some(scope) = scope else {
        return Some(None);
    };
    let mut tenant = String::with_capacity(scope.len() + 1);
    tenant.push_str(scope);
    tenant.push(if stream { 's' } else { 'n' });
    match written(&tenant) {
        Some(key) => Some(Some(key)),
        None => hash::request_key(body, &tenant).ok().map(Some),
    }
}

/// [`hash::request_key`] of a body holding only what `r` read and transport fields,
/// written from `r` rather than from the bytes again: its canonical form is the object
/// of `max_completion_tokens` and `max_tokens` (when set), `messages` (each
/// `{"content", "role"}`, the role as spelled), `model`, and `seed`, `stop`,
/// `temperature` and `top_p` (when set: `stop` unless empty, a string as its one-string
/// list; the last two unless 1, their default), keys in that (sorted) order.
fn plain_key(r: &PlainRequest, tenant: &str) -> [u8; 16] {
    let texts: usize = r
        .messages
        .iter()
        .map(|(_, t)| escaped_room(t.len()) + 32)
        .sum();
    let mut buf = Vec::with_capacity(8 + tenant.len() + r.model.len() + texts + 96);
    buf.extend_from_slice(&(tenant.len() as u64).to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    buf.push(b'{');
    if let Some(n) = r.bounds.0 {
        buf.extend_from_slice(b"\"max_completion_tokens\":");
        write_int(n.into(), &mut buf);
        buf.push(b',');
    }
    if let Some(n) = r.bounds.1 {
        buf.extend_from_slice(b"\"max_tokens\":");
        write_int(n.into(), &mut buf);
        buf.push(b',');
    }
    buf.extend_from_slice(b"\"messages\":[");
    for (i, (role, text)) in r.messages.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"content\":");
        write_escaped(text, &mut buf);
        buf.extend_from_slice(b",\"role\":\"");
        buf.extend_from_slice(role.wire().as_bytes());
        buf.extend_from_slice(b"\"}");
    }
    buf.extend_from_slice(b"],\"model\":");
    write_escaped(&r.model, &mut buf);
    let s = &r.sampling;
    if let Some(seed) = s.seed {
        buf.extend_from_slice(b",\"seed\":");
        write_int(seed.into(), &mut buf);
    }
    if !s.stop.is_empty() {
        buf.extend_from_slice(b",\"stop\":[");
        for (i, text) in s.stop.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_escaped(text, &mut buf);
        }
        buf.push(b']');
    }
    for (name, value) in [
        (&b",\"temperature\":"[..], s.temperature),
        (b",\"top_p\":", s.top_p),
    ] {
        // 1 is their default, which the canonical form drops (compared by value).
        #[allow(clippy::float_cmp)]
        if let Some(x) = value.filter(|&x| x != 1.0) {
            buf.extend_from_slice(name);
            hash::write_f64(x, &mut buf);
        }
    }
    buf.push(b'}');
    hash::key_of(&buf)
}

/// `estimate_tokens` of a plain body: 3 for reply priming, and per message 3, its role as
/// spelled and its text. Nothing else in a plain body is counted (no tools, no schema;
/// the ignored fields never were).
fn prompt_tokens(request: &PlainRequest, memo: &mut TextMemo<u64>) -> u64 {
    let mut milli = REPLY_PRIMING_MILLI;
    for (role, text) in &request.messages {
        milli +=
            PER_MESSAGE_MILLI + text_millitokens(role.wire()) + memo.get_or(text, text_millitokens);
    }
    round_tokens(milli)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Role;
    use crate::tokens::estimate_tokens;
    use crate::turn::chat_turn;

    /// Every field as the separate calls give it.
    fn check(body: &[u8], scope: &str) {
        let got = ingest(body, Some(scope)).unwrap();
        let plain = plain_chat_request(body).unwrap();
        let mark = if plain.stream { "s" } else { "n" };
        assert_eq!(got.request, plain);
        assert_eq!(
            got.key.unwrap(),
            hash::request_key(body, &format!("{scope}{mark}")).unwrap()
        );
        assert_eq!(got.prompt_tokens, estimate_tokens(body).unwrap());
        assert_eq!(
            got.required_caps,
            if plain.stream { CAP_STREAMING } else { 0 }
        );
        assert_eq!(ingest(body, None).unwrap().key, None);
    }

    /// With a memo, a long system prompt sent again (a later turn, another question) is
    /// estimated as the separate call estimates the whole body.
    #[test]
    fn a_memo_changes_no_estimate() {
        let system = "You answer questions about card fees, in two sentences. ".repeat(40);
        let mut memo = TextMemo::new(16);
        for question in [
            "What is the late fee?",
            "How do I dispute it?",
            "What is the late fee?",
        ] {
            let body = format!(
                r#"{{"model":"auto","messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{question}"}}]}}"#
            );
            let got = ingest_with(body.as_bytes(), None, &mut memo).unwrap();
            assert_eq!(got.prompt_tokens, estimate_tokens(body.as_bytes()).unwrap());
            assert_eq!(got, ingest(body.as_bytes(), None).unwrap());
        }
    }

    #[test]
    fn gives_what_the_separate_calls_give() {
        for body in [
            r#"{"model":"auto","messages":[{"role":"system","content":"You are terse."},
                {"role":"user","content":"Say hello in one word. Say hello in one word. 17"}],
                "max_tokens":16}"#,
            r#"{"model":"auto","messages":[{"role":"developer","content":"Be terse."},
                {"content":"Hi \u00e9\n\t\"x\" 日本語 don't 12345","role":"user"}],"stream":true,
                "user":"u1","metadata":{"a":[1,2,{"b":null}]},"frequency_penalty":0.5}"#,
            r#"{"model":"m","messages":[{"role":"assistant","content":"  x  \n\n"}],
                "messages":[{"role":"user","content":"the last messages win"}],"stream":false}"#,
            r#"{"stream":null,"max_completion_tokens":3,"model":"\u006d","messages":[
                {"role":"user","content":"\ud83d\ude00 emoji"}]}"#,
        ] {
            check(body.as_bytes(), "tenant\0openai\0");
        }
    }

    /// A body of known members and transport fields is keyed from what was read; any
    /// other member (or an unread `max_tokens`) sends it to the canonicaliser. Both give
    /// `request_key`'s key (`check`).
    #[test]
    fn keys_written_from_the_request_match_the_canonical_form() {
        for (body, known) in [
            (
                r#"{"model":"a","messages":[{"role":"user","content":"x"}]}"#,
                true,
            ),
            (
                r#"{"max_tokens":7,"max_completion_tokens":5,"model":"\u00e9\"q",
                "messages":[{"content":"a\u0001b\\c\/d\u2028","role":"developer"},
                {"role":"assistant","content":"é"}],"stream":true,"user":null,
                "stream_options_x":null}"#,
                false,
            ),
            (
                r#"{"max_tokens":7,"max_completion_tokens":5,"model":"\u00e9\"q",
                "messages":[{"content":"a\u0001b\\c\/d\u2028","role":"developer"},
                {"role":"assistant","content":"é"}],"stream":true,"user":"u","store":true,
                "metadata":{"k":"v"},"service_tier":"auto","prompt_cache_key":"p"}"#,
                true,
            ),
            (
                r#"{"model":"m","max_tokens":null,"messages":[{"role":"user","content":"x"}]}"#,
                true,
            ),
            (
                r#"{"model":"m","max_completion_tokens":3,"max_tokens":"no",
                "messages":[{"role":"user","content":"x"}]}"#,
                false,
            ),
            (
                r#"{"model":"m","logprobs":false,"messages":[{"role":"user","content":"x"}]}"#,
                false,
            ),
            // One text part is keyed as its string (the canonical form's rule 5).
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"xé"}]},
                {"content":[{"text":"y","type":"text"}],"role":"assistant"}],"stream_options":{"include_usage":true},
                "temperature":null,"seed":null}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.7,
                "top_p":1,"seed":3,"stop":["a",""],"n":1}"#,
                false,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":""}"#,
                false,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"\n\u00e9\"",
                "seed":1}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["b","a\\"],
                "temperature":0.5}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":[]}"#,
                true,
            ),
            (
                r#"{"top_p":0.25,"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.7,
                "seed":-9223372036854775808,"n":1,"stop":null}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1.0,"top_p":1}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.0,
                "top_p":1e-1,"seed":0}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2,"top_p":0}"#,
                true,
            ),
        ] {
            assert_eq!(
                plain_chat_request(body.as_bytes()).expect(body).only_known,
                known,
                "{body}"
            );
            check(body.as_bytes(), "t\0openai\0");
        }
    }

    #[test]
    fn the_stream_flag_marks_the_key() {
        let body = |stream: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"stream":{stream}}}"#
            )
        };
        let n = ingest(body("false").as_bytes(), Some("t\0openai\0")).unwrap();
        let s = ingest(body("true").as_bytes(), Some("t\0openai\0")).unwrap();
        assert_eq!(
            n.key.unwrap(),
            hash::request_key(body("true").as_bytes(), "t\0openai\0n").unwrap()
        );
        assert_eq!(
            s.key.unwrap(),
            hash::request_key(body("false").as_bytes(), "t\0openai\0s").unwrap()
        );
        assert_ne!(n.key, s.key);
    }

    #[test]
    fn a_developer_message_counts_its_own_role() {
        let dev = ingest(
            br#"{"model":"m","messages":[{"role":"developer","content":"x"}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(dev.request.messages[0].0, Role::Developer);
        assert_eq!(
            dev.prompt_tokens,
            estimate_tokens(br#"{"messages":[{"role":"developer","content":"x"}]}"#).unwrap()
        );
    }

    #[test]
    fn a_turn_gets_what_the_separate_calls_give() {
        let body = br#"{"model":"auto","tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c","content":"42"}],"stream":true}"#;
        assert_eq!(ingest(body, Some("t\0openai\0")), None);
        let got = ingest_turn(body, Some("t\0openai\0")).unwrap();
        assert_eq!(got.turn, chat_turn(body).unwrap());
        assert_eq!(
            got.key.unwrap(),
            hash::request_key(body, "t\0openai\0s").unwrap()
        );
        assert_eq!(got.prompt_tokens, estimate_tokens(body).unwrap());
        assert_eq!(got.required_caps, CAP_STREAMING);
        assert_eq!(ingest_turn(body, None).unwrap().key, None);
    }

    /// With memos, a turn's tools and long texts sent again are estimated as the
    /// separate call estimates the whole body.
    #[test]
    fn a_turn_with_memos_changes_no_estimate() {
        let tool = |name: &str| {
            format!(
                r#"{{"type":"function","function":{{"name":"{name}","description":"Look it up by id, r\u00e9sum\u00e9 \"quoted\".",
                "parameters":{{"type":"object","properties":{{"id":{{"type":"string","description":"the id"}},"n":{{"type":"integer"}}}},"required":["id"]}}}}}}"#
            )
        };
        let tools = format!("[{},{},{}]", tool("get"), tool("put"), tool("list"));
        assert!(tools.len() > crate::memo::MIN_BYTES);
        let system = "You are a bank's agent; use the tools. ".repeat(20);
        let (mut memo, mut memo_tools) = (TextMemo::new(16), ValueMemo::new(2, 1 << 16));
        for question in ["Why?", "And then?", "Why?"] {
            let body = format!(
                r#"{{"model":"auto","tools":{tools},"messages":[{{"role":"developer","content":"{system}"}},
                {{"role":"assistant","content":"","tool_calls":[{{"id":"c","type":"function","function":{{"name":"get"}}}},
                {{"id":"d","function":{{"name":"put","arguments":"{{\"id\":\"\u00e9\"}}"}}}}]}},
                {{"role":"tool","tool_call_id":"c","content":null}},{{"role":"tool","tool_call_id":"d","content":"ok"}},
                {{"role":"user","content":"{question}"}}],"tools":{tools}}}"#
            );
            let got = ingest_turn_with(body.as_bytes(), None, &mut memo, &mut memo_tools).unwrap();
            assert_eq!(got.prompt_tokens, estimate_tokens(body.as_bytes()).unwrap());
            assert_eq!(got, ingest_turn(body.as_bytes(), None).unwrap());
        }
    }

    #[test]
    fn leaves_other_bodies_alone() {
        for body in [
            &b"{nope"[..],
            b"[]",
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]}"#,
            br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
        ] {
            assert_eq!(ingest(body, Some("t\0openai\0")), None);
            assert_eq!(ingest(body, None), None);
        }
    }
}
