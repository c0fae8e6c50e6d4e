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
    /// around it) to `out`.
    pub fn write(&self, array: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // Room for this object's keys and as many again for the objects inside it: one
        // allocation for a log line with an attempt or two.
        out.reserve(array.len() + 2 * self.keys_len);
        let start = out.len();
        if self.fast(array, 0, out) == Some(array.len()) {
            return Ok(());
        }
        // Not what orjson writes for the shape: the careful pass below names the fault.
        out.truncate(start);
        let end = self.object(array, 0, out)?;
        if end != array.len() {
            return Err(CoreError::invalid(format!(
                "unexpected bytes after the array at byte {end}"
            )));
        }
        Ok(())
    }

    /// [`Shape::object`] for an array that fits the shape, with no error to build: a
    /// log line costs half as many instructions. `None` when anything does not fit (the
    /// caller then runs [`Shape::object`] for the error).
    fn fast(&self, b: &[u8], at: usize, out: &mut Vec<u8>) -> Option<usize> {
        if *b.get(at)? != b'[' {
            return None;
        }
        let mut at = at + 1;
        if self.fields.is_empty() {
            out.push(b'{');
        }
        for (i, (field, lead)) in self.fields.iter().zip(&self.leads).enumerate() {
            if i > 0 {
                if *b.get(at)? != b',' {
                    return None;
                }
                at += 1;
            }
            if let Some(pad) = &self.padded[i] {
                copy_short(pad, lead.len(), out);
            } else {
                out.extend_from_slice(lead);
            }
            at = match field {
                Field::Value(_) => {
                    let end = fast_value_end(b, at)?;
                    match b.get(at..at + PAD) {
                        Some(window) if end - at <= PAD => copy_short(window, end - at, out),
                        _ => out.extend_from_slice(&b[at..end]),
                    }
                    end
                }
                Field::Object(_, inner) => inner.fast(b, at, out)?,
                Field::Objects(_, inner) => {
                    if *b.get(at)? != b'[' {
                        return None;
                    }
                    at += 1;
                    out.push(b'[');
                    if *b.get(at)? != b']' {
                        loop {
                            at = inner.fast(b, at, out)?;
                            if *b.get(at)? != b',' {
                                break;
                            }
                            out.push(b',');
                            at += 1;
                        }
                        if *b.get(at)? != b']' {
                            return None;
                        }
                    }
                    out.push(b']');
                    at + 1
                }
            };
        }
        if *b.get(at)? != b']' {
            return None;
        }
        out.push(b'}');
        Some(at + 1)
    }

    /// The array starting at `at` written as an object; returns the index after it.
    fn object(&self, b: &[u8], mut at: usize, out: &mut Vec<u8>) -> Result<usize> {
        at = expect(b, at, b'[')?;
        out.push(b'{');
        for (i, (field, key)) in self.fields.iter().zip(&self.keys).enumerate() {
            if i > 0 {
                at = expect(b, at, b',')?;
                out.push(b',');
            }
            out.extend_from_slice(key);
            at = match field {
                Field::Value(_) => {
                    let end = value_end(b, at)?;
                    out.extend_from_slice(&b[at..end]);
                    end
                }
                Field::Object(_, inner) => inner.object(b, at, out)?,
                Field::Objects(_, inner) => {
                    at = expect(b, at, b'[')?;
                    out.push(b'[');
                    let end = if b.get(at) == Some(&b']') {
                        at + 1
                    } else {
                        loop {
                            at = inner.object(b, at, out)?;
                            if b.get(at) == Some(&b',') {
                                out.push(b',');
                                at += 1;
                            } else {
                                break;
                            }
                        }
                        expect(b, at, b']')?
                    };
                    out.push(b']');
                    end
                }
            };
            if i + 1 == self.fields.len() {
                out.push(b'}');
                return expect(b, at, b']').map_err(|_| {
                    CoreError::invalid(format!(
                        "the array has more than the shape's {} values",
                        self.fields.len()
                    ))
                });
            }
            if b.get(at) == Some(&b']') {
                return Err(CoreError::invalid(format!(
                    "the array has {} values; the shape names {}",
                    i + 1,
                    self.fields.len()
                )));
            }
        }
        // A shape without fields names an empty array.
        out.push(b'}');
        expect(b, at, b']')
    }
}

fn expect(b: &[u8], at: usize, byte: u8) -> Result<usize> {
    if b.get(at) == Some(&byte) {
        Ok(at + 1)
    } else {
        Err(CoreError::invalid(format!(
            "expected `{}` at byte {at}",
            char::from(byte)
        )))
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

/// [`value_end`] without an error to build: strings are walked byte by byte (most in a
/// log line are short, where a search call costs more than the walk) up to a length
/// where the search pays.
fn fast_value_end(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => {
            let mut i = at + 1;
            // Sixteen bytes at a time while they are there, then byte by byte.
            while let Some(chunk) = b.get(i..i + 16) {
                let chunk: &[u8; 16] = chunk.try_into().ok()?;
                let m = string_specials(chunk);
                if m == 0 {
                    i += 16;
                    continue;
                }
                let j = i + m.trailing_zeros() as usize;
                match b[j] {
                    b'"' => return Some(j + 1),
                    b'\\' => i = j + 2,
                    _ => i = j + 1, // a control byte: not orjson's, but not an end
                }
            }
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
            None
        }
        b'[' | b'{' => value_end(b, at).ok(),
        b',' | b']' | b'}' => None,
        _ => {
            let mut i = at + 1;
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b']' | b'}') {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
    }
}

/// The index after the compact JSON value starting at `at`.
fn value_end(b: &[u8], at: usize) -> Result<usize> {
    match b.get(at) {
        None => Err(CoreError::invalid(format!("expected a value at byte {at}"))),
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
            Err(CoreError::invalid(format!(
                "unterminated array or object at byte {at}"
            )))
        }
        Some(_) => {
            let len = b[at..]
                .iter()
                .position(|&c| matches!(c, b',' | b']' | b'}'))
                .unwrap_or(b.len() - at);
            if len == 0 {
                return Err(CoreError::invalid(format!("expected a value at byte {at}")));
            }
            Ok(at + len)
        }
    }
}

/// The index after the string whose opening quote is at `at`.
fn string_end(b: &[u8], at: usize) -> Result<usize> {
    let mut i = at + 1;
    while let Some(k) = b
        .get(i..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        if b[i + k] == b'"' {
            return Ok(i + k + 1);
        }
        i += k + 2; // the backslash and the byte it escapes
    }
    Err(CoreError::invalid(format!(
        "unterminated string at byte {at}"
    )))
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

    /// The fast pass and the careful one agree wherever the careful one succeeds, and
    /// the fast one never accepts what the careful one refuses.
    fn both(shape: &Shape, array: &str) -> Option<String> {
        let mut fast = Vec::new();
        let fast = (shape.fast(array.as_bytes(), 0, &mut fast) == Some(array.len()))
            .then(|| String::from_utf8(fast).unwrap());
        let mut careful = Vec::new();
        let careful = shape
            .object(array.as_bytes(), 0, &mut careful)
            .ok()
            .filter(|&end| end == array.len())
            .map(|_| String::from_utf8(careful).unwrap());
        assert_eq!(fast, careful, "{array}");
        fast
    }

    #[test]
    fn the_fast_pass_writes_what_the_careful_one_does() {
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
