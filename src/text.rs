//! Text from outside (provider answers, tags, targets, messages) made safe to show and to store.
//!
//! Invariants: [`display_safe`] output holds no control character, no escape sequence and no
//! bidi or zero-width character (each is shown escaped, `\u{202e}`), so it can neither move the
//! cursor, colour a terminal, add lines nor reorder what is shown; [`cap`] never splits a
//! character. JSON output does not use these: it carries the exact data (JSON escapes control
//! characters itself).

/// The longest request id or trace id stored, in characters; a real one is under 64.
pub const MAX_ID_CHARS: usize = 128;
/// The longest provider message stored, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Whether `c` is invisible or reorders text: bidi controls, zero-width characters, the BOM.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}')
}

/// Whether `c` must be escaped before it reaches a terminal.
pub fn is_unsafe(c: char) -> bool {
    if c.is_control() || is_invisible(c) {
        return true;
    }
    // `escape_debug` escapes exactly the characters Rust considers non-printable or
    // grapheme-extending (line separators, unassigned code points...), quotes aside.
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().len() > 1
}

/// `text` on one line with every unsafe character escaped visibly (`\u{1b}`, `\n`), cut to
/// `max_chars` characters of output (a `…` marks a cut).
pub fn display_safe(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars() {
        let piece: String = if is_unsafe(c) {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let len = piece.chars().count();
        if count + len > max_chars {
            out.push('…');
            return out;
        }
        count += len;
        out.push_str(&piece);
    }
    out
}

/// `text` cut to at most `max_chars` characters (a `…` marks a cut), for storing provider text.
pub fn cap(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_drive_or_reorder_a_terminal() {
        let hostile = "\u{1b}[2J\u{1b}[H\u{1b}[32mALL OK\u{1b}[0m\nID fake\u{202e}txt\u{200b}";
        let shown = display_safe(hostile, 1000);
        assert!(!shown.chars().any(is_unsafe), "{shown}");
        assert_eq!(
            shown,
            "\\u{1b}[2J\\u{1b}[H\\u{1b}[32mALL OK\\u{1b}[0m\\nID fake\\u{202e}txt\\u{200b}"
        );
        assert_eq!(display_safe("plain 中文 \"q\"", 100), "plain 中文 \"q\"");
    }

    #[test]
    fn cuts_are_bounded_and_whole_characters() {
        assert_eq!(display_safe("abcdef", 3), "abc…");
        assert_eq!(display_safe("ab\u{1b}", 4), "ab…");
        assert_eq!(cap("中文中文", 2), "中…");
        assert_eq!(cap("ab", 2), "ab");
        assert_eq!(cap("abc", 2), "a…");
        assert_eq!(
            cap(&"R".repeat(200_000), MAX_ID_CHARS).chars().count(),
            MAX_ID_CHARS
        );
    }
}
