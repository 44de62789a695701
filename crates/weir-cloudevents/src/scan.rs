//! A quick check of JSON text for what [`crate::Json`] keeps: one valid JSON value that
//! serde_json reads as a `Value`, with no object repeating a key.
//!
//! Every event read from the log, every JSON payload published and every function output
//! is checked, so the check is a hand-written scanner, several times quicker than reading
//! the text with serde_json. It is conservative: it says yes only when serde_json would
//! read the text and no key repeats, and doubts everything else (an error, a repeated key,
//! a key with an escape in it, a number near the edge of `f64`'s range, a surrogate escape
//! that is not a pair, deep nesting). On a doubt the caller reads the text with
//! serde_json, which decides and makes every error.

/// Nesting deeper than this is left to serde_json; it refuses 128 levels (fewer for data
/// inside an event), and real payloads stay far below either.
const MAX_DEPTH: usize = 100;

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// One valid JSON value, no key repeated; `spaced` if there is whitespace between its
    /// tokens (or around it).
    Valid { spaced: bool },
    /// Anything else, which does not mean that the text is invalid.
    Doubt,
}

/// Scans `text` (see the module docs).
pub(crate) fn scan(text: &str) -> Scan {
    let mut scanner = Scanner {
        text: text.as_bytes(),
        at: 0,
        keys: Vec::new(),
        spaced: false,
    };
    scanner.space();
    let valid = scanner.value(0);
    scanner.space();
    if valid && scanner.at == text.len() {
        Scan::Valid {
            spaced: scanner.spaced,
        }
    } else {
        Scan::Doubt
    }
}

/// An object key: its text between the quotes (which holds no escape), and a cheap
/// summary of that text so that most different keys are told apart without comparing
/// them.
struct Key<'a> {
    text: &'a [u8],
    tag: u64,
}

impl<'a> Key<'a> {
    fn new(text: &'a [u8]) -> Self {
        let byte = |i: usize| text.get(i).map_or(0, |&b| u64::from(b));
        let len = text.len();
        let tag = (len as u64 & 0xffff_ffff)
            | byte(0) << 32
            | byte(1) << 40
            | byte(len / 2) << 48
            | byte(len.wrapping_sub(1)) << 56;
        Key { text, tag }
    }
}

struct Scanner<'a> {
    /// Valid UTF-8, so only ASCII needs looking at.
    text: &'a [u8],
    at: usize,
    /// The keys of the objects open, innermost last.
    keys: Vec<Key<'a>>,
    /// Whether whitespace was skipped.
    spaced: bool,
}

impl<'a> Scanner<'a> {
    /// The byte at the cursor; 0, which is valid nowhere, past the end.
    fn peek(&self) -> u8 {
        self.text.get(self.at).copied().unwrap_or(0)
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == byte;
        self.at += usize::from(found);
        found
    }

    /// Skips JSON whitespace. Compact text, the usual case, costs one comparison: every
    /// whitespace byte is at most a space.
    #[inline(always)]
    fn space(&mut self) {
        if self.peek() <= b' ' {
            self.skip_space();
        }
    }

    #[inline(never)]
    fn skip_space(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
            self.spaced = true;
        }
    }

    /// One value, inside `depth` arrays and objects; the cursor is on its first byte.
    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().is_some(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.space();
        if self.eat(b']') {
            return true;
        }
        if depth == MAX_DEPTH {
            return false;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            self.space();
            match self.peek() {
                b',' => {
                    self.at += 1;
                    self.space();
                }
                b']' => {
                    self.at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.space();
        if self.eat(b'}') {
            return true;
        }
        if depth == MAX_DEPTH {
            return false;
        }
        if self.keys.capacity() == 0 {
            self.keys.reserve(32);
        }
        let keys_from = self.keys.len();
        loop {
            if !self.key() {
                return false;
            }
            self.space();
            if !self.value(depth + 1) {
                return false;
            }
            self.space();
            match self.peek() {
                b',' => {
                    self.at += 1;
                    self.space();
                }
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return false,
            }
        }
        // Keys hold no escapes (see `key`), so equal keys have equal text.
        let unique = !has_duplicates(&self.keys[keys_from..], |key| (key.tag, key.text));
        self.keys.truncate(keys_from);
        unique
    }

    /// An object key and the colon after it; the key goes on the key stack. A key with an
    /// escape is doubted: it would have to be decoded to be compared with the others.
    fn key(&mut self) -> bool {
        if self.peek() != b'"' {
            return false;
        }
        match self.string() {
            Some((key, false)) => {
                self.space();
                if !self.eat(b':') {
                    return false;
                }
                self.keys.push(Key::new(key));
                true
            }
            _ => false,
        }
    }

    /// A string serde_json reads: no raw control character, only JSON's escapes, and
    /// `\u` escapes of surrogates only in pairs. Its text between the quotes, and whether
    /// it holds an escape; the cursor is on the opening quote.
    // Inlined into both callers: most strings are short, and the call cost about a
    // seventh of the scan.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        let text = self.text;
        let start = self.at + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the first quote, backslash or control character.
            while let Some(chunk) = text.get(at..at + 8) {
                let word = u64::from_le_bytes(chunk.try_into().ok()?);
                let special = special_bytes(word);
                if special != 0 {
                    at += special.trailing_zeros() as usize / 8;
                    break;
                }
                at += 8;
            }
            match *text.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some((&text[start..at], escaped));
                }
                b'\\' => {
                    at += escape(&text[at..])?;
                    escaped = true;
                }
                // serde_json refuses raw control characters.
                0..0x20 => return None,
                _ => at += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// A number of JSON's grammar whose magnitude is surely below `f64::MAX`, which
    /// serde_json reads (it refuses larger ones, as `Value` holds an `f64`).
    fn number(&mut self) -> bool {
        self.eat(b'-');
        // The digits before the point, leading zero aside: the magnitude is below
        // 10^(integer_digits + exponent).
        let integer_digits = match self.peek() {
            b'0' => {
                self.at += 1;
                0
            }
            b'1'..=b'9' => {
                let start = self.at;
                self.digits();
                self.at - start
            }
            _ => return false,
        };
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        let mut exponent: i64 = 0;
        if matches!(self.peek(), b'e' | b'E') {
            self.at += 1;
            let negative = self.eat(b'-') || {
                self.eat(b'+');
                false
            };
            let start = self.at;
            if !self.digits() {
                return false;
            }
            exponent = self.text[start..self.at].iter().fold(0i64, |e, &d| {
                e.saturating_mul(10).saturating_add(i64::from(d - b'0'))
            });
            if negative {
                exponent = -exponent;
            }
        }
        // A digit right after a leading zero (`01`) is an error; leave it to serde_json.
        !self.peek().is_ascii_digit()
            && (integer_digits as i64).saturating_add(exponent) <= MAX_DECIMAL_DIGITS
    }

    /// Zero or more digits; whether there was one.
    fn digits(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_ascii_digit() {
            self.at += 1;
        }
        self.at > start
    }
}

/// Numbers below 10^308 are below `f64::MAX` (about 1.8 × 10^308) with room for
/// serde_json's rounding.
const MAX_DECIMAL_DIGITS: i64 = 308;

/// Whether two of `items` have the same key: pairwise for the few members objects
/// usually have, hashed beyond.
pub(crate) fn has_duplicates<'a, T, K: Eq + std::hash::Hash>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> bool {
    if items.len() <= 16 {
        items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].iter().any(|b| key(a) == key(b)))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        !items.iter().all(|item| seen.insert(key(item)))
    }
}

/// Whether serde_json writes `text` in a JSON string as it is: it holds no quote,
/// backslash or control character.
pub(crate) fn needs_no_escape(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    let special = chunks.by_ref().fold(0, |special, chunk| {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        special | special_bytes(u64::from_le_bytes(word))
    });
    special == 0
        && chunks
            .remainder()
            .iter()
            .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Marks the high bit of each byte of `word` that is a quote, a backslash or a control
/// character, exactly for the lowest marked byte (which is all that is used): borrows
/// only run upwards from a marked byte.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let is_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    control | is_zero(word ^ (ONES * u64::from(b'"'))) | is_zero(word ^ (ONES * u64::from(b'\\')))
}

/// The length of the escape `rest` starts with, if serde_json reads it: the eight short
/// escapes, `\u` with four hex digits that is not a surrogate, and a surrogate pair.
fn escape(rest: &[u8]) -> Option<usize> {
    match rest.get(1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex_escape(rest)? {
            0xD800..=0xDBFF => matches!(hex_escape(rest.get(6..)?)?, 0xDC00..=0xDFFF).then_some(12),
            0xDC00..=0xDFFF => None,
            _ => Some(6),
        },
        _ => None,
    }
}

/// The code unit of the `\uXXXX` escape `rest` starts with.
fn hex_escape(rest: &[u8]) -> Option<u16> {
    let [b'\\', b'u', hex @ ..] = rest.get(..6)? else {
        return None;
    };
    hex.iter().try_fold(0u16, |unit, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(unit << 4 | u16::from(digit))
    })
}

/// `text`, valid JSON, without the whitespace between its tokens: every token (string,
/// number, literal) stays exactly as written. Copies runs, not bytes: strings are found
/// eight bytes at a time, as the scan finds them.
pub(crate) fn strip_whitespace(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        // A run of structure, numbers and literals, up to whitespace or a string.
        let run = bytes[at..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'"'))
            .map_or(bytes.len(), |n| at + n);
        out.extend_from_slice(&bytes[at..run]);
        at = run;
        match bytes.get(at) {
            Some(b'"') => {
                let end = string_end(bytes, at + 1);
                out.extend_from_slice(&bytes[at..end]);
                at = end;
            }
            Some(_) => {
                while matches!(bytes.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                    at += 1;
                }
            }
            None => {}
        }
    }
    // Whole tokens of valid UTF-8 were copied, and only ASCII whitespace left out.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where the string whose text starts at `at` ends: just past its closing quote (or at
/// the end of `bytes`, which valid JSON does not reach).
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    loop {
        while let Some(chunk) = bytes.get(at..at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let special = special_bytes(u64::from_le_bytes(word));
            if special != 0 {
                at += special.trailing_zeros() as usize / 8;
                break;
            }
            at += 8;
        }
        match bytes.get(at) {
            None => return bytes.len(),
            Some(b'"') => return at + 1,
            Some(b'\\') => at += 2,
            Some(_) => at += 1,
        }
    }
}
