use super::*;

const GOOD: &str = r#"
[[qiniu]]
name = "main"
access_key = "ak-main"
secret_key_env = "PURGEQ_TEST_MAIN_SK"
hosts = ["cdn.example.com", "*.img.example.com"]

[[qiniu]]
name = "staging"
access_key_env = "PURGEQ_TEST_STAGING_AK"
secret_key_file = "/run/credentials/purgeq.service/staging-sk"
hosts = ["staging.example.com"]
endpoint = "http://127.0.0.1:8080/"
batch_urls = 30
escalate_dir_after = 5

[[pan123]]
name = "files"
client_id = "client"
client_secret_file = "/run/credentials/purgeq.service/files"

[worker]
poll_interval = "250ms"
max_attempts = 3
"#;

fn err(text: &str) -> String {
    parse(Path::new("/etc/purgeq/purgeq.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_good_file_parses() {
    let s = parse(Path::new("p.toml"), GOOD).unwrap();
    assert_eq!(s.qiniu.len(), 2);
    assert_eq!(s.qiniu[0].place.line, 2);
    assert_eq!(
        s.qiniu[1].endpoint.as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(s.qiniu[1].batch_urls, Some(30));
    assert_eq!(s.qiniu[1].escalate_dir_after, Some(5));
    assert_eq!(s.pan123[0].name, "files");
    assert_eq!(
        s.routing.account_for_host("a.img.example.com"),
        Some("main")
    );
    assert_eq!(
        s.routing.account_for_host("staging.example.com"),
        Some("staging")
    );
    let keys: Vec<_> = s
        .worker
        .iter()
        .map(|w| (w.key.as_str(), w.place.line))
        .collect();
    assert_eq!(keys, [("max_attempts", 24), ("poll_interval", 23)]);
}

#[test]
fn an_unknown_key_names_its_line() {
    let e = err("[[qiniu]]\nname = \"a\"\nhostz = []\n");
    assert!(
        e.contains("/etc/purgeq/purgeq.toml line 3") && e.contains("hostz"),
        "{e}"
    );
}

#[test]
fn an_inline_secret_is_refused_without_its_value() {
    let e = err(
        "[[qiniu]]\nname = \"a\"\naccess_key = \"k\"\nsecret_key = \"hunter2-value\"\nhosts = [\"a.com\"]\n",
    );
    assert!(
        e.contains("line 4, secret_key") && e.contains("secret_key_env"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = err("[[pan123]]\nname = \"a\"\nclient_id = \"k\"\nclient_secret = 'hunter2'\n");
    assert!(
        e.contains("line 4, client_secret") && !e.contains("hunter2"),
        "{e}"
    );
    // A syntax error on a secret's line does not quote the line either.
    let e = err("[[qiniu]]\nname = \"a\"\nsecret_key = \"hunter2\n");
    assert!(e.contains("line 3") && !e.contains("hunter2"), "{e}");
}

#[test]
fn a_duplicate_host_names_both_accounts() {
    let e = err(concat!(
        "[[qiniu]]\nname = \"a\"\naccess_key = \"k\"\nsecret_key_env = \"S\"\nhosts = [\"x.com\"]\n",
        "[[qiniu]]\nname = \"b\"\naccess_key = \"k\"\nsecret_key_env = \"S\"\nhosts = [\"X.com\"]\n",
    ));
    assert!(
        e.contains("line 10, hosts") && e.contains("\"a\"") && e.contains("\"b\""),
        "{e}"
    );
}

#[test]
fn other_mistakes_name_their_place() {
    let table = "[[qiniu]]\nname = \"a\"\naccess_key = \"k\"\nsecret_key_env = \"S\"\n";
    for (extra, want) in [
        ("hosts = [\"*.com\"]\n", "line 5, hosts"),
        ("batch_urls = 0\n", "line 5, batch_urls"),
        ("escalate_dir_after = 1\n", "line 5, escalate_dir_after"),
        ("endpoint = \"ftp://x\"\n", "line 5, endpoint"),
        ("secret_key_file = \"/x\"\n", "line 5, secret_key_file"),
    ] {
        let e = err(&format!("{table}{extra}"));
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = err("[[qiniu]]\nname = \"a\"\nsecret_key_env = \"S\"\n");
    assert!(
        e.contains("line 1, [[qiniu]]") && e.contains("access_key"),
        "{e}"
    );
    let e = err(&format!("{table}{table}"));
    assert!(
        e.contains("line 5, [[qiniu]]") && e.contains("second"),
        "{e}"
    );
}

#[test]
fn a_missing_variable_names_its_place() {
    let s = parse(Path::new("p.toml"), GOOD).unwrap();
    let e = s.qiniu[0].secret_key.resolve().unwrap_err().to_string();
    assert_eq!(
        e,
        "p.toml line 5, secret_key_env: names PURGEQ_TEST_MAIN_SK, which is not set"
    );
    let e = s.qiniu[1].access_key.resolve().unwrap_err().to_string();
    assert!(e.starts_with("p.toml line 10, access_key_env"), "{e}");
    let e = s.pan123[0].client_secret.resolve().unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(
        chain.contains("p.toml line 20, client_secret_file") && chain.contains("/run/credentials"),
        "{chain}"
    );
}
