//! Recognising JSON text that is in canonical form already, so [`crate::Json`] can keep it
//! as it is instead of transcoding it.
//!
//! Most JSON data is written by serde_json itself (a function's output, typically), so it
//! is canonical already; checking that is several times quicker than rewriting it. The
//! check is conservative: it says yes only when transcoding would succeed and give back
//! the same bytes, and no on any doubt (whitespace, an escape serde_json would write
//! differently, a number it would print otherwise, a duplicate key, deep nesting), in
//! which case the caller transcodes, which also produces serde_json's errors.

use crate::data::has_duplicates;

/// Nesting deeper than this is left to the transcoder; serde_json refuses 128 levels, and
/// real payloads stay far below either.
const MAX_DEPTH: usize = 100;

/// Whether `text` is one JSON value written exactly as `serde_json::Value::to_string`
/// writes the value serde_json reads from it. `false` does not mean the text is invalid.
pub(crate) fn is_canonical(text: &str) -> bool {
    let mut scanner = Scanner {
        text: text.as_bytes(),
        at: 0,
        keys: Vec::new(),
    };
    scanner.value(0) && scanner.at == text.len()
}

/// An object key: its text between the quotes, and a cheap summary of that text so that
/// most different keys are told apart without comparing them.
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

    /// One value, inside `depth` arrays and objects.
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
            match self.peek() {
                b',' => self.at += 1,
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
            if !(self.key() && self.value(depth + 1)) {
                return false;
            }
            match self.peek() {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return false,
            }
        }
        // Keys are compared as written: canonical escaping gives equal strings equal text.
        let unique = !has_duplicates(&self.keys[keys_from..], |key| (key.tag, key.text));
        self.keys.truncate(keys_from);
        unique
    }

    /// An object key and the colon after it; the key goes on the key stack.
    fn key(&mut self) -> bool {
        if self.peek() != b'"' {
            return false;
        }
        match self.string() {
            Some(key) if self.eat(b':') => {
                self.keys.push(Key::new(key));
                true
            }
            _ => false,
        }
    }

    /// A string holding only what serde_json writes as it is and the escapes serde_json
    /// writes; its text between the quotes. The cursor is on the opening quote.
    // Inlined into both callers: most strings are short, and the call cost about a
    // seventh of the scan.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a [u8]> {
        let text = self.text;
        let start = self.at + 1;
        let mut at = start;
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
                    return Some(&text[start..at]);
                }
                b'\\' => at += canonical_escape(&text[at..])?,
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

    /// A number as serde_json prints the number it reads from it: an integer in the range
    /// of `u64` or `i64` (not `-0`, which is a float), or a float in serde_json's shortest
    /// form.
    fn number(&mut self) -> bool {
        let start = self.at;
        let negative = self.eat(b'-');
        let mut magnitude: u64 = 0;
        let mut overflow = false;
        match self.peek() {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                while let digit @ b'0'..=b'9' = self.peek() {
                    self.at += 1;
                    match magnitude
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(digit - b'0')))
                    {
                        Some(m) => magnitude = m,
                        None => overflow = true,
                    }
                }
            }
            _ => return false,
        }
        let int_end = self.at;
        let is_float = matches!(self.peek(), b'.' | b'e' | b'E');
        if !is_float {
            // Leading zeros and such are errors, and out of range integers become floats,
            // whose text has a `.` or an `e`: all for the transcoder.
            return !overflow
                && !self.peek().is_ascii_digit()
                && (!negative || (1..=1 << 63).contains(&magnitude));
        }
        let has_fraction = self.eat(b'.');
        if has_fraction && !self.digits() {
            return false;
        }
        let fraction_end = self.at;
        if matches!(self.peek(), b'e' | b'E') {
            self.at += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.at += 1;
            }
            if !self.digits() {
                return false;
            }
        }
        let token = &self.text[start..self.at];
        if has_fraction
            && self.at == fraction_end
            && let Some(canonical) = is_short_decimal_canonical(
                &self.text[start + usize::from(negative)..int_end],
                &self.text[int_end + 1..fraction_end],
            )
        {
            return canonical;
        }
        is_canonical_float(token)
    }

    /// One or more digits.
    fn digits(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_ascii_digit() {
            self.at += 1;
        }
        self.at > start
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

/// For a number `integer.fraction` with no exponent and at most 15 digits, whether
/// serde_json prints it as it is written; `None` for any other number.
///
/// Such a number has at most 15 significant digits, so serde_json reads it exactly
/// rounded (its significand is below 2^53 and is divided by a power of ten that a double
/// holds exactly) and the double it reads has no shorter decimal form that reads back to
/// it (decimals of at most 15 digits stay distinct as doubles). Its shortest form is then
/// its own digits less trailing zeros, which serde_json (zmij) writes as a plain decimal
/// for magnitudes from 1e-5 up to 1e16, with `.0` after a whole number.
fn is_short_decimal_canonical(integer: &[u8], fraction: &[u8]) -> Option<bool> {
    if integer.len() + fraction.len() > 15 {
        return None;
    }
    let whole = fraction.iter().all(|&d| d == b'0');
    if integer == b"0" {
        if whole {
            // Zero, which prints as `0.0` or `-0.0`.
            return Some(fraction == b"0");
        }
        // Below 1e-5 serde_json uses an exponent.
        let leading_zeros = fraction.iter().take_while(|&&d| d == b'0').count();
        if leading_zeros > 4 {
            return None;
        }
    }
    Some(if whole {
        fraction == b"0"
    } else {
        fraction.last() != Some(&b'0')
    })
}

/// The length of the escape `rest` starts with, if serde_json writes it that way:
/// `\"`, `\\`, the five short escapes, and `\u00xx` (lower-case hex) for the other
/// control characters.
fn canonical_escape(rest: &[u8]) -> Option<usize> {
    match rest.get(1)? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let hex = rest.get(2..6)?;
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            let code = match hex {
                [b'0', b'0', high @ (b'0' | b'1'), low] => (high - b'0') << 4 | digit(*low)?,
                _ => return None,
            };
            // These have short escapes.
            (!matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(6)
        }
        _ => None,
    }
}

/// Whether serde_json prints the float it reads from `token` (a well-formed JSON number)
/// as `token`. Parsed by serde_json itself, since its parsing is not always exact.
fn is_canonical_float(token: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<f64>(token) else {
        return false;
    };
    let mut printed = [0u8; 32];
    let mut out = &mut printed[..];
    if serde_json::to_writer(&mut out, &value).is_err() {
        return false;
    }
    let len = 32 - out.len();
    printed[..len] == *token
}
