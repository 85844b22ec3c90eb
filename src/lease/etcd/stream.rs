//! Cuts a streamed gateway answer into its JSON objects.
//!
//! etcd's gateway writes each message of a streaming call (`/v3/watch`,
//! `/v3/lease/keepalive`) as one JSON object followed by `\n`, but HTTP chunks
//! need not line up with messages: one chunk may carry several objects or a
//! part of one. So this does not trust the newlines: it tracks nesting outside
//! strings and yields each complete top-level object, whatever the chunking.

/// Why a stream cannot be cut into objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("expected a JSON object, found byte {0:#04x}")]
    NotAnObject(u8),
    #[error("a streamed message exceeds {0} bytes")]
    TooLong(usize),
}

/// Incremental splitter: [`push`](Self::push) bytes as they arrive, then
/// take objects with [`next_object`](Self::next_object) until it says `None`.
#[derive(Debug)]
pub struct ObjectSplitter {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned (all belong to the current object).
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl ObjectSplitter {
    /// `max`: the largest message accepted, so a peer cannot grow the buffer
    /// without bound.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when no partial object is buffered (a clean place for a stream to end).
    pub fn is_idle(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }

    /// The next complete object, `None` if more bytes are needed.
    pub fn next_object(&mut self) -> Result<Option<Vec<u8>>, SplitError> {
        if self.scanned == 0 {
            let skip = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..skip);
            match self.buf.first() {
                None => return Ok(None),
                Some(b'{') => {}
                Some(&other) => return Err(SplitError::NotAnObject(other)),
            }
        }
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    // Never below 1 here: every object opens with `{`.
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        let rest = self.buf.split_off(self.scanned);
                        let object = std::mem::replace(&mut self.buf, rest);
                        self.scanned = 0;
                        return Ok(Some(object));
                    }
                }
                _ => {}
            }
        }
        if self.buf.len() > self.max {
            return Err(SplitError::TooLong(self.max));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut ObjectSplitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = s.next_object().expect("splits") {
            out.push(String::from_utf8(o).expect("utf8"));
        }
        out
    }

    #[test]
    fn yields_objects_whatever_the_chunking() {
        let stream =
            "{\"result\":{\"a\":\"}{\\\"\",\"b\":[1,{}]}}\n{\"result\":{}}\n  {\"x\":\"\\\\\"}\n";
        let expected = vec![
            "{\"result\":{\"a\":\"}{\\\"\",\"b\":[1,{}]}}",
            "{\"result\":{}}",
            "{\"x\":\"\\\\\"}",
        ];
        for chunk in 1..stream.len() {
            let mut s = ObjectSplitter::new(1024);
            let mut got = Vec::new();
            for part in stream.as_bytes().chunks(chunk) {
                s.push(part);
                got.extend(all(&mut s));
            }
            assert_eq!(got, expected, "chunk size {chunk}");
            assert!(s.is_idle());
        }
    }

    #[test]
    fn holds_a_partial_object_until_it_completes() {
        let mut s = ObjectSplitter::new(1024);
        s.push(b"{\"a\":");
        assert_eq!(s.next_object(), Ok(None));
        assert!(!s.is_idle());
        s.push(b"1}{");
        assert_eq!(s.next_object(), Ok(Some(b"{\"a\":1}".to_vec())));
        assert_eq!(s.next_object(), Ok(None));
        assert!(!s.is_idle());
    }

    #[test]
    fn rejects_what_is_not_a_stream_of_objects() {
        let mut s = ObjectSplitter::new(1024);
        s.push(b"garbage");
        assert_eq!(s.next_object(), Err(SplitError::NotAnObject(b'g')));
        let mut s = ObjectSplitter::new(1024);
        s.push(b"{]]");
        assert_eq!(s.next_object(), Ok(Some(b"{]".to_vec())));
        assert_eq!(s.next_object(), Err(SplitError::NotAnObject(b']')));
    }

    #[test]
    fn bounds_the_buffer() {
        let mut s = ObjectSplitter::new(16);
        s.push(b"{\"a\":\"0123456789abcdef");
        assert_eq!(s.next_object(), Err(SplitError::TooLong(16)));
    }
}
