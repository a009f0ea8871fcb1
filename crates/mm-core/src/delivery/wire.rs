//! The bytes of a stored message as they go out after SMTP `DATA`.
//!
//! A queue entry keeps the message exactly as it was received: bare LF line
//! endings (the usual case for mail handed over by a local program), CRLF,
//! the odd bare CR, NUL and 8-bit bytes, lines longer than RFC 5321's 1000
//! octets, and perhaps a last line without a line ending. SMTP (RFC 5321
//! 2.3.8, 4.1.1.4, 4.5.2) wants every line ended by CRLF, a leading '.' doubled
//! ("dot-stuffing") and the data closed by `CRLF . CRLF`.
//!
//! # Who does what
//!
//! Two steps, each with one job, so that each can be tested alone:
//!
//! * [`to_smtp_data`](crate::delivery::wire::to_smtp_data) makes every line ending CRLF and **drops the line
//!   ending of the last line** (the terminator supplies it); it does **not**
//!   dot-stuff. This is the form lettre 0.11's `SmtpConnection::message()`
//!   took (it stuffs and appends `"\r\n.\r\n"` itself), which the client
//!   used before it had its own session; its tests pin that contract.
//! * [`to_smtp_wire`](crate::delivery::wire::to_smtp_wire) dot-stuffs that (a '.' at the start of the data or
//!   after a CRLF is doubled) and appends `CRLF . CRLF`: exactly the bytes
//!   the SMTP client (`super::smtp`, feature `smtp`) writes after `354`, in
//!   one write, whatever the bytes (8-bit and NUL included).
//!
//! The wire always ends in `CRLF . CRLF`, so the last line is always
//! terminated, whether or not the stored message had a final newline.
//!
//! Choices:
//!
//! * A bare CR (one not followed by LF) is a line ending and becomes CRLF,
//!   as for old Mac-style text; RFC 5321 forbids sending it bare, and turning
//!   it into a line break keeps the text that follows it. `"\r\r\n"` is thus
//!   two line endings (an empty line appears).
//! * NUL and 8-bit bytes pass through unchanged (the client announces
//!   `BODY=8BITMIME` when the server offers it).
//! * Long lines are not folded: folding would change the message (and break
//!   signatures). A server that refuses them answers 5xx, which fails those
//!   recipients with the server's own reason.
//! * The empty message (and a message that is a single line ending) goes out
//!   as one empty line: the terminator is always `"\r\n.\r\n"`, and an
//!   SMTP message cannot have zero lines that way.
//!
//! The conversion is one pass over the input that copies whole runs of bytes
//! between line endings into a buffer allocated once with some head room.

/// Turns stored message bytes into the DATA payload before stuffing: all
/// line endings (LF, CRLF, bare CR) as CRLF, **not** dot-stuffed and
/// **without** the line ending of the last line, which [`to_smtp_wire`]'s
/// terminator supplies (see the module documentation).
pub fn to_smtp_data(message: &[u8]) -> Vec<u8> {
    // Head room for one extra byte per bare-LF line of 32 bytes or more on
    // average: usually no reallocation at all.
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    let mut rest = message;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(&rest[..pos]);
        out.extend_from_slice(b"\r\n");
        let ending_len = if rest[pos] == b'\r' && rest.get(pos + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[pos + ending_len..];
    }
    if rest.is_empty() {
        // The message ended with a line ending (or is empty): the
        // terminator provides the last CRLF.
        if out.ends_with(b"\r\n") {
            out.truncate(out.len() - 2);
        }
    } else {
        out.extend_from_slice(rest);
    }
    out
}

/// The bytes the SMTP client writes after `354` for `data`, the output of
/// [`to_smtp_data`]: dot-stuffed (a '.' at the start of the data or after a
/// CRLF is doubled, as lettre's codec did), then `CRLF . CRLF`, all in one
/// write (lettre's `message()` wrote the closing dot on its own: a second
/// TCP segment and a second wake-up of the server for every message).
pub fn to_smtp_wire(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    // Every line ending in `data` is CRLF, so "after a CRLF" is "after a LF".
    let mut rest = data;
    loop {
        if rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                out.extend_from_slice(&rest[..=pos]);
                rest = &rest[pos + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes on the wire for a payload: a copy of lettre 0.11.23's
    /// `ClientCodec::encode` (dot-stuffing) followed by the `"\r\n.\r\n"` that
    /// `SmtpConnection::message_iter` appends: the reference the one-write
    /// form is checked against. The SMTP tests in `smtp/tests.rs` check the
    /// real thing against a server.
    fn lettre_wire_image(data: &[u8]) -> Vec<u8> {
        #[derive(Clone, Copy)]
        enum State {
            Middle,
            AfterCr,
            LineStart,
        }
        let mut state = State::LineStart;
        let mut out = Vec::with_capacity(data.len() + 8);
        for &b in data {
            out.push(b);
            state = match (b, state) {
                (b'\r', _) => State::AfterCr,
                (b'\n', State::AfterCr) => State::LineStart,
                (b'.', State::LineStart) => {
                    out.push(b'.');
                    State::Middle
                }
                (_, State::AfterCr | State::LineStart) => State::Middle,
                (_, State::Middle) => State::Middle,
            };
        }
        out.extend_from_slice(b"\r\n.\r\n");
        out
    }

    /// What a server makes of the wire image: the lines of the message,
    /// un-stuffed, without their CRLF. Panics on a bare CR or LF, on a
    /// missing terminator or on data after it.
    fn server_lines(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = wire;
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("every line ends in CRLF, the terminator too");
            let line = &rest[..end];
            assert!(
                !line.contains(&b'\r') && !line.contains(&b'\n'),
                "bare CR or LF on the wire: {line:?}"
            );
            rest = &rest[end + 2..];
            if line == b"." {
                assert!(rest.is_empty(), "data after the terminating dot");
                return lines;
            }
            lines.push(line.strip_prefix(b".").unwrap_or(line).to_vec());
        }
    }

    /// The lines of a stored message, split on CRLF, bare LF and bare CR; a
    /// final line ending does not start a further line. The empty message
    /// is one empty line (see the module documentation).
    fn stored_lines(message: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut line = Vec::new();
        let mut i = 0;
        while i < message.len() {
            match message[i] {
                b'\r' if message.get(i + 1) == Some(&b'\n') => {
                    lines.push(std::mem::take(&mut line));
                    i += 1;
                }
                b'\r' | b'\n' => lines.push(std::mem::take(&mut line)),
                b => line.push(b),
            }
            i += 1;
        }
        if !line.is_empty() {
            lines.push(line);
        }
        if lines.is_empty() {
            lines.push(Vec::new());
        }
        lines
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(to_smtp_data(b"a\nb\n\nc\n"), b"a\r\nb\r\n\r\nc");
    }

    #[test]
    fn crlf_is_kept_as_is() {
        assert_eq!(to_smtp_data(b"a\r\nb\r\n"), b"a\r\nb");
        assert_eq!(to_smtp_data(b"a\r\n\r\nb"), b"a\r\n\r\nb");
    }

    #[test]
    fn bare_cr_becomes_a_line_ending() {
        assert_eq!(to_smtp_data(b"a\rb\r\r\nc"), b"a\r\nb\r\n\r\nc");
        assert_eq!(to_smtp_data(b"a\r"), b"a");
        assert_eq!(to_smtp_data(b"\r\r"), b"\r\n");
    }

    #[test]
    fn mixed_endings() {
        assert_eq!(
            to_smtp_data(b"1\n2\r\n3\r4\n\r5"),
            b"1\r\n2\r\n3\r\n4\r\n\r\n5"
        );
    }

    #[test]
    fn no_trailing_newline() {
        assert_eq!(to_smtp_data(b"a\nb"), b"a\r\nb");
        assert_eq!(
            lettre_wire_image(&to_smtp_data(b"a\nb")),
            b"a\r\nb\r\n.\r\n"
        );
        // With or without the final newline, the same goes out.
        assert_eq!(to_smtp_data(b"a\nb\n"), to_smtp_data(b"a\nb"));
    }

    #[test]
    fn single_dot_line_is_stuffed_once_by_lettre() {
        let data = to_smtp_data(b"a\n.\nb\n");
        // Not stuffed here: to_smtp_wire does it.
        assert_eq!(data, b"a\r\n.\r\nb");
        assert_eq!(lettre_wire_image(&data), b"a\r\n..\r\nb\r\n.\r\n");
        // A dot on the first line, and a dot as the last line.
        assert_eq!(lettre_wire_image(&to_smtp_data(b".\n")), b"..\r\n.\r\n");
        assert_eq!(
            lettre_wire_image(&to_smtp_data(b"x\n.")),
            b"x\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn line_starting_with_two_dots() {
        let data = to_smtp_data(b"..x\n..\n");
        assert_eq!(data, b"..x\r\n..");
        assert_eq!(lettre_wire_image(&data), b"...x\r\n...\r\n.\r\n");
        // A dot behind a bare LF or CR is at a line start too once normalised.
        assert_eq!(
            lettre_wire_image(&to_smtp_data(b"a\r.b")),
            b"a\r\n..b\r\n.\r\n"
        );
    }

    #[test]
    fn empty_message() {
        assert_eq!(to_smtp_data(b""), b"");
        assert_eq!(to_smtp_data(b"\n"), b"");
        assert_eq!(lettre_wire_image(&to_smtp_data(b"")), b"\r\n.\r\n");
    }

    #[test]
    fn nul_and_8bit_bytes_are_kept() {
        let message = b"\x00a\xff\xfe\n\x80\x00\n";
        assert_eq!(to_smtp_data(message), b"\x00a\xff\xfe\r\n\x80\x00");
        let utf8 = "Grüße, 日本\n".as_bytes();
        assert_eq!(to_smtp_data(utf8), "Grüße, 日本".as_bytes());
    }

    #[test]
    fn overlong_line_is_not_folded() {
        let mut message = vec![b'x'; 5000];
        message.push(b'\n');
        let data = to_smtp_data(&message);
        assert_eq!(data, vec![b'x'; 5000]);
    }

    #[test]
    fn examples_round_trip_through_the_wire() {
        for message in [
            &b""[..],
            b"\n",
            b"\r\n",
            b"\r",
            b".",
            b"..",
            b".\r\n.\n.\r.",
            b"Subject: x\n\nbody\n.\n..\n...\nend",
            b"\n\n\n",
        ] {
            let wire = lettre_wire_image(&to_smtp_data(message));
            assert_eq!(server_lines(&wire), stored_lines(message), "{message:?}");
            assert_eq!(
                to_smtp_wire(&to_smtp_data(message)),
                wire,
                "one-write form of {message:?}"
            );
        }
    }

    /// Property: for many pseudo-random messages made mostly of line
    /// endings, dots and odd bytes, a server that un-stuffs the wire image
    /// gets back the lines of the stored message.
    #[test]
    fn random_messages_round_trip_through_the_wire() {
        // xorshift64*, fixed seed: reproducible.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        const ALPHABET: &[u8] = b"\r\n\r\n..\x00\xffa ";
        for _ in 0..5000 {
            let len = (next() % 40) as usize;
            let message: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let data = to_smtp_data(&message);
            for (i, &b) in data.iter().enumerate() {
                match b {
                    b'\r' => assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR in {data:?}"),
                    b'\n' => assert!(i > 0 && data[i - 1] == b'\r', "bare LF in {data:?}"),
                    _ => {}
                }
            }
            let wire = lettre_wire_image(&data);
            assert_eq!(
                server_lines(&wire),
                stored_lines(&message),
                "message {message:?}"
            );
            assert_eq!(to_smtp_wire(&data), wire, "one-write form of {message:?}");
        }
    }
}
