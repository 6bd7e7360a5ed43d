//! The demo's `/` page shows the pool live: `tickhttp serve` runs, headless Chromium (driven
//! through chromedriver's WebDriver API) loads the page, and the test watches the worker
//! table follow the pool's status document while requests arrive.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver). Without them the
//! browser tests print why and pass, unless TICKHTTP_REQUIRE_INTEROP=1. TICKHTTP_CHROMIUM and
//! TICKHTTP_CHROMEDRIVER override where the programs are looked for.

mod pool_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pool_util::{get, parse_workers, spawn, Pool, WorkerView};

/// Waiting for something to show up in the page.
const PAGE_WAIT: Duration = Duration::from_secs(15);
/// Waiting for chromedriver to answer at all.
const DRIVER_START: Duration = Duration::from_secs(20);

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        if c.starts_with('/') {
            return Path::new(c).is_file().then(|| PathBuf::from(c));
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(c))
            .find(|p| p.is_file())
    })
}

fn skip(why: &str) {
    if std::env::var("TICKHTTP_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("browser test required but {why}");
    }
    eprintln!("skipping the browser test: {why}");
}

/// Chromium and chromedriver, if both are installed.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let Some(chromium) = find_program(
        "TICKHTTP_CHROMIUM",
        &[
            "/usr/lib/chromium/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ],
    ) else {
        skip("chromium is not installed");
        return None;
    };
    let Some(chromedriver) = find_program("TICKHTTP_CHROMEDRIVER", &["chromedriver"]) else {
        skip("chromedriver is not installed");
        return None;
    };
    Some((chromium, chromedriver))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process started in a group of its own, killed with its whole group on drop.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        Group(cmd.process_group(0).spawn().expect("spawn"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tickhttp serve --mode single` on an ephemeral port, with its address.
fn single(args: &[&str]) -> (Group, SocketAddr) {
    let mut all = vec!["--mode", "single", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (child, rx, log) = spawn(&all);
    let server = Group(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no start line; log:\n{}", log.lock().unwrap().join("\n")));
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on http://".len()..];
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            return (server, addr);
        }
    }
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The string value of the first `"key":"..."` in `json`, decoded.
fn string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("{}:", quote(key)))? + key.len() + 3;
    let mut chars = json[start..].trim_start().strip_prefix('"')?.chars();
    let mut out = String::new();
    let mut pending_high: Option<u32> = None;
    loop {
        let c = chars.next()?;
        let decoded = match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&hex, 16).ok()?;
                    if (0xD800..0xDC00).contains(&unit) {
                        pending_high = Some(unit);
                        continue;
                    }
                    let code = match pending_high.take() {
                        Some(high) => 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00),
                        None => unit,
                    };
                    char::from_u32(code)?
                }
                other => other,
            },
            c => c,
        };
        out.push(decoded);
    }
}

/// A minimal WebDriver client: one HTTP/1.1 request per connection, bodies built by hand.
struct WebDriver {
    addr: SocketAddr,
}

impl WebDriver {
    /// Sends a command; returns the JSON answer, or an error for a non-200 status.
    fn call(&self, method: &str, path: &str, body: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .map_err(|e| e.to_string())?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| "bad Content-Length")?;
                }
            }
        }
        let mut raw = vec![0; length];
        reader.read_exact(&mut raw).map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&raw).into_owned();
        if status != 200 {
            return Err(format!("{method} {path}: {status} {answer}"));
        }
        Ok(answer)
    }

    /// Starts chromedriver on a free loopback port and waits until it takes sessions.
    fn start(chromedriver: &Path) -> (Group, WebDriver) {
        let port = free_port();
        let process = Group::spawn(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let driver = WebDriver {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let start = Instant::now();
        while !driver
            .call("GET", "/status", "")
            .is_ok_and(|s| s.replace(' ', "").contains("\"ready\":true"))
        {
            assert!(start.elapsed() < DRIVER_START, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        (process, driver)
    }
}

/// One headless browser (a WebDriver session) with a profile of its own.
struct Browser<'a> {
    driver: &'a WebDriver,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.session), "");
    }
}

impl<'a> Browser<'a> {
    fn open(driver: &'a WebDriver, chromium: &Path) -> Browser<'a> {
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| quote(s)).collect();
        args.push(quote(&format!(
            "--user-data-dir={}",
            profile.path().display()
        )));
        let caps = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"browserName":"chrome","goog:chromeOptions":{{"binary":{},"args":[{}]}}}}}}}}"#,
            quote(&chromium.display().to_string()),
            args.join(",")
        );
        let answer = driver.call("POST", "/session", &caps).expect("new session");
        let session = string_field(&answer, "sessionId")
            .unwrap_or_else(|| panic!("no sessionId in {answer}"));
        Browser {
            driver,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> String {
        let path = format!("/session/{}{path}", self.session);
        self.driver.call(method, &path, body).unwrap()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", &format!(r#"{{"url":{}}}"#, quote(url)));
    }

    /// Runs `script` in the page; it must return a string.
    fn eval(&self, script: &str) -> String {
        let answer = self.call(
            "POST",
            "/execute/sync",
            &format!(r#"{{"script":{},"args":[]}}"#, quote(script)),
        );
        string_field(&answer, "value").unwrap_or_else(|| panic!("{script} gave {answer}"))
    }

    /// Clicks an element the way a user would.
    fn click(&self, css: &str) {
        let answer = self.call(
            "POST",
            "/element",
            &format!(r#"{{"using":"css selector","value":{}}}"#, quote(css)),
        );
        let element = string_field(&answer, "element-6066-11e4-a52e-4f735466cecf")
            .unwrap_or_else(|| panic!("no element {css}: {answer}"));
        self.call("POST", &format!("/element/{element}/click"), "{}");
    }

    fn text_of(&self, id: &str) -> String {
        self.eval(&format!(
            "const e = document.getElementById({}); return e ? e.textContent : '';",
            quote(id)
        ))
    }

    /// The worker table as the page shows it.
    fn rows(&self) -> Vec<Row> {
        let lines = self.eval(
            "return Array.from(document.querySelectorAll('#workers tbody tr')).map(tr => \
             ['id', 'pid', 'state', 'requests', 'last_exit'] \
             .map(c => tr.querySelector('.c-' + c).textContent.replace(/\\s+/g, '_')) \
             .join(' ')).join('\\n');",
        );
        lines
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                Row {
                    id: f[0].to_string(),
                    pid: f[1].to_string(),
                    state: f[2].to_string(),
                    requests: f[3].parse().unwrap_or(0),
                    last_exit: f[4].to_string(),
                }
            })
            .collect()
    }

    /// Waits until `check` holds for the page's worker table; returns the table.
    fn wait_rows(&self, what: &str, check: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        let start = Instant::now();
        loop {
            let rows = self.rows();
            if check(&rows) {
                return rows;
            }
            assert!(
                start.elapsed() < PAGE_WAIT,
                "the page never showed {what}; it shows {rows:?}, state {:?}",
                self.text_of("state")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the element's text contains `needle`.
    fn wait_text(&self, id: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text_of(id);
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < PAGE_WAIT,
                "#{id} never showed {needle:?}; it shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One row of the page's worker table.
#[derive(Debug)]
struct Row {
    id: String,
    pid: String,
    state: String,
    requests: u64,
    last_exit: String,
}

fn total_requests(rows: &[Row]) -> u64 {
    rows.iter().map(|r| r.requests).sum()
}

/// Whether the page shows exactly the workers of `status`: same ids, pids and states.
fn matches(rows: &[Row], status: &[WorkerView]) -> bool {
    rows.len() == status.len()
        && rows.iter().zip(status).all(|(r, w)| {
            r.id == w.id.to_string()
                && w.pid.is_some_and(|p| r.pid == p.to_string())
                && r.state == w.state
        })
}

#[test]
fn the_page_is_served_as_html_without_outside_resources() {
    let pool = Pool::start(2, &["--mode", "centralized"]);
    let mut s = TcpStream::connect_timeout(&pool.addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, page) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{head}");
    assert!(page.contains("<table id=\"workers\""), "{page}");
    assert!(page.contains("/_tickhttp/status"), "{page}");
    for outside in ["src=", "href=\"http", "href=\"//", "url(", "@import"] {
        assert!(!page.contains(outside), "the page loads {outside:?}");
    }
}

#[test]
fn the_page_shows_the_pool_live() {
    let Some((chromium, chromedriver)) = browser_programs() else {
        return;
    };
    let started = Instant::now();
    let pool = Pool::start(2, &["--mode", "centralized"]);
    let (_driver_process, driver) = WebDriver::start(&chromedriver);
    let browser = Browser::open(&driver, &chromium);
    browser.goto(&format!("http://{}/", pool.addr));

    // Two rows, with the pids and states of the status document the workers serve.
    let (code, status) = get(pool.addr, "/_tickhttp/status");
    assert_eq!(code, 200, "{status}");
    let workers = parse_workers(&status);
    assert_eq!(workers.len(), 2, "{status}");
    let rows = browser.wait_rows("the two workers of the status document", |rows| {
        matches(rows, &workers)
    });
    assert!(rows
        .iter()
        .all(|r| r.state == "ready" && r.last_exit == "–"));
    let state = browser.text_of("state");
    assert!(state.contains("Worker pool (centralized)"), "{state}");
    assert_eq!(browser.text_of("t-ready"), "2 / 2");

    // Requests sent from outside show up on the page.
    let before = total_requests(&rows);
    for _ in 0..30 {
        assert_eq!(get(pool.addr, "/plaintext").0, 200);
    }
    let rows = browser.wait_rows("30 more requests", |rows| {
        total_requests(rows) >= before + 30
    });

    // The page's own button: 20 slow requests, answered and counted.
    let before = total_requests(&rows);
    browser.click("#load");
    let result = browser.wait_text("load-result", "20 of 20 answered");
    assert!(result.contains("worker "), "{result}");
    browser.wait_rows("the button's 20 requests", |rows| {
        total_requests(rows) >= before + 20
    });

    // The pids did not change meanwhile.
    let (_, status) = get(pool.addr, "/_tickhttp/status");
    assert!(
        matches(&browser.rows(), &parse_workers(&status)),
        "{status}"
    );
    drop(browser);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_page_handles_single_mode_and_another_admin_prefix() {
    let Some((chromium, chromedriver)) = browser_programs() else {
        return;
    };
    let (server, addr) = single(&["--admin-prefix", "/ops"]);
    let pid = server.0.id().to_string();
    let (_driver_process, driver) = WebDriver::start(&chromedriver);
    let browser = Browser::open(&driver, &chromium);

    // The default prefix answers 404 here: the page says so instead of a table.
    browser.goto(&format!("http://{addr}/"));
    let state = browser.wait_text("state", "404");
    assert!(state.contains("/_tickhttp/status"), "{state}");
    assert!(browser.rows().is_empty());

    // Pointed at the right prefix, it shows the single process as one row.
    browser.goto(&format!("http://{addr}/?admin=/ops"));
    let rows = browser.wait_rows("the single process", |rows| {
        rows.len() == 1 && rows[0].pid == pid
    });
    assert_eq!(
        (rows[0].id.as_str(), rows[0].state.as_str()),
        ("0", "ready")
    );
    let state = browser.text_of("state");
    assert!(state.contains("Single process"), "{state}");
    assert_eq!(browser.text_of("status-url"), "/ops/status");

    // Requests show up here too.
    let before = rows[0].requests;
    for _ in 0..10 {
        assert_eq!(get(addr, "/json").0, 200);
    }
    browser.wait_rows("10 more requests", |rows| {
        rows.len() == 1 && rows[0].requests >= before + 10
    });

    // A prefix that is not a same-origin path is ignored.
    browser.goto(&format!("http://{addr}/?admin=//example.com"));
    browser.wait_text("status-url", "/_tickhttp/status");
}
