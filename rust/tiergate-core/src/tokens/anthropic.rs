//! The prompt-token estimate of an Anthropic Messages body: [`estimate_tokens`] of the
//! chat-completions body the same request would be (the rule is in the documentation
//! of [`crate::tokens`]), counted in one walk of the Anthropic body, without writing
//! that body.
//!
//! [`estimate_tokens`]: super::estimate_tokens

use std::collections::HashMap;

use super::{
    round_tokens, text_millitokens, Walk, IMAGE_TOKENS, PER_MESSAGE_MILLI, REPLY_PRIMING_MILLI,
};
use crate::error::Result;
use crate::json::{write_float, write_int};
use crate::rawjson::{Esc, JStr, Parser, Value};

/// Estimated prompt tokens of an Anthropic Messages body (the rule: [`crate::tokens`]).
/// Errors only on invalid JSON or a non-object body; unknown shapes inside count what
/// they can.
pub fn estimate_anthropic_tokens(body: &[u8]) -> Result<u64> {
    let mut w = Walk::of_body(body)?;
    let (mut system, mut messages, mut tools) = (0, 0, 0);
    // `output_config` when present and not null (its `format`'s schema, if any), else
    // `output_format`: what `parse_anthropic_request` reads the structured output from.
    let (mut config, mut format): (Option<Option<u64>>, Option<u64>) = (None, None);
    w.object(|w, key| {
        if key.is("system") {
            system = w.system()?;
        } else if key.is("messages") {
            messages = 0;
            w.array(|w| {
                messages += w.turn()?;
                Ok(())
            })?;
        } else if key.is("tools") {
            tools = 0;
            w.array(|w| {
                tools += w.anthropic_tool()?;
                Ok(())
            })?;
        } else if key.is("output_config") {
            config = if w.p.peek() == Some(b'n') {
                w.p.skip()?;
                None
            } else {
                let mut schema = None;
                w.object(|w, key| {
                    if key.is("format") {
                        schema = w.output_schema()?;
                        Ok(())
                    } else {
                        w.p.skip()
                    }
                })?;
                Some(schema)
            };
        } else if key.is("output_format") {
            format = w.output_schema()?;
        } else {
            w.p.skip()?;
        }
        Ok(())
    })?;
    w.p.finish()?;
    let schema = config.unwrap_or(format).map_or(0, json_schema_millitokens);
    Ok(round_tokens(
        REPLY_PRIMING_MILLI + system + messages + tools + schema,
    ))
}

/// `json({"name": "response", "schema": S, "strict": true})` given `json(S)`: the
/// `response_format.json_schema` a structured output becomes.
fn json_schema_millitokens(schema: u64) -> u64 {
    let member = |key: &str, value: u64| text_millitokens(key) + 1000 + value;
    1000 + member("name", text_millitokens("response") + 1000)
        + member("schema", schema)
        + member("strict", 1000)
}

/// What one turn's `content` adds, apart from the turn's own role.
#[derive(Default)]
struct TurnContent {
    /// The turn's own message: its parts and tool calls.
    own: u64,
    /// The tool messages its `tool_result` blocks become, framing and role included.
    results: u64,
    /// Whether it is an array whose blocks are all `tool_result` (a user turn's own
    /// message is then no message).
    only_results: bool,
}

/// What an Anthropic content block is to the estimate, by its `type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A tool call of the turn's message.
    ToolUse,
    /// A tool message of its own.
    ToolResult,
    /// An image part.
    Image,
    /// A part that counts its `text` (text blocks; thinking blocks have none).
    Other,
}

impl Walk<'_> {
    /// The system message: none for an empty string or array (`parse_anthropic_request`
    /// makes none), else framing, `"system"` and its text or parts.
    fn system(&mut self) -> Result<u64> {
        let (content, any) = match self.p.peek() {
            Some(b'"') => match self.string()? {
                Some(s) if !s.raw().is_empty() => (self.millitokens(&s), true),
                _ => (0, false),
            },
            Some(b'[') => self.parts()?,
            _ => (self.p.skip().map(|()| 0)?, false),
        };
        Ok(if any {
            PER_MESSAGE_MILLI + text_millitokens("system") + content
        } else {
            0
        })
    }

    /// The parts of an array of blocks (a text block its `text`, an image block
    /// [`IMAGE_TOKENS`]) and whether there is any; a string's text; 0 for anything else.
    fn parts(&mut self) -> Result<(u64, bool)> {
        if self.p.peek() == Some(b'"') {
            return Ok((self.text()?.unwrap_or(0), true));
        }
        let (mut t, mut any) = (0, false);
        self.array(|w| {
            any = true;
            let (mut text, mut image) = (None, false);
            w.object(|w, key| {
                if key.is("text") {
                    text = w.text()?;
                } else if key.is("type") {
                    image = w.string()?.is_some_and(|s| s.is("image"));
                } else {
                    w.p.skip()?;
                }
                Ok(())
            })?;
            t += if image {
                IMAGE_TOKENS * 1000
            } else {
                text.unwrap_or(0)
            };
            Ok(())
        })?;
        Ok((t, any))
    }

    /// One entry of `messages`: the tool messages of its tool results, then its own
    /// message (framing, role as spelled, parts, tool calls) unless it is a user turn of
    /// tool results alone.
    fn turn(&mut self) -> Result<u64> {
        let (mut role, mut user) = (0, false);
        let mut content = TurnContent::default();
        self.object(|w, key| {
            if key.is("role") {
                (role, user) = match w.string()? {
                    Some(s) => (w.millitokens(&s), s.is("user")),
                    None => (0, false),
                };
            } else if key.is("content") {
                content = w.turn_content()?;
            } else {
                w.p.skip()?;
            }
            Ok(())
        })?;
        let own = if user && content.only_results {
            0
        } else {
            PER_MESSAGE_MILLI + role + content.own
        };
        Ok(content.results + own)
    }

    fn turn_content(&mut self) -> Result<TurnContent> {
        let mut c = TurnContent::default();
        match self.p.peek() {
            Some(b'"') => c.own = self.text()?.unwrap_or(0),
            Some(b'[') => {
                c.only_results = true;
                self.array(|w| {
                    let (kind, cost) = w.block()?;
                    c.only_results &= kind == Block::ToolResult;
                    if kind == Block::ToolResult {
                        c.results += cost;
                    } else {
                        c.own += cost;
                    }
                    Ok(())
                })?;
            }
            _ => self.p.skip()?,
        }
        Ok(c)
    }

    /// One content block of a turn: its kind and what it adds (a tool call's `3 + name +
    /// arguments`, a tool message's `3 + "tool" + content`, a part's text or image).
    fn block(&mut self) -> Result<(Block, u64)> {
        let mut kind = Block::Other;
        let (mut text, mut name, mut input, mut content) = (None, 0, None, 0);
        self.object(|w, key| {
            if key.is("type") {
                kind = match w.string()? {
                    Some(s) if s.is("tool_use") => Block::ToolUse,
                    Some(s) if s.is("tool_result") => Block::ToolResult,
                    Some(s) if s.is("image") => Block::Image,
                    _ => Block::Other,
                };
            } else if key.is("text") {
                text = w.text()?;
            } else if key.is("name") {
                name = w.text()?.unwrap_or(0);
            } else if key.is("input") {
                input = Some(w.arguments()?);
            } else if key.is("content") {
                content = w.parts()?.0;
            } else {
                w.p.skip()?;
            }
            Ok(())
        })?;
        Ok((
            kind,
            match kind {
                // `input` absent is `{}` to the parser.
                Block::ToolUse => 3000 + name + input.unwrap_or_else(|| text_millitokens("{}")),
                Block::ToolResult => PER_MESSAGE_MILLI + text_millitokens("tool") + content,
                Block::Image => IMAGE_TOKENS * 1000,
                Block::Other => text.unwrap_or(0),
            },
        ))
    }

    /// Milli-tokens of the value at the cursor written as a tool call's `arguments`:
    /// `orjson.dumps` of it, what `parse_anthropic_request` makes of a `tool_use` input.
    fn arguments(&mut self) -> Result<u64> {
        let mut out = Vec::new();
        write_compact(&mut self.p, &mut out)?;
        // Every byte written is ASCII or a whole UTF-8 character of a string.
        Ok(text_millitokens(&String::from_utf8_lossy(&out)))
    }

    /// A tool definition: `8 + name + description + json(input_schema)`.
    fn anthropic_tool(&mut self) -> Result<u64> {
        Ok(8000 + self.function("input_schema")?)
    }

    /// `json(schema)` of a structured output's spec (`{"type": "json_schema", "schema"}`)
    /// when it is an object with a `schema`; `None` otherwise.
    fn output_schema(&mut self) -> Result<Option<u64>> {
        let mut schema = None;
        self.object(|w, key| {
            if key.is("schema") {
                schema = Some(w.json()?);
                Ok(())
            } else {
                w.p.skip()
            }
        })?;
        Ok(schema)
    }
}

/// The milli-tokens [`estimate_anthropic_tokens`] counts for a body's `tools` member of
/// value `value` (its JSON text): what an agent's tools add to its turn's estimate
/// (`crate::anthropic_turn` keeps it by the text, as agents send the same tools with
/// every turn).
pub fn anthropic_tools_millitokens(value: &str) -> Result<u64> {
    let mut w = Walk::of(value);
    let mut tools = 0;
    w.array(|w| {
        tools += w.anthropic_tool()?;
        Ok(())
    })?;
    w.p.finish()?;
    Ok(tools)
}

/// `orjson.dumps(orjson.loads(value)).decode()` of the JSON value at the cursor (a
/// `tool_use` block's `input`, which `parse_anthropic_request` makes a tool call's
/// arguments of), written as [`write_compact`] writes it; `None`, the cursor anywhere,
/// for a value that is not JSON (a number past a float's range among them, as to orjson).
pub(crate) fn orjson_text(p: &mut Parser<'_>) -> Option<String> {
    let mut out = Vec::new();
    write_compact(p, &mut out).ok()?;
    // Every byte written is ASCII or a whole UTF-8 character of a string.
    String::from_utf8(out).ok()
}

/// Append the value at the cursor as `orjson.dumps(orjson.loads(value))` writes it:
/// compact, an object's keys in the order they first appear with the last value of a
/// repeated one (a Python dict's), strings escaped as `serde_json` escapes, an integer
/// as written (`-0` as `0`), any other number as the shortest text of the float it
/// reads as (an integer past 64 bits too, as orjson reads it; one past a float's range
/// is not JSON to the reader, nor to orjson).
fn write_compact(p: &mut Parser<'_>, out: &mut Vec<u8>) -> Result<()> {
    match p.peek() {
        Some(b'{') => {
            p.enter()?;
            let mut members = Members::default();
            if !p.empty(b'}') {
                loop {
                    let key = p.key()?;
                    let mut member = Vec::new();
                    key.write_json(&mut member);
                    member.push(b':');
                    write_compact(p, &mut member)?;
                    members.set(key, member);
                    if !p.next_or_close(b'}')? {
                        break;
                    }
                }
            }
            p.leave();
            out.push(b'{');
            for (i, (_, member)) in members.list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(member);
            }
            out.push(b'}');
        }
        Some(b'[') => {
            p.enter()?;
            out.push(b'[');
            if !p.empty(b']') {
                loop {
                    write_compact(p, out)?;
                    if !p.next_or_close(b']')? {
                        break;
                    }
                    out.push(b',');
                }
            }
            p.leave();
            out.push(b']');
        }
        _ => {
            let start = p.i;
            match p.value()? {
                Value::Str(s) => s.write_json(out),
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
                Value::Int(i) => write_int(i.into(), out),
                Value::UInt(u) => write_int(u.into(), out),
                // `-0` is the integer 0 to orjson (an integer past 64 bits is a float to
                // both).
                Value::Float(_) if p.input()[start..p.i].trim_ascii() == b"-0" => out.push(b'0'),
                Value::Float(f) => write_float(f, out),
                Value::Arr(_) | Value::Obj(_) => unreachable!("read above"),
            }
        }
    }
    Ok(())
}

/// An object's members as written, by key: first-appearance order, last value.
#[derive(Default)]
struct Members<'a> {
    list: Vec<(JStr<'a>, Vec<u8>)>,
    /// Index of each decoded key in `list`, once there are more than a few (a body
    /// with many keys must not cost a scan per key).
    index: Option<HashMap<String, usize>>,
}

impl<'a> Members<'a> {
    const SCAN: usize = 16;

    fn set(&mut self, key: JStr<'a>, member: Vec<u8>) {
        let found = match &mut self.index {
            Some(index) => index.get(key.text().as_ref()).copied(),
            None => self.list.iter().position(|(k, _)| same(k, &key)),
        };
        if let Some(i) = found {
            self.list[i].1 = member;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.text().into_owned(), self.list.len());
        }
        self.list.push((key, member));
        if self.index.is_none() && self.list.len() > Self::SCAN {
            let index = self.list.iter().enumerate();
            self.index = Some(
                index
                    .map(|(i, (k, _))| (k.text().into_owned(), i))
                    .collect(),
            );
        }
    }
}

fn same(a: &JStr<'_>, b: &JStr<'_>) -> bool {
    if a.esc() == Esc::None && b.esc() == Esc::None {
        a.raw() == b.raw()
    } else {
        a.text() == b.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::estimate_tokens;

    fn anthropic(body: &str) -> u64 {
        estimate_anthropic_tokens(body.as_bytes()).unwrap()
    }

    fn openai(body: &str) -> u64 {
        estimate_tokens(body.as_bytes()).unwrap()
    }

    fn compact(value: &str) -> String {
        let mut out = Vec::new();
        let mut p = Parser::of_str(value);
        write_compact(&mut p, &mut out).unwrap();
        p.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Each Anthropic body estimates as the chat-completions body written by hand from
    /// the rule (`crate::tokens`'s documentation).
    #[test]
    fn counts_the_equivalent_chat_body() {
        let long = "You answer questions about card fees, briefly. ".repeat(80);
        for (body, chat) in [
            // No system prompt: as estimate_tokens already counted it.
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi there"}]}"#,
                r#"{"messages":[{"role":"user","content":"hi there"}]}"#,
            ),
            (
                &format!(r#"{{"system":"{long}","messages":[{{"role":"user","content":"hi"}}]}}"#),
                &format!(
                    r#"{{"messages":[{{"role":"system","content":"{long}"}},{{"role":"user","content":"hi"}}]}}"#
                ),
            ),
            (
                r#"{"system":[{"type":"text","text":"a\nb"},{"type":"text","text":"c","cache_control":{}}],
                "messages":[{"role":"user","content":[{"type":"text","text":"x"},
                {"type":"image","source":{"type":"url","url":"https://x.test/a.png"}}]}]}"#,
                r#"{"messages":[{"role":"system","content":[{"text":"a\nb"},{"text":"c"}]},
                {"role":"user","content":[{"text":"x"},{"type":"image_url"}]}]}"#,
            ),
            (r#"{"system":"","messages":[]}"#, r#"{"messages":[]}"#),
            (r#"{"system":[],"messages":[]}"#, r#"{"messages":[]}"#),
            (r#"{"system":null}"#, "{}"),
            // A tool call, its result, more text; a thinking block counts nothing.
            (
                r#"{"messages":[{"role":"user","content":"weather in Paris?"},
                {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},
                {"type":"text","text":"Looking."},
                {"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris","days":[1, 2],"x":-0}},
                {"type":"tool_use","id":"t2","name":"now"}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"18C"},
                {"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"noon"},{"type":"text","text":"UTC"}],"is_error":true},
                {"type":"text","text":"and tomorrow?"}]},
                {"role":"user","content":[{"tool_use_id":"t3","type":"tool_result"}]}]}"#,
                r#"{"messages":[{"role":"user","content":"weather in Paris?"},
                {"role":"assistant","content":[{"text":"Looking."}],"tool_calls":[
                {"function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"days\":[1,2],\"x\":0}"}},
                {"function":{"name":"now","arguments":"{}"}}]},
                {"role":"tool","content":"18C"},
                {"role":"tool","content":[{"text":"noon"},{"text":"UTC"}]},
                {"role":"user","content":[{"text":"and tomorrow?"}]},
                {"role":"tool"}]}"#,
            ),
            // Tools, and a structured output from output_config before output_format.
            (
                r#"{"tools":[{"name":"get_weather","description":"The weather.","input_schema":
                {"type":"object","properties":{"city":{"type":"string"}}},"cache_control":{}}],
                "tool_choice":{"type":"auto"},"response_format":{"json_schema":{"a":1}},
                "output_format":{"type":"json_schema","schema":{"b":[true]}},
                "output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}}"#,
                r#"{"tools":[{"function":{"name":"get_weather","description":"The weather.","parameters":
                {"type":"object","properties":{"city":{"type":"string"}}}}}],
                "response_format":{"json_schema":{"name":"response","schema":{"type":"object"},"strict":true}}}"#,
            ),
            (
                r#"{"output_config":null,"output_format":{"schema":{"b":[true]}}}"#,
                r#"{"response_format":{"json_schema":{"name":"response","schema":{"b":[true]},"strict":true}}}"#,
            ),
            (
                r#"{"output_config":{"effort":"low"},"output_format":{"schema":{"b":[true]}}}"#,
                "{}",
            ),
        ] {
            assert_eq!(anthropic(body), openai(chat), "{body}");
        }
    }

    /// The counts the rule gives, against the chat estimate's own overheads.
    #[test]
    fn counts_known_answers() {
        // Milli-tokens: 3000 priming; 3000 framing + 1100 "user" + 2250 "hello world".
        let user = r#"{"role":"user","content":"hello world"}"#;
        assert_eq!(anthropic(&format!(r#"{{"messages":[{user}]}}"#)), 9);
        // The system prompt adds 3000 framing + 1200 "system" + 2250: 15 800 in all.
        let with_system = format!(r#"{{"system":"hello world","messages":[{user}]}}"#);
        assert_eq!(anthropic(&with_system), 16);
        assert!(estimate_anthropic_tokens(b"[]").is_err());
        assert!(estimate_anthropic_tokens(b"{").is_err());
        assert!(estimate_anthropic_tokens(br#"{"messages":[1]} x"#).is_err());
    }

    /// Tool inputs are written as `orjson.dumps` writes what `orjson.loads` read.
    #[test]
    fn writes_inputs_as_orjson_does() {
        for (input, written) in [
            (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
            (r#" { "a" : [ 1 , { } , [ ] ] } "#, r#"{"a":[1,{},[]]}"#),
            ("-0", "0"),
            ("-0.0", "-0.0"),
            ("0e0", "0.0"),
            ("1E5", "100000.0"),
            ("1e16", "1e+16"),
            ("1.0", "1.0"),
            ("0.1e1", "1.0"),
            ("1e-7", "1e-7"),
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            ("-9223372036854775809", "-9.223372036854776e+18"),
            (r#""\u00e9\/\u001F\u007f""#, "\"é/\\u001f\u{7f}\""),
            (r#"[true,false,null,"x\n"]"#, r#"[true,false,null,"x\n"]"#),
            (r#"{"\u0061":1,"a":2}"#, r#"{"a":2}"#),
        ] {
            assert_eq!(compact(input), written, "{input}");
        }
        // Many keys: the index keeps first-appearance order and the last values.
        let keys: Vec<String> = (0..40).map(|i| format!(r#""k{}":{i}"#, i % 25)).collect();
        let want: Vec<String> = (0..25)
            .map(|i| format!(r#""k{i}":{}"#, if i < 15 { i + 25 } else { i }))
            .collect();
        assert_eq!(
            compact(&format!("{{{}}}", keys.join(","))),
            format!("{{{}}}", want.join(","))
        );
    }

    /// Mutations of Anthropic bodies: an estimate exactly when the body is a JSON object
    /// (as `estimate_tokens` gives one), never a panic.
    #[test]
    fn mutated_bodies_never_panic() {
        const SEEDS: &[&str] = &[
            r#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"S \u00e9"}],
            "messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f",
            "input":{"a":[1,-0,2.5e3,{"b":"c"}],"a":null}}]},{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]},
            {"type":"image","source":{}}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],
            "output_config":{"format":{"type":"json_schema","schema":{"x":1}}}}"#,
            r#"{"system":"s","messages":[{"role":"user","content":"q"}],"output_format":{"schema":{}}}"#,
        ];
        let mut ok = 0;
        for (round, body) in
            crate::mutate::mutated_bodies(SEEDS, 20_000, 0x7a11_ce55, crate::mutate::ALPHABET)
        {
            let ours = estimate_anthropic_tokens(&body);
            assert!(round >= SEEDS.len() || ours.is_ok(), "seed {round}");
            assert_eq!(ours.is_ok(), estimate_tokens(&body).is_ok());
            ok += usize::from(ours.is_ok());
        }
        assert!(ok > 2_000, "{ok}");
    }
}
