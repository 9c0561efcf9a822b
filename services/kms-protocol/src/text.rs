//! Escaping of strings a client chose (the machine name of a request, and anything else
//! that came off the wire) before they reach a terminal or a text log line.
//!
//! A client controls its machine name completely: a newline would start a forged log
//! line, an ESC or BEL sequence would recolour or retitle the operator's terminal, and
//! Unicode bidi controls would make the text read differently from what it is. Every text
//! rendering (kmsd's text log lines, `kmsctl`'s tables) goes through [`escape`]; JSON
//! output does not, serde escapes there.

use std::borrow::Cow;
use std::fmt;

/// True for the characters [`escape`] rewrites: C0 controls (newline, tab, ESC, BEL, ...),
/// DEL, C1 controls, the Unicode bidi controls (ALM, LRM, RLM, LRE..RLO, LRI..PDI) and the
/// line and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `s` with every [`is_unsafe`] character written as `\u{hex}` (a newline becomes
/// `\u{a}`, ESC `\u{1b}`); borrowed unchanged when there is none. Backslashes stay as they
/// are: the result is for reading, not for parsing back.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(Escaped(s).to_string())
}

/// Displays a string escaped like [`escape`], without an allocation (for format strings
/// and log fields).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_unsafe) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "\\u{{{:x}}}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed_unchanged() {
        for s in [
            "",
            "PC-042",
            "büro-rechner.campus.example",
            "工作站",
            "a\\b \"c\"",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn controls_escapes_and_bidi_are_written_as_code_points() {
        assert_eq!(
            escape("PC\n2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE"),
            "PC\\u{a}2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE"
        );
        assert_eq!(
            escape("\x1b]0;pwned\x07\x1b[31m"),
            "\\u{1b}]0;pwned\\u{7}\\u{1b}[31m"
        );
        assert_eq!(escape("a\r\tb\0"), "a\\u{d}\\u{9}b\\u{0}");
        assert_eq!(escape("del\x7f c1\u{9b}"), "del\\u{7f} c1\\u{9b}");
        assert_eq!(
            escape("evil\u{202e}txt.exe\u{2066}\u{2069}\u{200f}\u{61c}"),
            "evil\\u{202e}txt.exe\\u{2066}\\u{2069}\\u{200f}\\u{61c}"
        );
        assert_eq!(escape("x\u{2028}y\u{2029}"), "x\\u{2028}y\\u{2029}");
    }

    #[test]
    fn nothing_unsafe_survives() {
        // Every code point below U+3000 and a few above: the output never holds one the
        // function calls unsafe, and safe ones pass through.
        let all: String = (0u32..0x3000)
            .chain([0xfeff, 0x1f600])
            .filter_map(char::from_u32)
            .collect();
        let out = escape(&all);
        assert!(!out.chars().any(is_unsafe));
        assert!(out.contains("\\u{1b}") && out.contains("\\u{202e}") && out.contains('é'));
        assert_eq!(Escaped(&all).to_string(), out);
    }
}
