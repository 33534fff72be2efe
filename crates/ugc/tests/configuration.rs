//! Settings from outside: a flag beats the environment, which beats the `--config`
//! file, which beats the default — seen through `ugc token`, whose signing secret comes
//! from the same settings as the server's — and typed settings refuse unknown values by
//! name, from any layer.

use std::process::Command;

const FILE: &str = "file-secret-0123456789abcdef";
const ENV: &str = "env-secret-0123456789abcdef";
const FLAG: &str = "flag-secret-0123456789abcdef";

fn ugc(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ugc"));
    c.env_clear()
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .arg("--data-dir")
        .arg(dir.join("data"));
    c
}

/// The secret among `candidates` that signed `token`.
fn signed_with(token: &str, candidates: &[&str]) -> Option<String> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    candidates
        .iter()
        .find(|s| {
            jsonwebtoken::decode::<serde_json::Value>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(s.as_bytes()),
                &v,
            )
            .is_ok()
        })
        .map(|s| s.to_string())
}

fn token(mut c: Command) -> String {
    let out = c.args(["token", "--user", "u1"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ugc.toml");
    std::fs::write(&file, format!("jwt-secret = \"{FILE}\"\n")).unwrap();
    let all = [FILE, ENV, FLAG];

    let mut c = ugc(dir.path());
    c.arg("--config").arg(&file);
    assert_eq!(signed_with(&token(c), &all).as_deref(), Some(FILE));

    let mut c = ugc(dir.path());
    c.arg("--config").arg(&file).env("UGC_JWT_SECRET", ENV);
    assert_eq!(signed_with(&token(c), &all).as_deref(), Some(ENV));

    let mut c = ugc(dir.path());
    c.arg("--config")
        .arg(&file)
        .env("UGC_JWT_SECRET", ENV)
        .args(["--jwt-secret", FLAG]);
    assert_eq!(signed_with(&token(c), &all).as_deref(), Some(FLAG));

    // No layer sets it: the default is the data dir's generated secret.
    let t = token(ugc(dir.path()));
    assert_eq!(signed_with(&t, &all), None);
    let generated = std::fs::read_to_string(dir.path().join("data/jwt-secret")).unwrap();
    assert!(signed_with(&t, &[generated.trim()]).is_some());
}

#[test]
fn typed_settings_refuse_unknown_values_from_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ugc.toml");
    std::fs::write(&file, "store = \"mongodb\"\n").unwrap();
    let refused = |mut c: Command, what: &str| {
        let out = c.args(["token", "--user", "u1"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what} was accepted");
        assert!(
            err.contains("chdb") && err.contains("clickhouse"),
            "{what}: {err}"
        );
    };
    let mut c = ugc(dir.path());
    c.arg("--config").arg(&file);
    refused(c, "a file value");
    let mut c = ugc(dir.path());
    c.env("UGC_STORE", "mongodb");
    refused(c, "an environment value");
    let mut c = ugc(dir.path());
    c.args(["--store", "mongodb"]);
    refused(c, "a flag value");
}
