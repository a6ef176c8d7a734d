//! `matchGlob` for object listings, with Cloud Storage's glob syntax:
//! `*` (any run of characters within one `/`-separated segment), `**` (any run, across
//! segments; `**/` also matches no directory at all), `?` (one character, not `/`),
//! `[abc]` / `[a-z]` / `[!abc]` (one character of a class), `{a,b}` (alternatives) and
//! `\` (escapes the next character).

use super::error::{StorageError, StorageResult};

/// Longest pattern accepted, most brace alternatives it may expand to, and most tokens
/// over all alternatives: matching one name costs at most `MAX_TOKENS` × its length.
const MAX_PATTERN: usize = 1024;
const MAX_ALTERNATIVES: usize = 256;
const MAX_TOKENS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` (not followed by `/`)
    AnyRun,
    /// `**/`: empty, or any run ending with `/`.
    AnyDirs,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone)]
pub struct Glob {
    /// The brace-free patterns the glob expands to; a name matches if any does.
    alternatives: Vec<Vec<Token>>,
}

fn invalid(pattern: &str, why: &str) -> StorageError {
    StorageError::invalid(format!("Invalid matchGlob {pattern:?}: {why}."))
}

impl Glob {
    pub fn parse(pattern: &str) -> StorageResult<Self> {
        if pattern.len() > MAX_PATTERN {
            return Err(invalid(pattern, "the pattern is too long"));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut alternatives = vec![];
        let mut total = 0;
        for expanded in expand_braces(pattern, &chars)? {
            let tokens = tokenize(pattern, &expanded)?;
            total += tokens.len();
            if total > MAX_TOKENS {
                return Err(invalid(pattern, "the pattern is too complex"));
            }
            alternatives.push(tokens);
        }
        Ok(Self { alternatives })
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let mut buffers = (vec![], vec![]);
        self.alternatives
            .iter()
            .any(|tokens| match_tokens(tokens, &name, &mut buffers))
    }
}

/// The index of the `]` closing a class that opens at `open`, with the rules `tokenize`
/// applies: a `]` right after `[` (or `[!`, `[^`) is a member, and `\` escapes.
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(chars.get(i), Some('!' | '^')) {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            ']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Expands `{a,b}` groups (nested ones too) into plain patterns, keeping escapes intact.
fn expand_braces(pattern: &str, chars: &[char]) -> StorageResult<Vec<Vec<char>>> {
    // Find the first top-level brace group outside a class or an escape.
    let mut i = 0;
    let mut open = None;
    let mut depth = 0usize;
    let mut commas = vec![];
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            // A class is skipped whole: braces and commas inside it are members.
            '[' => i = class_end(chars, i).ok_or_else(|| invalid(pattern, "unclosed '['"))?,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.unwrap_or(0);
                    let (head, tail) = (&chars[..start], &chars[i + 1..]);
                    let mut bounds = vec![start];
                    bounds.extend(&commas);
                    bounds.push(i);
                    let mut out = vec![];
                    for w in bounds.windows(2) {
                        let mut p = head.to_vec();
                        p.extend_from_slice(&chars[w[0] + 1..w[1]]);
                        p.extend_from_slice(tail);
                        out.extend(expand_braces(pattern, &p)?);
                        if out.len() > MAX_ALTERNATIVES {
                            return Err(invalid(pattern, "too many brace alternatives"));
                        }
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth > 0 {
        return Err(invalid(pattern, "unclosed '{'"));
    }
    Ok(vec![chars.to_vec()])
}

fn tokenize(pattern: &str, chars: &[char]) -> StorageResult<Vec<Token>> {
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\\' => {
                let Some(&next) = chars.get(i) else {
                    return Err(invalid(pattern, "a trailing '\\' escapes nothing"));
                };
                out.push(Token::Literal(next));
                i += 1;
            }
            '?' => out.push(Token::One),
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                    out.push(Token::AnyDirs);
                } else {
                    push_run(&mut out, Token::AnyRun);
                }
            }
            '*' => push_run(&mut out, Token::Star),
            '[' => {
                let end = class_end(chars, i - 1).ok_or_else(|| invalid(pattern, "unclosed '['"))?;
                let mut body = &chars[i..end];
                i = end + 1;
                let negated = matches!(body.first(), Some('!' | '^'));
                if negated {
                    body = &body[1..];
                }
                // Members, unescaped, then ranges over them.
                let mut members = vec![];
                let mut j = 0;
                while j < body.len() {
                    let escaped = body[j] == '\\' && j + 1 < body.len();
                    if escaped {
                        j += 1;
                    }
                    members.push((body[j], escaped));
                    j += 1;
                }
                let mut ranges = vec![];
                let mut k = 0;
                while k < members.len() {
                    let lo = members[k].0;
                    let dash = members.get(k + 1).is_some_and(|&(c, esc)| c == '-' && !esc);
                    if dash && k + 2 < members.len() {
                        let hi = members[k + 2].0;
                        if hi < lo {
                            return Err(invalid(pattern, "a character range is reversed"));
                        }
                        ranges.push((lo, hi));
                        k += 3;
                    } else {
                        ranges.push((lo, lo));
                        k += 1;
                    }
                }
                out.push(Token::Class { negated, ranges });
            }
            c => out.push(Token::Literal(c)),
        }
    }
    Ok(out)
}

/// Adjacent wildcards collapse into one (`***` is `**`): same language, fewer steps.
fn push_run(out: &mut Vec<Token>, t: Token) {
    match out.last_mut() {
        Some(last @ Token::Star) => *last = if t == Token::AnyRun { Token::AnyRun } else { Token::Star },
        Some(Token::AnyRun) => {}
        _ => out.push(t),
    }
}

/// Dynamic programming over (token, position): `reach[j]` says whether the tokens so
/// far can consume exactly `name[..j]`. Linear in tokens × name length (times the
/// name length for `**/`), with no backtracking blow-up.
fn match_tokens(tokens: &[Token], name: &[char], buffers: &mut (Vec<bool>, Vec<bool>)) -> bool {
    let n = name.len();
    let (reach, next) = buffers;
    reach.clear();
    reach.resize(n + 1, false);
    reach[0] = true;
    for t in tokens {
        next.clear();
        next.resize(n + 1, false);
        match t {
            Token::Literal(c) => {
                for j in 0..n {
                    next[j + 1] = reach[j] && name[j] == *c;
                }
            }
            Token::One => {
                for j in 0..n {
                    next[j + 1] = reach[j] && name[j] != '/';
                }
            }
            Token::Class { negated, ranges } => {
                for j in 0..n {
                    let inside = ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&name[j]));
                    next[j + 1] = reach[j] && name[j] != '/' && inside != *negated;
                }
            }
            Token::Star => {
                for j in 0..=n {
                    next[j] = reach[j] || (j > 0 && next[j - 1] && name[j - 1] != '/');
                }
            }
            Token::AnyRun => {
                for j in 0..=n {
                    next[j] = reach[j] || (j > 0 && next[j - 1]);
                }
            }
            Token::AnyDirs => {
                // Empty, or from a reachable point through any run ending in '/'.
                let mut open = false;
                for j in 0..=n {
                    if j > 0 && name[j - 1] == '/' && open {
                        next[j] = true;
                    }
                    next[j] |= reach[j];
                    open |= reach[j];
                }
            }
        }
        std::mem::swap(reach, next);
        if !reach.iter().any(|&r| r) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Glob::parse(p).unwrap().matches(name)
    }

    #[test]
    fn wildcards_follow_gcs_semantics() {
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "dir/a.txt"), "* stays within a segment");
        assert!(m("**.txt", "dir/a.txt"));
        assert!(m("**/*.txt", "a.txt"), "**/ matches no directory");
        assert!(m("**/*.txt", "x/y/a.txt"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(!m("a/**/b", "a/xb"));
        assert!(m("file?.log", "file1.log"));
        assert!(!m("file?.log", "file/.log"));
        assert!(!m("file?.log", "file12.log"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx"));
        assert!(m("[^a-c]x", "dx"));
        assert!(m("[]]", "]"));
        assert!(m("log.{txt,csv}", "log.csv"));
        assert!(!m("log.{txt,csv}", "log.json"));
        assert!(m("{a,b{c,d}}z", "bdz"));
        assert!(m("\\*lit", "*lit"));
        assert!(!m("\\*lit", "xlit"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("日本*", "日本語"));
        // Classes: a leading ']' is a member, braces inside are members, escapes work
        // in ranges, and wildcard runs collapse.
        assert!(m("{[],]x,y}", "]x"));
        assert!(m("{[],]x,y}", ",x"));
        assert!(m("{[],]x,y}", "y"));
        assert!(m("[]{]", "{"));
        assert!(m("[\\]-a]", "_"));
        assert!(m("[\\]-a]", "]"));
        assert!(
            Glob::parse("[a-\\]]").is_err(),
            "a reversed range, ']' sorting before 'a'"
        );
        assert!(m("[\\-]", "-"));
        assert!(m("a***b", "a/x/b"));
        assert!(!m("a**b*", "a/x/b/"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for p in ["[abc", "{a,b", "abc\\", "[z-a]"] {
            assert!(Glob::parse(p).is_err(), "{p}");
        }
        assert!(Glob::parse(&"{a,b}".repeat(9)).is_err(), "512 alternatives");
        assert!(Glob::parse(&"a".repeat(2000)).is_err());
        // 256 alternatives of 9 tokens: over the token budget.
        assert!(Glob::parse(&format!("abcdefghi{}", "{,}".repeat(8))).is_err());
    }

    #[test]
    fn long_names_do_not_blow_up() {
        let name = "a".repeat(1000);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &name));
        assert!(m("**a**a**a", &name));
    }
}
