//! TFTP wire format: RFC 1350 packets plus the RFC 2347 option extension
//! (options trailing RRQ/WRQ, and the OACK packet).
//!
//! Pure: no I/O. [`Packet::parse`] never panics; anything malformed is a
//! [`ParseError`] which the socket loop counts and drops.

use std::fmt;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Why a datagram is not a TFTP packet we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("empty filename")]
    EmptyFilename,
    #[error("unknown transfer mode {0:?}")]
    UnknownMode(String),
}

/// Transfer mode of a request (RFC 1350 section 5), matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Netascii,
    Octet,
    /// Obsolete; parsed so the server can refuse it with a precise error.
    Mail,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

/// TFTP error codes (RFC 1350 appendix, RFC 2347 adds 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTid,
    FileExists,
    NoSuchUser,
    OptionNegotiation,
    /// A code outside the registry; kept so parsing a peer's ERROR is lossless.
    Other(u16),
}

impl ErrorCode {
    #[must_use]
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(c) => c,
        }
    }

    #[must_use]
    pub fn from_u16(c: u16) -> Self {
        match c {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            c => ErrorCode::Other(c),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_u16())
    }
}

/// An RRQ or WRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    /// RFC 2347 options in the order sent. Names are lowercased (they are
    /// case-insensitive); values are kept verbatim.
    pub options: Vec<(String, String)>,
}

/// One TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Option acknowledgement: the options the server accepted, with values.
    Oack {
        options: Vec<(String, String)>,
    },
}

/// Splits off one NUL-terminated string.
fn take_cstr<'a>(buf: &'a [u8], field: &'static str) -> Result<(&'a str, &'a [u8]), ParseError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated(field))?;
    let s = std::str::from_utf8(&buf[..nul]).map_err(|_| ParseError::NotUtf8(field))?;
    Ok((s, &buf[nul + 1..]))
}

/// Parses `name\0value\0` pairs. Lenient on purpose, as deployed servers are:
/// an incomplete trailing pair, empty padding strings and non-UTF-8 options
/// are dropped rather than failing the whole request, since options are
/// optional by definition (RFC 2347: unknown or bad options are ignored).
fn parse_options(mut rest: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok((name, after_name)) = take_cstr(rest, "option name") {
        let Ok((value, after_value)) = take_cstr(after_name, "option value") else {
            break;
        };
        rest = after_value;
        if name.is_empty() {
            continue;
        }
        out.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    out
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let (filename, rest) = take_cstr(body, "filename")?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let (mode, rest) = take_cstr(rest, "mode")?;
    let mode = match mode.to_ascii_lowercase().as_str() {
        "netascii" => Mode::Netascii,
        "octet" => Mode::Octet,
        "mail" => Mode::Mail,
        _ => return Err(ParseError::UnknownMode(mode.to_owned())),
    };
    Ok(Request {
        filename: filename.to_owned(),
        mode,
        options: parse_options(rest),
    })
}

impl Packet {
    /// Parses one datagram.
    pub fn parse(buf: &[u8]) -> Result<Packet, ParseError> {
        if buf.len() < 2 {
            return Err(ParseError::TooShort(buf.len()));
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        let block = || -> Result<u16, ParseError> {
            if body.len() < 2 {
                return Err(ParseError::TooShort(buf.len()));
            }
            Ok(u16::from_be_bytes([body[0], body[1]]))
        };
        match op {
            OP_RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            OP_WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            OP_DATA => Ok(Packet::Data {
                block: block()?,
                data: body[2..].to_vec(),
            }),
            // Trailing bytes after the block number are ignored: RFC 1350 ACKs
            // are 4 bytes, but rejecting padded ones would only stall a transfer.
            OP_ACK => Ok(Packet::Ack { block: block()? }),
            OP_ERROR => {
                let code = ErrorCode::from_u16(block()?);
                // Tolerate a missing terminator and bad UTF-8 in the message:
                // it is only ever logged.
                let msg = &body[2..];
                let msg = msg.split(|&b| b == 0).next().unwrap_or(&[]);
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(msg).into_owned(),
                })
            }
            OP_OACK => Ok(Packet::Oack {
                options: parse_options(body),
            }),
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }

    /// Serializes the packet.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                let op = if matches!(self, Packet::Rrq(_)) {
                    OP_RRQ
                } else {
                    OP_WRQ
                };
                out.extend_from_slice(&op.to_be_bytes());
                push_cstr(&mut out, &r.filename);
                push_cstr(&mut out, r.mode.as_str());
                push_options(&mut out, &r.options);
            }
            Packet::Data { block, data } => encode_data(&mut out, *block, data),
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => return encode_error(*code, message),
            Packet::Oack { options } => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                push_options(&mut out, options);
            }
        }
        out
    }
}

fn push_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn push_options(out: &mut Vec<u8>, options: &[(String, String)]) {
    for (k, v) in options {
        push_cstr(out, k);
        push_cstr(out, v);
    }
}

/// Writes a DATA packet into `out` (cleared first). The hot path: the
/// transfer loop reuses one buffer instead of building a [`Packet`].
pub fn encode_data(out: &mut Vec<u8>, block: u16, payload: &[u8]) {
    out.clear();
    append_data(out, block, payload);
}

/// A DATA packet appended to `out` (a window of them laid end to end is
/// what a GSO send takes).
pub fn append_data(out: &mut Vec<u8>, block: u16, payload: &[u8]) {
    out.reserve(4 + payload.len());
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An ERROR packet. The message must not contain NUL (it would end the
/// string early on the wire); any NUL is replaced so the packet stays valid.
#[must_use]
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    out.extend(message.bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
        let mut v = OP_RRQ.to_be_bytes().to_vec();
        push_cstr(&mut v, name);
        push_cstr(&mut v, mode);
        for (k, val) in opts {
            push_cstr(&mut v, k);
            push_cstr(&mut v, val);
        }
        v
    }

    #[test]
    fn rrq_with_options_parses_case_insensitively() {
        let raw = rrq(
            "boot/ipxe.efi",
            "OcTeT",
            &[("BLKSIZE", "1468"), ("windowsize", "4"), ("tsize", "0")],
        );
        let p = Packet::parse(&raw).unwrap();
        let Packet::Rrq(r) = p else {
            panic!("not an RRQ: {p:?}")
        };
        assert_eq!(r.filename, "boot/ipxe.efi");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(
            r.options,
            vec![
                ("blksize".to_owned(), "1468".to_owned()),
                ("windowsize".to_owned(), "4".to_owned()),
                ("tsize".to_owned(), "0".to_owned())
            ]
        );
        // Round trip: names come back lowercased, otherwise identical.
        let again = Packet::parse(&Packet::Rrq(r.clone()).encode()).unwrap();
        assert_eq!(again, Packet::Rrq(r));
    }

    #[test]
    fn wrq_and_netascii_and_mail_modes() {
        let mut raw = rrq("f", "NETASCII", &[]);
        raw[1] = OP_WRQ as u8;
        let Packet::Wrq(r) = Packet::parse(&raw).unwrap() else {
            panic!("not a WRQ")
        };
        assert_eq!(r.mode, Mode::Netascii);
        assert!(r.options.is_empty());
        let Packet::Rrq(r) = Packet::parse(&rrq("f", "mail", &[])).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(r.mode, Mode::Mail);
    }

    #[test]
    fn lenient_option_tail() {
        // Dangling name without value, padding NULs, then garbage without terminator.
        let mut raw = rrq("f", "octet", &[("blksize", "1024")]);
        raw.extend_from_slice(b"\0\0windowsize\0");
        let Packet::Rrq(r) = Packet::parse(&raw).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(r.options, vec![("blksize".to_owned(), "1024".to_owned())]);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(Packet::parse(&[]), Err(ParseError::TooShort(0)));
        assert_eq!(Packet::parse(&[0]), Err(ParseError::TooShort(1)));
        assert_eq!(
            Packet::parse(&[0, 9, 1, 2]),
            Err(ParseError::UnknownOpcode(9))
        );
        assert_eq!(
            Packet::parse(&[0, 1, b'a']),
            Err(ParseError::Unterminated("filename"))
        );
        assert_eq!(
            Packet::parse(&[0, 1, b'a', 0, b'o']),
            Err(ParseError::Unterminated("mode"))
        );
        assert_eq!(
            Packet::parse(&[0, 1, 0, b'o', 0]),
            Err(ParseError::EmptyFilename)
        );
        assert_eq!(
            Packet::parse(&[0, 1, 0xff, 0, b'o', 0]),
            Err(ParseError::NotUtf8("filename"))
        );
        assert_eq!(
            Packet::parse(&rrq("f", "binary", &[])),
            Err(ParseError::UnknownMode("binary".to_owned()))
        );
        assert_eq!(Packet::parse(&[0, 4, 0]), Err(ParseError::TooShort(3)));
        assert_eq!(Packet::parse(&[0, 3, 1]), Err(ParseError::TooShort(3)));
    }

    #[test]
    fn data_ack_error_oack_round_trip() {
        let cases = vec![
            Packet::Data {
                block: 65535,
                data: vec![1, 2, 3],
            },
            Packet::Data {
                block: 0,
                data: vec![],
            },
            Packet::Ack { block: 0x1234 },
            Packet::Error {
                code: ErrorCode::AccessViolation,
                message: "nope".to_owned(),
            },
            Packet::Error {
                code: ErrorCode::Other(42),
                message: String::new(),
            },
            Packet::Oack {
                options: vec![("blksize".to_owned(), "1468".to_owned())],
            },
        ];
        for p in cases {
            assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
        }
        // Exact bytes of two packets, against RFC 1350 figures.
        assert_eq!(Packet::Ack { block: 258 }.encode(), vec![0, 4, 1, 2]);
        assert_eq!(
            encode_error(ErrorCode::FileNotFound, "x\0y"),
            vec![0, 5, 0, 1, b'x', b' ', b'y', 0]
        );
    }

    #[test]
    fn error_without_terminator_is_accepted() {
        let p = Packet::parse(&[0, 5, 0, 8, b'b', b'a', b'd']).unwrap();
        assert_eq!(
            p,
            Packet::Error {
                code: ErrorCode::OptionNegotiation,
                message: "bad".to_owned()
            }
        );
    }

    /// Every prefix and every single-byte corruption of valid packets must
    /// parse to something or fail cleanly, never panic.
    #[test]
    fn truncations_and_corruptions_never_panic() {
        let samples = vec![
            rrq(
                "pxelinux.0",
                "octet",
                &[("blksize", "1468"), ("tsize", "0")],
            ),
            Packet::Data {
                block: 7,
                data: vec![9; 20],
            }
            .encode(),
            Packet::Ack { block: 7 }.encode(),
            encode_error(ErrorCode::NotDefined, "boom"),
            Packet::Oack {
                options: vec![("windowsize".to_owned(), "8".to_owned())],
            }
            .encode(),
        ];
        for s in &samples {
            for n in 0..=s.len() {
                let _ = Packet::parse(&s[..n]);
            }
            for i in 0..s.len() {
                for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                    let mut c = s.clone();
                    c[i] = b;
                    let _ = Packet::parse(&c);
                }
            }
        }
    }
}
