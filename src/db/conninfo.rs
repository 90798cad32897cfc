//! Connection strings as libpq writes them, read far enough to take out
//! what tokio-postgres does not know: `sslmode` and `sslrootcert`, from a
//! `postgres://` URL (percent-encoded query parameters) or a key=value
//! string (quoted values, backslash escapes). The rest of the string is
//! handed on untouched, so tokio-postgres parses everything else (and never
//! sees a parameter it would refuse).

use anyhow::{anyhow, bail, Context, Result};

/// sslmode and sslrootcert as written in the connection string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SslParams {
    pub(super) mode: Option<String>,
    pub(super) root_cert: Option<String>,
}

/// Take `sslmode` and `sslrootcert` out of a URL or key=value string.
pub(super) fn split_ssl_params(conn: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_string(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => ssl.mode = Some(percent_decode(value)?),
                "sslrootcert" => ssl.root_cert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    let mut rest = String::new();
    let mut last = 0;
    for (key, value, range) in key_values(conn)? {
        let slot = match key.as_str() {
            "sslmode" => &mut ssl.mode,
            "sslrootcert" => &mut ssl.root_cert,
            _ => continue,
        };
        *slot = Some(value);
        rest.push_str(&conn[last..range.start]);
        last = range.end;
    }
    rest.push_str(&conn[last..]);
    Ok((rest, ssl))
}

/// The pairs of a libpq key=value string with the byte range each covers.
fn key_values(s: &str) -> Result<Vec<(String, String, std::ops::Range<usize>)>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        i = skip_ws(i);
        if i >= bytes.len() || bytes[i] != b'=' {
            bail!("the connection string has {key:?} without '=value'");
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => bail!("the connection string has an unterminated quote"),
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b) => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value = String::from_utf8(value).context("the connection string is not UTF-8")?;
        out.push((key, value, start..i));
    }
}

/// `%XX` escapes of a URL query value, decoded.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad percent-encoding in the database URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the database URL is not UTF-8 after decoding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::Config;

    #[test]
    fn ssl_params_leave_urls() {
        let (rest, ssl) = split_ssl_params(
            "postgres://u:p%40ss@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@h:5432/db?application_name=x");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, ssl) = split_ssl_params("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(ssl.mode.as_deref(), Some("require"));
    }

    #[test]
    fn ssl_params_leave_key_value_strings() {
        let (rest, ssl) = split_ssl_params(
            "host=h sslmode = 'verify-ca' password='a b\\'c' sslrootcert=/x/ca\\ 1.pem dbname=d",
        )
        .unwrap();
        assert_eq!(rest, "host=h  password='a b\\'c'  dbname=d");
        assert_eq!(ssl.mode.as_deref(), Some("verify-ca"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/x/ca 1.pem"));
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
    }
}
