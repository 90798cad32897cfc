//! Reading an input line by line as bytes, with a cap: a line longer than
//! [`LINE_CAP`] is read past without being held in memory, and reported
//! as one overlong line (one bad row), never the end of the file.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::rc::Rc;

/// Longest line read whole. A bar line is well under 200 bytes; past this a
/// "line" is binary data or a file without line breaks, and is refused as
/// one bad row without holding it in memory.
pub const LINE_CAP: usize = 64 * 1024;

/// One line as read: its bytes (with the line ending), at most
/// [`LINE_CAP`] + 1 of them kept.
#[derive(Debug, Default)]
pub(super) struct Line {
    pub(super) bytes: Vec<u8>,
    /// Bytes the line took in the input (0 at the end of the input).
    pub(super) consumed: usize,
    /// Bytes before the line's `\n`.
    pub(super) length: usize,
    /// Whether the line is longer than [`LINE_CAP`]; `bytes` then holds its start.
    pub(super) overlong: bool,
}

impl Line {
    /// The reason an overlong line is refused.
    pub(super) fn overlong_reason(&self) -> String {
        format!(
            "line is {} bytes long, longer than any bar line (at most {LINE_CAP} bytes are read); \
             its start is kept here",
            self.length
        )
    }
}

/// Read one line, keeping at most [`LINE_CAP`] + 1 bytes of it: the rest
/// of an overlong line is read past, never held.
pub(super) fn read_line(reader: &mut impl BufRead, line: &mut Line) -> std::io::Result<()> {
    line.bytes.clear();
    line.consumed = 0;
    let mut ended = false;
    while !ended {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let n = match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                ended = true;
                i + 1
            }
            None => available.len(),
        };
        let room = (LINE_CAP + 1).saturating_sub(line.bytes.len());
        line.bytes.extend_from_slice(&available[..n.min(room)]);
        line.consumed += n;
        reader.consume(n);
    }
    line.length = line.consumed - usize::from(ended);
    line.overlong = line.length > LINE_CAP;
    Ok(())
}

/// Lines already read (the first ones, while the format was worked out),
/// then the rest of the input.
pub(super) struct Lines<R> {
    pub(super) pending: VecDeque<Line>,
    pub(super) rest: R,
}

impl<R: BufRead> Lines<R> {
    /// The next line into `line`; `line.consumed` is 0 at the end.
    pub(super) fn next_into(&mut self, line: &mut Line) -> std::io::Result<()> {
        match self.pending.pop_front() {
            Some(l) => {
                *line = l;
                Ok(())
            }
            None => read_line(&mut self.rest, line),
        }
    }
}

/// A reader of CSV bytes that hands on lines up to [`LINE_CAP`] and
/// replaces a longer one by an empty line (which the CSV reader skips, so
/// line numbers stay right), noting it for the CSV reader to quarantine.
pub(super) struct CappedLines<R> {
    pub(super) lines: Lines<R>,
    pub(super) line: Line,
    pub(super) at: usize,
    pub(super) number: u64,
    pub(super) overlong: Rc<RefCell<VecDeque<(u64, Line)>>>,
}

impl<R: BufRead> Read for CappedLines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.line.bytes.len() {
            let mut line = Line::default();
            self.lines.next_into(&mut line)?;
            if line.consumed == 0 {
                return Ok(0);
            }
            self.number += 1;
            self.at = 0;
            if line.overlong {
                self.overlong.borrow_mut().push_back((self.number, line));
                self.line.bytes = b"\n".to_vec();
            } else {
                self.line = line;
            }
        }
        let rest = &self.line.bytes[self.at..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<Line> {
        let mut reader = BufReader::with_capacity(1024, bytes);
        let mut out = Vec::new();
        loop {
            let mut line = Line::default();
            read_line(&mut reader, &mut line).unwrap();
            if line.consumed == 0 {
                return out;
            }
            out.push(line);
        }
    }

    #[test]
    fn a_line_past_the_cap_is_read_past_and_the_next_line_is_whole() {
        let mut input = vec![b'x'; LINE_CAP * 3];
        input.extend_from_slice(b"\nnext\n");
        input.extend(std::iter::repeat_n(b'y', LINE_CAP));
        input.extend_from_slice(b"\r\n");
        input.extend(std::iter::repeat_n(b'z', LINE_CAP + 1));
        let lines = lines_of(&input);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].overlong);
        assert_eq!(lines[0].consumed, LINE_CAP * 3 + 1);
        assert!(
            lines[0].bytes.len() <= LINE_CAP + 1,
            "the long line was held"
        );
        assert_eq!(
            (lines[1].bytes.as_slice(), lines[1].overlong),
            (&b"next\n"[..], false)
        );
        // The cap counts the line's bytes before its `\n` (a `\r` included).
        assert!(lines[2].overlong);
        assert!(
            lines[3].overlong,
            "a last line without a newline counts whole"
        );
        let exact = lines_of(&[vec![b'a'; LINE_CAP], b"\n".to_vec()].concat());
        assert!(!exact[0].overlong);
    }
}
