//! `tickhttp serve --config FILE` and `tickhttp check-config FILE`: keys, precedence, errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tickhttp");

fn write_config(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn check(text: &str) -> Output {
    let (_dir, path) = write_config("tickhttp.toml", text);
    Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = check(
        "listen = \"127.0.0.1:9999\"\nworkers = 4\nmode = \"centralized\"\n\
         queue_timeout = \"500ms\"\nweights = [3, 1, 1]\nkeep_alive = false\n\
         ws_max_message_size = 4096\nws_max_frame_size = 1024\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "listen = \"127.0.0.1:9999\"  # file",
        "workers = 4  # file",
        "mode = \"centralized\"  # file",
        "queue_timeout = \"500ms\"  # file",
        "weights = [3, 1, 1]  # file",
        "keep_alive = false  # file",
        "ws_max_message_size = 4096  # file",
        "max_body_size = 10485760  # default",
        "# tls_cert is not set",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    // The printed configuration is itself a valid file with the same meaning.
    let body: String =
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .fold(String::new(), |mut acc, l| {
                acc.push_str(l.split("  #").next().unwrap());
                acc.push('\n');
                acc
            });
    let again = check(&body);
    assert!(again.status.success(), "{}", stderr(&again));
    let again = String::from_utf8(again.stdout).unwrap();
    assert!(again.contains("weights = [3, 1, 1]  # file"), "{again}");
}

#[test]
fn bad_values_name_the_file_the_key_and_the_reason() {
    let cases = [
        (
            "workers = \"lots\"\n",
            "key `workers`: expected a number of workers",
        ),
        (
            "max-body-size = 3\n",
            "key `max-body-size`: unknown key; did you mean `max_body_size`?",
        ),
        ("colour = \"blue\"\n", "key `colour`: unknown key"),
        (
            "max_connections = 0\n",
            "key `max_connections`: must be at least 1, got 0",
        ),
        (
            "mode = \"fast\"\n",
            "key `mode`: invalid value \"fast\"; expected one of: auto, shared",
        ),
        (
            "listen = \"nowhere\"\n",
            "key `listen`: invalid socket address",
        ),
        (
            "queue_timeout = \"1h\"\n",
            "key `queue_timeout`: unknown unit",
        ),
        ("keep_alive = \"maybe\"\n", "key `keep_alive`"),
        (
            "ws_max_frame_size = 0\n",
            "key `ws_max_frame_size`: max_frame_size must be positive",
        ),
        ("rate_limit = 0\n", "key `rate_limit`: must be at least 1"),
        (
            "root = \"/nonexistent/dir\"\n",
            "key `root`: /nonexistent/dir is not a directory",
        ),
        ("pool = { workers = 2 }\n", "key `pool`"),
        (
            "workers = [1, 2]\n",
            "key `workers`: expected one value, not a list",
        ),
        ("x = [\n", "TOML parse error"),
    ];
    for (text, expected) in cases {
        let out = check(text);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.starts_with("tickhttp: /"), "{text:?}: {err}");
        assert!(err.contains("tickhttp.toml: "), "{text:?}: {err}");
        assert!(
            err.contains(expected),
            "{text:?}: expected {expected:?} in {err}"
        );
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/tickhttp.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/tickhttp.toml: cannot read"));
}

#[test]
fn a_bad_flag_names_the_flag() {
    let out = Command::new(BIN)
        .args(["serve", "--mode", "single", "--max-connections", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--max-connections: must be at least 1"));
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tickhttp serve ARGS` and returns it with the address it listens on.
fn start(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next().unwrap().to_string();
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (running, addr);
        }
    }
    panic!("the server did not report its address");
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_reads_the_file_and_flags_override_it() {
    let (_dir, path) = write_config(
        "tickhttp.toml",
        "listen = \"127.0.0.1:0\"\nmode = \"centralized\"\nserver_name = \"from-file\"\n\
         max_uri_len = 64\n",
    );
    let path = path.to_str().unwrap();
    // The file alone: its server name, its URI limit.
    let (_server, addr) = start(&["--config", path, "--mode", "single"]);
    let resp = get(&addr, "/plaintext");
    assert!(resp.contains("erver: from-file\r\n"), "{resp}");
    let long = format!("/{}", "a".repeat(100));
    assert!(get(&addr, &long).starts_with("HTTP/1.1 414"));
    // A flag wins over the file.
    let (_server, addr) = start(&[
        "--config",
        path,
        "--mode",
        "single",
        "--server-name",
        "from-flag",
    ]);
    let resp = get(&addr, "/plaintext");
    assert!(resp.contains("erver: from-flag\r\n"), "{resp}");
    assert!(get(&addr, &long).starts_with("HTTP/1.1 414"));
}

#[test]
fn access_log_lines_in_json() {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--mode",
            "single",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let _running = Running(child);
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(first.starts_with('{'), "{first}");
    get(&addr, "/plaintext");
    let access = lines
        .map_while(Result::ok)
        .find(|l| l.contains("tickhttp::access"))
        .unwrap();
    for field in [
        "\"method\":\"GET\"",
        "\"path\":\"/plaintext\"",
        "\"status\":200",
        "\"bytes\":13",
        "\"duration_ms\":",
    ] {
        assert!(access.contains(field), "{field} in {access}");
    }
}

#[test]
fn the_start_block_names_address_architecture_workers_root_tls_and_metrics() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--mode",
            "single",
            "--listen",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(root.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take(8)
        .collect();
    let _running = Running(child);
    let block = lines.join("\n");
    for needle in [
        "tickhttp listening on http://127.0.0.1:",
        "  listening     http://127.0.0.1:",
        "  architecture  single process",
        "  workers       none",
        &format!("  static root   {}", root.path().display()),
        "  TLS           off",
        "  metrics       http://127.0.0.1:",
    ] {
        assert!(block.contains(needle), "{needle:?} in\n{block}");
    }
}
