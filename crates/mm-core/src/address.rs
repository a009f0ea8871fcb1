//! Envelope addresses: what may be stored, and so later sent in an SMTP command.
//!
//! An address is accepted only if it is an RFC 5321 mailbox (`local@domain`,
//! a dot-string or quoted local part, a domain name or address literal), or the
//! bare `postmaster`, within RFC 5321's lengths (local part 64, domain 255,
//! whole path 256 with its brackets). CR, LF, NUL, other controls, and `<` or
//! `>` outside the mailbox are refused, so nothing a sender wrote can ever be
//! injected into an SMTP command. UTF-8 is allowed (RFC 6531). One pair of
//! surrounding angle brackets, as some MTAs pass them, is removed.

use crate::error::{Error, ErrorKind, Result};

/// Longest local part.
pub const MAX_LOCAL: usize = 64;
/// Longest domain.
pub const MAX_DOMAIN: usize = 255;
/// Longest address (the 256-octet path less its two brackets).
pub const MAX_ADDRESS: usize = 254;

/// Validates a recipient; returns it without brackets.
pub fn recipient(s: &str) -> Result<String> {
    checked_recipient(s)
        .map(str::to_string)
        .map_err(|why| invalid(s, why))
}

/// Validates an envelope sender; empty (or `<>`) is the null sender of bounces.
pub fn sender(s: &str) -> Result<String> {
    checked_sender(s)
        .map(str::to_string)
        .map_err(|why| invalid(s, why))
}

/// The grammar of [`recipient`], for the SMTP client: the address to put
/// in `RCPT TO:<...>` (brackets removed), or why it cannot be sent. What
/// enqueue accepted is what delivery sends, `postmaster` included (RFC 5321
/// 4.1.1.3: `RCPT TO:<Postmaster>` must be accepted).
pub fn checked_recipient(s: &str) -> std::result::Result<&str, &'static str> {
    let a = strip(s);
    if a.eq_ignore_ascii_case("postmaster") {
        return Ok(a);
    }
    check(a)?;
    Ok(a)
}

/// The grammar of [`sender`], for the SMTP client: the address to put in
/// `MAIL FROM:<...>` (`""` for the null sender), or why it cannot be sent.
pub fn checked_sender(s: &str) -> std::result::Result<&str, &'static str> {
    let a = strip(s);
    if !a.is_empty() {
        check(a)?;
    }
    Ok(a)
}

fn strip(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s)
}

fn invalid(s: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Invalid,
        format!("bad address {}: {why}", s.escape_debug()),
    )
}

fn check(a: &str) -> std::result::Result<(), &'static str> {
    if a.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return Err("contains a control character (CR, LF, NUL, ...)");
    }
    if a.len() > MAX_ADDRESS {
        return Err("longer than 254 octets (RFC 5321)");
    }
    let at = a.rfind('@').ok_or("not a mailbox: no '@domain'")?;
    let (local, domain) = (&a[..at], &a[at + 1..]);
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err("local part empty or longer than 64 octets");
    }
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return Err("domain empty or longer than 255 octets");
    }
    if local.starts_with('"') {
        quoted(local)?;
    } else {
        dot_string(local)?;
    }
    if domain.starts_with('[') {
        if !domain.ends_with(']')
            || domain[1..domain.len() - 1]
                .bytes()
                .any(|c| matches!(c, b'[' | b']' | b'\\' | b' '))
        {
            return Err("bad address literal");
        }
        return Ok(());
    }
    for label in domain.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return Err("empty or overlong domain label");
        }
        if b[0] == b'-'
            || b[b.len() - 1] == b'-'
            || !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c >= 0x80)
        {
            return Err("bad domain");
        }
    }
    Ok(())
}

fn dot_string(s: &str) -> std::result::Result<(), &'static str> {
    for atom in s.split('.') {
        if atom.is_empty() {
            return Err("empty atom in local part (leading, trailing or double dot)");
        }
        let ok = atom
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80);
        if !ok {
            return Err("character not allowed in an unquoted local part");
        }
    }
    Ok(())
}

fn quoted(s: &str) -> std::result::Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() < 2 || b[b.len() - 1] != b'"' {
        return Err("unterminated quoted local part");
    }
    let inner = &b[1..b.len() - 1];
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' if i + 1 < inner.len() => i += 2,
            b'"' | b'\\' => return Err("bad quoted local part"),
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_pass() {
        for a in [
            "a@example.org",
            "first.last+tag@sub.example.co.uk",
            "\"odd name\"@example.org",
            "x@[192.0.2.1]",
            "Postmaster",
            "üser@exämple.org",
            "<a@b.example>",
        ] {
            recipient(a).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
        assert_eq!(sender("<>").unwrap(), "");
        assert_eq!(sender("").unwrap(), "");
        assert_eq!(recipient("<a@b.example>").unwrap(), "a@b.example");
        assert_eq!(checked_recipient("postMaster"), Ok("postMaster"));
        assert_eq!(checked_recipient("<a@b.example>"), Ok("a@b.example"));
        assert_eq!(checked_sender("<>"), Ok(""));
        assert!(checked_recipient("nobody").is_err());
    }

    #[test]
    fn injection_and_overlong_addresses_are_refused() {
        let long_local = format!("{}@example.org", "a".repeat(65));
        let long_all = format!("a@{}.org", "b".repeat(250));
        for a in [
            "a@b\r\nRCPT TO:<x@y>",
            "a\n@b.org",
            "a\0@b.org",
            "a>@b.org",
            "<a@b.org",
            "a b@c.org",
            "nobody",
            "@b.org",
            "a@",
            "a..b@c.org",
            "a@-b.org",
            "a@b..org",
            &long_local,
            &long_all,
            "a@b.org>",
        ] {
            let e = recipient(a).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{a:?}");
            assert!(sender(a).is_err(), "{a:?}");
        }
    }
}
