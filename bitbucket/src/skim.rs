//! The fast path of [`crate::envelope`]: one pass over a webhook body that checks it is JSON and
//! picks out what the edge needs (the repositories an event can be ordered by, and `date`),
//! borrowing from the body and building no values for the rest.
//!
//! What enters: a body that passed its signature check. What leaves: the envelope's parts, or
//! `None`. It answers only when it is sure that serde_json would read the body the same way;
//! anything outside its simple model makes it decline and the serde_json reader
//! (`payload::envelope_by_serde`) decides, and words the error: bytes that are not UTF-8, a
//! backslash in a field name or in a value inlet reads, a `date` that is not a plain string or a
//! 64-bit integer, a duplicate field, a missing one, a value of the wrong type, nesting deeper
//! than [`MAX_DEPTH`], any syntax error. Bodies Bitbucket sends take the fast path (the tests run
//! every captured payload through both readers); the fuzz target `envelope_skim` checks that
//! whatever the skim accepts, serde_json accepts with the same result.
//!
//! Why: serde_json's reader was the largest piece of the edge's own CPU per request (docs/BENCHMARKS.md,
//! "Edge CPU"); skipping the body without building serde's visitors costs a fraction of it.

use crate::payload::{Project, Repository, Timestamp, parse_timestamp};

/// Deeper nesting than this declines (serde_json decides): Bitbucket's bodies nest about six
/// levels, and the skip is recursive.
const MAX_DEPTH: usize = 64;

/// What the skim found of the fields the envelope reads. Each is `None` when absent or `null`.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// `pullRequest.toRef.repository`.
    pub target: Option<Repository>,
    /// `repository`.
    pub repository: Option<Repository>,
    /// `new` (`repo:modified`).
    pub new: Option<Repository>,
    /// The top-level `date`, when it reads as a timestamp.
    pub date: Option<Timestamp>,
}

/// The envelope's parts of `body`, or `None` to let serde_json decide.
pub(crate) fn envelope(body: &[u8]) -> Option<Found> {
    // UTF-8 everywhere (serde_json checks it only in the strings it reads, and is then more
    // lenient than this; such a body is simply left to it). Checking it once makes every string
    // slice below valid.
    std::str::from_utf8(body).ok()?;
    let mut skim = Skim { body, at: 0 };
    let found = skim.top()?;
    skim.whitespace();
    (skim.at == body.len()).then_some(found)
}

/// A cursor over the body.
struct Skim<'a> {
    body: &'a [u8],
    at: usize,
}

/// A field seen at most once: `None` before, `Some(value)` after (serde refuses duplicates of
/// the fields it reads).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

impl<'a> Skim<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        // Pretty-printed bodies are a third indentation: eight spaces at a time first.
        while let Some(word) = self.body.get(self.at..self.at + 8) {
            if word != b"        " {
                break;
            }
            self.at += 8;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// After whitespace, `byte`.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The top-level object.
    fn top(&mut self) -> Option<Found> {
        let (mut target, mut repository, mut new, mut date) = (None, None, None, None);
        self.object(0, |skim, key| match key {
            b"pullRequest" => once(&mut target, skim.nullable(|skim| skim.target())?),
            b"repository" => once(&mut repository, skim.nullable(Skim::repository)?),
            b"new" => once(&mut new, skim.nullable(Skim::repository)?),
            b"date" => once(&mut date, skim.date()?),
            _ => skim.skip(1),
        })?;
        Some(Found {
            target: target.flatten(),
            repository: repository.flatten(),
            new: new.flatten(),
            date: date.flatten(),
        })
    }

    /// `null` as `None`, else what `read` reads.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        self.whitespace();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// `pullRequest`: an object whose `toRef.repository` is required.
    fn target(&mut self) -> Option<Repository> {
        self.required(1, b"toRef", |skim| {
            skim.required(2, b"repository", Skim::repository)
        })
    }

    /// A repository object: `slug` and `project.key` required.
    fn repository(&mut self) -> Option<Repository> {
        let (mut slug, mut project) = (None, None);
        self.object(3, |skim, key| match key {
            b"slug" => once(&mut slug, skim.plain_string()?),
            b"project" => once(&mut project, skim.required(4, b"key", Skim::plain_string)?),
            _ => skim.skip(4),
        })?;
        Some(Repository {
            slug: slug?.to_owned(),
            project: Project {
                key: project?.to_owned(),
            },
        })
    }

    /// An object at nesting level `depth` of which only the field `name` is read, by `read`: it
    /// must be there, once; the other fields are skipped.
    fn required<T>(
        &mut self,
        depth: usize,
        name: &[u8],
        mut read: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let mut found = None;
        self.object(depth, |skim, key| {
            if key == name {
                once(&mut found, read(skim)?)
            } else {
                skim.skip(depth + 1)
            }
        })?;
        found
    }

    /// The top-level `date`: `Some(None)` when it is there but is no timestamp (inlet reads an
    /// unreadable date as absent), `None` to decline.
    fn date(&mut self) -> Option<Option<Timestamp>> {
        self.whitespace();
        match self.peek()? {
            b'"' => Some(parse_timestamp(self.plain_string()?).map(Timestamp)),
            b'-' | b'0'..=b'9' => {
                let number = self.number()?;
                if number.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                    return None;
                }
                let millis: i64 = std::str::from_utf8(number).ok()?.parse().ok()?;
                // serde_json reads `-0` as a float, which is no timestamp.
                if millis == 0 && number[0] == b'-' {
                    return Some(None);
                }
                Some(
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                        .ok()
                        .map(Timestamp),
                )
            }
            b'n' => self.literal(b"null").map(|()| None),
            b't' => self.literal(b"true").map(|()| None),
            b'f' => self.literal(b"false").map(|()| None),
            _ => None,
        }
    }

    /// An object, calling `field` with each key (positioned before its value). `depth` is the
    /// object's nesting level.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.plain_bytes()?;
            self.expect(b':')?;
            field(self, key)?;
            self.whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any value, checked and not kept.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.whitespace();
        match self.peek()? {
            b'{' => self.object(depth, |skim, _| skim.skip(depth + 1)),
            b'[' => {
                if depth > MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                self.whitespace();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.whitespace();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => {
                self.at += 1;
                self.skip_string_rest()
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.body.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A JSON number (the grammar serde_json checks when it skips one); its text.
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        Some(&self.body[start..self.at])
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// After whitespace, a string without escapes (a backslash declines): its text.
    fn plain_string(&mut self) -> Option<&'a str> {
        // The body is UTF-8 and both ends are ASCII quotes, so this cannot fail.
        std::str::from_utf8(self.plain_bytes()?).ok()
    }

    /// [`Skim::plain_string`] as bytes (field names are compared as bytes).
    fn plain_bytes(&mut self) -> Option<&'a [u8]> {
        self.whitespace();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        self.at = start + special(&self.body[start..])?;
        if self.body[self.at] != b'"' {
            return None;
        }
        self.at += 1;
        Some(&self.body[start..self.at - 1])
    }

    /// The rest of a string being skipped, after its opening quote: escapes checked as
    /// serde_json checks them when it skips a string.
    fn skip_string_rest(&mut self) -> Option<()> {
        loop {
            self.at += special(&self.body[self.at..])?;
            match self.body[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.body.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }
}

/// The index of the first `"`, `\` or control character in `bytes`, eight bytes at a time.
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        // A byte of `word ^ (c * ONES)` is zero where `word` has `c`; `x - ONES & !x & HIGH`
        // marks the bytes of `x` below 1 (resp. the bytes of `word` below 0x20).
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let marks = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGH;
        if marks != 0 {
            return Some(at + (marks.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}
