//! Hiding secrets in text before anyone sees it: Coupa error bodies, token
//! endpoint answers and webhook receivers may echo what we sent, raw or
//! escaped. [`Secrets`] finds each secret in any mix of raw, JSON-escaped
//! (`\"`, `\\`, `\/`, `\uXXXX`), form-encoded (`+` for space) and
//! percent-encoded (`%XX`, either case) characters and replaces it with
//! [`MARK`]; [`display_url`] shows a URL without its user info,
//! [`display_endpoint`] one without its query either. Imports
//! nothing from the crate so every module can share it.

use std::fmt;

use url::Url;

/// What a hidden value is replaced with.
pub const MARK: &str = "[redacted]";
/// Shorter values are not hidden: a 1-character "secret" would blank every
/// matching character of every message.
pub const MIN_SECRET_CHARS: usize = 4;
/// Whitespace-separated parts of a value (`Bearer <token>`) are hidden on
/// their own from this length: the leak criterion is 8 characters, and
/// shorter parts are words like `Bearer` or `Basic`.
pub const MIN_PART_CHARS: usize = 8;
/// Text ending in this much of a secret's start is hidden to its end: the
/// text may have been cut (a read cap) in the middle of the secret.
const MIN_TAIL_CHARS: usize = 4;

/// The values to hide. `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<Vec<char>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds `value` (whole and trimmed) and each whitespace-separated part
    /// of it of at least [`MIN_PART_CHARS`] characters.
    pub fn add(&mut self, value: &str) -> &mut Secrets {
        let mut push = |v: &str, min: usize| {
            let chars: Vec<char> = v.chars().collect();
            if chars.len() >= min && !self.values.contains(&chars) {
                self.values.push(chars);
            }
        };
        push(value, MIN_SECRET_CHARS);
        push(value.trim(), MIN_SECRET_CHARS);
        for part in value.split_whitespace() {
            push(part, MIN_PART_CHARS);
        }
        // Longest first: a whole value goes before its parts.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self
    }

    /// Adds a URL's user name and password, raw and percent-decoded, and
    /// `user:password` as HTTP Basic credentials carry it (base64).
    pub fn add_userinfo(&mut self, url: &Url) -> &mut Secrets {
        let user = url.username();
        let password = url.password().unwrap_or("");
        for v in [user, password] {
            self.add(v);
            self.add(&percent_decode(v));
        }
        if !user.is_empty() || !password.is_empty() {
            use base64::Engine as _;
            let basic = format!("{}:{}", percent_decode(user), percent_decode(password));
            self.add(&base64::engine::general_purpose::STANDARD.encode(basic));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every occurrence of every value, in any of the encodings
    /// above, replaced by [`MARK`]; a tail that starts a value is hidden too.
    pub fn redact(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut p = 0;
        while p < text.len() {
            let end = self
                .values
                .iter()
                .filter_map(|v| match_at(text, p, v))
                .max();
            match end {
                Some(end) if end > p => {
                    out.push_str(MARK);
                    p = end;
                }
                _ => {
                    let c = text[p..].chars().next().expect("p is below len");
                    out.push(c);
                    p += c.len_utf8();
                }
            }
        }
        out
    }

    /// A one-line excerpt of at most `max_chars` (plus `…`): redacted
    /// first, then whitespace collapsed (redacted again, as collapsing can
    /// join a secret's parts), then cut, so a cut never halves a secret.
    pub fn excerpt(&self, text: &str, max_chars: usize) -> String {
        let redacted = self.redact(text);
        let one_line = redacted
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        cut(&self.redact(&one_line), max_chars)
    }
}

/// The first `max_chars` characters of `text`, `…` when cut.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A URL for messages, logs and events: user info removed.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// `scheme://host[:port]/path`: what logs and errors show of an endpoint
/// whose query may carry a token (a webhook URL): no user info, query or
/// fragment.
pub fn display_endpoint(url: &Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(p) = url.port() {
        s += &format!(":{p}");
    }
    s + url.path()
}

/// `%XX` sequences decoded (lossy UTF-8); other text as it is.
fn percent_decode(s: &str) -> String {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Where a match of `secret` starting at byte `p` of `text` ends (the
/// longest), or the text's end when the text stops after at least
/// [`MIN_TAIL_CHARS`] characters of it. Each character may come in any
/// encoding, so this walks the set of positions reachable so far (no
/// backtracking blow-up on `\\\\…`).
fn match_at(text: &str, p: usize, secret: &[char]) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = *secret.first()?;
    if !could_start(bytes[p], first) {
        return None;
    }
    let mut states = vec![p];
    let mut next = Vec::new();
    for (i, &c) in secret.iter().enumerate() {
        if i >= MIN_TAIL_CHARS && states.iter().any(|&q| cut_short(&bytes[q..])) {
            return Some(text.len());
        }
        next.clear();
        for &q in &states {
            encodings_at(text, q, c, &mut next);
        }
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            return None;
        }
        std::mem::swap(&mut states, &mut next);
    }
    states.into_iter().max()
}

/// Whether the text ends here, or a few bytes on inside an escape
/// (`\\u00`, `%C`) that a cut broke off.
fn cut_short(rest: &[u8]) -> bool {
    rest.is_empty() || (rest.len() < 12 && matches!(rest[0], b'\\' | b'%'))
}

fn could_start(b: u8, c: char) -> bool {
    let mut raw = [0u8; 4];
    b == c.encode_utf8(&mut raw).as_bytes()[0] || b == b'%' || b == b'\\' || (c == ' ' && b == b'+')
}

/// Pushes the end of every encoding of `c` found at byte `q` of `text`.
fn encodings_at(text: &str, q: usize, c: char, ends: &mut Vec<usize>) {
    let rest = &text.as_bytes()[q..];
    let mut buf = [0u8; 4];
    let raw = c.encode_utf8(&mut buf).as_bytes();
    if rest.starts_with(raw) {
        ends.push(q + raw.len());
    }
    if c == ' ' && rest.first() == Some(&b'+') {
        ends.push(q + 1);
    }
    // Percent-encoding: every UTF-8 byte as %XX, hex in either case.
    if rest.first() == Some(&b'%') && rest.len() >= 3 * raw.len() {
        let all = raw
            .iter()
            .enumerate()
            .all(|(k, &b)| rest[3 * k] == b'%' && hex_byte(&rest[3 * k + 1..3 * k + 3]) == Some(b));
        if all {
            ends.push(q + 3 * raw.len());
        }
    }
    if rest.first() == Some(&b'\\') {
        let short = match c {
            '"' => Some(b'"'),
            '\\' => Some(b'\\'),
            '/' => Some(b'/'),
            '\n' => Some(b'n'),
            '\r' => Some(b'r'),
            '\t' => Some(b't'),
            '\u{8}' => Some(b'b'),
            '\u{c}' => Some(b'f'),
            _ => None,
        };
        if short.is_some() && rest.get(1).copied() == short {
            ends.push(q + 2);
        }
        // `\uXXXX`, a surrogate pair beyond the BMP.
        let mut units = [0u16; 2];
        let units = c.encode_utf16(&mut units);
        let all = units.iter().enumerate().all(|(k, &u)| {
            let at = 6 * k;
            rest.len() >= at + 6
                && rest[at] == b'\\'
                && rest[at + 1] == b'u'
                && hex_byte(&rest[at + 2..at + 4]) == Some((u >> 8) as u8)
                && hex_byte(&rest[at + 4..at + 6]) == Some(u as u8)
        });
        if all {
            ends.push(q + 6 * units.len());
        }
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let d = |b: u8| (b as char).to_digit(16);
    Some((d(two[0])? * 16 + d(two[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secrets(v: &[&str]) -> Secrets {
        let mut s = Secrets::new();
        for v in v {
            s.add(v);
        }
        s
    }

    #[test]
    fn every_encoding_is_hidden() {
        let s = secrets(&["a\"b\\c+d/e f\u{e9}\u{1F600}"]);
        for echoed in [
            "a\"b\\c+d/e f\u{e9}\u{1F600}",
            r#"a\"b\\c+d\/e f\u00e9\ud83d\ude00"#,
            r#"a\"b\\c+d/e f\u00E9\uD83D\uDE00"#,
            "a%22b%5Cc%2Bd%2Fe+f%C3%A9%F0%9F%98%80",
            "a%22b%5cc%2bd%2fe%20f%c3%a9%f0%9f%98%80",
        ] {
            let out = s.redact(&format!("x {echoed} y"));
            assert_eq!(out, "x [redacted] y", "{echoed}");
        }
    }

    #[test]
    fn header_parts_are_hidden_but_not_short_words() {
        let s = secrets(&["Bearer HOOKHDR-0123456789"]);
        assert_eq!(
            s.redact("401 invalid token HOOKHDR-0123456789 (Bearer expected)"),
            "401 invalid token [redacted] (Bearer expected)"
        );
        assert_eq!(secrets(&["k"]).redact("keep"), "keep");
    }

    #[test]
    fn a_cut_never_halves_a_secret() {
        let secret = "0123456789abcdefghijklmno";
        let s = secrets(&[secret]);
        let body = format!("{}{secret} tail", "x".repeat(190));
        let e = s.excerpt(&body, 200);
        assert!(!e.contains("0123"), "{e}");
        // A text that stops inside a secret (a read cap) hides the tail.
        assert_eq!(s.redact("error: 0123456"), "error: [redacted]");
        assert_eq!(
            secrets(&["abcdef\"gh"]).redact("x abcdef\\"),
            "x [redacted]"
        );
    }

    #[test]
    fn urls_lose_their_user_info() {
        let u = Url::parse("http://user:p%40ss@host:8080/api?x=1").unwrap();
        assert_eq!(display_url(&u), "http://host:8080/api?x=1");
        let mut s = Secrets::new();
        s.add_userinfo(&u);
        assert_eq!(
            s.redact("p@ss p%40ss dXNlcjpwQHNz"),
            "[redacted] [redacted] [redacted]"
        );
    }

    #[test]
    fn backslash_runs_do_not_blow_up() {
        let s = secrets(&[&"\\".repeat(40)]);
        let text = "\\".repeat(5000);
        assert!(!s.redact(&text).contains(&"\\".repeat(40)));
    }

    /// Characters secrets are made of: the troublesome ones on purpose.
    fn secret_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('+'),
                1 => Just('/'),
                1 => Just('%'),
                1 => Just(' '),
                1 => Just('é'),
                1 => Just('€'),
                1 => Just('😀'),
            ],
            12..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn encode(secret: &str, how: u8) -> String {
        match how {
            0 => secret.to_string(),
            1 => {
                let quoted = serde_json::to_string(secret).unwrap();
                quoted[1..quoted.len() - 1].to_string()
            }
            2 => url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            3 => secret
                .bytes()
                .map(|b| format!("%{b:02x}"))
                .collect::<String>(),
            _ => secret
                .encode_utf16()
                .map(|u| format!("\\u{u:04X}"))
                .collect::<String>(),
        }
    }

    proptest! {
        /// A secret echoed in any encoding at any offset, the text then cut
        /// anywhere: no 8 characters of the secret remain.
        #[test]
        fn no_eight_characters_of_a_secret_survive(
            secret in secret_strategy(),
            how in 0u8..5,
            before in "[a-z \"\\\\]{0,250}",
            after in "[a-z ]{0,50}",
            max in 1usize..300,
        ) {
            let s = secrets(&[&secret]);
            let text = format!("{before}{}{after}", encode(&secret, how));
            for shown in [s.redact(&text), s.excerpt(&text, max)] {
                let chars: Vec<char> = secret.chars().collect();
                for w in chars.windows(8) {
                    let w: String = w.iter().collect();
                    for form in 0..5 {
                        prop_assert!(!shown.contains(&encode(&w, form)), "{shown:?} shows {w:?} in {text:?}");
                    }
                }
            }
        }
    }
}
