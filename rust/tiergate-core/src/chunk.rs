//! One event of an `OpenAI` chat-completions stream read for the relay ([`crate::relay`]):
//! only the members it needs, straight from the event's text, nothing built.
//!
//! The rules are `OpenAIStreamParser.feed`'s (Python, `providers/openai.py`), which reads
//! the event through `orjson.loads`: a repeated key means its last value; a member is
//! used when truthy; a truthy member of a type the parser cannot use is a malformed chunk
//! (named by the first such field in the order the parser reads them: model, usage,
//! choices); an `error` member anywhere makes the event an error object; an invalid event
//! is not JSON, whatever it held before the fault.
//!
//! Two readers keep those rules. The common event (each watched key once, every value of
//! its expected type) is read in one pass that applies what it reads as it goes
//! ([`one_pass`]); anything else makes it give up, undo what it applied, and leave the
//! event to [`two_pass`], which first checks the whole event and notes where the watched
//! members are, then reads them in the parser's order. The relay's tree-building reader
//! cost ~5k instructions an event; one pass costs a fraction.
//!
//! The events of one stream repeat their leading members byte for byte (`id`, `object`,
//! `created`, `model`, a fingerprint): the one-pass reader keeps the last event's
//! [`Head`] and, when an event starts with the same bytes, resumes after them instead
//! of reading them again (about half of an event's reading).

use std::borrow::Cow;

use crate::rawjson::{Esc, JStr, Parser, Value};
use crate::relay::Usage;
use crate::CoreError;

/// A delta parsed and not yet rendered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delta {
    Text(String),
    Tool {
        /// As the wire gave it; `None` when absent or null (see [`ToolSlots`]).
        index: Option<i64>,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    End,
}

/// Why an event is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    NotJson,
    NotObject,
    ErrorObject,
    /// A field had a type the protocol does not allow (its name).
    Shape(&'static str),
}

/// Which call a tool-call delta belongs to when the provider leaves its `index` out or
/// null (Gemini's and Ollama's OpenAI-compatible streams, `SGLang`, `mistral.rs`): the call
/// its `id` opened, a new call for an `id` not seen before, else the call the last delta
/// was about (a later piece of its arguments). Deltas with an index keep it. The rule is
/// `OpenAIStreamParser._place`'s (Python); one per stream.
#[derive(Debug, Default)]
pub(crate) struct ToolSlots {
    ids: Vec<(String, i64)>,
    last: Option<i64>,
    next: i64,
}

impl ToolSlots {
    pub(crate) fn place(&mut self, index: Option<i64>, id: Option<&str>) -> i64 {
        let id = id.filter(|id| !id.is_empty());
        let known = id.and_then(|id| self.ids.iter().find(|(k, _)| k == id).map(|&(_, i)| i));
        let index = match (index, id) {
            (Some(i), _) => i,
            (None, Some(_)) => known.unwrap_or(self.next),
            (None, None) => self.last.unwrap_or(self.next),
        };
        if let (Some(id), None) = (id, known) {
            self.ids.push((id.to_owned(), index));
        }
        self.last = Some(index);
        self.next = self.next.max(index.saturating_add(1));
        index
    }
}

/// What one event says besides its deltas (each `None` when it says nothing of it).
#[derive(Debug, Default)]
pub(crate) struct Said<'a> {
    pub model: Option<Cow<'a, str>>,
    pub usage: Option<Usage>,
    pub finish: Option<Cow<'a, str>>,
}

/// The leading members of the last event read in one pass, up to the first `choices`,
/// `usage` or `error` member: their bytes, which watched keys they held, and where the
/// `model` string is. Any event starting with these bytes reads them as that event did,
/// so the reader resumes after them: what they say is taken from the new event's own
/// bytes at the same places, and a value cut short by the resumption (a number going on
/// past the head's end) fails the next step and leaves the event to the two passes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head {
    bytes: Vec<u8>,
    seen: u32,
    /// The `model` member's string value (its quotes and escape class), when a string.
    model: Option<(usize, usize, Esc)>,
}

/// The event `text`: its deltas appended to `deltas`, its refusal pieces to `refusal`,
/// the rest returned. A refused event appends nothing. `head` is the last event's
/// (see [`Head`]); this one's replaces it when it is read in one pass.
pub(crate) fn read<'a>(
    text: &'a str,
    deltas: &mut Vec<Delta>,
    refusal: &mut String,
    head: &mut Head,
) -> Result<Said<'a>, Refused> {
    let mut p = Parser::of_str(text);
    if p.peek() != Some(b'{') {
        return Err(match p.skip().and_then(|()| p.finish()) {
            Ok(()) => Refused::NotObject,
            Err(_) => Refused::NotJson,
        });
    }
    let marks = (deltas.len(), refusal.len());
    let mut said = Said::default();
    let mut out = Out {
        deltas,
        refusal,
        said: &mut said,
    };
    if one_pass(&mut p, &mut out, head).is_ok() {
        return Ok(said);
    }
    out.deltas.truncate(marks.0);
    out.refusal.truncate(marks.1);
    *out.said = Said::default();
    let read = two_pass(&Parser::of_str(text), &mut out);
    if read.is_err() {
        out.deltas.truncate(marks.0);
        out.refusal.truncate(marks.1);
    }
    read.map(|()| said)
}

/// Where a reader puts what it read.
struct Out<'o, 'a> {
    deltas: &'o mut Vec<Delta>,
    refusal: &'o mut String,
    said: &'o mut Said<'a>,
}

/// A member's value as a reader met it: scalars read (nothing allocated), arrays and
/// objects checked and stepped over, kept as where they open.
#[derive(Clone, Copy)]
enum Item<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(JStr<'a>),
    /// The array opening at this byte, and whether it is empty.
    Arr(usize, bool),
    /// The object opening at this byte, and whether it is empty.
    Obj(usize, bool),
}

impl Item<'_> {
    /// Python truthiness (what `obj.get(key) or default` tests).
    fn truthy(self) -> bool {
        match self {
            Item::Null => false,
            Item::Bool(b) => b,
            Item::Int(i) => i != 0,
            Item::UInt(u) => u != 0,
            Item::Float(f) => f != 0.0,
            Item::Str(s) => !s.raw().is_empty(),
            Item::Arr(_, empty) | Item::Obj(_, empty) => !empty,
        }
    }

    /// Python's `value != 0` is false: 0, 0.0, false.
    fn is_zero(self) -> bool {
        match self {
            Item::Int(i) => i == 0,
            Item::Float(f) => f == 0.0,
            Item::Bool(b) => !b,
            _ => false,
        }
    }
}

/// The value at the cursor as an [`Item`]; the cursor moves past it.
fn item<'a>(p: &mut Parser<'a>) -> crate::Result<Item<'a>> {
    let at = p.i;
    let close = match p.peek() {
        Some(b'[') => b']',
        Some(b'{') => b'}',
        // Strings and literals without building a `Value` (whose drop is not free).
        Some(b'"') => {
            // As `Parser::string`, inline (the scan is always inlined, `string` a call).
            let q = p.i;
            p.i += 1;
            let (close, esc) = p.scan::<false, false>(&mut Vec::new(), &mut String::new())?;
            return Ok(Item::Str(p.jstr(q, close, esc)));
        }
        Some(b'n') => return p.expect(b"null").map(|()| Item::Null),
        Some(b't') => return p.expect(b"true").map(|()| Item::Bool(true)),
        Some(b'f') => return p.expect(b"false").map(|()| Item::Bool(false)),
        _ => {
            return Ok(match p.value()? {
                Value::Int(i) => Item::Int(i),
                Value::UInt(u) => Item::UInt(u),
                Value::Float(f) => Item::Float(f),
                // Only numbers are left.
                _ => Item::Null,
            });
        }
    };
    p.skip()?;
    let first = p.input()[at + 1..]
        .iter()
        .find(|c| !matches!(c, b' ' | b'\n' | b'\t' | b'\r'));
    let empty = first == Some(&close);
    Ok(if close == b']' {
        Item::Arr(at, empty)
    } else {
        Item::Obj(at, empty)
    })
}

/// Which of `keys` the key is: plain keys by length and first byte before the bytes (no
/// `memcmp` call for the usual misses), escaped ones decoded.
#[inline]
fn key_index(key: JStr<'_>, keys: &[&str]) -> Option<usize> {
    if key.esc() != Esc::None {
        return keys.iter().position(|k| key.is(k));
    }
    let raw = key.raw().as_bytes();
    keys.iter().position(|k| {
        let k = k.as_bytes();
        k.len() == raw.len() && k.first() == raw.first() && k == raw
    })
}

/// A truthy string's text; `None` when falsy; `bad` when truthy and not a string.
fn text_of<E>(v: Item<'_>, bad: E) -> Result<Option<Cow<'_, str>>, E> {
    match v {
        Item::Str(s) if !s.raw().is_empty() => Ok(Some(s.text())),
        v if v.truthy() => Err(bad),
        _ => Ok(None),
    }
}

/// `null` or a string (what `is not None` tests), else `bad`.
fn opt_text_of<E>(v: Item<'_>, bad: E) -> Result<Option<String>, E> {
    match v {
        Item::Null => Ok(None),
        Item::Str(s) => Ok(Some(s.text().into_owned())),
        _ => Err(bad),
    }
}

/// `usage_openai`'s `_int`: an integer, else 0 (booleans and huge integers refused).
fn count_of<E>(v: Item<'_>, bad: E) -> Result<i64, E> {
    match v {
        Item::Int(i) => Ok(i),
        Item::Bool(_) | Item::UInt(_) => Err(bad),
        _ => Ok(0),
    }
}

// --- one pass -------------------------------------------------------------------------

/// The one-pass reader gave up: the event is for [`two_pass`].
struct GiveUp;

impl From<CoreError> for GiveUp {
    fn from(_: CoreError) -> Self {
        GiveUp
    }
}

type One<T> = Result<T, GiveUp>;

/// The members of the object at the cursor, each handed to `member` with its key's
/// index in `keys` (others are stepped over); a key of `keys` met twice gives up.
fn walk<'a, const N: usize>(
    p: &mut Parser<'a>,
    keys: [&str; N],
    mut member: impl FnMut(&mut Parser<'a>, usize) -> One<()>,
) -> One<()> {
    let mut seen = 0u32;
    p.enter()?;
    if !p.empty(b'}') {
        loop {
            // The key read inline (`key_span` is always inlined, `key` a call): the
            // one-pass reader's hottest step.
            let (q, close, esc) = p.key_span()?;
            let key = p.jstr(q, close, esc);
            match key_index(key, &keys) {
                Some(j) => {
                    if seen & (1 << j) != 0 {
                        return Err(GiveUp);
                    }
                    seen |= 1 << j;
                    member(p, j)?;
                }
                None => p.skip()?,
            }
            if !p.next_or_close(b'}')? {
                break;
            }
        }
    }
    p.leave();
    Ok(())
}

/// The items of the array at the cursor, each handed to `each`.
fn each_item<'a>(p: &mut Parser<'a>, mut each: impl FnMut(&mut Parser<'a>) -> One<()>) -> One<()> {
    p.enter()?;
    if !p.empty(b']') {
        loop {
            each(p)?;
            if !p.next_or_close(b']')? {
                break;
            }
        }
    }
    p.leave();
    Ok(())
}

/// The common event in one pass, resumed after `head` when it starts with its bytes;
/// `GiveUp` leaves partial output for the caller to undo. The top-level object is
/// [`walk`]ed here by hand, to note where its head ends.
fn one_pass<'a>(p: &mut Parser<'a>, out: &mut Out<'_, 'a>, head: &mut Head) -> One<()> {
    const KEYS: [&str; 4] = ["choices", "model", "usage", "error"];
    let input = p.input();
    let head_len = head.bytes.len();
    let resumed = head_len > 0 && input.get(..head_len) == Some(&head.bytes[..]);
    let mut seen = 0u32;
    // The head so far: where it ends, its keys, its model string.
    let mut in_head = !resumed;
    let (mut head_end, mut head_seen, mut model) = (0, 0, None);
    p.enter()?;
    let more = if resumed {
        p.i = head_len;
        seen = head.seen;
        if let Some((q, close, esc)) = head.model {
            out.said.model = text_of(Item::Str(p.jstr(q, close, esc)), GiveUp)?;
        }
        p.next_or_close(b'}')?
    } else {
        !p.empty(b'}')
    };
    if more {
        loop {
            let (q, close, esc) = p.key_span()?;
            let j = key_index(p.jstr(q, close, esc), &KEYS);
            match j {
                Some(j) => {
                    if seen & (1 << j) != 0 {
                        return Err(GiveUp);
                    }
                    seen |= 1 << j;
                    match j {
                        0 => {
                            in_head = false;
                            match p.peek() {
                                Some(b'[') => each_item(p, |p| one_choice(p, out))?,
                                _ => falsy(p)?,
                            }
                        }
                        1 => {
                            let at = p.i;
                            let value = item(p)?;
                            if let Item::Str(s) = value {
                                model = Some((at, p.i - 1, s.esc()));
                            }
                            out.said.model = text_of(value, GiveUp)?;
                        }
                        2 => {
                            in_head = false;
                            out.said.usage = one_usage(p)?;
                        }
                        _ => return Err(GiveUp),
                    }
                }
                None => p.skip()?,
            }
            if in_head {
                (head_end, head_seen) = (p.i, seen);
            }
            if !p.next_or_close(b'}')? {
                break;
            }
        }
    }
    p.leave();
    p.finish()?;
    if !resumed && head_end > 0 {
        head.bytes.clear();
        head.bytes.extend_from_slice(&input[..head_end]);
        head.seen = head_seen;
        head.model = model.filter(|&(at, _, _)| at < head_end);
    }
    Ok(())
}

/// A value where only a falsy one is usable (a truthy one is a malformed chunk).
fn falsy(p: &mut Parser<'_>) -> One<()> {
    if item(p)?.truthy() {
        Err(GiveUp)
    } else {
        Ok(())
    }
}

/// The `usage` member: `None` when falsy.
fn one_usage(p: &mut Parser<'_>) -> One<Option<Usage>> {
    if p.peek() != Some(b'{') {
        return falsy(p).map(|()| None);
    }
    let at = p.i;
    let mut u = Usage::default();
    walk(
        p,
        [
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        ],
        |p, j| match j {
            0 => count_of(item(p)?, GiveUp).map(|n| u.input_tokens = n),
            1 => count_of(item(p)?, GiveUp).map(|n| u.output_tokens = n),
            2 => one_detail(p, "cached_tokens").map(|n| u.cached_tokens = n),
            _ => one_detail(p, "reasoning_tokens").map(|n| u.reasoning_tokens = n),
        },
    )?;
    // `{}` is falsy: no usage at all.
    let empty = p.input()[at + 1..p.i - 1]
        .iter()
        .all(|c| matches!(c, b' ' | b'\n' | b'\t' | b'\r'));
    Ok((!empty).then_some(u))
}

/// A count inside a details object (0 when the object is falsy or lacks it).
fn one_detail(p: &mut Parser<'_>, key: &'static str) -> One<i64> {
    if p.peek() != Some(b'{') {
        return falsy(p).map(|()| 0);
    }
    let mut n = 0;
    walk(p, [key], |p, _| count_of(item(p)?, GiveUp).map(|c| n = c))?;
    Ok(n)
}

/// One item of `choices`: read as if its index were 0, undone when it is not.
fn one_choice<'a>(p: &mut Parser<'a>, out: &mut Out<'_, 'a>) -> One<()> {
    if p.peek() != Some(b'{') {
        return Err(GiveUp);
    }
    let marks = (out.deltas.len(), out.refusal.len());
    let mut other = false; // the index is known and not 0
    let mut finish = None;
    walk(p, ["index", "delta", "finish_reason"], |p, j| {
        if j == 0 {
            other = !item(p)?.is_zero();
            return Ok(());
        }
        if other {
            return p.skip().map_err(GiveUp::from);
        }
        if j == 1 {
            return match p.peek() {
                Some(b'{') => one_delta(p, out),
                _ => falsy(p),
            };
        }
        finish = text_of(item(p)?, GiveUp)?;
        Ok(())
    })?;
    if other {
        out.deltas.truncate(marks.0);
        out.refusal.truncate(marks.1);
    } else if finish.is_some() {
        out.said.finish = finish;
    }
    Ok(())
}

/// A `delta` object: its text, refusal and tool calls, in the parser's order.
fn one_delta(p: &mut Parser<'_>, out: &mut Out<'_, '_>) -> One<()> {
    let mut calls = false; // tool calls were read: a later text would come before them
    walk(p, ["content", "refusal", "tool_calls"], |p, j| match j {
        0 => {
            if let Some(text) = text_of(item(p)?, GiveUp)? {
                if calls {
                    return Err(GiveUp);
                }
                out.deltas.push(Delta::Text(text.into_owned()));
            }
            Ok(())
        }
        1 => {
            if let Some(text) = text_of(item(p)?, GiveUp)? {
                out.refusal.push_str(&text);
            }
            Ok(())
        }
        _ => match p.peek() {
            Some(b'[') => {
                calls = true;
                each_item(p, |p| one_call(p, out.deltas))
            }
            _ => falsy(p),
        },
    })
}

/// One item of `tool_calls`.
fn one_call(p: &mut Parser<'_>, deltas: &mut Vec<Delta>) -> One<()> {
    if p.peek() != Some(b'{') {
        return Err(GiveUp);
    }
    let (mut index, mut id, mut name, mut arguments) = (None, None, None, String::new());
    walk(p, ["index", "id", "function"], |p, j| match j {
        0 => match item(p)? {
            Item::Int(i) => {
                index = Some(i);
                Ok(())
            }
            Item::Null => {
                index = None;
                Ok(())
            }
            _ => Err(GiveUp),
        },
        1 => {
            id = opt_text_of(item(p)?, GiveUp)?;
            Ok(())
        }
        _ => {
            if p.peek() != Some(b'{') {
                return falsy(p);
            }
            walk(p, ["name", "arguments"], |p, j| {
                if j == 0 {
                    name = opt_text_of(item(p)?, GiveUp)?;
                } else if let Some(a) = text_of(item(p)?, GiveUp)? {
                    arguments = a.into_owned();
                }
                Ok(())
            })
        }
    })?;
    deltas.push(Delta::Tool {
        index,
        id,
        name,
        arguments,
    });
    Ok(())
}

// --- two passes -----------------------------------------------------------------------

type Two<T> = Result<T, Refused>;

impl From<CoreError> for Refused {
    fn from(_: CoreError) -> Self {
        Refused::NotJson
    }
}

/// At an object's `{`: the last value of each of `keys`; every other member is checked
/// and stepped over. The cursor moves past the object.
fn members_of<'a, const N: usize>(
    p: &mut Parser<'a>,
    keys: [&str; N],
) -> crate::Result<[Option<Item<'a>>; N]> {
    let mut out = [None; N];
    p.enter()?;
    if !p.empty(b'}') {
        loop {
            let key = p.key()?;
            match key_index(key, &keys) {
                Some(j) => out[j] = Some(item(p)?),
                None => p.skip()?,
            }
            if !p.next_or_close(b'}')? {
                break;
            }
        }
    }
    p.leave();
    Ok(out)
}

/// [`members_of`] the object the first pass found at byte `at`.
fn fields<'a, const N: usize>(
    p: &Parser<'a>,
    at: usize,
    keys: [&str; N],
) -> crate::Result<[Option<Item<'a>>; N]> {
    members_of(&mut p.at(at), keys)
}

/// Each item of the array the first pass found at byte `at`.
fn items<'a>(p: &Parser<'a>, at: usize, mut each: impl FnMut(Item<'a>) -> Two<()>) -> Two<()> {
    let mut q = p.at(at);
    q.enter()?;
    if !q.empty(b']') {
        loop {
            each(item(&mut q)?)?;
            if !q.next_or_close(b']')? {
                break;
            }
        }
    }
    Ok(())
}

/// A member when truthy.
fn truthy(v: Option<Item<'_>>) -> Option<Item<'_>> {
    v.filter(|v| v.truthy())
}

/// A truthy member that must be an object: where it opens.
fn obj_member(v: Option<Item<'_>>, key: &'static str) -> Two<Option<usize>> {
    match truthy(v) {
        None => Ok(None),
        Some(Item::Obj(at, _)) => Ok(Some(at)),
        Some(_) => Err(Refused::Shape(key)),
    }
}

fn text_member<'a>(v: Option<Item<'a>>, key: &'static str) -> Two<Option<Cow<'a, str>>> {
    v.map_or(Ok(None), |v| text_of(v, Refused::Shape(key)))
}

/// A count inside the details object at `at` (0 without one).
fn detail_count(p: &Parser<'_>, at: Option<usize>, key: &'static str) -> Two<i64> {
    let Some(at) = at else {
        return Ok(0);
    };
    let [v] = fields(p, at, [key])?;
    v.map_or(Ok(0), |v| count_of(v, Refused::Shape(key)))
}

/// Any event that is an object, by the parser's rules: the first pass checks it all and
/// notes where the members are, the second reads them in the parser's order.
fn two_pass<'a>(p: &Parser<'a>, out: &mut Out<'_, 'a>) -> Two<()> {
    let mut q = p.at(p.i);
    let [model, usage, choices, error] =
        members_of(&mut q, ["model", "usage", "choices", "error"])?;
    q.finish()?;
    if error.is_some() {
        return Err(Refused::ErrorObject);
    }
    out.said.model = text_member(model, "model")?;
    if let Some(at) = obj_member(usage, "usage")? {
        let [pd, cd, prompt, completion] = fields(
            p,
            at,
            [
                "prompt_tokens_details",
                "completion_tokens_details",
                "prompt_tokens",
                "completion_tokens",
            ],
        )?;
        let pd = obj_member(pd, "prompt_tokens_details")?;
        let cd = obj_member(cd, "completion_tokens_details")?;
        let count =
            |v: Option<Item<'_>>, key| v.map_or(Ok(0), |v| count_of(v, Refused::Shape(key)));
        out.said.usage = Some(Usage {
            input_tokens: count(prompt, "prompt_tokens")?,
            output_tokens: count(completion, "completion_tokens")?,
            cached_tokens: detail_count(p, pd, "cached_tokens")?,
            reasoning_tokens: detail_count(p, cd, "reasoning_tokens")?,
        });
    }
    let Some(choices) = truthy(choices) else {
        return Ok(());
    };
    let Item::Arr(at, _) = choices else {
        return Err(Refused::Shape("choices"));
    };
    items(p, at, |choice| {
        let Item::Obj(at, _) = choice else {
            return Err(Refused::Shape("choices"));
        };
        let [index, delta, finish] = fields(p, at, ["index", "delta", "finish_reason"])?;
        if index.is_some_and(|i| !i.is_zero()) {
            return Ok(());
        }
        if let Some(at) = obj_member(delta, "delta")? {
            two_delta(p, at, out)?;
        }
        if let Some(reason) = text_member(finish, "finish_reason")? {
            out.said.finish = Some(reason);
        }
        Ok(())
    })
}

fn two_delta(p: &Parser<'_>, at: usize, out: &mut Out<'_, '_>) -> Two<()> {
    let [content, refusal, calls] = fields(p, at, ["content", "refusal", "tool_calls"])?;
    if let Some(text) = text_member(content, "content")? {
        out.deltas.push(Delta::Text(text.into_owned()));
    }
    if let Some(refusal) = text_member(refusal, "refusal")? {
        out.refusal.push_str(&refusal);
    }
    let Some(calls) = truthy(calls) else {
        return Ok(());
    };
    let Item::Arr(at, _) = calls else {
        return Err(Refused::Shape("tool_calls"));
    };
    items(p, at, |call| {
        let Item::Obj(at, _) = call else {
            return Err(Refused::Shape("tool_calls"));
        };
        let [index, function, id] = fields(p, at, ["index", "function", "id"])?;
        let index = match index {
            None | Some(Item::Null) => None,
            Some(Item::Int(i)) => Some(i),
            Some(_) => return Err(Refused::Shape("index")),
        };
        let opt_text =
            |v: Option<Item<'_>>, key| v.map_or(Ok(None), |v| opt_text_of(v, Refused::Shape(key)));
        let (name, arguments) = match obj_member(function, "function")? {
            Some(at) => {
                let [name, arguments] = fields(p, at, ["name", "arguments"])?;
                (
                    opt_text(name, "name")?,
                    text_member(arguments, "arguments")?
                        .map(Cow::into_owned)
                        .unwrap_or_default(),
                )
            }
            None => (None, String::new()),
        };
        // An id given as a number (some compatible servers) is its decimal text.
        let id = match id {
            Some(Item::Int(i)) => Some(i.to_string()),
            Some(Item::UInt(u)) => Some(u.to_string()),
            id => opt_text(id, "id")?,
        };
        out.deltas.push(Delta::Tool {
            index,
            id,
            name,
            arguments,
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::{mutated_bodies, ALPHABET};

    /// What a reader made of one event, owned, for comparing readers.
    type Outcome = Result<
        (
            Option<String>,
            Option<Usage>,
            Option<String>,
            Vec<Delta>,
            String,
        ),
        Refused,
    >;

    #[test]
    fn tool_slots_place_deltas_without_an_index() {
        let mut s = ToolSlots::default();
        assert_eq!(s.place(None, None), 0); // a first piece: the first call
        assert_eq!(s.place(None, Some("a")), 1); // an id not seen: a new call
        assert_eq!(s.place(None, Some("b")), 2);
        assert_eq!(s.place(None, None), 2); // more of the last
        assert_eq!(s.place(None, Some("a")), 1); // a known id: its call
        assert_eq!(s.place(None, Some("")), 1); // an empty id says nothing
        assert_eq!(s.place(Some(5), Some("c")), 5); // an index is kept
        assert_eq!(s.place(None, Some("d")), 6); // new calls after the highest
        assert_eq!(s.place(None, Some("c")), 5);
        assert_eq!(s.place(Some(i64::MAX), None), i64::MAX);
        assert_eq!(s.place(None, Some("e")), i64::MAX); // saturated, no overflow
    }

    fn fast(text: &str) -> Outcome {
        fast_after(text, &mut Head::default())
    }

    /// [`fast`] with the head a former event left.
    fn fast_after(text: &str, head: &mut Head) -> Outcome {
        let (mut deltas, mut refusal) = (vec![Delta::End], "r".to_owned());
        let said = read(text, &mut deltas, &mut refusal, head);
        let said = said.inspect_err(|_| {
            assert_eq!(
                (deltas.len(), refusal.as_str()),
                (1, "r"),
                "a refused event appended"
            );
        })?;
        Ok((
            said.model.map(Cow::into_owned),
            said.usage,
            said.finish.map(Cow::into_owned),
            deltas,
            refusal,
        ))
    }

    fn truthy<'a>(v: Option<&Value<'a>>) -> Option<Value<'a>> {
        v.filter(|v| v.truthy()).cloned()
    }

    fn obj<'a>(v: Option<&Value<'a>>, key: &'static str) -> Result<Option<Value<'a>>, Refused> {
        match truthy(v) {
            None => Ok(None),
            Some(v @ Value::Obj(_)) => Ok(Some(v)),
            Some(_) => Err(Refused::Shape(key)),
        }
    }

    fn text_m(v: Option<&Value<'_>>, key: &'static str) -> Result<Option<String>, Refused> {
        match truthy(v) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.text().into_owned())),
            Some(_) => Err(Refused::Shape(key)),
        }
    }

    fn opt_text(v: Option<&Value<'_>>, key: &'static str) -> Result<Option<String>, Refused> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.text().into_owned())),
            Some(_) => Err(Refused::Shape(key)),
        }
    }

    fn count(o: Option<&Value<'_>>, key: &'static str) -> Result<i64, Refused> {
        match o.and_then(|o| o.get(key)) {
            Some(Value::Int(i)) => Ok(*i),
            Some(Value::Bool(_) | Value::UInt(_)) => Err(Refused::Shape(key)),
            _ => Ok(0),
        }
    }

    /// The relay's former reader, the oracle: the event built as a tree ([`Value`]),
    /// then read as `OpenAIStreamParser.feed` reads the loaded object.
    fn tree(text: &str) -> Outcome {
        let mut p = Parser::of_str(text);
        if p.peek() != Some(b'{') {
            return Err(match p.skip().and_then(|()| p.finish()) {
                Ok(()) => Refused::NotObject,
                Err(_) => Refused::NotJson,
            });
        }
        let v = Value::parse(text.as_bytes()).map_err(|_| Refused::NotJson)?;
        if v.get("error").is_some() {
            return Err(Refused::ErrorObject);
        }
        let model = text_m(v.get("model"), "model")?;
        let mut usage = None;
        if let Some(u) = obj(v.get("usage"), "usage")? {
            let pd = obj(u.get("prompt_tokens_details"), "prompt_tokens_details")?;
            let cd = obj(
                u.get("completion_tokens_details"),
                "completion_tokens_details",
            )?;
            usage = Some(Usage {
                input_tokens: count(Some(&u), "prompt_tokens")?,
                output_tokens: count(Some(&u), "completion_tokens")?,
                cached_tokens: count(pd.as_ref(), "cached_tokens")?,
                reasoning_tokens: count(cd.as_ref(), "reasoning_tokens")?,
            });
        }
        let (mut finish, mut deltas, mut refusal) = (None, vec![Delta::End], "r".to_owned());
        if let Some(choices) = truthy(v.get("choices")) {
            let Value::Arr(choices) = choices else {
                return Err(Refused::Shape("choices"));
            };
            for choice in &choices {
                if !matches!(choice, Value::Obj(_)) {
                    return Err(Refused::Shape("choices"));
                }
                let zero = |i: &Value<'_>| {
                    matches!(i, Value::Int(0) | Value::Bool(false))
                        || matches!(i, Value::Float(f) if *f == 0.0)
                };
                if choice.get("index").is_some_and(|i| !zero(i)) {
                    continue;
                }
                if let Some(delta) = obj(choice.get("delta"), "delta")? {
                    tree_delta(&delta, &mut deltas, &mut refusal)?;
                }
                if let Some(r) = text_m(choice.get("finish_reason"), "finish_reason")? {
                    finish = Some(r);
                }
            }
        }
        Ok((model, usage, finish, deltas, refusal))
    }

    fn tree_delta(
        delta: &Value<'_>,
        deltas: &mut Vec<Delta>,
        refusal: &mut String,
    ) -> Result<(), Refused> {
        if let Some(t) = text_m(delta.get("content"), "content")? {
            deltas.push(Delta::Text(t));
        }
        if let Some(r) = text_m(delta.get("refusal"), "refusal")? {
            refusal.push_str(&r);
        }
        let Some(calls) = truthy(delta.get("tool_calls")) else {
            return Ok(());
        };
        let Value::Arr(calls) = calls else {
            return Err(Refused::Shape("tool_calls"));
        };
        for call in &calls {
            if !matches!(call, Value::Obj(_)) {
                return Err(Refused::Shape("tool_calls"));
            }
            let index = match call.get("index") {
                None | Some(Value::Null) => None,
                Some(Value::Int(i)) => Some(*i),
                Some(_) => return Err(Refused::Shape("index")),
            };
            let (name, arguments) = match obj(call.get("function"), "function")? {
                Some(f) => (
                    opt_text(f.get("name"), "name")?,
                    text_m(f.get("arguments"), "arguments")?.unwrap_or_default(),
                ),
                None => (None, String::new()),
            };
            let id = match call.get("id") {
                Some(Value::Int(i)) => Some(i.to_string()),
                Some(Value::UInt(u)) => Some(u.to_string()),
                id => opt_text(id, "id")?,
            };
            deltas.push(Delta::Tool {
                index,
                id,
                name,
                arguments,
            });
        }
        Ok(())
    }

    /// Events of every shape the readers tell apart: the wire's usual chunks, members in
    /// other orders, repeated and escaped keys, whitespace, other types at each level.
    const SEEDS: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hel\"lo\n\u00e9"},"finish_reason":null,"logprobs":null}]}"#,
        r#"{"choices":[{"delta":{},"index":0,"finish_reason":"stop"}],"model":"m"}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":60,"completion_tokens":2,"total_tokens":62,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
        r#"{"usage":{},"choices":[{"delta":{"content":"a"},"index":1},{"index":0.0,"delta":{"content":"b","refusal":"no"}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}],"content":"x"}}]}"#,
        r#"{"model":"a","model":"b","choices":[{"delta":{"content":"1","content":"2"}}],"choices":[{"delta":{"content":"3"}}]}"#,
        r#"{"mod\u0065l":"m","ch\u006fices":[{"d\u0065lta":{"c\u006fntent":"t"},"finish_reason":"length"}]}"#,
        r#" { "choices" : [ { "delta" : { "content" : "w" } , "index" : 0 } ] , "usage" : null } "#,
        r#"{"choices":[{"delta":{"content":5}}],"model":7}"#,
        r#"{"choices":{"a":1},"usage":[1],"model":""}"#,
        r#"{"choices":[1,{"delta":"x"}],"usage":{"prompt_tokens":true,"prompt_tokens_details":{"cached_tokens":18446744073709551615}}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":null,"id":3,"function":{"name":1,"arguments":{"a":1}}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":{"index":0}}}],"error":{"message":"x"}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"index":2}],"refusal":["r"]},"finish_reason":false}]}"#,
        r#"{"choices":[{"index":false,"delta":{"content":"z"},"finish_reason":0}],"usage":{"completion_tokens_details":{"reasoning_tokens":-4},"completion_tokens":1.5}}"#,
    ];

    #[test]
    fn both_readers_agree_with_the_tree_reader() {
        // Each mutant is also read after its seed's head (most start with its bytes,
        // and resume after them), and after the head the seed's last event left.
        let mut last: Vec<Head> = SEEDS.iter().map(|_| Head::default()).collect();
        let seeded: Vec<Head> = SEEDS
            .iter()
            .map(|seed| {
                let mut head = Head::default();
                let _ = fast_after(seed, &mut head);
                head
            })
            .collect();
        for (round, body) in mutated_bodies(SEEDS, 200_000, 0x9E37_79B9_7F4A_7C15, ALPHABET) {
            let text = String::from_utf8_lossy(&body);
            let expected = tree(&text);
            assert_eq!(fast(&text), expected, "round {round}: {text}");
            let mut head = seeded[round % SEEDS.len()].clone();
            assert_eq!(
                fast_after(&text, &mut head),
                expected,
                "round {round} after the seed's head: {text}"
            );
            assert_eq!(
                fast_after(&text, &mut last[round % SEEDS.len()]),
                expected,
                "round {round} after the last head: {text}"
            );
        }
    }

    #[test]
    fn a_head_is_resumed_only_where_the_event_reads_the_same() {
        let mut head = Head::default();
        let first = r#"{"id":"a","created":17,"model":"m\u00e9","choices":[]}"#;
        assert_eq!(fast_after(first, &mut head), tree(first));
        assert_eq!(head.bytes, br#"{"id":"a","created":17,"model":"m\u00e9""#);
        for text in [
            // The head, then other members: resumed, the model read from this event.
            r#"{"id":"a","created":17,"model":"m\u00e9","choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9"}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9" , "usage":{"prompt_tokens":2}}"#,
            // Resumed where a value goes on: the number, the model, the object.
            r#"{"id":"a","created":17,"model":"m\u00e9"5,"choices":[]}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9","model":"n"}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9"}}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9""#,
            // Not the head's bytes.
            r#"{"id":"a","created":175,"model":"m\u00e9","choices":[]}"#,
            r#"{"id":"a","created":17,"model":"m\u00e9x","choices":[]}"#,
        ] {
            assert_eq!(fast_after(text, &mut head.clone()), tree(text), "{text}");
        }
        // A number at the head's end that goes on in the next event.
        let mut head = Head::default();
        let first = r#"{"created":1,"choices":[]}"#;
        assert_eq!(fast_after(first, &mut head), tree(first));
        assert_eq!(head.bytes, br#"{"created":1"#);
        for text in [
            r#"{"created":12,"choices":[]}"#,
            r#"{"created":1.5,"choices":[]}"#,
            r#"{"created":1e3}"#,
        ] {
            assert_eq!(fast_after(text, &mut head), tree(text), "{text}");
        }
    }

    #[test]
    fn the_usual_events_take_one_pass() {
        for seed in &SEEDS[..6] {
            // Read twice: the second time after the head the first left.
            let mut head = Head::default();
            for _ in 0..2 {
                let (mut deltas, mut refusal) = (Vec::new(), String::new());
                let mut said = Said::default();
                let mut out = Out {
                    deltas: &mut deltas,
                    refusal: &mut refusal,
                    said: &mut said,
                };
                assert!(
                    one_pass(&mut Parser::of_str(seed), &mut out, &mut head).is_ok(),
                    "{seed}"
                );
            }
        }
        // The wire's usual head: everything before `choices`.
        let mut head = Head::default();
        let _ = fast_after(SEEDS[0], &mut head);
        assert!(SEEDS[0].as_bytes()[head.bytes.len()..].starts_with(br#","choices""#));
    }
}
