//! Server-Sent Events framing over bytes that arrive split anywhere.
//!
//! The rules are the Python `SSEParser`'s (WHATWG, the fields LLM APIs use): lines end
//! at CR, LF or CRLF (a CR ending one chunk swallows an LF starting the next), `:`
//! lines are comments, `data:` lines join with `\n`, one space after the colon is
//! dropped, a blank line dispatches. The `event:` name is not kept: the `OpenAI` stream
//! never reads it, and an event without data is dropped either way.

/// Whether the consumer of an event wants the rest of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The incremental state: the unterminated tail of the input and the data so far.
#[derive(Debug, Default)]
pub struct SseLines {
    buf: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    skip_lf: bool,
}

impl SseLines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for the event being read: its data so far and an unterminated line.
    /// A consumer bounds this (a provider that never ends a line or an event would
    /// otherwise grow it without limit).
    pub fn held(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    /// Feed one chunk; `on_event` gets each completed event's data (lines joined with
    /// `\n`, not yet decoded) and may stop the parse (the rest of the chunk is dropped).
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(&[u8]) -> Flow) -> Flow {
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        // The common case has nothing buffered: read the chunk in place.
        let owned;
        let buf: &[u8] = if self.buf.is_empty() {
            chunk
        } else {
            let mut b = std::mem::take(&mut self.buf);
            b.extend_from_slice(chunk);
            owned = b;
            &owned
        };
        let n = buf.len();
        let mut start = 0;
        while start < n {
            let Some(off) = memchr::memchr2(b'\r', b'\n', &buf[start..]) else {
                break;
            };
            let end = start + off;
            let next = if buf[end] == b'\r' {
                if end + 1 < n {
                    if buf[end + 1] == b'\n' {
                        end + 2
                    } else {
                        end + 1
                    }
                } else {
                    self.skip_lf = true;
                    end + 1
                }
            } else {
                end + 1
            };
            let flow = self.line(&buf[start..end], &mut on_event);
            start = next;
            if flow == Flow::Stop {
                self.buf.clear();
                return Flow::Stop;
            }
        }
        self.buf = buf[start..].to_vec();
        Flow::Continue
    }

    fn line(&mut self, raw: &[u8], on_event: &mut impl FnMut(&[u8]) -> Flow) -> Flow {
        if raw.is_empty() {
            if !self.has_data {
                return Flow::Continue;
            }
            self.has_data = false;
            let flow = on_event(&self.data);
            self.data.clear();
            return flow;
        }
        if raw[0] == b':' {
            return Flow::Continue;
        }
        let (name, value) = match memchr::memchr(b':', raw) {
            Some(i) => {
                let v = &raw[i + 1..];
                (&raw[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (raw, &raw[raw.len()..]),
        };
        if name == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseLines::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |d| {
                out.push(String::from_utf8_lossy(d).into_owned());
                Flow::Continue
            });
        }
        out
    }

    #[test]
    fn splits_on_blank_lines_and_joins_data() {
        assert_eq!(
            events(&[b"data: a\n\ndata:b\ndata:  c\n\n: note\nevent: x\n\n"]),
            ["a", "b\n c"]
        );
    }

    #[test]
    fn any_line_ending_and_any_split() {
        let wire = b"data: one\r\n\r\ndata: two\r\rdata: three\n\ndata: cut";
        let whole = events(&[wire]);
        assert_eq!(whole, ["one", "two", "three"]);
        for i in 0..wire.len() {
            assert_eq!(events(&[&wire[..i], &wire[i..]]), whole, "split at {i}");
        }
    }

    #[test]
    fn a_cr_at_a_chunk_end_swallows_the_next_lf() {
        assert_eq!(events(&[b"data: a\r", b"\n\r", b"\n"]), ["a"]);
    }

    #[test]
    fn data_without_colon_and_other_fields() {
        assert_eq!(events(&[b"data\n\nid: 3\nretry: 5\n\n"]), [""]);
    }

    #[test]
    fn stop_drops_the_rest() {
        let mut p = SseLines::new();
        let mut seen = 0;
        let flow = p.feed(b"data: a\n\ndata: b\n\n", |_| {
            seen += 1;
            Flow::Stop
        });
        assert_eq!((flow, seen), (Flow::Stop, 1));
    }
}
