//! A compact JSON array of values (as orjson writes a list) turned into an object by
//! naming its elements after a [`Shape`].
//!
//! The request log line has some fifty fields. Building them as a Python dict costs
//! more than everything else telemetry does per request; a list of the values costs a
//! fraction, and orjson still writes every value (so numbers and strings come out
//! byte for byte as before). What is left is this: put the keys back in, in order.

use crate::bytemask::string_specials;
use crate::error::{CoreError, Result};
use crate::json::write_escaped;

/// One field of a [`Shape`], in the order its value comes in the array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The value as written.
    Value(String),
    /// An array named by the inner shape: one object.
    Object(String, Shape),
    /// An array of arrays, each named by the inner shape: a list of objects.
    Objects(String, Shape),
}

/// The names of an array's elements, with each key's JSON (`"name":`) written once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    fields: Vec<Field>,
    keys: Vec<Vec<u8>>,
    /// Each key with what comes before it in the object (`{` for the first, `,` for the
    /// rest): what [`Shape::fast`] writes in one copy per field.
    leads: Vec<Vec<u8>>,
    /// Each lead padded to [`PAD`] bytes (when it fits): copied at a constant length,
    /// the copy is two vector moves instead of a call to `memcpy`.
    padded: Vec<Option<[u8; PAD]>>,
    /// The bytes of all keys: what an object adds to its array (brackets become braces).
    keys_len: usize,
}

impl Shape {
    #[must_use]
    pub fn new(fields: Vec<Field>) -> Self {
        let keys = fields
            .iter()
            .map(|f| {
                let (Field::Value(name) | Field::Object(name, _) | Field::Objects(name, _)) = f;
                let mut key = Vec::with_capacity(name.len() + 3);
                write_escaped(name, &mut key);
                key.push(b':');
                key
            })
            .collect::<Vec<Vec<u8>>>();
        let leads: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let mut lead = Vec::with_capacity(key.len() + 1);
                lead.push(if i == 0 { b'{' } else { b',' });
                lead.extend_from_slice(key);
                lead
            })
            .collect();
        let keys_len = keys.iter().map(Vec::len).sum();
        let padded = leads
            .iter()
            .map(|lead: &Vec<u8>| {
                let mut pad = [0u8; PAD];
                pad.get_mut(..lead.len())?.copy_from_slice(lead);
                Some(pad)
            })
            .collect();
        Self {
            fields,
            keys,
            leads,
            padded,
            keys_len,
        }
    }

    /// Append the object that names the elements of `array` (one JSON array, nothing
    /// around it) to `out`; on an error `out` is left as it was.
    pub fn write(&self, array: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // Room for this object's keys and as many again for the objects inside it: one
        // allocation for a log line with an attempt or two.
        out.reserve(array.len() + 2 * self.keys_len);
        let start = out.len();
        let fault = match self.walk(array, 0, out) {
            Ok(end) if end == array.len() => return Ok(()),
            Ok(end) => Fault::After(end),
            Err(fault) => fault,
        };
        out.truncate(start);
        Err(fault.error())
    }

    /// The array starting at `at` written as an object; the index after it. One pass:
    /// a misfit returns a [`Fault`] (two words, no message), which [`Shape::write`]
    /// turns into the error, so a line that fits never builds one.
    fn walk(&self, b: &[u8], at: usize, out: &mut Vec<u8>) -> Walk {
        let mut at = expect(b, at, b'[')?;
        let n = self.fields.len();
        if n == 0 {
            out.push(b'{');
        }
        for (i, (field, lead)) in self.fields.iter().zip(&self.leads).enumerate() {
            if i > 0 {
                match b.get(at) {
                    Some(b',') => at += 1,
                    Some(b']') => return Err(Fault::TooFew { got: i, want: n }),
                    _ => return Err(Fault::Expected(b',', at)),
                }
            }
            if let Some(pad) = &self.padded[i] {
                copy_short(pad, lead.len(), out);
            } else {
                out.extend_from_slice(lead);
            }
            at = match field {
                Field::Value(_) => {
                    let end = value_end(b, at)?;
                    match b.get(at..at + PAD) {
                        Some(window) if end - at <= PAD => copy_short(window, end - at, out),
                        _ => out.extend_from_slice(&b[at..end]),
                    }
                    end
                }
                Field::Object(_, inner) => inner.walk(b, at, out)?,
                Field::Objects(_, inner) => {
                    at = expect(b, at, b'[')?;
                    out.push(b'[');
                    if b.get(at) != Some(&b']') {
                        loop {
                            at = inner.walk(b, at, out)?;
                            if b.get(at) != Some(&b',') {
                                break;
                            }
                            out.push(b',');
                            at += 1;
                        }
                    }
                    out.push(b']');
                    expect(b, at, b']')?
                }
            };
        }
        if b.get(at) != Some(&b']') {
            return Err(if n > 0 {
                Fault::TooMany(n)
            } else {
                Fault::Expected(b']', at)
            });
        }
        out.push(b'}');
        Ok(at + 1)
    }
}

/// Why an array does not fit its shape, and where: what the walk carries out of a
/// misfit instead of an error, whose message is written only once it is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// This byte was expected at this index.
    Expected(u8, usize),
    /// No value starts at this index.
    NoValue(usize),
    /// The string opened at this index does not end.
    OpenString(usize),
    /// The array or object opened at this index does not end.
    OpenNest(usize),
    /// The array ended after `got` of the shape's `want` values.
    TooFew { got: usize, want: usize },
    /// The array goes on after the shape's values.
    TooMany(usize),
    /// Bytes follow the array, from this index.
    After(usize),
}

impl Fault {
    #[cold]
    fn error(self) -> CoreError {
        CoreError::invalid(match self {
            Fault::Expected(byte, at) => format!("expected `{}` at byte {at}", char::from(byte)),
            Fault::NoValue(at) => format!("expected a value at byte {at}"),
            Fault::OpenString(at) => format!("unterminated string at byte {at}"),
            Fault::OpenNest(at) => format!("unterminated array or object at byte {at}"),
            Fault::TooFew { got, want } => {
                format!("the array has {got} values; the shape names {want}")
            }
            Fault::TooMany(want) => format!("the array has more than the shape's {want} values"),
            Fault::After(at) => format!("unexpected bytes after the array at byte {at}"),
        })
    }
}

/// An index after what was walked, or why the walk stopped.
type Walk = core::result::Result<usize, Fault>;

fn expect(b: &[u8], at: usize, byte: u8) -> Walk {
    if b.get(at) == Some(&byte) {
        Ok(at + 1)
    } else {
        Err(Fault::Expected(byte, at))
    }
}

/// The length of the constant-size copies of keys and short values.
const PAD: usize = 32;

/// `src[..len]` appended to `out`, where `src` holds [`PAD`] bytes: a copy of constant
/// length (inlined, no call) and a cut back to `len`.
#[inline]
fn copy_short(src: &[u8], len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&src[..PAD]);
    out.truncate(start + len);
}

/// The index after the compact JSON value starting at `at`.
fn value_end(b: &[u8], at: usize) -> Walk {
    match b.get(at) {
        Some(b'"') => string_end(b, at),
        Some(b'[' | b'{') => {
            let mut depth = 0usize;
            let mut i = at;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(Fault::OpenNest(at))
        }
        None | Some(b',' | b']' | b'}') => Err(Fault::NoValue(at)),
        Some(_) => {
            let mut i = at + 1;
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b']' | b'}') {
                    break;
                }
                i += 1;
            }
            Ok(i)
        }
    }
}

/// The index after the string whose opening quote is at `at`. Walked sixteen bytes at
/// a time, then byte by byte: most strings in a log line are short, where a search
/// call costs more than the walk.
fn string_end(b: &[u8], at: usize) -> Walk {
    let mut i = at + 1;
    while let Some(chunk) = b.get(i..i + 16) {
        let chunk: &[u8; 16] = chunk.try_into().map_err(|_| Fault::OpenString(at))?;
        let m = string_specials(chunk);
        if m == 0 {
            i += 16;
            continue;
        }
        let j = i + m.trailing_zeros() as usize;
        match b[j] {
            b'"' => return Ok(j + 1),
            b'\\' => i = j + 2,
            _ => i = j + 1, // a control byte: not orjson's, but not an end
        }
    }
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return Ok(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Err(Fault::OpenString(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> Field {
        Field::Value(name.to_owned())
    }

    fn named(shape: &Shape, array: &str) -> Result<String> {
        let mut out = Vec::new();
        shape.write(array.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn values_get_their_names_in_order() {
        let shape = Shape::new(vec![v("a"), v("b\"q"), v("c"), v("d"), v("e")]);
        assert_eq!(
            named(&shape, r#"[1,"x,]\"y",null,[1,[2,"]"]],{"k":"}"}]"#).unwrap(),
            r#"{"a":1,"b\"q":"x,]\"y","c":null,"d":[1,[2,"]"]],"e":{"k":"}"}}"#
        );
    }

    #[test]
    fn nested_shapes_make_objects_and_lists_of_objects() {
        let inner = Shape::new(vec![v("x"), v("y")]);
        let shape = Shape::new(vec![
            Field::Object("o".into(), inner.clone()),
            Field::Objects("l".into(), inner.clone()),
            Field::Objects("e".into(), inner),
        ]);
        assert_eq!(
            named(&shape, r#"[[1,2],[[3,4],["5",-6.5e-7]],[]]"#).unwrap(),
            r#"{"o":{"x":1,"y":2},"l":[{"x":3,"y":4},{"x":"5","y":-6.5e-7}],"e":[]}"#
        );
    }

    #[test]
    fn an_empty_shape_names_an_empty_array() {
        assert_eq!(named(&Shape::new(vec![]), "[]").unwrap(), "{}");
    }

    #[test]
    fn a_count_that_does_not_match_is_refused() {
        let shape = Shape::new(vec![v("a"), v("b")]);
        for bad in [
            "[1]",
            "[1,2,3]",
            "[]",
            "1",
            "[1,2",
            "[1,2]x",
            r#"[1,"2]"#,
            "[1,]",
        ] {
            assert!(named(&shape, bad).is_err(), "{bad}");
        }
        let nested = Shape::new(vec![Field::Objects("l".into(), Shape::new(vec![v("x")]))]);
        for bad in ["[[1]]", "[[[1,2]]]", "[[[1],]]", "[[[1]"] {
            assert!(named(&nested, bad).is_err(), "{bad}");
        }
    }

    /// A plain reference of [`Shape::write`]: the array's elements split off one by one
    /// with a byte-at-a-time walk, then named. `None` where it does not fit.
    fn reference(shape: &Shape, b: &[u8]) -> Option<String> {
        fn end_of(b: &[u8], at: usize) -> Option<usize> {
            if !matches!(b.get(at)?, b'"' | b'[' | b'{') {
                // A number or literal, taken as it is up to the next delimiter.
                let len = b[at..].iter().position(|c| b",]}".contains(c))?;
                return (len > 0).then_some(at + len);
            }
            let (mut depth, mut i, mut in_string) = (0usize, at, false);
            loop {
                let c = *b.get(i)?;
                if in_string {
                    match c {
                        b'\\' => i += 1,
                        b'"' => {
                            in_string = false;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                } else {
                    match c {
                        b'"' => in_string = true,
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
        }
        fn object(shape: &Shape, b: &[u8], mut at: usize, out: &mut String) -> Option<usize> {
            (b.get(at)? == &b'[').then_some(())?;
            at += 1;
            out.push('{');
            for (i, field) in shape.fields.iter().enumerate() {
                if i > 0 {
                    (b.get(at)? == &b',').then_some(())?;
                    at += 1;
                    out.push(',');
                }
                out.push_str(std::str::from_utf8(&shape.keys[i]).unwrap());
                at = match field {
                    Field::Value(_) => {
                        let end = end_of(b, at)?;
                        out.push_str(std::str::from_utf8(&b[at..end]).unwrap());
                        end
                    }
                    Field::Object(_, inner) => object(inner, b, at, out)?,
                    Field::Objects(_, inner) => {
                        (b.get(at)? == &b'[').then_some(())?;
                        at += 1;
                        out.push('[');
                        let mut first = true;
                        while b.get(at)? != &b']' {
                            if !first {
                                (b.get(at)? == &b',').then_some(())?;
                                at += 1;
                                out.push(',');
                            }
                            first = false;
                            at = object(inner, b, at, out)?;
                        }
                        out.push(']');
                        at + 1
                    }
                };
            }
            (b.get(at)? == &b']').then_some(())?;
            out.push('}');
            Some(at + 1)
        }
        let mut out = String::new();
        (object(shape, b, 0, &mut out)? == b.len()).then_some(out)
    }

    /// The one pass agrees with the reference: the same object where it fits, an error
    /// (and `out` untouched) where it does not.
    fn both(shape: &Shape, array: &str) -> Option<String> {
        let mut out = b"kept".to_vec();
        let written = shape.write(array.as_bytes(), &mut out);
        let want = reference(shape, array.as_bytes());
        match (&written, &want) {
            (Ok(()), Some(want)) => assert_eq!(&out[4..], want.as_bytes(), "{array}"),
            (Err(_), None) => assert_eq!(out, b"kept", "{array}"),
            _ => panic!("{array}: write {written:?}, reference {want:?}"),
        }
        want
    }

    #[test]
    fn every_misfit_names_its_fault() {
        let shape = Shape::new(vec![v("a"), v("b")]);
        let message = |array: &str| named(&shape, array).unwrap_err().to_string();
        for (array, want) in [
            ("[1]", "the array has 1 values; the shape names 2"),
            ("[1,2,3]", "the array has more than the shape's 2 values"),
            ("[]", "expected a value at byte 1"),
            ("1", "expected `[` at byte 0"),
            (r#"["a" 2]"#, "expected `,` at byte 4"),
            ("[1,2]x", "unexpected bytes after the array at byte 5"),
            (r#"[1,"2]"#, "unterminated string at byte 3"),
            ("[1,[2", "unterminated array or object at byte 3"),
        ] {
            assert!(message(array).contains(want), "{array}: {}", message(array));
        }
    }

    #[test]
    fn every_cut_or_changed_byte_is_judged_as_the_reference_judges_it() {
        let inner = Shape::new(vec![v("x"), v("y")]);
        let shape = Shape::new(vec![
            v("a"),
            Field::Object("o".into(), inner.clone()),
            Field::Objects("l".into(), inner),
            v("z"),
        ]);
        let good = r#"["a\"b",[1,{"k":"]"}],[[2,"3,"],[null,[4]]],-1.5e3]"#;
        assert!(both(&shape, good).is_some());
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            let mut cut = bytes.to_vec();
            cut.remove(i);
            both(&shape, std::str::from_utf8(&cut).unwrap());
            for c in [b'"', b',', b'[', b']', b'{', b'\\', b'1'] {
                let mut changed = bytes.to_vec();
                changed[i] = c;
                both(&shape, std::str::from_utf8(&changed).unwrap());
            }
        }
    }

    #[test]
    fn the_walk_writes_what_the_reference_does() {
        let inner = Shape::new(vec![v("x"), v("y")]);
        let shape = Shape::new(vec![
            v("a"),
            Field::Object("o".into(), inner.clone()),
            Field::Objects("l".into(), inner),
            v("z"),
        ]);
        let long = "ab\\\"c".repeat(30); // escapes on either side of the short walk's end
        for at in 0..40 {
            let s = format!("{}\\\\{}", "x".repeat(at), "y".repeat(20));
            assert!(both(&shape, &format!(r#"["{s}",[1,2],[],"{s}"]"#)).is_some());
        }
        for array in [
            r#"[1,[2,3],[[4,5],[6,"7"]],null]"#.to_owned(),
            format!(r#"["{long}",[{{"k":"]"}},[]],[],"{long}"]"#),
            r#"["a\"",["],",-1e-7],[[1,2]],true]"#.to_owned(),
        ] {
            assert!(both(&shape, &array).is_some(), "{array}");
        }
        // Unterminated past the short walk.
        assert!(both(&shape, &format!(r#"["{long}",[1,2],[],"{long}"#)).is_none());
        for bad in [
            "",
            "[",
            "[1",
            "[1,[2,3],[],4",
            "[1,[2,3],[],4,5]",
            "[1,[2,3],[[1]],4]",
            "[1,[2,3],[[1,2],],4]",
            "[1,[2,3],[[1,2]],]",
            "[,[2,3],[],4]",
            "[1,[2,3]]",
            "[1,[2,3],[],4]x",
            r#"["abc,[2,3],[],4]"#,
            "[1,[2,3],[[1,2]x],4]",
        ] {
            assert!(both(&shape, bad).is_none(), "{bad}");
            assert!(named(&shape, bad).is_err(), "{bad}");
        }
        assert_eq!(both(&Shape::new(vec![]), "[]").as_deref(), Some("{}"));
    }
}
