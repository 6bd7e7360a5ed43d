//! A real client against the server: curl reuses connections, speaks HTTP/1.0, uploads
//! chunked bodies and waits for `100 Continue` on large uploads. Skipped (with a note) when
//! curl is not installed.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

struct CurlRun {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    took: Duration,
}

impl CurlRun {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn have_curl() -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("note: curl is not on PATH; skipping this interop test");
    }
    found
}

/// Runs curl with `args`, killing it after 10 s.
fn curl(args: &[&str]) -> CurlRun {
    let started = Instant::now();
    let mut child = Command::new("curl")
        .args(["--max-time", "9", "--no-progress-meter"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning curl");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("curl {args:?} ran longer than 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CurlRun {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        took: started.elapsed(),
    }
}

fn assert_ok(run: &CurlRun) {
    assert_eq!(run.status, Some(0), "curl failed:\n{}", run.stderr);
}

/// Response header lines curl printed with `-v` (`< Name: value`), lower-cased.
fn response_headers(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .map(|l| l.trim_end().to_ascii_lowercase())
        .collect()
}

#[test]
fn two_urls_share_one_keep_alive_connection() {
    if !have_curl() {
        return;
    }
    let server = start(config(), standard_app);
    let base = format!("http://{}", server.addr);
    let run = curl(&["-v", &format!("{base}/one"), &format!("{base}/two")]);
    assert_ok(&run);
    assert_eq!(run.stdout_text(), "/one/two");
    let connects = run.stderr.matches("Connected to").count();
    assert_eq!(
        connects, 1,
        "curl connected {connects} times:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Re-using existing connection") || run.stderr.contains("left intact"),
        "{}",
        run.stderr
    );
    let headers = response_headers(&run.stderr);
    assert_eq!(
        headers
            .iter()
            .filter(|h| h.starts_with("http/1.1 200 ok"))
            .count(),
        2,
        "{headers:?}"
    );
    assert!(
        headers.contains(&"server: tickhttp".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"content-length: 4".to_string()),
        "{headers:?}"
    );
    let date = run
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("< Date: ")
                .or_else(|| l.strip_prefix("< date: "))
        })
        .map(str::trim_end)
        .expect("a Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(!headers.iter().any(|h| h.starts_with("connection: close")));
    let m = server.finish();
    assert_eq!(m.total_connections, 1);
    assert_eq!(m.total_requests, 2);
}

#[test]
fn http10_requests_close_unless_keep_alive_is_asked_for() {
    if !have_curl() {
        return;
    }
    let server = start(config(), standard_app);
    let base = format!("http://{}", server.addr);
    let run = curl(&["-v", "--http1.0", &format!("{base}/old")]);
    assert_ok(&run);
    assert_eq!(run.stdout_text(), "/old");
    assert!(run.stderr.contains("> GET /old HTTP/1.0"), "{}", run.stderr);
    let headers = response_headers(&run.stderr);
    assert!(
        headers.contains(&"connection: close".to_string()),
        "{headers:?}"
    );

    let run = curl(&[
        "-v",
        "--http1.0",
        "-H",
        "Connection: keep-alive",
        &format!("{base}/a"),
        &format!("{base}/b"),
    ]);
    assert_ok(&run);
    assert_eq!(run.stdout_text(), "/a/b");
    let headers = response_headers(&run.stderr);
    assert_eq!(
        headers
            .iter()
            .filter(|h| *h == "connection: keep-alive")
            .count(),
        2,
        "{headers:?}"
    );
    let m = server.finish();
    assert_eq!(m.total_requests, 3);
    assert_eq!(m.total_connections, 2, "the keep-alive pair shared one");
}

#[test]
fn chunked_upload_is_echoed_byte_exact() {
    if !have_curl() {
        return;
    }
    let server = start(config(), standard_app);
    let dir = tempfile::tempdir().unwrap();
    let data = extra::random_bytes(300 * 1024 + 3, 99);
    let input = dir.path().join("upload.bin");
    let output = dir.path().join("echo.bin");
    std::fs::write(&input, &data).unwrap();
    let run = curl(&[
        "-v",
        "-T",
        input.to_str().unwrap(),
        "-H",
        "Transfer-Encoding: chunked",
        "-o",
        output.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &format!("http://{}/echo", server.addr),
    ]);
    assert_ok(&run);
    assert_eq!(run.stdout_text(), "200");
    assert!(
        run.stderr.contains("> Transfer-Encoding: chunked"),
        "{}",
        run.stderr
    );
    let echoed = std::fs::read(&output).unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from the upload");
}

#[test]
fn large_upload_gets_100_continue_without_curl_waiting_for_it() {
    if !have_curl() {
        return;
    }
    let server = start(config(), standard_app);
    let dir = tempfile::tempdir().unwrap();
    let len = 2 * 1024 * 1024 + 1;
    let input = dir.path().join("big.bin");
    std::fs::write(&input, extra::random_bytes(len, 5)).unwrap();
    let run = curl(&[
        "-v",
        "-T",
        input.to_str().unwrap(),
        &format!("http://{}/len", server.addr),
    ]);
    assert_ok(&run);
    assert_eq!(run.stdout_text(), format!("{len} spooled=true"));
    assert!(
        run.stderr.contains("> Expect: 100-continue"),
        "curl did not ask; the test proves nothing:\n{}",
        run.stderr
    );
    let headers = response_headers(&run.stderr);
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("http/1.1 100 continue")),
        "{headers:?}"
    );
    // curl sends the body anyway after 1 s without a 100; the server must answer well before.
    assert!(
        run.took < Duration::from_millis(900),
        "the upload took {:?}",
        run.took
    );
}

#[test]
fn head_request_from_curl_gets_headers_only() {
    if !have_curl() {
        return;
    }
    let server = start(config(), standard_app);
    let run = curl(&["-sS", "-I", &format!("http://{}/abcd", server.addr)]);
    assert_ok(&run);
    let text = run.stdout_text().to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after the head: {text:?}"
    );
}
