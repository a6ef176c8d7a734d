//! Rewrites a `multipart/related` body written with LF line endings into the CRLF form
//! multer parses, as a stream: the media part is never buffered.
//!
//! apitools (gsutil) and gcsfs end their delimiter and header lines with a bare `\n`, and
//! real GCS accepts that; multer only knows `\r\n`. The style is decided by the first
//! delimiter line: a body that starts `--boundary\r\n` passes through untouched. In LF
//! mode, header lines get `\r\n`, and each `\n--boundary` in a part body (the delimiter
//! that ends it) becomes `\r\n--boundary`. A boundary never occurs inside part data
//! (that is what makes it a boundary), so no data byte changes.

use bytes::{Bytes, BytesMut};

/// The longest first line looked at to decide the style (delimiter + padding).
const MAX_FIRST_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first line end: the style is not known yet.
    Start,
    /// CRLF body (or not recognisably LF): pass everything through.
    PassThrough,
    /// In a part's header block; `at_line_start` after each line end.
    Headers { at_line_start: bool },
    /// In a part's body, watching for `\n--boundary`.
    Body,
    /// Just after a delimiter in a body: `--` closes, anything else is padding to `\n`.
    AfterDelimiter { dashes: u8 },
    /// On the rest of a delimiter line (transport padding) until its `\n`.
    DelimiterLine,
    /// After the closing delimiter: copied as is (multer ignores it).
    Epilogue,
}

pub struct LfNormalizer {
    state: State,
    /// `\n--` + boundary: the delimiter as it appears after a part body.
    delimiter: Vec<u8>,
    /// Bytes not yet decided on (a possible partial delimiter, or the first line).
    carry: BytesMut,
}

impl LfNormalizer {
    pub fn new(boundary: &str) -> Self {
        let mut delimiter = b"\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Self {
            state: State::Start,
            delimiter,
            carry: BytesMut::new(),
        }
    }

    /// Feeds one chunk and returns what can be emitted now.
    pub fn push(&mut self, chunk: Bytes) -> Vec<Bytes> {
        let input = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        let mut out = Vec::new();
        self.process(input, &mut out, false);
        out
    }

    /// The end of the body: whatever is held back is emitted as it is.
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = self.carry.split().freeze();
        let mut out = Vec::new();
        self.process(rest, &mut out, true);
        let total: usize = out.iter().map(Bytes::len).sum();
        if total == 0 {
            return None;
        }
        let mut all = BytesMut::with_capacity(total);
        for b in out {
            all.extend_from_slice(&b);
        }
        Some(all.freeze())
    }

    /// One header or delimiter line from `i`: emits it with a CRLF ending and returns
    /// where the next line starts and whether this one was empty. `None`: the line goes
    /// on in the next chunk (what was seen is emitted, bar a trailing `\r` held back so
    /// a CRLF split across chunks is not doubled).
    fn line(&mut self, input: &Bytes, i: usize, out: &mut Vec<Bytes>, at_end: bool) -> Option<(usize, bool)> {
        let rest = &input[i..];
        match rest.iter().position(|&b| b == b'\n') {
            None => {
                let keep = usize::from(!at_end && rest.last() == Some(&b'\r'));
                out.push(input.slice(i..input.len() - keep));
                self.carry.extend_from_slice(&rest[rest.len() - keep..]);
                None
            }
            Some(nl) => {
                let line = &rest[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                out.push(input.slice(i..i + line.len()));
                out.push(Bytes::from_static(b"\r\n"));
                Some((i + nl + 1, line.is_empty()))
            }
        }
    }

    fn process(&mut self, input: Bytes, out: &mut Vec<Bytes>, at_end: bool) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Start => match input.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let crlf = nl > 0 && input[nl - 1] == b'\r';
                        let is_delimiter = input.starts_with(&self.delimiter[1..]);
                        if crlf || !is_delimiter {
                            self.state = State::PassThrough;
                        } else {
                            out.push(input.slice(..nl));
                            out.push(Bytes::from_static(b"\r\n"));
                            i = nl + 1;
                            self.state = State::Headers { at_line_start: true };
                        }
                    }
                    None if input.len() > MAX_FIRST_LINE || at_end => self.state = State::PassThrough,
                    None => {
                        self.carry.extend_from_slice(&input);
                        return;
                    }
                },
                State::PassThrough | State::Epilogue => {
                    out.push(input.slice(i..));
                    return;
                }
                State::Headers { at_line_start } => match self.line(&input, i, out, at_end) {
                    None => {
                        // Only a held-back `\r` keeps the line empty so far.
                        if input.len() > i && &input[i..] != b"\r" {
                            self.state = State::Headers { at_line_start: false };
                        }
                        return;
                    }
                    Some((next, empty)) => {
                        i = next;
                        self.state = if empty && at_line_start {
                            State::Body
                        } else {
                            State::Headers { at_line_start: true }
                        };
                    }
                },
                State::Body => {
                    let rest = &input[i..];
                    let d = &self.delimiter;
                    let mut from = 0;
                    loop {
                        let Some(p) = rest[from..].iter().position(|&b| b == b'\n').map(|p| p + from) else {
                            out.push(input.slice(i..));
                            return;
                        };
                        let tail = &rest[p..];
                        if tail.len() >= d.len() {
                            if &tail[..d.len()] == d.as_slice() {
                                // The delimiter: emit the body, then it in CRLF form. In
                                // LF mode a `\r` before it is part of the data.
                                out.push(input.slice(i..i + p));
                                let mut delim = BytesMut::with_capacity(d.len() + 1);
                                delim.extend_from_slice(b"\r");
                                delim.extend_from_slice(d);
                                out.push(delim.freeze());
                                i += p + d.len();
                                self.state = State::AfterDelimiter { dashes: 0 };
                                break;
                            }
                            from = p + 1;
                        } else if d.starts_with(tail) && !at_end {
                            // Maybe a delimiter split across chunks: decide with more data.
                            out.push(input.slice(i..i + p));
                            self.carry.extend_from_slice(&rest[p..]);
                            return;
                        } else {
                            from = p + 1;
                        }
                    }
                }
                State::AfterDelimiter { dashes } => {
                    let b = input[i];
                    if b == b'-' && dashes == 0 {
                        out.push(Bytes::from_static(b"-"));
                        i += 1;
                        self.state = State::AfterDelimiter { dashes: 1 };
                    } else if b == b'-' && dashes == 1 {
                        out.push(Bytes::from_static(b"-"));
                        i += 1;
                        self.state = State::Epilogue;
                    } else {
                        self.state = State::DelimiterLine;
                    }
                }
                State::DelimiterLine => match self.line(&input, i, out, at_end) {
                    None => return,
                    Some((next, _)) => {
                        i = next;
                        self.state = State::Headers { at_line_start: true };
                    }
                },
            }
        }
    }
}

/// Wraps a body stream so it reaches multer in CRLF form.
pub fn normalize<S, E>(boundary: &str, input: S) -> impl futures::Stream<Item = Result<Bytes, E>> + Send + use<S, E>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Send,
{
    use futures::StreamExt;
    let n = LfNormalizer::new(boundary);
    futures::stream::unfold(
        (input, n, std::collections::VecDeque::<Bytes>::new(), false),
        |(mut input, mut n, mut queue, mut ended)| async move {
            loop {
                if let Some(b) = queue.pop_front() {
                    if b.is_empty() {
                        continue;
                    }
                    return Some((Ok(b), (input, n, queue, ended)));
                }
                if ended {
                    return None;
                }
                match input.next().await {
                    Some(Ok(chunk)) => queue.extend(n.push(chunk)),
                    Some(Err(e)) => {
                        ended = true;
                        return Some((Err(e), (input, n, queue, ended)));
                    }
                    None => {
                        ended = true;
                        queue.extend(n.finish());
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(boundary: &str, body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut n = LfNormalizer::new(boundary);
        let mut out = Vec::new();
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([body.len()]) {
            for b in n.push(Bytes::copy_from_slice(&body[last..c])) {
                out.extend_from_slice(&b);
            }
            last = c;
        }
        if let Some(b) = n.finish() {
            out.extend_from_slice(&b);
        }
        out
    }

    fn lf_body(boundary: &str, meta: &str, data: &[u8], close_newline: bool) -> Vec<u8> {
        let mut v = format!(
            "--{boundary}\nContent-Type: application/json; charset=UTF-8\n\n{meta}\n--{boundary}\nContent-Type: application/octet-stream\n\n"
        )
        .into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(format!("\n--{boundary}--").as_bytes());
        if close_newline {
            v.push(b'\n');
        }
        v
    }

    fn crlf_body(boundary: &str, meta: &str, data: &[u8], close_newline: bool) -> Vec<u8> {
        let mut v = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(format!("\r\n--{boundary}--").as_bytes());
        if close_newline {
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn lf_bodies_become_crlf() {
        let data = b"line1\nline2\r\n\n--not-the-boundary\n\r";
        let got = run("===b==", &lf_body("===b==", "{\"name\":\"x\"}", data, true), &[]);
        let mut want = crlf_body("===b==", "{\"name\":\"x\"}", data, false);
        want.push(b'\n');
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }

    #[test]
    fn crlf_bodies_pass_through() {
        let body = crlf_body("b", "{}", b"a\nb\r\n--c", true);
        assert_eq!(run("b", &body, &[3, 10, 40]), body);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_result(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'-'), Just(b'b'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            close_newline: bool,
        ) {
            // The boundary must not occur in the data.
            let boundary = "bnd==";
            prop_assume!(!data.windows(boundary.len()).any(|w| w == boundary.as_bytes()));
            let body = lf_body(boundary, "{}", &data, close_newline);
            let mut want = crlf_body(boundary, "{}", &data, false);
            if close_newline { want.push(b'\n'); }
            prop_assert_eq!(run(boundary, &body, &cuts), want);
        }

        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let _ = run("b", &body, &cuts);
        }
    }
}
