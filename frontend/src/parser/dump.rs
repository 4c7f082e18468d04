//! BuildKit's AST dump format (`Node.Dump`) and Go's `strconv.Quote`, so
//! our parse can be compared with BuildKit's golden `result` files.

use super::Node;

/// The dump of one node, without the surrounding parentheses.
pub(super) fn dump_node(node: &Node) -> String {
    let mut out = node.name.clone();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        out.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if let Some(sub) = &node.sub {
        out.push_str(&format!(" ({})", dump_node(sub)));
    }
    for arg in &node.args {
        out.push(' ');
        out.push_str(&go_quote(arg));
    }
    out.trim().to_string()
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes and
/// non-printable characters as `\x`, `\u` or `\U` escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` (letters, marks, numbers,
/// punctuation, symbols and the ASCII space): control characters, other
/// spaces and the common format characters are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c as u32, 0xad | 0x600..=0x605 | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0xfeff | 0xfff9..=0xfffb)
        || (0xe000..=0xf8ff).contains(&(c as u32))
        || (c as u32) >= 0xf0000)
}
