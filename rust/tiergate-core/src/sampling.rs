//! The sampling options of a chat body (`temperature`, `top_p`, `stop`, `seed`, `n` and
//! `stream_options`) read from their values with the Python parser's own checks
//! (`server/parse_openai.py`, `server/validate.py`), so that a body carrying them can be
//! read by the core in one pass.
//!
//! Most SDK calls set one or two of these (a temperature, a seed), and a body the core
//! cannot read whole goes through orjson and the Python parser, several times the work.
//! A value the Python parser would refuse, or one it reads in a way not mirrored here
//! (a `seed` of `3.0`, an `n` of `1.0`), gives `None`: the caller leaves the body to
//! the Python parser, which accepts it or names the field.

use crate::rawjson::{Parser, Value};

/// The sampling options as the Python parser reads them; the default is a body with
/// none of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// The stop sequences, empty strings dropped (as `stop_list` does).
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// The options' values as a body has them (absent: `None`; the last of a repeated key).
#[derive(Default)]
pub struct SamplingValues<'a> {
    pub temperature: Option<Value<'a>>,
    pub top_p: Option<Value<'a>>,
    pub stop: Option<Value<'a>>,
    pub seed: Option<Value<'a>>,
    pub n: Option<Value<'a>>,
    pub stream_options: Option<Value<'a>>,
}

impl<'a> SamplingValues<'a> {
    /// Reads the member `name` at the cursor when it is one of the options: `Some(true)`
    /// then, `Some(false)` for any other member (left at the cursor), `None` for a value
    /// that is not JSON.
    pub(crate) fn read_member(&mut self, p: &mut Parser<'a>, name: &str) -> Option<bool> {
        let slot = match name {
            "temperature" => &mut self.temperature,
            "top_p" => &mut self.top_p,
            "stop" => &mut self.stop,
            "seed" => &mut self.seed,
            "n" => &mut self.n,
            "stream_options" => &mut self.stream_options,
            _ => return Some(false),
        };
        *slot = Some(p.value().ok()?);
        Some(true)
    }

    /// Whether the idempotency key's canonical form holds an option that [`Sampling`]
    /// cannot write back: a `stop` holding an empty string (which `stop` drops, and the
    /// form keeps). The others it can: `temperature`, `top_p` and `seed` as read, `stop`
    /// as its list, `n` only when 1 or `null`, which the form drops, and
    /// `stream_options`, a transport field, never in it.
    pub fn keyed(&self) -> bool {
        let empty = |v: &Value<'_>| matches!(v, Value::Str(s) if s.raw().is_empty());
        match &self.stop {
            Some(Value::Arr(items)) => items.iter().any(empty),
            Some(v) => empty(v),
            None => false,
        }
    }

    /// The options read, or `None` when the Python parser must read them.
    pub fn read(&self) -> Option<Sampling> {
        match &self.n {
            None | Some(Value::Null | Value::Int(1)) => {}
            Some(_) => return None,
        }
        Some(Sampling {
            temperature: number(self.temperature.as_ref(), 2.0)?,
            top_p: number(self.top_p.as_ref(), 1.0)?,
            stop: stop_list(self.stop.as_ref(), 4)?,
            seed: match &self.seed {
                None | Some(Value::Null) => None,
                Some(Value::Int(i)) => Some(*i),
                Some(_) => return None,
            },
            include_usage: include_usage(self.stream_options.as_ref())?,
        })
    }
}

/// A number in `[0, high]` as `opt_number` reads it (an integer or a float, not a
/// boolean); `Some(None)` when absent or `null`, `None` for anything else. A negative
/// zero is left to Python: the reader gives `-0` as a float (`-0.0`), which Python reads
/// as the integer 0, and the provider would be sent `-0.0` for `0.0`.
#[allow(clippy::option_option)] // outer: read here or not; inner: the value
#[allow(clippy::cast_precision_loss)] // integers in [0, 2] only
pub(crate) fn number(v: Option<&Value<'_>>, high: f64) -> Option<Option<f64>> {
    let x = match v {
        None | Some(Value::Null) => return Some(None),
        Some(Value::Int(i)) if (0..=2).contains(i) => *i as f64,
        Some(Value::Float(f)) if !(*f == 0.0 && f.is_sign_negative()) => *f,
        Some(_) => return None,
    };
    (0.0..=high).contains(&x).then_some(Some(x))
}

/// Stop sequences as `stop_list(value, limit)` reads them: a string, or an array of at
/// most `limit` strings, empty ones dropped.
pub(crate) fn stop_list(v: Option<&Value<'_>>, limit: usize) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Str(s)) if s.raw().is_empty() => Some(Vec::new()),
        Some(Value::Str(s)) => Some(vec![s.text().into_owned()]),
        Some(Value::Arr(items)) if items.len() <= limit => items
            .iter()
            .filter_map(|item| match item {
                Value::Str(s) if s.raw().is_empty() => None,
                Value::Str(s) => Some(Some(s.text().into_owned())),
                _ => Some(None),
            })
            .collect(),
        Some(_) => None,
    }
}

/// `stream_options.include_usage` as `_include_usage` reads it: the object's last
/// `include_usage`, a boolean or `null`; other members ignored.
fn include_usage(v: Option<&Value<'_>>) -> Option<bool> {
    match v {
        None | Some(Value::Null) => Some(false),
        Some(Value::Obj(members)) => {
            // Members are sorted, a repeated key's last value kept (see `rawjson::Value`).
            match members.iter().find(|m| m.key == "include_usage") {
                None => Some(false),
                Some(m) => match m.value {
                    Value::Null => Some(false),
                    Value::Bool(b) => Some(b),
                    _ => None,
                },
            }
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options of the body's members, as a reader collects them.
    fn read(body: &str) -> Option<Sampling> {
        let mut values = SamplingValues::default();
        let mut p = Parser::of_str(body);
        p.each_member(|p, name| {
            if !values.read_member(p, name)? {
                p.skip().ok()?;
            }
            Some(())
        })?;
        values.read()
    }

    #[test]
    fn reads_what_the_python_parser_accepts() {
        assert_eq!(read("{}"), Some(Sampling::default()));
        let s = read(
            r#"{"temperature":0.7,"top_p":1,"stop":["\n","","END"],"seed":-3,"n":1,
                "stream_options":{"include_usage":false,"x":1,"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(s.temperature, Some(0.7));
        assert_eq!(s.top_p, Some(1.0));
        assert_eq!(s.stop, ["\n", "END"]);
        assert_eq!(s.seed, Some(-3));
        assert!(s.include_usage);
        let s = read(r#"{"temperature":2,"top_p":0,"stop":"x","seed":null,"n":null}"#).unwrap();
        assert_eq!((s.temperature, s.top_p), (Some(2.0), Some(0.0)));
        assert_eq!(s.stop, ["x"]);
        assert_eq!(read(r#"{"stop":""}"#).unwrap().stop, Vec::<String>::new());
        // The last of a repeated key counts, as in the dict the Python parser reads.
        assert_eq!(
            read(r#"{"temperature":9,"temperature":1.5}"#)
                .unwrap()
                .temperature,
            Some(1.5)
        );
    }

    #[test]
    fn leaves_everything_else_to_python() {
        for body in [
            r#"{"temperature":2.0001}"#,
            r#"{"temperature":-1}"#,
            r#"{"temperature":3}"#,
            r#"{"temperature":true}"#,
            r#"{"temperature":"0.5"}"#,
            r#"{"temperature":18446744073709551615}"#,
            r#"{"top_p":1.5}"#,
            r#"{"temperature":-0}"#,
            r#"{"temperature":-0.0}"#,
            r#"{"top_p":-0e3}"#,
            r#"{"stop":["a","b","c","d","e"]}"#,
            r#"{"stop":["a",1]}"#,
            r#"{"stop":{}}"#,
            r#"{"seed":1.0}"#,
            r#"{"seed":"1"}"#,
            r#"{"seed":18446744073709551615}"#,
            r#"{"n":2}"#,
            r#"{"n":1.0}"#,
            r#"{"stream_options":true}"#,
            r#"{"stream_options":{"include_usage":1}}"#,
        ] {
            assert_eq!(read(body), None, "{body}");
        }
    }

    #[test]
    fn keyed_only_by_options_in_the_canonical_form() {
        let mut v = SamplingValues::default();
        assert!(!v.keyed());
        v.stream_options = Some(Value::Bool(true));
        v.temperature = Some(Value::Float(0.5));
        v.seed = Some(Value::Int(1));
        v.n = Some(Value::Int(1));
        v.stop = Some(Value::Null);
        assert!(!v.keyed());
        v.stop = Some(Value::Arr(Vec::new()));
        assert!(!v.keyed());
        let text = |t| Value::parse(t).unwrap();
        v.stop = Some(Value::Arr(vec![text(br#""a""#), text(br#""""#)]));
        assert!(v.keyed());
        v.stop = Some(text(br#""""#));
        assert!(v.keyed());
        v.stop = Some(text(br#""a""#));
        assert!(!v.keyed());
    }
}
