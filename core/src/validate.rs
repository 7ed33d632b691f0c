//! Field-level checks shared by the resources. Each returns the message a
//! caller sees, never the offending value (it may be a secret).

/// A human-readable name: 1–200 characters, no control characters.
pub fn check_display_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    if trimmed.chars().count() > 200 {
        return Err("must be at most 200 characters".into());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// An organization slug: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn check_slug(slug: &str) -> Result<(), String> {
    let mut chars = slug.chars();
    let valid = slug.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err("must match ^[a-z0-9][a-z0-9-]{0,62}$ (lower-case letters, digits and dashes, starting with a letter or digit)".into())
    }
}

/// An app or volume name, which becomes part of Docker volume names
/// (`{app}-blue_{volume}`) and storage paths: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`.
pub fn check_resource_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err("must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$".into())
    }
}

/// An S3 bucket name (the rules every S3-compatible service accepts).
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if valid {
        Ok(())
    } else {
        Err("must be 3–63 characters of lower-case letters, digits, dots and dashes, starting and ending with a letter or digit".into())
    }
}

/// An S3 endpoint: an `http`/`https` URL with a host and nothing else (no
/// credentials, path, query or fragment).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|_| "is not a valid URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials; use accessKeyId and secretAccessKey".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "must be scheme, host and optional port only (no path, query or fragment)".into(),
        );
    }
    Ok(())
}

/// A key prefix inside a bucket: relative, no `.`/`..` or empty segments.
pub fn check_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > 512 {
        return Err("must be at most 512 characters".into());
    }
    if prefix.starts_with('/') {
        return Err("must not start with '/'".into());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err("must not contain empty, '.' or '..' segments".into());
    }
    if prefix.chars().any(|c| c.is_control() || c == '\\') {
        return Err("must not contain control characters or backslashes".into());
    }
    Ok(())
}

/// A host name or IP address (for SSH targets and PostgreSQL volumes).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 253 {
        return Err("must be a host name or IP address".into());
    }
    if host.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    let bracketed = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match url::Host::parse(&bracketed) {
        Ok(url::Host::Domain(domain)) if domain.contains(['/', '@', ' ', '%']) => {
            Err("must be a host name or IP address".into())
        }
        Ok(_) => Ok(()),
        Err(_) => Err("must be a host name or IP address".into()),
    }
}

/// A user name for SSH or PostgreSQL: printable, no whitespace, not an option.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() || username.len() > 128 {
        return Err("must be 1–128 characters".into());
    }
    if username.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == ':')
    {
        return Err("must not contain whitespace, control characters, '@' or ':'".into());
    }
    Ok(())
}

/// An absolute POSIX path without `..` segments.
pub fn check_absolute_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if path.len() > 1024 {
        return Err("must be at most 1024 characters".into());
    }
    if path.split('/').any(|segment| segment == "..") {
        return Err("must not contain '..' segments".into());
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The PEM labels of the private-key formats libssh2 reads.
const PRIVATE_KEY_LABELS: &[&str] = &[
    "OPENSSH PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "DSA PRIVATE KEY",
    "PRIVATE KEY",
];

/// An unencrypted SSH private key in PEM form.
pub fn check_private_key_pem(text: &str) -> Result<(), String> {
    let parsed =
        pem::parse(text.trim()).map_err(|_| "is not a PEM-encoded private key".to_string())?;
    if parsed.tag() == "ENCRYPTED PRIVATE KEY"
        || parsed
            .headers()
            .get("Proc-Type")
            .is_some_and(|value| value.contains("ENCRYPTED"))
    {
        return Err("is encrypted with a passphrase; supply an unencrypted key".into());
    }
    if !PRIVATE_KEY_LABELS.contains(&parsed.tag()) {
        return Err(format!(
            "is a PEM block of type '{}', not a private key",
            parsed.tag()
        ));
    }
    if parsed.contents().is_empty() {
        return Err("is an empty PEM block".into());
    }
    if parsed.tag() == "OPENSSH PRIVATE KEY" {
        check_openssh_key(parsed.contents())?;
    }
    Ok(())
}

/// Checks the header of an `openssh-key-v1` blob: the magic, then the
/// cipher name, which must be `none` (an unencrypted key).
fn check_openssh_key(blob: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"openssh-key-v1\0";
    let rest = blob
        .strip_prefix(MAGIC)
        .ok_or_else(|| "is not an OpenSSH private key (bad magic)".to_string())?;
    let length = rest
        .get(..4)
        .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        .ok_or_else(|| "is a truncated OpenSSH private key".to_string())?;
    let cipher = rest
        .get(4..4 + length)
        .ok_or_else(|| "is a truncated OpenSSH private key".to_string())?;
    if cipher != b"none" {
        return Err("is encrypted with a passphrase; supply an unencrypted key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(check_slug("acme").is_ok());
        assert!(check_slug("a").is_ok());
        assert!(check_slug("0-a").is_ok());
        assert!(check_slug(&"a".repeat(63)).is_ok());
        assert!(check_slug(&"a".repeat(64)).is_err());
        assert!(check_slug("-a").is_err());
        assert!(check_slug("Acme").is_err());
        assert!(check_slug("").is_err());
        assert!(check_slug("a_b").is_err());
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("https://s3.us-west-004.backblazeb2.com").is_ok());
        assert!(check_endpoint("not a url").is_err());
        assert!(check_endpoint("ftp://host").is_err());
        assert!(check_endpoint("https://user:pw@host").is_err());
        assert!(check_endpoint("https://host/bucket").is_err());
        assert!(check_endpoint("https://host?x=1").is_err());
    }

    #[test]
    fn hosts_and_paths() {
        assert!(check_host("backup.example.com").is_ok());
        assert!(check_host("127.0.0.1").is_ok());
        assert!(check_host("::1").is_ok());
        assert!(check_host("-oProxyCommand=x").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_absolute_path("/srv/backups").is_ok());
        assert!(check_absolute_path("srv").is_err());
        assert!(check_absolute_path("/srv/../etc").is_err());
        assert!(check_key_prefix("a/b/").is_ok());
        assert!(check_key_prefix("a//b").is_err());
        assert!(check_key_prefix("../a").is_err());
        assert!(check_key_prefix("/a").is_err());
    }

    #[test]
    fn private_keys() {
        assert!(check_private_key_pem("not a key").is_err());
        let certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(check_private_key_pem(certificate)
            .unwrap_err()
            .contains("CERTIFICATE"));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(check_private_key_pem(encrypted)
            .unwrap_err()
            .contains("passphrase"));
    }
}
