//! A corpus of malformed targets fed to the real binary: thousands generated from a fixed seed,
//! plus hand-written edge cases. Each batch mixes one good line among the bad ones and goes in
//! by stdin and by `--file`; every bad line must be named with its line number, the whole batch
//! refused with exit code 3, nothing queued, and nothing may make the binary panic.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::process::Output;

use common::{Scratch, stderr, stdout};
use purgeq::model::Action;
use purgeq::target::{self, Input};

/// The seed of the generated corpus; change it to explore, keep it fixed in the tree.
const SEED: u64 = 0x7075_7267_6571;
/// How many generated bad targets.
const GENERATED: usize = 3000;
/// Bad lines per batch (each batch is one `enqueue` run per input route).
const BATCH: usize = 300;
/// The good line mixed into each batch.
const GOOD: &[u8] = b"https://cdn.example.com/good.js?v=1";

/// Edge cases written by hand. Every one must be rejected.
fn hand_written() -> Vec<Vec<u8>> {
    let text: &[&str] = &[
        // Missing or empty hosts, and spellings the URL standard would "repair".
        "http://",
        "https://",
        "http:///x",
        "http:/x.com/a",
        "http:x.com/a",
        "https://?q=1",
        "https://#frag",
        "https://:443/",
        "//host/path",
        "/just/a/path",
        "host.example.com/a.js",
        "http:\\\\a.com\\x",
        "http://a.com\\x",
        "http://a.com/b\\c",
        // Other schemes.
        "javascript:alert(1)",
        "javascript://a.com/%0aalert(1)",
        "file:///etc/passwd",
        "ftp://a.com/x",
        "data:text/plain,hi",
        "mailto:ops@example.com",
        "ws://a.com/socket",
        "about:blank",
        "blob:https://a.com/uuid",
        // Credentials, ports.
        "http://user:pw@host.com/",
        "http://user@host.com/",
        "http://@host.com/",
        "http://:pw@host.com/",
        "http://host.com:99999/",
        "http://host.com:-1/",
        "http://host.com:80x/",
        "http://host.com:0/",
        // Fragments (rejected: never sent to a server, see src/target.rs).
        "https://host.com/#frag",
        "https://host.com/a#",
        "https://host.com/a?b=1#c",
        // Hosts.
        "http://[::1",
        "http://[fe80::1%25eth0]/",
        "http://[v1.x]/",
        "http://a..b/",
        "http://.com/",
        "http://./",
        "http://../",
        "http://-bad-.com/",
        "http://bad-.com/",
        "http://a*b.com/",
        "http://a<b.com/",
        "http://a|b.com/",
        "http://a%20b.com/",
        "http://a%00b.com/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://010.0.0.1/",
        "http://256.1.1.1/",
        "http://1.2.3.4.5/",
        "http://999999999999/",
        // IDNA.
        "http://xn--/",
        "http://xn--zz.com/",
        "http://xn--a.com/",
        "http://a\u{202e}b.com/",
        "http://example\u{3002}\u{3002}com/",
        "http://\u{3002}com/",
        "http://a.com\u{ff0f}x",
        // Whitespace and invisible characters.
        "http://ex ample.com/",
        "http://example.com/a b",
        "http://example.com/?q=a b",
        "http://example.com/a\u{a0}b",
        "http://example.com/a\u{3000}b",
        "http://example.com/a\u{2028}b",
        "http://example.com/a\u{85}b",
        "\u{feff}http://example.com/",
        "http://example.com/\u{1b}[31mred",
        "http://example.com/a\u{7f}",
        "http://example.com/a\u{9b}b",
    ];
    let mut corpus: Vec<Vec<u8>> = text.iter().map(|s| s.as_bytes().to_vec()).collect();
    corpus.extend(
        [
            &b"http://example.com/a\0b"[..],
            b"http://example.com/a\rb",
            b"http://example.com/a\x0bb",
            b"http://example.com/a\x0cb",
            b"http://example.com/\xff",
            b"http://example.com/\xc3\x28",
            b"http://example.com/\xc0\xaf",
            b"http://example.com/\xed\xa0\x80",
            b"http://\x80example.com/",
            b"\xfe\xff\x00h\x00t\x00t\x00p",
        ]
        .map(<[u8]>::to_vec),
    );
    for label in [64, 100, 1000] {
        corpus.push(format!("http://{}.com/", "a".repeat(label)).into_bytes());
    }
    // 25 characters, but more than 63 bytes once punycoded.
    let cjk: String = (0..25u32)
        .map(|i| char::from_u32(0x4e00 + i * 397).expect("CJK ideograph"))
        .collect();
    corpus.push(format!("http://{cjk}.com/").into_bytes());
    corpus.push(format!("http://{}com/", "abcdefghi.".repeat(26)).into_bytes());
    for len in [2049, 4096, 100 * 1024] {
        let mut line = b"https://cdn.example.com/".to_vec();
        line.resize(len, b'x');
        corpus.push(line);
    }
    corpus
}

/// A valid base URL to break: ASCII only, so that one non-ASCII byte makes it invalid UTF-8.
fn base_url(rng: &mut fastrand::Rng) -> String {
    let label = |rng: &mut fastrand::Rng| -> String {
        let n = rng.usize(1..12);
        (0..n)
            .map(|_| rng.alphanumeric().to_ascii_lowercase())
            .collect()
    };
    let host = format!(
        "{}.{}",
        label(rng),
        ["com", "net", "cn", "example"][rng.usize(..4)]
    );
    let segments: Vec<String> = (0..rng.usize(1..4)).map(|_| label(rng)).collect();
    let scheme = if rng.bool() { "https" } else { "http" };
    format!("{scheme}://{host}/{}", segments.join("/"))
}

/// A byte offset inside the ASCII `s`, never at either end (the reader trims surrounding
/// whitespace).
fn inner(rng: &mut fastrand::Rng, s: &str) -> usize {
    rng.usize(1..s.len())
}

/// One way to break a valid URL, so that the result is certainly invalid.
type Breaker = fn(&mut fastrand::Rng, String) -> Vec<u8>;

/// Every way the generator breaks URLs, each with what it tries.
const BREAKERS: [(&str, Breaker); 12] = [
    ("whitespace inside", |rng, mut url| {
        let ws = [
            " ", "\t", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}", "\u{b}",
        ];
        let at = inner(rng, &url);
        url.insert_str(at, ws[rng.usize(..ws.len())]);
        url.into_bytes()
    }),
    ("a control character", |rng, mut url| {
        let c = match rng.u8(..3) {
            0 => char::from(rng.u8(..0x20)),
            1 => '\u{7f}',
            _ => char::from_u32(rng.u32(0x80..0xa0)).expect("C1 control"),
        };
        let at = inner(rng, &url);
        url.insert(at, if c == '\n' { '\0' } else { c });
        url.into_bytes()
    }),
    ("another scheme", |rng, url| {
        let schemes = [
            "ftp",
            "file",
            "javascript",
            "ws",
            "gopher",
            "s3",
            "htp",
            "httpx",
        ];
        let rest = &url[url.find(':').expect("scheme")..];
        format!("{}{rest}", schemes[rng.usize(..schemes.len())]).into_bytes()
    }),
    ("no host", |rng, url| {
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        match rng.u8(..6) {
            0 => format!("{scheme}:/{path}"),
            1 => format!("{scheme}:{path}"),
            2 => format!("{scheme}:///{path}"),
            3 => format!("{scheme}://:80/{path}"),
            4 => format!("//{path}"),
            _ => format!("/{path}"),
        }
        .into_bytes()
    }),
    ("a fragment", |rng, url| {
        format!("{url}#{}", "frag".repeat(rng.usize(0..3))).into_bytes()
    }),
    ("credentials", |rng, url| {
        let creds = ["user:pw@", "user@", "@", ":x@", "a%40b:c@"];
        url.replacen("://", &format!("://{}", creds[rng.usize(..creds.len())]), 1)
            .into_bytes()
    }),
    ("a bad port", |rng, url| {
        let port = [
            rng.u32(65_536..1_000_000).to_string(),
            "0".into(),
            "x1".into(),
        ];
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (host, path) = rest.split_once('/').expect("path");
        format!("{scheme}://{host}:{}/{path}", port[rng.usize(..3)]).into_bytes()
    }),
    ("a bad label", |rng, url| {
        let bad = [
            "a..b", "-x", "x-", ".", "a*b", "a<b", "xn--", "xn--zz", "a%20b", "[::1",
        ];
        url.replacen("://", &format!("://{}.", bad[rng.usize(..bad.len())]), 1)
            .into_bytes()
    }),
    ("a label over 63 bytes", |rng, url| {
        let long = "a".repeat(rng.usize(64..300));
        url.replacen("://", &format!("://{long}."), 1).into_bytes()
    }),
    ("a backslash", |rng, mut url| {
        let slashes: Vec<usize> = url.match_indices('/').map(|(i, _)| i).collect();
        let at = slashes[rng.usize(..slashes.len())];
        url.replace_range(at..=at, "\\");
        url.into_bytes()
    }),
    ("too long", |rng, mut url| {
        let len = rng.usize(target::MAX_TARGET_LEN + 1..20_000);
        url.push('/');
        while url.len() < len {
            url.push(rng.alphanumeric());
        }
        url.into_bytes()
    }),
    ("not UTF-8", |rng, url| {
        // One byte above 0x7f in ASCII text is never valid UTF-8.
        let mut bytes = url.into_bytes();
        let at = rng.usize(1..bytes.len());
        bytes.insert(at, rng.u8(0x80..=0xff));
        bytes
    }),
];

/// One malformed target and how it was broken; which way is drawn from `rng`.
fn malformed(rng: &mut fastrand::Rng) -> (&'static str, Vec<u8>) {
    let url = base_url(rng);
    let (what, breaker) = BREAKERS[rng.usize(..BREAKERS.len())];
    (what, breaker(rng, url))
}

/// The whole corpus: hand-written cases first, then the generated ones.
fn corpus() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut all: Vec<(&str, Vec<u8>)> = hand_written()
        .into_iter()
        .map(|line| ("hand-written", line))
        .collect();
    all.extend((0..GENERATED).map(|_| malformed(&mut rng)));
    // The generator must only produce bad targets; the library is the oracle for that.
    for (what, line) in &all {
        let input = Input::from_lines(line);
        assert_eq!(input.items.len(), 1, "{what}: {}", target::show(line));
        assert!(
            target::validate(&input, Action::RefreshUrl).is_err(),
            "{what}: the corpus holds a valid target: {}",
            target::show(line)
        );
    }
    all.into_iter().map(|(_, line)| line).collect()
}

/// A batch file: the bad lines with the good one, blank lines and a comment mixed in. Returns
/// the bytes and the 1-based numbers of the bad lines.
fn batch_file(bad: &[Vec<u8>], rng: &mut fastrand::Rng) -> (Vec<u8>, BTreeSet<usize>) {
    let good_at = rng.usize(..=bad.len());
    let mut bytes = Vec::new();
    let mut numbers = BTreeSet::new();
    let mut line = 0;
    let mut push = |bytes: &mut Vec<u8>, text: &[u8]| {
        bytes.extend_from_slice(text);
        bytes.push(b'\n');
        line += 1;
        line
    };
    for (i, target) in bad.iter().enumerate() {
        if i == good_at {
            push(&mut bytes, GOOD);
        }
        match rng.u8(..20) {
            0 => _ = push(&mut bytes, b""),
            1 => _ = push(&mut bytes, b"# a comment line"),
            _ => {}
        }
        numbers.insert(push(&mut bytes, target));
    }
    if good_at == bad.len() {
        push(&mut bytes, GOOD);
    }
    (bytes, numbers)
}

/// `enqueue ARGS -` with `input` on stdin.
fn enqueue_stdin(s: &Scratch, args: &[&str], input: &[u8]) -> Output {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    all.push("-");
    s.cmd(&all).write_stdin(input).output().expect("run purgeq")
}

/// The refusal of a whole batch: exit 3, nothing on stdout, exactly the bad lines named, each
/// on one readable line, and the summary saying nothing was queued.
fn assert_refused(out: &Output, bad_lines: &BTreeSet<usize>, total: usize, route: &str) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{route}: {err}");
    assert_eq!(out.status.code(), Some(3), "{route}: {err}");
    assert_eq!(stdout(out), "", "{route}: stdout must be empty");
    let mut named = BTreeSet::new();
    for line in err.lines() {
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{route}: raw control character in {line:?}"
        );
        assert!(line.len() < 1200, "{route}: {} byte error line", line.len());
        let Some(rest) = line.strip_prefix("error: line ") else {
            continue;
        };
        let (n, why) = rest.split_once(": ").expect("`line N: input: why`");
        let why = why.rsplit_once(": ").map_or("", |(_, why)| why);
        assert!(!why.trim().is_empty(), "{route}: no reason in {line:?}");
        assert!(named.insert(n.parse::<usize>().expect("a line number")));
    }
    assert_eq!(&named, bad_lines, "{route}: named lines differ\n{err}");
    let summary = format!(
        "error: {} of {total} targets rejected; nothing was queued",
        bad_lines.len()
    );
    assert!(err.contains(&summary), "{route}: no {summary:?} in\n{err}");
}

/// The database holds no job at all.
fn assert_empty_queue(s: &Scratch) {
    let status = s.status(&[]);
    let total: i64 = status["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, 0, "{status}");
    assert_eq!(s.jobs(&[]).len(), 0, "{status}");
}

#[test]
fn every_malformed_target_is_named_and_nothing_is_queued() {
    let s = Scratch::new();
    let corpus = corpus();
    let mut rng = fastrand::Rng::with_seed(SEED ^ 1);
    for (i, bad) in corpus.chunks(BATCH).enumerate() {
        let (bytes, bad_lines) = batch_file(bad, &mut rng);
        let file = s.path(&format!("batch-{i}.txt"));
        std::fs::write(&file, &bytes).expect("write batch");
        let by_file = s.cmd(&["enqueue", "--file"]).arg(&file).output().unwrap();
        assert_refused(
            &by_file,
            &bad_lines,
            bad.len() + 1,
            &format!("batch {i} --file"),
        );
        let by_stdin = enqueue_stdin(&s, &[], &bytes);
        assert_refused(
            &by_stdin,
            &bad_lines,
            bad.len() + 1,
            &format!("batch {i} stdin"),
        );
    }
    assert_empty_queue(&s);
}

#[test]
fn directories_refuse_the_corpus_too() {
    let s = Scratch::new();
    let mut bad = corpus();
    bad.truncate(400);
    bad.push(b"https://cdn.example.com/dir-without-slash".to_vec());
    bad.push(b"https://cdn.example.com/dir/?query".to_vec());
    let mut rng = fastrand::Rng::with_seed(SEED ^ 2);
    let (bytes, bad_lines) = batch_file(&bad, &mut rng);
    // The good line is a file, not a directory: it is refused under --dir as well.
    let good_line = bytes
        .split(|b| *b == b'\n')
        .position(|l| l == GOOD)
        .expect("good line");
    let mut expected = bad_lines;
    expected.insert(good_line + 1);
    let out = enqueue_stdin(&s, &["--dir"], &bytes);
    assert_refused(&out, &expected, bad.len() + 1, "--dir stdin");
    assert_empty_queue(&s);
}

#[test]
fn a_ten_megabyte_line_is_refused_with_a_short_message() {
    let s = Scratch::new();
    for (name, fill) in [("ascii", b'x'), ("binary", 0xff)] {
        let mut bytes = GOOD.to_vec();
        bytes.extend_from_slice(b"\nhttps://cdn.example.com/");
        bytes.resize(bytes.len() + 10 * 1024 * 1024, fill);
        bytes.push(b'\n');
        let bad = BTreeSet::from([2]);
        let file = s.path(&format!("{name}.txt"));
        std::fs::write(&file, &bytes).expect("write");
        let out = s.cmd(&["enqueue", "--file"]).arg(&file).output().unwrap();
        assert_refused(&out, &bad, 2, name);
        assert!(stderr(&out).len() < 1000, "{}", stderr(&out).len());
        let out = enqueue_stdin(&s, &[], &bytes);
        assert_refused(&out, &bad, 2, name);
    }
    assert_empty_queue(&s);
}

#[test]
fn malformed_arguments_are_refused_without_a_panic() {
    let s = Scratch::new();
    let out = s
        .cmd(&[
            "enqueue",
            "http://a.com/ok",
            "javascript:alert(1)",
            "http://a..b/",
            "x",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for n in [2, 3, 4] {
        assert!(err.contains(&format!("argument {n}:")), "{err}");
    }
    assert!(!err.contains("argument 1:"), "{err}");
    // An argument that is not UTF-8 never reaches the validator: clap refuses it (usage error).
    let out = s
        .cmd(&["enqueue"])
        .arg(OsStr::from_bytes(b"http://a.com/\xff"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_empty_queue(&s);
}

#[test]
fn valid_edge_cases_are_accepted_in_their_stored_form() {
    let s = Scratch::new();
    let cases = [
        (
            "https://cdn.example.com/a.js?v=1&b=%20",
            "https://cdn.example.com/a.js?v=1&b=%20",
        ),
        (
            "https://CDN.Example.COM:443/A.js",
            "https://cdn.example.com/A.js",
        ),
        (
            "https://bücher.example/x",
            "https://xn--bcher-kva.example/x",
        ),
        ("http://xn--80ak6aa92e.com/", "http://xn--80ak6aa92e.com/"),
        (
            "http://example\u{3002}com/full-width-dot",
            "http://example.com/full-width-dot",
        ),
        ("http://😀.example/emoji", "http://xn--e28h.example/emoji"),
        (
            "https://cdn.example.com/%E2%80%AE",
            "https://cdn.example.com/%E2%80%AE",
        ),
        (
            "https://cdn.example.com/ü?q=ü",
            "https://cdn.example.com/%C3%BC?q=%C3%BC",
        ),
        ("http://10.0.0.1:8080/x", "http://10.0.0.1:8080/x"),
        ("http://[::1]/x", "http://[::1]/x"),
    ];
    let mut input = String::new();
    for (raw, _) in &cases {
        input.push_str(raw);
        input.push_str("\r\n");
    }
    let out = enqueue_stdin(&s, &["--json"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let targets: Vec<String> = s
        .jobs(&[])
        .iter()
        .map(|j| j["target"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: Vec<&str> = cases.iter().map(|(_, stored)| *stored).collect();
    assert_eq!(targets, want);
}
