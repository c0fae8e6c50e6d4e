//! A compact JSON array of values (as orjson writes a list) turned into an object by
//! naming its elements after a [`Shape`].
//!
//! The request log line has some fifty fields. Building them as a Python dict costs
//! more than everything else telemetry does per request; a list of the values costs a
//! fraction, and orjson still writes every value (so numbers and strings come out
//! byte for byte as before). What is left is this: put the keys back in, in order.

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
            .collect();
        Self { fields, keys }
    }

    /// Append the object that names the elements of `array` (one JSON array, nothing
    /// around it) to `out`.
    pub fn write(&self, array: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.reserve(array.len() + self.keys.iter().map(Vec::len).sum::<usize>());
        let end = self.object(array, 0, out)?;
        if end != array.len() {
            return Err(CoreError::invalid(format!(
                "unexpected bytes after the array at byte {end}"
            )));
        }
        Ok(())
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
}
