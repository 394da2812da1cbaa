//! The enrollment CA's key sealed in the vault (`ca_key_vault`): a gateway whose CA key is
//! only there enrolls machines, and each way of naming it wrongly is refused at its key.

use super::*;

const VAULT: &str = "[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n";

/// The usual config with the CA key named as vault record `record` (and `vault` prepended).
fn in_vault(text: &str, vault: &str, record: &str) -> String {
    let text = text.replace(
        "ca_key = \"enroll-ca.key\"",
        &format!("ca_key_vault = \"{record}\""),
    );
    format!("{vault}{text}")
}

/// Seal `pem` as a private_key record `name` with the library (the CLI checks the PEM
/// first, so a bad key can only get in this way).
fn seal(dir: &Path, name: &str, pem: &[u8]) {
    use portcullis::vault::{Kind, MasterKey, Secret, Vault};
    let master =
        MasterKey::from_base64(&std::fs::read_to_string(dir.join("master.key")).unwrap()).unwrap();
    let mut v = Vault::open(&dir.join("vault.json"), &master).unwrap();
    v.set(name, Kind::PrivateKey, &Secret::new(pem.to_vec()), 1)
        .unwrap();
    v.save().unwrap();
}

#[tokio::test]
async fn a_gateway_whose_ca_key_is_only_in_the_vault_enrolls_a_machine() {
    let lab = Lab::start_with(|dir, text| {
        let pem = std::fs::read_to_string(dir.join("enroll-ca.key")).unwrap();
        // Put there with the CLI as an operator would (piped in, never in argv).
        vault_with(dir, &[("enroll-ca", "private_key", pem.trim_end())]);
        std::fs::remove_file(dir.join("enroll-ca.key")).unwrap();
        in_vault(&text, VAULT, "enroll-ca")
    })
    .await;
    assert!(!lab.pki.path("enroll-ca.key").exists());
    let token = lab.token("m1", "24h").await;
    let (machine, license) = enroll(&lab, &token).await;
    assert!(license.starts_with("PCL1."), "{license}");
    assert_eq!(orders_as(&lab, &machine).await.status, 200);
    // The vault file holds the key sealed: no PEM in it.
    let sealed = std::fs::read_to_string(lab.pki.path("vault.json")).unwrap();
    assert!(!sealed.contains("PRIVATE KEY"));
}

#[test]
fn each_wrong_way_to_name_the_ca_key_is_refused_at_its_key() {
    let pki = Pki::generate();
    let dir = pki.dir();
    enrollment_files(dir);
    let pem = std::fs::read_to_string(dir.join("enroll-ca.key")).unwrap();
    let other = KeyPair::generate().unwrap().serialize_pem();
    vault_with(
        dir,
        &[
            ("enroll-ca", "private_key", pem.trim_end()),
            ("other-ca", "private_key", other.trim_end()),
            ("a-token", "bearer", "not-a-key"),
        ],
    );
    seal(
        dir,
        "garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let base = config("http://127.0.0.1:9", "");
    let key = "enrollment.ca_key_vault";
    load(dir, &in_vault(&base, VAULT, "enroll-ca")).expect("the sealed key loads");

    let cases = [
        ("", "enroll-ca", "needs a [vault] section"),
        (VAULT, "nope", "no record is named \"nope\""),
        (VAULT, "a-token", "is of kind bearer"),
        (VAULT, "garbage", "not a PEM private key"),
        (VAULT, "other-ca", "is not the key of enrollment.ca_cert"),
    ];
    for (vault, record, why) in cases {
        assert_refused(dir, &in_vault(&base, vault, record), key, why);
    }
    let both = base.replace(
        "ca_key = \"enroll-ca.key\"",
        "ca_key = \"enroll-ca.key\"\nca_key_vault = \"enroll-ca\"",
    );
    assert_refused(dir, &format!("{VAULT}{both}"), key, "not both");
    let neither = base.replace("ca_key = \"enroll-ca.key\"\n", "");
    assert_refused(dir, &neither, "enrollment.ca_key", "or ca_key_vault");

    // A private key is never a route's upstream credential.
    let leaked = in_vault(&base, VAULT, "enroll-ca").replace(
        "license = \"required\"",
        "license = \"required\"\ncredentials = \"enroll-ca\"",
    );
    let err = load(dir, &leaked).err().expect("refused");
    assert!(
        err.0.iter().any(|i| i.key.ends_with(".credentials")
            && i.message.contains("private_key")
            && i.message.contains("never sent upstream")),
        "{err}"
    );
    // Nor can the CLI seal something that is not a key as one.
    let out = vault_cli(
        dir,
        &[
            "set",
            "x",
            "--kind",
            "private_key",
            "--vault",
            "vault.json",
            "--master-key-file",
            "master.key",
        ],
        "hunter2\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PEM private key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No error message carries the key.
    let err = load(dir, &in_vault(&base, VAULT, "other-ca"))
        .err()
        .unwrap();
    assert!(!err.to_string().contains("PRIVATE KEY"));
}
