//! Image references (`busybox`, `localhost:5000/app:1.0`,
//! `ghcr.io/org/img@sha256:...`) parsed and normalised the way Docker's
//! `distribution/reference` package does (`ParseNormalizedNamed` followed by
//! `TagNameOnly`).

use std::fmt;

use super::RegistryError;

/// The registry Docker means when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";

/// Docker's limit on the length of a repository name (with its domain).
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalised image reference: `registry/repository[:tag][@digest]`.
///
/// A reference with neither tag nor digest gets the tag `latest`; a
/// reference with a digest keeps only the tag it was given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`, `org/app`).
    pub repository: String,
    /// Tag, if any (`latest`).
    pub tag: Option<String>,
    /// Content digest, if any (`sha256:<hex>`).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference.
    ///
    /// The first path component is a registry if it contains `.` or `:`, is
    /// `localhost`, or has upper-case letters (as in Docker); otherwise the
    /// registry is `docker.io`, where one-component names live under
    /// `library/`.
    pub fn parse(s: &str) -> Result<ImageRef, RegistryError> {
        let invalid = |reason: &'static str| RegistryError::InvalidReference { reference: s.to_string(), reason };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(invalid)?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A `:` after the last `/` starts the tag; one before it is a port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].find(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &name_and_tag[at + 1..];
                validate_tag(tag).map_err(invalid)?;
                (&name_and_tag[..at], Some(tag.to_string()))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(invalid("the repository name is empty"));
        }
        let (registry, remainder) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                validate_domain(first).map_err(invalid)?;
                (first.to_string(), rest)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase"));
        }
        validate_path(&repository).map_err(invalid)?;
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag,
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// The same repository at another digest (tag dropped), e.g. one
    /// platform's manifest inside an index.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef { digest: Some(digest.to_string()), tag: None, ..self.clone() }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The equivalent `oci_client` reference.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        let (r, p) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(r, p, t.clone(), d.clone()),
            (None, Some(d)) => oci_client::Reference::with_digest(r, p, d.clone()),
            (Some(t), None) => oci_client::Reference::with_tag(r, p, t.clone()),
            (None, None) => oci_client::Reference::with_tag(r, p, "latest".to_string()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// `algorithm:encoded`; sha256 and sha512 must be lower-case hex of the
/// right length (the only algorithms the OCI spec registers).
pub(crate) fn validate_digest(d: &str) -> Result<(), &'static str> {
    let Some((alg, enc)) = d.split_once(':') else {
        return Err("the digest has no `algorithm:` prefix");
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err("the digest algorithm is not sha256 or sha512"),
    };
    if enc.len() != len || !enc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("the digest is not lower-case hex of the right length");
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(t: &str) -> Result<(), &'static str> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-')));
    if ok { Ok(()) } else { Err("the tag is not 1-128 of `[A-Za-z0-9_.-]` (not starting with `.` or `-`)") }
}

/// `host[:port]` where host is DNS-like labels or a bracketed IPv6 address.
fn validate_domain(d: &str) -> Result<(), &'static str> {
    const BAD: &str = "the registry host is not `host[:port]`";
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(BAD)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(BAD);
        }
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if !d.starts_with('[') {
        let labels_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return Err(BAD);
        }
    }
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the registry port is not a number");
    }
    Ok(())
}

/// Components `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`.
fn validate_path(p: &str) -> Result<(), &'static str> {
    const BAD: &str = "a repository path component is not `[a-z0-9]` words joined by `.`, `_`, `__` or dashes";
    for comp in p.split('/') {
        let b = comp.as_bytes();
        if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
            return Err(BAD);
        }
        let mut i = 0;
        while i < b.len() {
            if is_alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator run: `.`, `_`, `__`, or any number of `-`.
            let start = i;
            while i < b.len() && !is_alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(BAD);
            }
        }
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e6a3b1ac1f32f4dc1c7f9d9c8a0e5f47f1b1d5a0d5f7d5c8f0c0b4c4b9f2a1c3";

    /// (input, expected normalised form) — cases from Docker's
    /// `reference/normalize_test.go` plus port/digest corner cases.
    #[test]
    fn normalises_like_docker() {
        let cases: &[(&str, String)] = &[
            ("busybox", "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            ("docker.io/busybox", "docker.io/library/busybox:latest".into()),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest".into()),
            ("docker.io/library/busybox:musl", "docker.io/library/busybox:musl".into()),
            ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest".into()),
            ("dmcgowan/myapp/subrepo", "docker.io/dmcgowan/myapp/subrepo:latest".into()),
            ("localhost/app", "localhost/app:latest".into()),
            ("localhost:5000/app", "localhost:5000/app:latest".into()),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1".into()),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest".into()),
            ("[::1]:5000/x:t", "[::1]:5000/x:t".into()),
            ("example.com/a_b/c__d/e-f/g--h/i.j", "example.com/a_b/c__d/e-f/g--h/i.j:latest".into()),
            ("ghcr.io/org/img:v1.2.3-rc_1", "ghcr.io/org/img:v1.2.3-rc_1".into()),
            (&format!("busybox@{D}"), format!("docker.io/library/busybox@{D}")),
            (&format!("busybox:1.36@{D}"), format!("docker.io/library/busybox:1.36@{D}")),
            (&format!("localhost:5000/x@{D}"), format!("localhost:5000/x@{D}")),
            ("Foo/bar", "Foo/bar:latest".into()),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&r.to_string(), want, "input {input}");
            // Normalised output parses back to itself.
            assert_eq!(ImageRef::parse(want).unwrap(), r, "round trip of {want}");
        }
    }

    #[test]
    fn splits_fields() {
        let r = ImageRef::parse("localhost:5000/team/app:1.0").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest, None);
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("docker.io", "library/busybox"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    #[test]
    fn rejects_bad_references() {
        let long = format!("a/{}", "b".repeat(260));
        let bad: &[&str] = &[
            "",
            ":tag",
            "busybox:",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            &format!("busybox@sha256:{}", "A".repeat(64)),
            "busybox:-tag",
            "busybox:.tag",
            "busybox:ta g",
            "a//b",
            "a/b/",
            "-a/b",
            "a/b-",
            "a/b..c",
            "a/b___c",
            "localhost:port/x",
            "exa_mple.com/x",
            "[::1/x",
            &long,
        ];
        for input in bad {
            match ImageRef::parse(input) {
                Err(RegistryError::InvalidReference { reference, .. }) => {
                    assert_eq!(&reference, input)
                }
                other => panic!("{input:?} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn with_digest_drops_tag() {
        let r = ImageRef::parse("localhost:5000/x:1").unwrap().with_digest(D);
        assert_eq!(r.to_string(), format!("localhost:5000/x@{D}"));
    }
}
