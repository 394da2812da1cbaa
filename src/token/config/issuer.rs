//! One `[[token_issuers]]` entry: identity, audiences, and exactly one key source.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;

use super::{Findings, TokenIssuerSection, TokenKeySection, duration};
use crate::token::{
    Alg, AlgSet, IssuerSettings, KeySet, KeySource, MAX_JWKS_BYTES, RemoteJwks, RemoteJwksSettings,
    VerifyingKey,
};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
const MAX_LEEWAY: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const MIN_MAX_LIFETIME: Duration = Duration::from_secs(60);
const MAX_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn issuer(
    f: &mut Findings,
    key: &str,
    s: &TokenIssuerSection,
) -> Option<IssuerSettings> {
    let before = f.errors.len();
    let name = match s.name.as_deref() {
        None => {
            f.error(format!("{key}.name"), "missing: every issuer needs a name");
            None
        }
        Some(n) if !is_label(n) => {
            f.error(
                format!("{key}.name"),
                format!("\"{n}\" must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
            None
        }
        Some(n) => Some(Arc::<str>::from(n)),
    };
    let iss = match s.issuer.as_deref() {
        None | Some("") => {
            f.error(
                format!("{key}.issuer"),
                "missing: the exact \"iss\" of the issuer's tokens",
            );
            None
        }
        Some(i) => Some(i.to_owned()),
    };
    let audiences = match s.audiences.as_deref() {
        None | Some([]) => {
            f.error(
                format!("{key}.audiences"),
                "missing: the \"aud\" values meant for this gateway (tokens for other \
                 services of the same issuer must not pass)",
            );
            None
        }
        Some(list) => {
            for (j, a) in list.iter().enumerate() {
                if a.is_empty() {
                    f.error(format!("{key}.audiences[{j}]"), "empty audience");
                }
            }
            Some(list.to_vec())
        }
    };
    let leeway = duration(
        f,
        &format!("{key}.leeway"),
        &s.leeway,
        DEFAULT_LEEWAY,
        Duration::ZERO,
        MAX_LEEWAY,
    );
    let max_lifetime = duration(
        f,
        &format!("{key}.max_lifetime"),
        &s.max_lifetime,
        DEFAULT_MAX_LIFETIME,
        MIN_MAX_LIFETIME,
        MAX_MAX_LIFETIME,
    );
    let algorithms = s
        .algorithms
        .as_ref()
        .map(|list| algorithms(f, &format!("{key}.algorithms"), list));
    let keys = key_source(
        f,
        key,
        s,
        name.clone().unwrap_or_else(|| "?".into()),
        algorithms,
    );
    if f.errors.len() != before {
        return None;
    }
    Some(IssuerSettings {
        name: name?,
        issuer: iss?,
        audiences: audiences?,
        leeway: leeway?,
        max_lifetime: max_lifetime?,
        keys: keys?,
    })
}

/// Parse algorithm names; `None` and unknown names are errors.
fn algorithms(f: &mut Findings, key: &str, list: &[String]) -> AlgSet {
    if list.is_empty() {
        f.error(
            key,
            "empty: name the algorithms the issuer signs with, e.g. [\"ES256\"]",
        );
    }
    let mut ok = Vec::new();
    for (j, a) in list.iter().enumerate() {
        match Alg::parse(a) {
            Some(alg) => ok.push(alg),
            None if a.eq_ignore_ascii_case("none") => f.error(
                format!("{key}[{j}]"),
                "\"none\" means unsigned tokens: never accepted",
            ),
            None => f.error(
                format!("{key}[{j}]"),
                format!("\"{a}\" is not supported: use RS256, PS256, ES256, ES384, EdDSA or HS256"),
            ),
        }
    }
    AlgSet::of(&ok)
}

fn key_source(
    f: &mut Findings,
    key: &str,
    s: &TokenIssuerSection,
    name: Arc<str>,
    algs: Option<AlgSet>,
) -> Option<KeySource> {
    let given: Vec<&str> = [
        ("keys", s.keys.is_some()),
        ("jwks_file", s.jwks_file.is_some()),
        ("jwks_url", s.jwks_url.is_some()),
        ("hs256_secret_file", s.hs256_secret_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    match given[..] {
        [] => {
            f.error(
                key,
                "missing: one of keys, jwks_file, jwks_url or hs256_secret_file",
            );
            return None;
        }
        [_] => {}
        _ => {
            f.error(
                key,
                format!("only one key source per issuer, found {}", given.join(", ")),
            );
            return None;
        }
    }
    if s.jwks_url.is_none() {
        for (field, v) in [
            ("jwks_ca", &s.jwks_ca),
            ("jwks_refresh", &s.jwks_refresh),
            ("jwks_min_refetch", &s.jwks_min_refetch),
            ("jwks_timeout", &s.jwks_timeout),
        ] {
            if v.is_some() {
                f.warn(format!("{key}.{field}"), "ignored: only used with jwks_url");
            }
        }
    }
    let hs256 = AlgSet::of(&[Alg::HS256]);
    let mixes_hs256 = algs.is_some_and(|a| a.contains(Alg::HS256));
    if let Some(secret) = &s.hs256_secret_file {
        if algs.is_some_and(|a| a != hs256) {
            f.error(
                format!("{key}.algorithms"),
                "an hs256_secret_file issuer uses HS256 only: asymmetric algorithms are never \
                 mixed with a shared secret",
            );
        }
        return hs256_key(f, &format!("{key}.hs256_secret_file"), secret);
    }
    if mixes_hs256 {
        f.error(
            format!("{key}.algorithms"),
            "HS256 needs hs256_secret_file and is never mixed with asymmetric keys",
        );
        return None;
    }
    if let Some(list) = &s.keys {
        return pem_keys(f, key, list, algs);
    }
    let Some(algs) = algs else {
        f.error(
            format!("{key}.algorithms"),
            "missing: the algorithms the issuer signs with, e.g. [\"RS256\"] (a JWK's alg must agree)",
        );
        return None;
    };
    if let Some(file) = &s.jwks_file {
        let fkey = format!("{key}.jwks_file");
        let bytes = read(f, &fkey, file, MAX_JWKS_BYTES)?;
        return match KeySet::from_jwks(&bytes, algs) {
            Ok((set, skipped)) => {
                for why in skipped {
                    f.warn(&fkey, format!("key skipped: {why}"));
                }
                Some(KeySource::Static(Arc::new(set)))
            }
            Err(e) => {
                f.error(fkey, e.to_string());
                None
            }
        };
    }
    let url = s.jwks_url.as_deref()?;
    remote(f, key, s, url, name, algs)
}

fn remote(
    f: &mut Findings,
    key: &str,
    s: &TokenIssuerSection,
    url: &str,
    name: Arc<str>,
    algorithms: AlgSet,
) -> Option<KeySource> {
    let ukey = format!("{key}.jwks_url");
    let uri = match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() != Some("https") => {
            f.error(
                ukey,
                format!("\"{url}\" must be https: keys fetched in clear text could be swapped"),
            );
            None
        }
        Ok(u) if u.host().is_none_or(str::is_empty) => {
            f.error(ukey, format!("\"{url}\" has no host"));
            None
        }
        Ok(u) => Some(u),
        Err(_) => {
            f.error(ukey, format!("\"{url}\" is not a URL"));
            None
        }
    };
    let roots = match s.jwks_ca.as_deref() {
        None => {
            f.error(
                format!("{key}.jwks_ca"),
                "missing: the PEM CA bundle the JWKS server's certificate must chain to \
                 (for a public provider, e.g. /etc/ssl/certs/ca-certificates.crt)",
            );
            None
        }
        Some(ca) => {
            let path = f.resolve(ca);
            ca_roots(f, &format!("{key}.jwks_ca"), &path)
        }
    };
    let refresh = duration(
        f,
        &format!("{key}.jwks_refresh"),
        &s.jwks_refresh,
        DEFAULT_REFRESH,
        Duration::from_secs(10),
        DAY,
    );
    let min_refetch = duration(
        f,
        &format!("{key}.jwks_min_refetch"),
        &s.jwks_min_refetch,
        DEFAULT_MIN_REFETCH,
        Duration::from_secs(1),
        DAY,
    );
    let timeout = duration(
        f,
        &format!("{key}.jwks_timeout"),
        &s.jwks_timeout,
        DEFAULT_TIMEOUT,
        Duration::from_secs(1),
        Duration::from_secs(300),
    );
    let settings = RemoteJwksSettings {
        url: uri?,
        roots: roots?,
        algorithms,
        refresh: refresh?,
        min_refetch: min_refetch?,
        timeout: timeout?,
    };
    match RemoteJwks::new(name, settings) {
        Ok(r) => Some(KeySource::Remote(Arc::new(r))),
        Err(e) => {
            f.error(key, format!("cannot build the TLS client: {e}"));
            None
        }
    }
}

/// A CA bundle; certificates rustls cannot parse are skipped (system bundles carry a few odd
/// ones), but at least one must load.
fn ca_roots(f: &mut Findings, key: &str, path: &Path) -> Option<Arc<RootCertStore>> {
    match crate::tls::load_certs(path) {
        Ok(certs) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                f.error(
                    key,
                    format!("{} holds no usable CA certificate", path.display()),
                );
                return None;
            }
            Some(Arc::new(roots))
        }
        Err(e) => {
            f.error(key, e.to_string());
            None
        }
    }
}

fn pem_keys(
    f: &mut Findings,
    key: &str,
    list: &[TokenKeySection],
    issuer_algs: Option<AlgSet>,
) -> Option<KeySource> {
    if list.is_empty() {
        f.error(
            format!("{key}.keys"),
            "empty: list at least one { pem = \"...\" }",
        );
        return None;
    }
    let mut keys = Vec::new();
    for (j, k) in list.iter().enumerate() {
        let kkey = format!("{key}.keys[{j}]");
        let own = k
            .algorithms
            .as_ref()
            .map(|a| algorithms(f, &format!("{kkey}.algorithms"), a));
        if own.is_some_and(|a| a.contains(Alg::HS256)) {
            f.error(
                format!("{kkey}.algorithms"),
                "HS256 needs hs256_secret_file and is never mixed with asymmetric keys",
            );
            continue;
        }
        let Some(algs) = own.or(issuer_algs) else {
            f.error(
                format!("{kkey}.algorithms"),
                "missing: set algorithms here or on the issuer",
            );
            continue;
        };
        if let Some(kid) = k.kid.as_deref()
            && (kid.is_empty() || kid.len() > 256)
        {
            f.error(format!("{kkey}.kid"), "must be 1 to 256 characters");
            continue;
        }
        let Some(pem) = k.pem.as_deref() else {
            f.error(format!("{kkey}.pem"), "missing: the PEM public key file");
            continue;
        };
        let Some(bytes) = read(f, &format!("{kkey}.pem"), pem, 64 * 1024) else {
            continue;
        };
        match VerifyingKey::from_spki_pem(&bytes, k.kid.as_deref(), algs) {
            // Listed on the key itself, every algorithm must fit; from the issuer's list,
            // the ones that fit are taken.
            Ok(v) if own.is_some() && v.algorithms() != algs => f.error(
                format!("{kkey}.algorithms"),
                format!(
                    "{} cannot be used with this key ({}): it fits {}",
                    algs.names(),
                    v.kind().label(),
                    v.kind().algorithms().names()
                ),
            ),
            Ok(v) => keys.push(v),
            Err(e) => f.error(format!("{kkey}.pem"), e.to_string()),
        }
    }
    if keys.len() != list.len() {
        return None;
    }
    match KeySet::new(keys) {
        Ok(set) => Some(KeySource::Static(Arc::new(set))),
        Err(e) => {
            f.error(format!("{key}.keys"), e.to_string());
            None
        }
    }
}

fn hs256_key(f: &mut Findings, key: &str, file: &str) -> Option<KeySource> {
    let mut secret = read(f, key, file, 4096)?;
    // Written with `echo`, the file ends in a newline that is not part of the secret.
    if secret.ends_with(b"\r\n") {
        secret.truncate(secret.len() - 2);
    } else if secret.ends_with(b"\n") {
        secret.truncate(secret.len() - 1);
    }
    match VerifyingKey::hs256(&secret, None).and_then(|k| KeySet::new([k])) {
        Ok(set) => Some(KeySource::Static(Arc::new(set))),
        Err(e) => {
            f.error(key, e.to_string());
            None
        }
    }
}

fn read(f: &mut Findings, key: &str, file: &str, max: usize) -> Option<Vec<u8>> {
    let path = f.resolve(file);
    match std::fs::read(&path) {
        Ok(b) if b.len() > max => {
            f.error(
                key,
                format!("{} is larger than {max} bytes", path.display()),
            );
            None
        }
        Ok(b) => Some(b),
        Err(e) => {
            f.error(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Names that are safe as metric labels, log fields and header values.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
