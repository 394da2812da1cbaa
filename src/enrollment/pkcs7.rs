//! The EST answer format (written, and read back by the agent): a degenerate CMS SignedData ("certs-only", RFC 7030 4.1.3 and RFC
//! 5652 5.1) carrying certificates and no signers, DER-encoded.
//!
//! Written by hand, not with the `cms` crate: its current release is a candidate
//! (0.3.0-rc.0), and 0.2 would bring der, spki, x509-cert and const-oid for one fixed
//! structure of five fields whose only variable part is the certificates, which are copied
//! as they are.

/// `1.2.840.113549.1.7.2` signedData.
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
/// `1.2.840.113549.1.7.1` data.
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];

/// ContentInfo { signedData, [0] SignedData { version 1, digestAlgorithms {}, encap
/// { data }, certificates [0] IMPLICIT `certs`, signerInfos {} } }.
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let mut signed = Vec::new();
    signed.extend_from_slice(&[0x02, 0x01, 0x01]); // version 1
    signed.extend_from_slice(&[0x31, 0x00]); // digestAlgorithms: none
    signed.extend(tlv(0x30, OID_DATA)); // encapContentInfo, no content
    signed.extend(tlv(0xa0, &certs.concat())); // certificates [0] IMPLICIT SET OF
    signed.extend_from_slice(&[0x31, 0x00]); // signerInfos: none
    let mut info = OID_SIGNED_DATA.to_vec();
    info.extend(tlv(0xa0, &tlv(0x30, &signed)));
    tlv(0x30, &info)
}

/// One DER element: `tag`, definite length, `content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The certificates (DER) of a certs-only SignedData as [`certs_only`] writes it (and EST
/// servers answer); `None` if it is not one.
pub fn certificates(der: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (info, _) = read(der, 0x30)?;
    let (oid, rest) = read_any(info)?;
    if oid != OID_SIGNED_DATA {
        return None;
    }
    let (explicit, _) = read(rest, 0xa0)?;
    let (signed, _) = read(explicit, 0x30)?;
    let (_, rest) = read(signed, 0x02)?; // version
    let (_, rest) = read(rest, 0x31)?; // digestAlgorithms
    let (_, rest) = read(rest, 0x30)?; // encapContentInfo
    let (mut certs, _) = read(rest, 0xa0)?;
    let mut out = Vec::new();
    while !certs.is_empty() {
        let (whole, next) = read_any(certs)?;
        out.push(whole.to_vec());
        certs = next;
    }
    Some(out)
}

/// The content of the element at the start of `der` if its tag is `tag`, and what follows.
fn read(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = length(rest)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The whole element (tag, length, content) at the start of `der`, and what follows.
fn read_any(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = der.get(1..)?;
    let (len, after_len) = length(rest)?;
    let total = der.len() - after_len.len() + len;
    (der.len() >= total).then(|| der.split_at(total))
}

/// A definite DER length and what follows it.
fn length(der: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || rest.len() < n {
        return None;
    }
    let len = rest[..n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((len, &rest[n..]))
}

/// The bytes of a base64 body with line breaks (RFC 2045, as EST peers send it).
pub fn decode_base64(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// Base64 in lines of 64 (RFC 2045 allows at most 76), as EST bodies are sent. Line ends
/// are LF: RFC 8951 3.2.2 has EST peers ignore whitespace, and `base64 -d` refuses CR.
pub fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn what_certs_only_writes_certificates_reads_back() {
        let certs: [&[u8]; 2] = [&[0x30, 0x03, 1, 2, 3], &[0x30, 0x81, 0x80, 9]];
        let mut long = certs[1].to_vec();
        long.resize(3 + 0x80, 7);
        let der = certs_only(&[certs[0], &long]);
        assert_eq!(certificates(&der), Some(vec![certs[0].to_vec(), long]));
        assert_eq!(certificates(&der[..der.len() - 1]), None);
        assert_eq!(certificates(b"junk"), None);
    }

    #[test]
    fn lengths_use_the_shortest_definite_form() {
        assert_eq!(tlv(0x04, &[0; 5])[..2], [0x04, 5]);
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn openssl_reads_the_certificates_back() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "pkcs7 one");
        let one = p.self_signed(&key).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "pkcs7 two");
        let two = p.self_signed(&key).unwrap();
        let der = certs_only(&[one.der(), two.der()]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("certs.p7b");
        std::fs::write(&path, &der).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
            .arg(&path)
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("CN = pkcs7 one") || text.contains("CN=pkcs7 one"),
            "{text}"
        );
        assert!(text.contains("pkcs7 two"), "{text}");
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
    }
}
