//! Property tests for the parsers that see untrusted input: the target parser (what producers
//! type) and the provider response classifiers (what the network sends back). None may panic;
//! an accepted target is already in its stored form; a success comes only with a 2xx status.

use proptest::prelude::*;
use purgeq::model::Action;
use purgeq::provider::{Outcome, pan123, qiniu};
use purgeq::target::{self, Input, MAX_TARGET_LEN, parse_target};
use serde_json::{Value, json};

const ACTIONS: [Action; 3] = [Action::RefreshUrl, Action::RefreshDir, Action::PrefetchUrl];

/// Something shaped like a URL, built from parts that each may be wrong: most of these are
/// rejected, enough are accepted to exercise normalization.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        6 => prop::sample::select(vec!["http", "https", "HTTP", "hTtPs"]),
        1 => prop::sample::select(vec!["ftp", "file", "javascript", "ws", ""]),
    ];
    let sep = prop_oneof![
        6 => Just("://"),
        1 => prop::sample::select(vec![":/", ":", ":///", ":\\\\", "//"]),
    ];
    let userinfo = prop_oneof![6 => Just(""), 1 => prop::sample::select(vec!["u@", "u:p@", "@"])];
    let host = prop_oneof![
        6 => "[a-z0-9_]{1,10}(\\.[a-zA-Z0-9\\-]{1,12}){0,3}\\.?",
        2 => "[a-zü😀ａß]{1,8}[.。．](com|xn--[a-z0-9]{1,6})",
        1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,4}",
        1 => "\\[(::)?[0-9a-f]{1,4}(:[0-9a-fx]{1,4}){0,4}\\]?",
        3 => "[a-zA-Z0-9_.\\-%*~ \\[\\]:。．ａü😀\u{200b}\u{202e}\u{ad}\u{3002}]{0,70}",
    ];
    let port = prop::option::weighted(0.2, "[0-9]{0,6}");
    let path = prop_oneof![
        4 => "(/[a-zA-Z0-9%._~!$&'()*+,;=:@\\-ü]{0,12}){0,4}/?",
        1 => "(/[a-zA-Z0-9%._~ \\-\u{202e}\\\\\t\r#?]{0,12}){0,4}/?",
    ];
    let query = prop::option::weighted(0.3, "[a-zA-Z0-9%=&/?:@ü]{0,16}");
    let fragment = prop::option::weighted(0.1, "[a-z0-9#]{0,6}");
    (scheme, sep, userinfo, host, port, path, query, fragment).prop_map(
        |(scheme, sep, userinfo, host, port, path, query, fragment)| {
            let mut url = format!("{scheme}{sep}{userinfo}{host}");
            if let Some(port) = port {
                url.push_str(&format!(":{port}"));
            }
            url.push_str(&path);
            if let Some(query) = query {
                url.push_str(&format!("?{query}"));
            }
            if let Some(fragment) = fragment {
                url.push_str(&format!("#{fragment}"));
            }
            url
        },
    )
}

/// Checks what every accepted target must be, and that accepting is idempotent.
fn check_accepted(raw: &str, action: Action) -> Result<(), TestCaseError> {
    let Ok(stored) = parse_target(raw, action) else {
        return Ok(());
    };
    prop_assert!(stored.len() <= MAX_TARGET_LEN, "{raw:?} -> {stored:?}");
    prop_assert!(
        stored.is_ascii() && !stored.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{raw:?} -> {stored:?}"
    );
    prop_assert!(
        stored.starts_with("http://") || stored.starts_with("https://"),
        "{raw:?} -> {stored:?}"
    );
    prop_assert!(
        !stored.contains('#') && !stored.contains('\\'),
        "{raw:?} -> {stored:?}"
    );
    prop_assert_eq!(
        parse_target(&stored, action),
        Ok(stored.clone()),
        "re-parsing {:?} (from {:?})",
        &stored,
        raw
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_is_parsed_without_panicking(raw in any::<String>()) {
        for action in ACTIONS {
            check_accepted(&raw, action)?;
        }
    }

    #[test]
    fn url_shaped_input_normalizes_idempotently(raw in url_like()) {
        for action in ACTIONS {
            check_accepted(&raw, action)?;
        }
    }

    #[test]
    fn any_bytes_are_validated_line_by_line(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let input = Input::from_lines(&bytes);
        let lines = bytes.split(|b| *b == b'\n').count();
        match target::validate(&input, Action::RefreshUrl) {
            Ok(good) => prop_assert_eq!(good.len(), input.items.len()),
            Err(bad) => {
                prop_assert!(!bad.is_empty() && bad.len() <= input.items.len());
                for rejected in &bad {
                    let n: usize = rejected
                        .origin
                        .strip_prefix("line ")
                        .and_then(|n| n.parse().ok())
                        .expect("origin is `line N`");
                    prop_assert!((1..=lines).contains(&n));
                    let shown = rejected.to_string();
                    prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
                }
            }
        }
    }

    #[test]
    fn shown_input_is_one_bounded_line(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let shown = target::show(&bytes);
        prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
        // 96 characters, each escaped to at most `\u{10ffff}`, plus the length note.
        prop_assert!(shown.chars().count() <= 96 * 10 + 32, "{}", shown.len());
    }
}

/// HTTP statuses: mostly plausible ones, some from anywhere in `u16`.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![200u16, 201, 204, 299, 300, 400, 401, 403, 429, 500, 503]),
        4 => 100u16..600,
        1 => any::<u16>(),
    ]
}

/// A body code value: the documented ones, neighbours, anything, and the wrong JSON types.
fn code_value(documented: Vec<i64>) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(documented).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => Just(json!("200")),
        1 => Just(json!(200.0)),
        1 => Just(json!(0.0)),
        1 => Just(json!(null)),
        1 => Just(json!(true)),
        1 => Just(json!([200])),
    ]
}

/// An arbitrary JSON-ish value for the other fields.
fn junk_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z\n\r\u{202e}]{0,20}".prop_map(Value::from),
        prop::collection::vec(any::<String>(), 0..3).prop_map(Value::from),
    ]
}

/// Turns a JSON value into a body, sometimes cut short (a truncated response).
fn body_bytes(value: Value, cut: Option<usize>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&value).expect("serializable");
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

/// The targets of a Qiniu call and an answer that mentions some of them, or others.
fn qiniu_case() -> impl Strategy<Value = (Vec<String>, Vec<String>, qiniu::Answer)> {
    let urls = prop::collection::vec("http://a\\.com/[0-9]{1,2}", 0..5);
    let dirs = prop::collection::vec("http://a\\.com/d[0-9]/", 0..3);
    let codes = vec![
        200, 200_001, 400_031, 400_032, 400_033, 400_034, 400_035, 400_036, 400_037, 400_038,
        401_001, 401_002, 403_022, 403_024, 500_000, 500_002, 500_005, 500_010, 0, 429,
    ];
    let named = prop::collection::vec("http://a\\.com/(d?[0-9]{1,2}/?)", 0..4);
    let quota = prop::option::of(any::<i64>());
    let fields = (
        prop::option::of(code_value(codes)),
        prop::option::of(junk_value()),
        prop::option::of(prop_oneof![
            named.clone().prop_map(Value::from),
            junk_value()
        ]),
        prop::option::of(named.prop_map(Value::from)),
        (quota.clone(), quota),
        prop::option::of(any::<usize>()),
    );
    (urls, dirs, status(), fields).prop_map(|(urls, dirs, status, fields)| {
        let (code, error, invalid_urls, invalid_dirs, (quota, surplus), cut) = fields;
        let mut body = serde_json::Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.to_owned(), value);
            }
        };
        put("code", code);
        put("error", error);
        put("requestId", Some(json!("r-1")));
        put("invalidUrls", invalid_urls);
        put("invalidDirs", invalid_dirs);
        put("urlQuotaDay", quota.map(Value::from));
        put("urlSurplusDay", surplus.map(Value::from));
        let answer = qiniu::Answer {
            status,
            x_reqid: Some("x-1".to_owned()),
            retry_after: None,
            body: body_bytes(Value::Object(body), cut),
        };
        (urls, dirs, answer)
    })
}

/// The code of a body that is a JSON object with an integer `code`.
fn object_code(body: &[u8]) -> Option<i64> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(map) => map.get("code")?.as_i64(),
        _ => None,
    }
}

/// Checks what every report must be, whatever the answer.
fn check_report(report: &purgeq::provider::CallReport, status: u16) -> Result<(), TestCaseError> {
    prop_assert_eq!(report.http_status, Some(status));
    prop_assert!(
        !report.message.contains(['\n', '\r']),
        "{:?}",
        report.message
    );
    if matches!(report.outcome, Outcome::Accepted { .. }) {
        // N.B. Qiniu's 400037 ("already being prefetched") is a success for the URL and comes
        // with an error status; the body code decides it under any status but 5xx.
        let already_prefetching = report.code == Some(400_037) && status < 500;
        prop_assert!(
            (200..300).contains(&status) || already_prefetching,
            "success under HTTP {}",
            status
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn qiniu_answers_of_any_bytes_are_classified(
        status in status(),
        body in prop::collection::vec(any::<u8>(), 0..300),
        urls in prop::collection::vec("http://a\\.com/[0-9]", 0..3),
    ) {
        let answer = qiniu::Answer { status, x_reqid: None, retry_after: None, body };
        let report = qiniu::classify(&urls, &[], &answer);
        check_report(&report, status)?;
        if object_code(&answer.body).is_none() {
            prop_assert!(!matches!(report.outcome, Outcome::Accepted { .. }), "{:?}", report);
        }
    }

    #[test]
    fn qiniu_json_answers_are_classified((urls, dirs, answer) in qiniu_case()) {
        let report = qiniu::classify(&urls, &dirs, &answer);
        check_report(&report, answer.status)?;
        let code = object_code(&answer.body);
        match &report.outcome {
            Outcome::Accepted { rejected } | Outcome::InvalidTargets { rejected } => {
                if matches!(report.outcome, Outcome::Accepted { .. }) {
                    prop_assert!(
                        matches!(code, Some(200 | 200_001 | 400_037)),
                        "accepted with code {:?}", code
                    );
                }
                let mut seen = std::collections::HashSet::new();
                for r in rejected {
                    prop_assert!(urls.contains(&r.target) || dirs.contains(&r.target), "{:?}", r);
                    prop_assert!(seen.insert(&r.target), "{} named twice", r.target);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn pan123_answers_of_any_bytes_are_classified(
        status in status(),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let answer = pan123::Answer { status, retry_after: None, body };
        check_report(&pan123::classify_refresh(&answer), status)?;
        if let Err(report) = pan123::classify_token(&answer) {
            check_report(&report, status)?;
        }
    }

    #[test]
    fn pan123_json_answers_are_classified(
        status in status(),
        code in prop::option::of(code_value(vec![0, 1, 401, 429, 5113])),
        message in prop::option::of(junk_value()),
        token in prop::option::of(prop_oneof![
            Just(json!({"accessToken": "t", "expiredAt": "2025-03-23T15:48:37+08:00"})),
            Just(json!({"accessToken": "t", "expiredAt": "soon"})),
            Just(json!({"accessToken": 5, "expiredAt": "2025-03-23T15:48:37Z"})),
            junk_value().prop_map(|v| json!({"accessToken": "t", "expiredAt": v})),
            junk_value(),
        ]),
        cut in prop::option::of(any::<usize>()),
    ) {
        let mut body = serde_json::Map::new();
        if let Some(code) = code {
            body.insert("code".to_owned(), code);
        }
        if let Some(message) = message {
            body.insert("message".to_owned(), message);
        }
        if let Some(token) = token {
            body.insert("data".to_owned(), token);
        }
        body.insert("x-traceID".to_owned(), json!("t-1"));
        let answer = pan123::Answer {
            status,
            retry_after: None,
            body: body_bytes(Value::Object(body), cut),
        };
        let refresh = pan123::classify_refresh(&answer);
        check_report(&refresh, status)?;
        let ok = (200..300).contains(&status) && object_code(&answer.body) == Some(0);
        if matches!(refresh.outcome, Outcome::Accepted { .. }) {
            prop_assert!(ok, "accepted: {:?}", answer);
        }
        match pan123::classify_token(&answer) {
            Ok(_) => prop_assert!(ok, "token from {:?}", answer),
            Err(report) => check_report(&report, status)?,
        }
    }
}

#[test]
fn pan123_accepts_only_an_object() {
    for body in [&b"[0]"[..], b"[0, \"ok\"]", b"[0, \"ok\", \"t-1\", {}]"] {
        let answer = pan123::Answer {
            status: 200,
            retry_after: None,
            body: body.to_vec(),
        };
        let report = pan123::classify_refresh(&answer);
        assert!(
            !matches!(report.outcome, Outcome::Accepted { .. }),
            "{} accepted",
            String::from_utf8_lossy(body)
        );
    }
}
