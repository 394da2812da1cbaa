//! Who is calling the admin API, and whether their role allows what they ask.
//!
//! An identity is found by its bearer token (when the request carries one and tokens are
//! configured), else by its client certificate (pin or subject), else it is the loopback
//! identity of a set-up that asks for nothing. Each endpoint needs one role; the roles nest
//! (viewer < operator < admin).

use base64::Engine as _;
use http::Method;

use crate::config::{AdminCredential, AdminIdentity, AdminRole};
use crate::identity::ClientIdentity;

/// The identity a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Caller {
    pub name: Box<str>,
    pub role: AdminRole,
}

impl Caller {
    fn of(i: &AdminIdentity) -> Self {
        Caller {
            name: i.name.clone(),
            role: i.role,
        }
    }
}

/// The identity among `identities` that `bearer` (the token after `Bearer `) or `cert` (the
/// verified client certificate) proves; `None` is 401.
pub(super) fn authenticate(
    identities: &[AdminIdentity],
    bearer: Option<&str>,
    cert: Option<&ClientIdentity>,
) -> Option<Caller> {
    let tokens_configured = identities
        .iter()
        .any(|i| matches!(i.credential, AdminCredential::Token(_)));
    if let Some(token) = bearer.filter(|_| tokens_configured) {
        let digest = crate::identity::sha256(token.as_bytes());
        // Every token is compared, in constant time, so timing says nothing about which
        // identity (if any) came close.
        let mut found = None;
        for i in identities {
            if let AdminCredential::Token(expected) = &i.credential
                && aws_lc_rs::constant_time::verify_slices_are_equal(&digest, expected).is_ok()
            {
                found = Some(Caller::of(i));
            }
        }
        return found;
    }
    if let Some(cert) = cert {
        let subject = crate::identity::subject_key(&cert.subject);
        let by_cert = identities.iter().find(|i| match &i.credential {
            AdminCredential::Pins(pins) => pins.contains(&cert.spki_sha256),
            AdminCredential::Subject(s) => *s == subject,
            AdminCredential::AnyClientOfCa => true,
            AdminCredential::Token(_) | AdminCredential::Loopback => false,
        });
        if let Some(i) = by_cert {
            return Some(Caller::of(i));
        }
    }
    identities
        .iter()
        .find(|i| i.credential == AdminCredential::Loopback)
        .map(Caller::of)
}

/// The token an `Authorization` header presents: `Bearer <token>`, or `Basic` with the token
/// as the password. Basic is how a browser asks for it: its own sign-in prompt on the
/// console's 401, the token kept by the browser (not by the page's script) for the session
/// and sent with the console's requests to this origin only. The user name is not checked.
pub(super) fn presented_token(authorization: Option<&str>) -> Option<String> {
    let (scheme, value) = authorization?.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// The role `method path` needs. Reading is for viewers; reload and licenses for operators;
/// everything else that changes something (issuer clients, signing keys, enrollment tokens,
/// which are a certificate and a license waiting to be claimed, and any endpoint
/// added later until it is placed here) for admins.
pub(super) fn required_role(method: &Method, path: &str) -> AdminRole {
    if matches!(*method, Method::GET | Method::HEAD) {
        return AdminRole::Viewer;
    }
    if path == "/reload" || path == "/licenses" || path.starts_with("/licenses/") {
        return AdminRole::Operator;
    }
    AdminRole::Admin
}

/// Whether `method` can change something (and so is audited).
pub(super) fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The audit trail's name for `method path`, and its target when the path names one.
pub(super) fn action<'p>(method: &Method, path: &'p str) -> (&'static str, Option<&'p str>) {
    let rest = |prefix: &str| path.strip_prefix(prefix).filter(|r| !r.is_empty());
    match *method {
        Method::POST if path == "/reload" => ("reload", None),
        Method::POST if path == "/licenses" || path == "/licenses/" => ("license.activate", None),
        Method::DELETE if rest("/licenses/").is_some() => ("license.revoke", rest("/licenses/")),
        Method::POST if path == "/clients" => ("client.create", None),
        Method::POST if path == "/keys/rotate" => ("keys.rotate", None),
        Method::POST if path == "/enrollment/tokens" => ("enrollment.token", None),
        Method::DELETE if rest("/enrollment/tokens/").is_some() => {
            ("enrollment.token_revoke", rest("/enrollment/tokens/"))
        }
        Method::DELETE if rest("/enrollment/machines/").is_some() => {
            ("enrollment.revoke", rest("/enrollment/machines/"))
        }
        Method::POST => match rest("/clients/").and_then(|r| r.rsplit_once('/')) {
            Some((client, "disable")) => ("client.disable", Some(client)),
            Some((client, "rotate-secret")) => ("client.rotate_secret", Some(client)),
            _ => ("unknown", None),
        },
        _ => ("unknown", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, role: AdminRole, credential: AdminCredential) -> AdminIdentity {
        AdminIdentity {
            name: name.into(),
            role,
            credential,
        }
    }

    fn cert(subject: &str, spki: u8) -> ClientIdentity {
        ClientIdentity {
            spki_sha256: [spki; 32],
            cert_sha256: [0; 32],
            subject: subject.into(),
            common_name: None,
            organization: None,
            sans: Vec::new(),
            serial: String::new(),
            not_before: std::time::UNIX_EPOCH,
            not_after: std::time::UNIX_EPOCH,
        }
    }

    fn token(t: &str) -> AdminCredential {
        AdminCredential::Token(crate::identity::sha256(t.as_bytes()))
    }

    #[test]
    fn a_token_names_its_identity_and_an_unknown_token_names_none() {
        let ids = [
            id(
                "prometheus",
                AdminRole::Viewer,
                token("v".repeat(32).as_str()),
            ),
            id("ops", AdminRole::Operator, token("o".repeat(32).as_str())),
        ];
        let who = |t: &str| authenticate(&ids, Some(t), None).map(|c| c.name);
        assert_eq!(who(&"v".repeat(32)).as_deref(), Some("prometheus"));
        assert_eq!(who(&"o".repeat(32)).as_deref(), Some("ops"));
        assert_eq!(who("wrong"), None);
        assert_eq!(authenticate(&ids, None, None), None, "no credential");
    }

    #[test]
    fn a_certificate_is_named_by_its_pin_or_subject_and_a_stranger_by_neither() {
        let ids = [
            id(
                "laptop",
                AdminRole::Admin,
                AdminCredential::Pins(vec![[7; 32]]),
            ),
            id(
                "ci",
                AdminRole::Operator,
                AdminCredential::Subject(crate::identity::subject_key("CN=ci,O=Example")),
            ),
        ];
        let who = |c: &ClientIdentity| authenticate(&ids, None, Some(c)).map(|c| c.role);
        assert_eq!(who(&cert("CN=whoever", 7)), Some(AdminRole::Admin));
        assert_eq!(who(&cert("CN=ci, O=Example", 1)), Some(AdminRole::Operator));
        assert_eq!(who(&cert("CN=ci, O=Other", 1)), None);
        // A token where none is configured does not stand in for the certificate.
        assert_eq!(
            authenticate(&ids, Some("x"), Some(&cert("CN=whoever", 7))).map(|c| c.role),
            Some(AdminRole::Admin)
        );
    }

    #[test]
    fn the_loopback_identity_serves_only_a_set_up_that_asks_for_nothing() {
        let open = [id("loopback", AdminRole::Admin, AdminCredential::Loopback)];
        assert!(authenticate(&open, None, None).is_some());
        let tokened = [id("admin", AdminRole::Admin, token(&"a".repeat(32)))];
        assert!(authenticate(&tokened, None, None).is_none());
    }

    #[test]
    fn a_token_is_presented_as_bearer_or_as_a_basic_password() {
        assert_eq!(presented_token(Some("Bearer abc ")).as_deref(), Some("abc"));
        // "anyone:abc"
        assert_eq!(
            presented_token(Some("Basic YW55b25lOmFiYw==")).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_token(Some("Basic !!!")), None);
        assert_eq!(presented_token(Some("Digest x")), None);
        assert_eq!(presented_token(None), None);
    }

    #[test]
    fn each_endpoint_needs_the_role_the_readme_gives_it() {
        let cases = [
            (Method::GET, "/metrics", AdminRole::Viewer),
            (Method::GET, "/config", AdminRole::Viewer),
            (Method::GET, "/licenses", AdminRole::Viewer),
            (Method::GET, "/clients", AdminRole::Viewer),
            (Method::GET, "/status", AdminRole::Viewer),
            (Method::GET, "/ui", AdminRole::Viewer),
            (Method::GET, "/ui/console.js", AdminRole::Viewer),
            (Method::POST, "/reload", AdminRole::Operator),
            (Method::POST, "/licenses", AdminRole::Operator),
            (Method::DELETE, "/licenses/L-1", AdminRole::Operator),
            (Method::POST, "/clients", AdminRole::Admin),
            (Method::POST, "/clients/c/rotate-secret", AdminRole::Admin),
            (Method::POST, "/keys/rotate", AdminRole::Admin),
            (Method::POST, "/enrollment/tokens", AdminRole::Admin),
            (Method::DELETE, "/enrollment/tokens/m1", AdminRole::Admin),
            (Method::DELETE, "/enrollment/machines/m1", AdminRole::Admin),
            (Method::PUT, "/anything", AdminRole::Admin),
        ];
        for (m, p, role) in cases {
            assert_eq!(required_role(&m, p), role, "{m} {p}");
        }
    }

    #[test]
    fn actions_name_what_changed_and_its_target() {
        assert_eq!(action(&Method::POST, "/reload"), ("reload", None));
        assert_eq!(
            action(&Method::DELETE, "/licenses/L-9"),
            ("license.revoke", Some("L-9"))
        );
        assert_eq!(
            action(&Method::POST, "/clients/sync/rotate-secret"),
            ("client.rotate_secret", Some("sync"))
        );
        assert_eq!(
            action(&Method::POST, "/clients/sync/disable"),
            ("client.disable", Some("sync"))
        );
        assert_eq!(action(&Method::PATCH, "/x"), ("unknown", None));
    }
}
