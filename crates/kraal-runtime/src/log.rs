//! The CRI container log format, as kubelet reads it.
//!
//! Each record is one line:
//!
//! ```text
//! 2026-11-25T08:15:00.123456789Z stdout F hello world
//! ```
//!
//! that is `<timestamp> <stream> <tag> <content>\n`, where the timestamp is RFC 3339 in UTC
//! with exactly nine fractional digits, the stream is `stdout` or `stderr`, and the tag is
//! `F` (full: this record ends a line of the container's output) or `P` (partial: the line
//! goes on in the next record of the same stream). kubelet joins `P` records until an `F`.
//!
//! A line of the container's output ended by `\n` becomes one `F` record without the `\n`
//! (a `\r` before it is content and is kept). A line longer than the maximum record size is
//! cut into `P` records of exactly that size, then an `F` record with the rest. At the end
//! of a stream a last line without `\n` is written as `F`.
//!
//! [`LogWriter`] is pure logic over any [`Write`] and an injectable [`Clock`]; the monitor
//! feeds it what it reads from the container's pipes.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default maximum content size of one record, in bytes (containerd's default too).
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Which of the container's output streams a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name as written in the log: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Source of record timestamps; injectable so tests get exact bytes.
pub trait Clock {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Formats `t` as RFC 3339 UTC with nine fractional digits, e.g.
/// `2026-11-25T08:15:00.123456789Z`. Times before 1970 are written as the epoch.
pub fn format_timestamp(t: SystemTime) -> String {
    let mut s = String::with_capacity(30);
    push_timestamp(&mut s, t);
    s
}

fn push_timestamp(out: &mut String, t: SystemTime) {
    use std::fmt::Write as _;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    );
}

/// Converts a count of days since 1970-01-01 into a proleptic Gregorian (year, month, day).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // Work in 400-year eras that start on March 1st, so the leap day is the last day of
    // its year; 1970-01-01 is day 719_468 counted from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Turns raw output of the container's stdout and stderr into CRI log records.
///
/// Each stream keeps its own partial-line buffer, so interleaved reads of the two streams
/// never mix their lines. Every record goes to the output in a single `write_all`, so with
/// an `O_APPEND` file each record lands whole.
///
/// When the output fails, the bytes are still consumed (the container must never be
/// blocked by its log): the records are lost and the error is returned to the caller,
/// who decides whether to warn.
pub struct LogWriter<W: Write, C: Clock = SystemClock> {
    out: W,
    clock: C,
    max_line: usize,
    pending: [Vec<u8>; 2],
    record: Vec<u8>,
    stamp: String,
}

impl<W: Write> LogWriter<W, SystemClock> {
    /// A writer with the real clock and the default maximum record size.
    pub fn new(out: W) -> Self {
        Self::with_clock(out, SystemClock, MAX_LOG_LINE)
    }
}

impl<W: Write, C: Clock> LogWriter<W, C> {
    /// A writer with the given clock and maximum record content size (at least 1 byte).
    pub fn with_clock(out: W, clock: C, max_line: usize) -> Self {
        Self {
            out,
            clock,
            max_line: max_line.max(1),
            pending: [Vec::new(), Vec::new()],
            record: Vec::new(),
            stamp: String::with_capacity(32),
        }
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, mutably (for example to reopen a rotated file).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Replaces the output, returning the previous one. Partial lines stay buffered and go
    /// to the new output.
    pub fn replace_output(&mut self, out: W) -> W {
        std::mem::replace(&mut self.out, out)
    }

    /// Unwraps the output. Buffered partial lines are dropped: call [`Self::finish`] first.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Bytes of `stream` waiting for the end of their line.
    pub fn pending(&self, stream: Stream) -> &[u8] {
        &self.pending[stream.index()]
    }

    /// Consumes `data` read from `stream`, writing a record for every complete line and
    /// a `P` record for every full-size piece of an over-long line. All of `data` is
    /// consumed even when the output fails; the first output error is returned.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let mut result = Ok(());
        let mut rest = data;
        while !rest.is_empty() {
            let room = self.max_line - self.pending[stream.index()].len().min(self.max_line);
            // Look at most one byte past the room left: a newline there still ends the line
            // in this record; anything else means the record is full and the line goes on.
            let window = &rest[..rest.len().min(room + 1)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                let (line, tail) = (&rest[..nl], &rest[nl + 1..]);
                let r = self.emit_with_pending(stream, line, b'F');
                keep_first_error(&mut result, r);
                rest = tail;
            } else if window.len() > room {
                let r = self.emit_with_pending(stream, &rest[..room], b'P');
                keep_first_error(&mut result, r);
                rest = &rest[room..];
            } else {
                self.pending[stream.index()].extend_from_slice(rest);
                rest = &[];
            }
        }
        result
    }

    /// End of `stream`: a buffered partial line is written as an `F` record.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        if self.pending[stream.index()].is_empty() {
            return Ok(());
        }
        self.emit_with_pending(stream, &[], b'F')
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes one record whose content is the stream's pending bytes followed by `tail`,
    /// and empties the pending buffer.
    fn emit_with_pending(&mut self, stream: Stream, tail: &[u8], tag: u8) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        let r = self.emit(stream, &pending, tail, tag);
        // Keep the allocation for the next partial line.
        let mut pending = pending;
        pending.clear();
        self.pending[stream.index()] = pending;
        r
    }

    fn emit(&mut self, stream: Stream, head: &[u8], tail: &[u8], tag: u8) -> io::Result<()> {
        self.stamp.clear();
        push_timestamp(&mut self.stamp, self.clock.now());
        self.record.clear();
        self.record.extend_from_slice(self.stamp.as_bytes());
        self.record.push(b' ');
        self.record.extend_from_slice(stream.as_str().as_bytes());
        self.record.push(b' ');
        self.record.push(tag);
        self.record.push(b' ');
        self.record.extend_from_slice(head);
        self.record.extend_from_slice(tail);
        self.record.push(b'\n');
        let r = self.out.write_all(&self.record);
        // Do not keep a huge buffer around after an unusually long record.
        if self.record.capacity() > 2 * (self.max_line + 64) {
            self.record = Vec::new();
        }
        r
    }
}

fn keep_first_error(result: &mut io::Result<()>, r: io::Result<()>) {
    if result.is_ok() {
        *result = r;
    }
}

/// One parsed record of a CRI log file (the inverse of what [`LogWriter`] writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub timestamp: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one record, without its trailing `\n`. Returns `None` when the line is not a
/// CRI log record.
pub fn parse_record(line: &[u8]) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next()?;
    Some(LogRecord {
        timestamp,
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A clock that starts at a fixed instant and advances 1 ns per reading.
    struct TickClock(Cell<u64>);

    impl TickClock {
        fn at(nanos: u64) -> Self {
            TickClock(Cell::new(nanos))
        }
    }

    impl Clock for TickClock {
        fn now(&self) -> SystemTime {
            let n = self.0.get();
            self.0.set(n + 1);
            UNIX_EPOCH + Duration::from_nanos(n)
        }
    }

    // 2026-11-25T08:15:00Z
    const BASE: u64 = 1_795_594_500 * 1_000_000_000;

    fn writer(max: usize) -> LogWriter<Vec<u8>, TickClock> {
        LogWriter::with_clock(Vec::new(), TickClock::at(BASE), max)
    }

    fn text(w: &LogWriter<Vec<u8>, TickClock>) -> String {
        String::from_utf8(w.get_ref().clone()).expect("utf8")
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            format_timestamp(UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::new(1_795_594_500, 123_456_789)),
            "2026-11-25T08:15:00.123456789Z"
        );
        // Leap day, end of year, end of century, far future.
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::new(1_704_067_199, 999_999_999)),
            "2023-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::from_secs(4_107_542_400)),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            "9999-12-31T23:59:59.000000000Z"
        );
        // Before the epoch: clamped.
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn civil_matches_day_by_day_walk() {
        // Walk day by day from 1970 through 2100 and compare with a naive calendar.
        let (mut y, mut m, mut d) = (1970u64, 1u32, 1u32);
        for days in 0..(131 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                _ if leap => 29,
                _ => 28,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn full_lines_exact_bytes() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"hello\nworld\n").expect("write");
        w.write(Stream::Stderr, b"oops\n").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout F hello\n\
             2026-11-25T08:15:00.000000001Z stdout F world\n\
             2026-11-25T08:15:00.000000002Z stderr F oops\n"
        );
    }

    #[test]
    fn empty_lines() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"\n\n").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout F \n\
             2026-11-25T08:15:00.000000001Z stdout F \n"
        );
        w.finish(Stream::Stdout).expect("finish");
        assert_eq!(w.get_ref().iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn crlf_is_content() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"dos\r\n\r\n").expect("write");
        assert_eq!(
            w.get_ref().as_slice(),
            b"2026-11-25T08:15:00.000000000Z stdout F dos\r\n\
              2026-11-25T08:15:00.000000001Z stdout F \r\n"
        );
    }

    #[test]
    fn partial_line_across_reads() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"hel").expect("write");
        w.write(Stream::Stdout, b"lo wo").expect("write");
        assert!(w.get_ref().is_empty());
        assert_eq!(w.pending(Stream::Stdout), b"hello wo");
        w.write(Stream::Stdout, b"rld\nnext").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout F hello world\n"
        );
        assert_eq!(w.pending(Stream::Stdout), b"next");
        w.finish(Stream::Stdout).expect("finish");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout F hello world\n\
             2026-11-25T08:15:00.000000001Z stdout F next\n"
        );
        // Finishing again writes nothing.
        let len = w.get_ref().len();
        w.finish(Stream::Stdout).expect("finish");
        assert_eq!(w.get_ref().len(), len);
    }

    #[test]
    fn long_line_is_split_p_p_f() {
        let mut w = writer(4);
        w.write(Stream::Stdout, b"abcdefghij\n").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout P abcd\n\
             2026-11-25T08:15:00.000000001Z stdout P efgh\n\
             2026-11-25T08:15:00.000000002Z stdout F ij\n"
        );
    }

    #[test]
    fn line_of_exactly_max_is_one_full_record() {
        let mut w = writer(4);
        w.write(Stream::Stdout, b"abcd\n").expect("write");
        assert_eq!(text(&w), "2026-11-25T08:15:00.000000000Z stdout F abcd\n");

        // Also when the newline arrives in a later read.
        let mut w = writer(4);
        w.write(Stream::Stdout, b"ab").expect("write");
        w.write(Stream::Stdout, b"cd").expect("write");
        assert!(w.get_ref().is_empty());
        w.write(Stream::Stdout, b"\n").expect("write");
        assert_eq!(text(&w), "2026-11-25T08:15:00.000000000Z stdout F abcd\n");

        // Exactly twice the maximum: one P then one F, never an empty F.
        let mut w = writer(4);
        w.write(Stream::Stdout, b"abcdefgh\n").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout P abcd\n\
             2026-11-25T08:15:00.000000001Z stdout F efgh\n"
        );
    }

    #[test]
    fn long_line_split_across_reads_byte_by_byte() {
        let mut w = writer(4);
        for b in b"abcdefghij\nxy" {
            w.write(Stream::Stdout, std::slice::from_ref(b))
                .expect("write");
        }
        w.finish(Stream::Stdout).expect("finish");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout P abcd\n\
             2026-11-25T08:15:00.000000001Z stdout P efgh\n\
             2026-11-25T08:15:00.000000002Z stdout F ij\n\
             2026-11-25T08:15:00.000000003Z stdout F xy\n"
        );
    }

    #[test]
    fn long_partial_at_eof() {
        let mut w = writer(4);
        w.write(Stream::Stderr, b"abcdefghij").expect("write");
        // Only what is known to continue is written: two P records, "ij" waits.
        assert_eq!(w.pending(Stream::Stderr), b"ij");
        w.finish(Stream::Stderr).expect("finish");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stderr P abcd\n\
             2026-11-25T08:15:00.000000001Z stderr P efgh\n\
             2026-11-25T08:15:00.000000002Z stderr F ij\n"
        );
    }

    #[test]
    fn streams_keep_separate_partial_buffers() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"out-").expect("write");
        w.write(Stream::Stderr, b"err-").expect("write");
        w.write(Stream::Stdout, b"one\nout-").expect("write");
        w.write(Stream::Stderr, b"one\n").expect("write");
        w.write(Stream::Stdout, b"two\n").expect("write");
        assert_eq!(
            text(&w),
            "2026-11-25T08:15:00.000000000Z stdout F out-one\n\
             2026-11-25T08:15:00.000000001Z stderr F err-one\n\
             2026-11-25T08:15:00.000000002Z stdout F out-two\n"
        );
    }

    #[test]
    fn big_line_concatenates_back() {
        let line: Vec<u8> = (0..40 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = line.clone();
        input.push(b'\n');
        let mut w = LogWriter::with_clock(Vec::new(), TickClock::at(BASE), MAX_LOG_LINE);
        for chunk in input.chunks(4093) {
            w.write(Stream::Stdout, chunk).expect("write");
        }
        let out = w.into_inner();
        let records: Vec<_> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_record(l).expect("record"))
            .collect();
        let tags: Vec<bool> = records.iter().map(|r| r.partial).collect();
        assert_eq!(tags, [true, true, false]);
        assert_eq!(records[0].content.len(), MAX_LOG_LINE);
        assert_eq!(records[1].content.len(), MAX_LOG_LINE);
        let joined: Vec<u8> = records.iter().flat_map(|r| r.content.to_vec()).collect();
        assert_eq!(joined, line);
    }

    /// An output that fails while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        fail: bool,
        attempts: usize,
        data: Vec<u8>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failing_output_still_consumes_input() {
        let out = Flaky {
            fail: true,
            ..Flaky::default()
        };
        let mut w = LogWriter::with_clock(out, TickClock::at(BASE), 16);
        let err = w
            .write(Stream::Stdout, b"one\ntwo\nthr")
            .expect_err("must fail");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        // Both complete lines were attempted and dropped; the partial line is kept.
        assert_eq!(w.get_ref().attempts, 2);
        assert!(w.get_ref().data.is_empty());
        assert_eq!(w.pending(Stream::Stdout), b"thr");
        // The output works again (disk freed, log reopened): writing goes on.
        w.get_mut().fail = false;
        w.write(Stream::Stdout, b"ee\n").expect("write");
        assert_eq!(
            w.get_ref().data,
            b"2026-11-25T08:15:00.000000002Z stdout F three\n"
        );
    }

    #[test]
    fn replace_output_keeps_partials() {
        let mut w = writer(16);
        w.write(Stream::Stdout, b"a\nb").expect("write");
        let old = w.replace_output(Vec::new());
        assert_eq!(old, b"2026-11-25T08:15:00.000000000Z stdout F a\n");
        w.write(Stream::Stdout, b"c\n").expect("write");
        assert_eq!(text(&w), "2026-11-25T08:15:00.000000001Z stdout F bc\n");
    }

    #[test]
    fn parse_record_roundtrip_and_rejects() {
        let r = parse_record(b"2026-11-25T08:15:00.000000000Z stderr P a b c").expect("parse");
        assert_eq!(r.timestamp, "2026-11-25T08:15:00.000000000Z");
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.content, b"a b c");
        let r = parse_record(b"2026-11-25T08:15:00.000000000Z stdout F ").expect("parse");
        assert_eq!(r.content, b"");
        assert!(parse_record(b"ts stdin F x").is_none());
        assert!(parse_record(b"ts stdout X x").is_none());
        assert!(parse_record(b"ts stdout F").is_none());
    }
}
