//! JSON strings escaped exactly as `serde_json` writes them, integers and floats: the one
//! rule of each for every JSON the core writes (canonical request forms, relayed streams,
//! completions, provider bodies, log lines), so their bytes match what `serde_json` and
//! `orjson` would produce.

use crate::bytemask::string_specials;

/// Bytes that `serde_json` escapes inside a string.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Position of the first byte that needs escaping: sixteen bytes at a time by their
/// class mask (`bytemask`, a dozen instructions), the tail byte by byte.
#[inline]
pub(crate) fn find_escape(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let m = string_specials(chunk);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    b[i..]
        .iter()
        .position(|&x| NEEDS_ESCAPE[x as usize])
        .map(|p| p + i)
}

/// Append the escape of `b`, a control character, `"` or `\\`, as `serde_json` writes it.
#[inline]
pub(crate) fn push_escaped_ascii(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 15) as usize],
        ]),
    }
}

/// Room for the escape of a text of `len` bytes, quotes included: what a buffer written
/// with long texts reserves for each, so that their escapes (a retrieved passage's
/// newlines and quotes, an eighth of its bytes at most) do not make it grow, copying
/// everything written before, while it is written.
pub fn escaped_room(len: usize) -> usize {
    len + len / 8 + 2
}

/// Append `s` as a JSON string, escaped exactly as `serde_json` escapes: `\"`, `\\`,
/// `\b \f \n \r \t`, other control characters as `\u00xx`, nothing else.
pub fn write_escaped(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_escaped_inner(s, out);
    out.push(b'"');
}

/// Append the escape of `s` without its quotes: a JSON string's content, for a string
/// written in parts.
pub fn write_escaped_inner(s: &str, out: &mut Vec<u8>) {
    let mut rest = s.as_bytes();
    while let Some(i) = find_escape(rest) {
        out.extend_from_slice(&rest[..i]);
        push_escaped_ascii(rest[i], out);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// Append `v` in decimal, as `{v}` formats it, for `v` from `i64::MIN` to `u64::MAX`
/// (without the formatting machinery, which costs more than the rest of a small
/// body's writing).
pub fn write_int(v: i128, out: &mut Vec<u8>) {
    let mut buf = itoa::Buffer::new();
    let text = if let Ok(v) = i64::try_from(v) {
        buf.format(v)
    } else {
        buf.format(u64::try_from(v).unwrap_or(u64::MAX))
    };
    out.extend_from_slice(text.as_bytes());
}

/// Append `v` as `serde_json` and `orjson` write a float: the shortest text that reads
/// back as `v` (`0.1`, `100.0`, `0.00001`, `1e-7`, `1e+16`), and `null` when it is not
/// finite (JSON has no NaN or infinity).
pub fn write_float(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_format_writes_them() {
        for v in [
            0,
            7,
            -1,
            10,
            i128::from(i64::MIN),
            i128::from(i64::MAX),
            i128::from(u64::MAX),
            1_000_000_007,
        ] {
            let mut out = Vec::new();
            write_int(v, &mut out);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        for v in [
            0.0,
            -0.0,
            0.1,
            100.0,
            1e-5,
            1.5e-5,
            1e-7,
            1e15,
            1e16,
            123_456_789_012_345_680.0,
            5e-324,
            f64::MAX,
            -2e20,
        ] {
            let mut out = Vec::new();
            write_float(v, &mut out);
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = Vec::new();
            write_float(v, &mut out);
            assert_eq!(out, b"null");
        }
    }

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "q\"b\\s",
            "\u{1}\u{1f}\u{7f}\n\t\r\u{8}\u{c}",
            "é日本",
        ] {
            let mut out = Vec::new();
            write_escaped(s, &mut out);
            assert_eq!(out, serde_json::to_vec(s).unwrap());
        }
    }

    /// Every byte class at every position of texts up to three chunks long (the masked
    /// sixteens, their boundaries and the byte-by-byte tail), twice in one text.
    #[test]
    fn escapes_at_every_position() {
        for len in 0..50 {
            for at in 0..len {
                for special in ["\0", "\u{1f}", "\"", "\\", "\u{7f}", " ", "é", "\n"] {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(at..=at, special);
                    if at + 3 < s.len() && s.is_char_boundary(at + 3) {
                        s.insert(at + 3, '"');
                    }
                    let mut out = Vec::new();
                    write_escaped(&s, &mut out);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
    }
}
