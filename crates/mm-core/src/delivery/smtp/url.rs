//! The server URL (`--smtp`): `smtp://`, `smtp+starttls://`, `smtps://`.
//!
//! The `url` crate splits the URL (scheme, user and password, host, port,
//! path, query, fragment, IPv6 literals); this module says what each part
//! means for SMTP and refuses what it cannot use, with a message that names
//! the part. User, password and query values are percent-decoded here, by
//! RFC 3986 (a '+' stays a '+', unlike form decoding).

use std::net::Ipv6Addr;

use super::{SmtpConfig, Tls};

impl SmtpConfig {
    /// Reads a server URL:
    ///
    /// * `smtp://[user[:pass]@]host[:port]`: plain SMTP, port 25;
    /// * `smtp://...?tls=starttls`: STARTTLS (required), port 25 (`tls=none` is the default);
    /// * `smtp+starttls://[user[:pass]@]host[:port]`: STARTTLS (required), port 587 (submission);
    /// * `smtps://[user[:pass]@]host[:port]`: implicit TLS, port 465.
    ///
    /// The scheme is case-insensitive; an IPv6 host goes in brackets
    /// (`smtp://[::1]:2525`); an international host name becomes its
    /// A-label (`mäil.example` is `xn--mil-qla.example`). User and password are percent-decoded (write
    /// `@` as `%40`, `:` in the user as `%3A`). Query parameters: `tls=`
    /// (only with `smtp://`), `helo=NAME` (percent-decoded) for the EHLO
    /// name, and `ca=PATH` (percent-decoded), a PEM file of CA certificates
    /// to trust besides the system's. A trailing `/` is allowed; any other path, a fragment or an
    /// unknown parameter is an error. Timeouts and `max_rcpts` get their
    /// defaults (set the fields afterwards to change them).
    pub fn parse(text: &str) -> Result<SmtpConfig, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("{text:?} is not a server URL (smtp://, smtp+starttls:// or smtps://)")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        let (mut tls, default_port) = match scheme.as_str() {
            "smtp" => (Tls::None, 25),
            "smtp+starttls" => (Tls::StartTls, 587),
            "smtps" => (Tls::Implicit, 465),
            _ => {
                return Err(format!(
                    "unknown scheme {scheme:?} in {text:?} (smtp, smtp+starttls or smtps)"
                ));
            }
        };
        // The authority as written, for what the url crate normalises away
        // (an empty port, an empty user name) or words differently.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        precheck_host(hostport).map_err(|e| format!("{e} in {text:?}"))?;

        let url = url::Url::parse(text).map_err(|e| {
            let why = match e {
                url::ParseError::InvalidPort => "invalid port (1 to 65535)".to_owned(),
                url::ParseError::EmptyHost => "missing host".to_owned(),
                url::ParseError::InvalidIpv6Address => "not an IPv6 address".to_owned(),
                e => format!("invalid host ({e})"),
            };
            format!("{why} in {text:?}")
        })?;
        if url.fragment().is_some() {
            return Err(format!("a fragment ('#') is not allowed in {text:?}"));
        }
        if !url.path().is_empty() && url.path() != "/" {
            return Err(format!("unexpected path {:?} in {text:?}", url.path()));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            // The url crate leaves the host of a non-web scheme as written,
            // percent-encoding what is not ASCII; an international name is
            // turned into its A-label (punycode) for DNS and TLS.
            Some(url::Host::Domain(name)) if !name.is_empty() && name.contains('%') => {
                let decoded = percent_decode(name)
                    .map_err(|e| format!("invalid host {name:?} in {text:?}: {e}"))?;
                match url::Host::parse(&decoded) {
                    Ok(url::Host::Domain(ascii)) => ascii,
                    _ => return Err(format!("invalid host {decoded:?} in {text:?}")),
                }
            }
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            _ => return Err(format!("missing host in {text:?}")),
        };
        if host.contains(['%', '@', '[', ']']) || host.chars().any(char::is_control) {
            return Err(format!("invalid host {host:?} in {text:?}"));
        }
        let port = match url.port() {
            Some(0) => return Err(format!("invalid port \"0\" (1 to 65535) in {text:?}")),
            Some(port) => port,
            None => default_port,
        };
        let credentials = if authority.contains('@') {
            let user = percent_decode(url.username())
                .map_err(|e| format!("user name in {text:?}: {e}"))?;
            if user.is_empty() {
                return Err(format!("empty user name in {text:?}"));
            }
            let pass = percent_decode(url.password().unwrap_or(""))
                .map_err(|e| format!("password in {text:?}: {e}"))?;
            Some((user, pass))
        } else {
            None
        };

        let mut helo_name = None;
        let mut ca_file = None;
        for pair in url.query().into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "tls" if scheme != "smtp" => {
                    return Err(format!(
                        "tls= is only for smtp:// URLs; the scheme {scheme}:// already sets it, in {text:?}"
                    ));
                }
                "tls" => {
                    tls = match value.to_ascii_lowercase().as_str() {
                        "none" => Tls::None,
                        "starttls" => Tls::StartTls,
                        _ => {
                            return Err(format!(
                                "tls={value} in {text:?}: expected tls=none or tls=starttls (use smtps:// for implicit TLS)"
                            ));
                        }
                    }
                }
                "helo" => {
                    let name =
                        percent_decode(value).map_err(|e| format!("helo= in {text:?}: {e}"))?;
                    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(format!("helo={value} in {text:?}: not a host name"));
                    }
                    helo_name = Some(name);
                }
                "ca" => {
                    let path =
                        percent_decode(value).map_err(|e| format!("ca= in {text:?}: {e}"))?;
                    if path.is_empty() {
                        return Err(format!("ca= in {text:?}: empty path"));
                    }
                    ca_file = Some(std::path::PathBuf::from(path));
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?} in {text:?} (known: tls, helo, ca)"
                    ));
                }
            }
        }
        let mut config = SmtpConfig::new(host, port, tls);
        config.credentials = credentials;
        config.helo_name = helo_name;
        config.ca_file = ca_file;
        Ok(config)
    }
}

/// What the url crate would accept or word less clearly: an IPv6 address
/// without brackets, an unclosed bracket, text after `]`, an empty port.
fn precheck_host(hostport: &str) -> Result<(), String> {
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("unclosed '[' in the host")?;
        inside
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("[{inside}] is not an IPv6 address"))?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("unexpected {after:?} after the IPv6 address"));
        }
        if after == ":" {
            return Err("invalid port \"\" (1 to 65535)".to_owned());
        }
        return Ok(());
    }
    match hostport.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("an IPv6 address must be written in brackets, e.g. [::1]".to_owned())
        }
        Some(("", _)) => Err("missing host".to_owned()),
        Some((_, "")) => Err("invalid port \"\" (1 to 65535)".to_owned()),
        _ => Ok(()),
    }
}

/// RFC 3986 percent-decoding into UTF-8 ('+' stays '+').
pub(super) fn percent_decode(text: &str) -> Result<String, String> {
    fn hex(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex);
            let low = bytes.get(i + 2).copied().and_then(hex);
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err("'%' not followed by two hex digits".to_owned()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to invalid UTF-8".to_owned())
}
