//! `--chmod` values: octal (`755`, `0644`, `4755`) or symbolic like chmod(1)
//! (`u+x,g-w`, `a=rX`, `go=u`), as BuildKit accepts since 1.14 (it parses
//! symbolic modes with umask 0, so a missing "who" means `a`).

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// Octal: replaces the permission and special bits.
    Octal(u32),
    /// Symbolic clauses applied in order to each entry's own mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    ops: Vec<(char, Perm)>,
}

/// What an operator applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// Letters from `rwxXst`.
    Letters(String),
    /// Copy another class's bits (`u`, `g` or `o`).
    Copy(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;

impl Chmod {
    /// Parses a `--chmod` value; `None` when malformed.
    pub fn parse(s: &str) -> Option<Chmod> {
        if !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return u32::from_str_radix(s, 8).ok().map(Chmod::Octal);
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who = 0;
            while let Some(&c) = chars.peek() {
                match c {
                    'u' => who |= WHO_U,
                    'g' => who |= WHO_G,
                    'o' => who |= WHO_O,
                    'a' => who |= WHO_U | WHO_G | WHO_O,
                    _ => break,
                }
                chars.next();
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return None;
                }
                let mut letters = String::new();
                let mut copy = None;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' | 'w' | 'x' | 'X' | 's' | 't' if copy.is_none() => letters.push(c),
                        'u' | 'g' | 'o' if letters.is_empty() && copy.is_none() => copy = Some(c),
                        '+' | '-' | '=' => break,
                        _ => return None,
                    }
                    chars.next();
                }
                ops.push((op, copy.map_or(Perm::Letters(letters), Perm::Copy)));
            }
            if ops.is_empty() {
                return None;
            }
            clauses.push(Clause { who, ops });
        }
        Some(Chmod::Symbolic(clauses))
    }

    /// The new mode (`0o7777` bits) for an entry whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m & 0o7777,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for cl in clauses {
                    // umask 0: no "who" means everyone.
                    let who = if cl.who == 0 { WHO_U | WHO_G | WHO_O } else { cl.who };
                    for (op, perm) in &cl.ops {
                        let bits = match perm {
                            Perm::Copy(c) => {
                                let src = match c {
                                    'u' => (m >> 6) & 7,
                                    'g' => (m >> 3) & 7,
                                    _ => m & 7,
                                };
                                (src << 6 | src << 3 | src) & who & 0o777
                            }
                            Perm::Letters(l) => {
                                let mut b = 0;
                                for c in l.chars() {
                                    b |= match c {
                                        'r' => 0o444,
                                        'w' => 0o222,
                                        'x' => 0o111,
                                        // Execute only for directories or
                                        // when someone may already execute.
                                        'X' if is_dir || m & 0o111 != 0 => 0o111,
                                        's' => 0o6000,
                                        't' => 0o1000,
                                        _ => 0,
                                    };
                                }
                                b & who
                            }
                        };
                        match op {
                            '+' => m |= bits,
                            '-' => m &= !bits,
                            _ => m = (m & !who) | bits,
                        }
                    }
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o644, false), 0o755);
        assert_eq!(Chmod::parse("4755").unwrap().apply(0o644, false), 0o4755);
        let cases: &[(&str, u32, bool, u32)] = &[
            ("u+x", 0o644, false, 0o744),
            ("u+x,g-w", 0o664, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a=rX", 0o600, false, 0o444),
            ("a=rX", 0o700, false, 0o555),
            ("a=rX", 0o700, true, 0o555),
            ("go=u", 0o640, false, 0o666),
            ("o-rwx", 0o777, false, 0o770),
            ("u=rw,go=r", 0o777, false, 0o644),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o777, true, 0o1777),
            ("u+rw-x", 0o755, false, 0o655),
        ];
        for (s, from, dir, want) in cases {
            assert_eq!(Chmod::parse(s).unwrap().apply(*from, *dir), *want, "{s} on {from:o}");
        }
        for bad in ["", "8", "u", "u+q", "z+x", "u+x,", "07777777"] {
            assert!(Chmod::parse(bad).is_none(), "{bad}");
        }
    }
}
