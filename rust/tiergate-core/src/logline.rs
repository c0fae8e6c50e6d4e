//! The request log line (DESIGN.md §6): one JSON object per request, its keys in a fixed
//! order, written from the request's record in one pass.
//!
//! The values are what the record holds, typed as the record's fields may be typed in
//! Python ([`Value`]: a float field may hold an int, an optional one `None`), and written
//! as `orjson` writes them (strings escaped as `serde_json` does, floats shortest
//! round-trip, non-finite floats `null`), so a line is byte for byte the one `orjson`
//! writes for the Python reference (`record_line`).

use crate::json::{write_escaped, write_escaped_inner, write_float, write_int};

/// One JSON scalar of a record's field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// From `i64::MIN` to `u64::MAX`, as `orjson` accepts.
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Value<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(v) => write_int(v, out),
            Value::Float(v) => write_float(v, out),
            Value::Str(s) => write_escaped(s, out),
        }
    }
}

/// One upstream attempt, in the line's order.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptLine<'a> {
    pub deployment: Value<'a>,
    pub provider: Value<'a>,
    pub model: Value<'a>,
    pub start_ns: Value<'a>,
    pub ms: Value<'a>,
    pub status: Value<'a>,
    pub error_class: Value<'a>,
    pub hedge: Value<'a>,
    pub cancelled: Value<'a>,
    pub ttft_ms: Value<'a>,
    pub input_tokens: Value<'a>,
    pub output_tokens: Value<'a>,
    pub cost_usd: Value<'a>,
    pub finish_reason: Value<'a>,
}

/// One request, in the line's order. `start_ns` (nanoseconds since the Unix epoch)
/// becomes the line's `ts`; the four token counts its `tokens` object; each finding
/// of `safety` (kind, action) one `"kind:action"` string.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLine<'a> {
    pub start_ns: i64,
    pub request_id: Value<'a>,
    pub tenant: Value<'a>,
    pub surface: Value<'a>,
    pub operation: Value<'a>,
    pub route: Value<'a>,
    pub deployment: Value<'a>,
    pub provider: Value<'a>,
    pub tier: Value<'a>,
    pub response_model: Value<'a>,
    pub status: Value<'a>,
    pub error_type: Value<'a>,
    pub finish_reason: Value<'a>,
    pub stream: Value<'a>,
    pub stream_error: Value<'a>,
    pub attempts: Vec<AttemptLine<'a>>,
    pub fallbacks: Value<'a>,
    pub hedged: Value<'a>,
    pub idempotency: Value<'a>,
    pub ttft_ms: Value<'a>,
    pub latency_ms: Value<'a>,
    pub input_tokens: Value<'a>,
    pub output_tokens: Value<'a>,
    pub cached_tokens: Value<'a>,
    pub reasoning_tokens: Value<'a>,
    pub cost_usd: Value<'a>,
    pub predicted_quality: Value<'a>,
    pub predicted_latency_ms: Value<'a>,
    pub decision_us: Value<'a>,
    pub decision_reason: Value<'a>,
    pub relaxed: Vec<Value<'a>>,
    pub safety: Vec<(&'a str, &'a str)>,
}

/// Append `"key":value` pairs after the object's opening to `out`, each key with the
/// comma before it written once (`,"key":`). A macro, not a loop over a slice of pairs:
/// each key's length is then a constant, so its copy is a few moves rather than a call
/// of `memcpy` (a fifth of a line's cost when the keys were a loop's).
macro_rules! fields {
    ($out:expr, [$(($key:literal, $value:expr)),* $(,)?] $(,)?) => {
        $(
            $out.extend_from_slice($key);
            $value.write($out);
        )*
    };
}

fn write_attempt(a: &AttemptLine<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"deployment\":");
    a.deployment.write(out);
    fields!(
        out,
        [
            (b",\"provider\":", a.provider),
            (b",\"model\":", a.model),
            (b",\"start_ns\":", a.start_ns),
            (b",\"ms\":", a.ms),
            (b",\"status\":", a.status),
            (b",\"error_class\":", a.error_class),
            (b",\"hedge\":", a.hedge),
            (b",\"cancelled\":", a.cancelled),
            (b",\"ttft_ms\":", a.ttft_ms),
            (b",\"input_tokens\":", a.input_tokens),
            (b",\"output_tokens\":", a.output_tokens),
            (b",\"cost_usd\":", a.cost_usd),
            (b",\"finish_reason\":", a.finish_reason),
        ],
    );
    out.push(b'}');
}

/// Append the line of `rec` and its newline to `out`.
pub fn write_line(rec: &RequestLine<'_>, out: &mut Vec<u8>) {
    out.reserve(640 + 300 * rec.attempts.len());
    out.extend_from_slice(b"{\"ts\":\"");
    write_iso(rec.start_ns, out);
    out.extend_from_slice(b"\",\"event\":\"request\",\"request_id\":");
    rec.request_id.write(out);
    fields!(
        out,
        [
            (b",\"tenant\":", rec.tenant),
            (b",\"surface\":", rec.surface),
            (b",\"operation\":", rec.operation),
            (b",\"route\":", rec.route),
            (b",\"deployment\":", rec.deployment),
            (b",\"provider\":", rec.provider),
            (b",\"tier\":", rec.tier),
            (b",\"response_model\":", rec.response_model),
            (b",\"status\":", rec.status),
            (b",\"error_type\":", rec.error_type),
            (b",\"finish_reason\":", rec.finish_reason),
            (b",\"stream\":", rec.stream),
            (b",\"stream_error\":", rec.stream_error),
        ],
    );
    out.extend_from_slice(b",\"attempts\":[");
    for (i, a) in rec.attempts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_attempt(a, out);
    }
    out.push(b']');
    fields!(
        out,
        [
            (b",\"fallbacks\":", rec.fallbacks),
            (b",\"hedged\":", rec.hedged),
            (b",\"idempotency\":", rec.idempotency),
            (b",\"ttft_ms\":", rec.ttft_ms),
            (b",\"latency_ms\":", rec.latency_ms),
            (b",\"tokens\":{\"input\":", rec.input_tokens),
            (b",\"output\":", rec.output_tokens),
            (b",\"cached\":", rec.cached_tokens),
            (b",\"reasoning\":", rec.reasoning_tokens),
            (b"},\"cost_usd\":", rec.cost_usd),
            (b",\"predicted_quality\":", rec.predicted_quality),
            (b",\"predicted_latency_ms\":", rec.predicted_latency_ms),
            (b",\"decision_us\":", rec.decision_us),
            (b",\"decision_reason\":", rec.decision_reason),
        ],
    );
    out.extend_from_slice(b",\"relaxed\":[");
    for (i, v) in rec.relaxed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        v.write(out);
    }
    out.extend_from_slice(b"],\"safety\":[");
    for (i, (kind, action)) in rec.safety.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // `:` needs no escape, so the string's escape is its two parts' escapes joined.
        out.push(b'"');
        write_escaped_inner(kind, out);
        out.push(b':');
        write_escaped_inner(action, out);
        out.push(b'"');
    }
    out.extend_from_slice(b"]}\n");
}

/// Append `ns` (nanoseconds since the Unix epoch) as UTC ISO-8601 with milliseconds,
/// `2026-11-22T03:07:17.331Z`, truncated (not rounded) to the millisecond as Python's
/// `time.gmtime` of the floored seconds is. An `i64` of nanoseconds spans the years
/// 1677 to 2262, so the year always has four digits.
pub fn write_iso(ns: i64, out: &mut Vec<u8>) {
    let ms = ns.div_euclid(1_000_000);
    let (sec, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, in_day) = (sec.div_euclid(86_400), sec.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut b[0..4], y);
    put_digits(&mut b[5..7], m);
    put_digits(&mut b[8..10], d);
    put_digits(&mut b[11..13], in_day / 3600);
    put_digits(&mut b[14..16], in_day / 60 % 60);
    put_digits(&mut b[17..19], in_day % 60);
    put_digits(&mut b[20..23], milli);
    out.extend_from_slice(&b);
}

/// `v` (non-negative) in decimal, zero-padded to fill `slot`.
fn put_digits(slot: &mut [u8], mut v: i64) {
    for c in slot.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(ns: i64) -> String {
        let mut out = Vec::new();
        write_iso(ns, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds_truncated() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_835_237_331_999_999), "2026-11-28T03:07:17.331Z");
        assert_eq!(iso(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso(i64::MAX), "2262-04-11T23:47:16.854Z");
        assert_eq!(iso(i64::MIN), "1677-09-21T00:12:43.145Z");
    }

    #[test]
    fn days_walk_the_calendar() {
        // Day by day from 1600 to 2400 the date advances by exactly one day.
        let mut prev = civil_from_days(-135_140);
        assert_eq!(prev, (1600, 1, 1));
        for days in -135_139..157_000 {
            let (y, m, d) = civil_from_days(days);
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let month_days = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let (py, pm, pd) = prev;
            if pd < month_days[(pm - 1) as usize] {
                assert_eq!((y, m, d), (py, pm, pd + 1));
            } else if pm < 12 {
                assert_eq!((y, m, d), (py, pm + 1, 1));
            } else {
                assert_eq!((y, m, d), (py + 1, 1, 1));
            }
            prev = (y, m, d);
        }
    }

    fn attempt() -> AttemptLine<'static> {
        AttemptLine {
            deployment: Value::Str("small"),
            provider: Value::Str("openai"),
            model: Value::Str("gpt-4o-mini"),
            start_ns: Value::Int(1_700_000_000_000_000_000),
            ms: Value::Float(12.5),
            status: Value::Int(200),
            error_class: Value::Null,
            hedge: Value::Bool(false),
            cancelled: Value::Bool(true),
            ttft_ms: Value::Float(1.5e-5),
            input_tokens: Value::Int(120),
            output_tokens: Value::Int(30),
            cost_usd: Value::Float(3.6e-5),
            finish_reason: Value::Str("stop"),
        }
    }

    fn request<'a>(
        attempts: Vec<AttemptLine<'a>>,
        safety: Vec<(&'a str, &'a str)>,
    ) -> RequestLine<'a> {
        RequestLine {
            start_ns: 0,
            request_id: Value::Str("req-\u{2028}\"x\n"),
            tenant: Value::Str("acme"),
            surface: Value::Str("openai"),
            operation: Value::Str("chat"),
            route: Value::Str("chat"),
            deployment: Value::Str("small"),
            provider: Value::Null,
            tier: Value::Null,
            response_model: Value::Str("m"),
            status: Value::Int(200),
            error_type: Value::Null,
            finish_reason: Value::Str("stop"),
            stream: Value::Bool(false),
            stream_error: Value::Null,
            attempts,
            fallbacks: Value::Int(0),
            hedged: Value::Bool(false),
            idempotency: Value::Str("miss"),
            ttft_ms: Value::Null,
            latency_ms: Value::Float(420.0),
            input_tokens: Value::Int(120),
            output_tokens: Value::Int(30),
            cached_tokens: Value::Int(0),
            reasoning_tokens: Value::Int(u64::MAX.into()),
            cost_usd: Value::Int(0),
            predicted_quality: Value::Float(f64::NAN),
            predicted_latency_ms: Value::Null,
            decision_us: Value::Float(35.5),
            decision_reason: Value::Str("cheapest"),
            relaxed: vec![Value::Str("latency"), Value::Str("cost")],
            safety,
        }
    }

    #[test]
    fn a_line_has_every_key_in_order_and_ends_with_its_newline() {
        let mut out = Vec::new();
        write_line(
            &request(
                vec![attempt(), attempt()],
                vec![("email", "redact"), ("a\"b", "log")],
            ),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("]}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["request_id"], "req-\u{2028}\"x\n");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["predicted_quality"], serde_json::Value::Null);
        assert_eq!(v["cost_usd"], 0);
        assert_eq!(v["tokens"]["reasoning"], u64::MAX);
        assert_eq!(v["safety"], serde_json::json!(["email:redact", "a\"b:log"]));
        assert_eq!(v["attempts"].as_array().unwrap().len(), 2);
        assert_eq!(v["attempts"][1]["ttft_ms"], 1.5e-5);
        assert_eq!(v["attempts"][1]["cancelled"], true);
        assert!(text.contains(r#""ttft_ms":0.000015,"#));
        assert!(text.contains(r#""latency_ms":420.0,"#));
    }

    #[test]
    fn a_line_is_its_keys_in_order_around_its_values() {
        let mut out = Vec::new();
        let mut rec = request(vec![], vec![]);
        rec.relaxed.clear();
        write_line(&rec, &mut out);
        let want = concat!(
            r#"{"ts":"1970-01-01T00:00:00.000Z","event":"request","request_id":"req-"#,
            "\u{2028}",
            r#"\"x\n","tenant":"acme","surface":"openai","operation":"chat","route":"chat","#,
            r#""deployment":"small","provider":null,"tier":null,"response_model":"m","#,
            r#""status":200,"error_type":null,"finish_reason":"stop","stream":false,"#,
            r#""stream_error":null,"attempts":[],"fallbacks":0,"hedged":false,"#,
            r#""idempotency":"miss","ttft_ms":null,"latency_ms":420.0,"#,
            r#""tokens":{"input":120,"output":30,"cached":0,"reasoning":18446744073709551615},"#,
            r#""cost_usd":0,"predicted_quality":null,"predicted_latency_ms":null,"#,
            r#""decision_us":35.5,"decision_reason":"cheapest","relaxed":[],"safety":[]}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}
