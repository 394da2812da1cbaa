//! The config as `GET /config` shows it: the parsed file as JSON with every value whose
//! key names a secret replaced, so the admin API never hands out a credential.

use serde_json::Value;

use super::file::FileConfig;

const REDACTED: &str = "<redacted>";

/// Key names whose scalar values are never shown.
fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["secret", "password", "passphrase", "token", "private"]
        .iter()
        .any(|s| k.contains(s))
}

pub fn redacted(file: &FileConfig) -> Value {
    let mut v = serde_json::to_value(file).unwrap_or(Value::Null);
    scrub(&mut v);
    v
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let scalar = matches!(child, Value::String(_) | Value::Number(_) | Value::Bool(_))
                    || matches!(child, Value::Array(a) if a.iter().all(|e| !e.is_object()));
                if scalar && !child.is_null() && is_secret_key(k) {
                    *child = Value::String(REDACTED.to_owned());
                } else {
                    scrub(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_under_secret_keys_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "admin": {"token_file": "/etc/p/admin.token", "bind": "127.0.0.1:9901"},
            "token_issuers": [{"name": "corp", "hs256_secret_file": "s.key", "audiences": ["a"]}],
            "x": {"client_secret": ["a", "b"], "password": 5}
        });
        scrub(&mut v);
        assert_eq!(v["admin"]["token_file"], REDACTED);
        assert_eq!(v["admin"]["bind"], "127.0.0.1:9901");
        assert_eq!(v["token_issuers"][0]["hs256_secret_file"], REDACTED);
        assert_eq!(v["token_issuers"][0]["name"], "corp");
        assert_eq!(v["x"]["client_secret"], REDACTED);
        assert_eq!(v["x"]["password"], REDACTED);
    }
}
