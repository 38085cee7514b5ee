//! The artifact index: what the cluster agrees on about boot files (name ->
//! sha256, size), and which nodes hold which bytes. The bytes themselves
//! never travel in the Raft log (DESIGN.md section 3); see
//! `services::artifacts` for the files.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::BootProfile;

/// One named artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Lower-case hex of the content's SHA-256: the blob's file name.
    pub sha256: String,
    pub size: u64,
    /// Unix seconds, fixed by the leader when it proposed the entry.
    pub added_at: u64,
}

/// At most this many bytes in a name (what TFTP clients and iPXE scripts
/// carry comfortably; ext4's limit for one component is 255).
pub const MAX_NAME_BYTES: usize = 200;
/// At most this many path components (`a/b/c` has three).
pub const MAX_NAME_DEPTH: usize = 8;
/// At most this many names in the index: the index is in every snapshot and
/// on every `artifact list`; a boot appliance serves tens, not thousands.
pub const MAX_ARTIFACTS: usize = 4096;

/// Why a name cannot be an artifact's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("artifact name is empty")]
    Empty,
    #[error("artifact name {name:?} is {len} bytes; at most {MAX_NAME_BYTES} are allowed")]
    TooLong { name: String, len: usize },
    #[error(
        "artifact name {name:?} has {depth} path components; at most {MAX_NAME_DEPTH} are allowed"
    )]
    TooDeep { name: String, depth: usize },
    #[error("artifact name {name:?}: {why}; use a relative path such as \"ipxe/undionly.kpxe\"")]
    Unsafe { name: String, why: &'static str },
}

/// Checks that `name` is a relative path of safe components, so that the
/// served tree (`artifact_dir/NAME`) can never escape its root, and TFTP
/// and HTTP clients can ask for it verbatim:
/// - 1 to [`MAX_NAME_BYTES`] bytes, at most [`MAX_NAME_DEPTH`] components;
/// - components separated by single `/`, none empty, none starting with `.`
///   (so no `..`, no hidden files, no leading `/`);
/// - only ASCII letters, digits and `-`, `_`, `.`, `+`, `~`, `@`, `=`, `,`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let unsafe_ = |why| {
        Err(NameError::Unsafe {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            name: name.chars().take(40).collect::<String>() + "…",
            len: name.len(),
        });
    }
    if name.starts_with('/') {
        return unsafe_("it starts with '/'");
    }
    let depth = name.split('/').count();
    if depth > MAX_NAME_DEPTH {
        return Err(NameError::TooDeep {
            name: name.to_owned(),
            depth,
        });
    }
    for c in name.split('/') {
        if c.is_empty() {
            return unsafe_("it has an empty component ('//' or a trailing '/')");
        }
        if c.starts_with('.') {
            return unsafe_("a component starts with '.'");
        }
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+~@=,".contains(&b))
        {
            return unsafe_("only letters, digits and - _ . + ~ @ = , are allowed");
        }
    }
    Ok(())
}

/// Whether `s` is a SHA-256 as the index writes it: 64 lower-case hex digits.
#[must_use]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The artifact names a boot profile refers to, in field order. Fields
/// that are URLs (they contain `://`) are fetched from elsewhere and are
/// not artifacts. New file fields of [`BootProfile`] belong here.
#[must_use]
pub fn profile_artifacts(p: &BootProfile) -> Vec<&str> {
    [&p.bios, &p.uefi_x64, &p.uefi_arm64, &p.kernel, &p.initrd]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .filter(|v| !v.contains("://"))
        .collect()
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.sha256, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_relative_paths() {
        for good in [
            "undionly.kpxe",
            "ipxe/ipxe.efi",
            "debian/12/vmlinuz-6.1.0+cloud",
            "a",
            "boot.ipxe",
            "x~y@z=1,2",
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for (bad, want) in [
            ("", "empty"),
            ("/etc/passwd", "starts with '/'"),
            ("../x", "starts with '.'"),
            ("a/../b", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a b", "only letters"),
            ("a\\b", "only letters"),
            ("caf\u{e9}", "only letters"),
            ("a\0b", "only letters"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            validate_name(&long),
            Err(NameError::TooLong { len, .. }) if len == MAX_NAME_BYTES + 1
        ));
        assert_eq!(validate_name(&"a".repeat(MAX_NAME_BYTES)), Ok(()));
        let deep = ["d"; MAX_NAME_DEPTH + 1].join("/");
        assert!(matches!(
            validate_name(&deep),
            Err(NameError::TooDeep { .. })
        ));
        assert_eq!(validate_name(&["d"; MAX_NAME_DEPTH].join("/")), Ok(()));
    }

    #[test]
    fn sha256_hex_is_64_lower_case_digits() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
        assert!(!is_sha256_hex(&format!("{}g", "a".repeat(63))));
    }

    #[test]
    fn profile_artifacts_skip_urls_and_ipxe_script() {
        let p = BootProfile {
            name: "p".into(),
            bios: Some("undionly.kpxe".into()),
            uefi_x64: Some("http://10.0.0.10/ipxe.efi".into()),
            uefi_arm64: Some("arm/ipxe.efi".into()),
            ipxe_script: Some("boot.ipxe".into()),
            kernel: Some("vmlinuz".into()),
            initrd: Some("https://example.com/initrd.img".into()),
            cmdline: Some("console=ttyS0".into()),
        };
        assert_eq!(
            profile_artifacts(&p),
            vec!["undionly.kpxe", "arm/ipxe.efi", "vmlinuz"]
        );
    }
}
