//! End to end: the chat example (`examples/websocket_chat.rs`) serves its page, and two
//! headless Chromium browsers, driven through chromedriver's WebDriver API, chat through it.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver) and the example
//! built (`cargo test` builds examples; `cargo build --example websocket_chat` does it
//! alone). Without them the test prints why and passes, unless TICKHTTP_REQUIRE_INTEROP=1.
//! TICKHTTP_CHROMIUM and TICKHTTP_CHROMEDRIVER override where the programs are looked for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The whole test must finish within this.
const DEADLINE: Duration = Duration::from_secs(90);
/// Waiting for something to show up in a page.
const PAGE_WAIT: Duration = Duration::from_secs(15);

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

/// The chat example next to this test binary (target/<profile>/examples/).
fn chat_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join("websocket_chat");
    path.is_file().then_some(path)
}

fn skip(why: &str) {
    if std::env::var("TICKHTTP_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("browser test required but {why}");
    }
    eprintln!("skipping the browser test: {why}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every process the test started, killed (with its process group) on drop, pass or fail,
/// and the browsers' profile directories.
#[derive(Default)]
struct Processes {
    children: Vec<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Processes {
    fn spawn(&mut self, cmd: &mut Command) -> &mut Child {
        // A process group of its own, so the browsers chromedriver starts go with it.
        cmd.process_group(0);
        self.children.push(cmd.spawn().expect("spawn"));
        self.children.last_mut().unwrap()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal WebDriver client: one HTTP/1.1 request per connection.
struct WebDriver {
    addr: SocketAddr,
}

impl WebDriver {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut stream = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        stream
            .write_all(body.as_bytes())
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
        let body = String::from_utf8_lossy(&raw);
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {json}"));
        }
        Ok(json["value"].clone())
    }

    fn ready(&self) -> bool {
        self.call("GET", "/status", None)
            .is_ok_and(|v| v["ready"] == json!(true))
    }
}

/// One browser (a WebDriver session).
struct Browser<'a> {
    driver: &'a WebDriver,
    session: String,
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.session), None);
    }
}

impl<'a> Browser<'a> {
    fn open(driver: &'a WebDriver, chromium: &Path, profile: &Path) -> Browser<'a> {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let value = driver
            .call("POST", "/session", Some(caps))
            .expect("new session");
        let session = value["sessionId"].as_str().expect("sessionId").to_string();
        Browser { driver, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.driver.call(method, &path, body).unwrap()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types into an element, as keystrokes.
    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn text_of(&self, id: &str) -> String {
        let script = format!("return document.getElementById('{id}').innerText");
        self.eval(&script).as_str().unwrap_or_default().to_string()
    }

    /// Waits until the element's text contains `needle`.
    fn wait_for_text(&self, id: &str, needle: &str) {
        let start = Instant::now();
        loop {
            let text = self.text_of(id);
            if text.contains(needle) {
                return;
            }
            assert!(
                start.elapsed() < PAGE_WAIT,
                "#{id} never showed {needle:?}; it shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_joined(&self) {
        let start = Instant::now();
        while self.eval("return document.body.dataset.joined === 'true'") != json!(true) {
            assert!(
                start.elapsed() < PAGE_WAIT,
                "never joined: {}",
                self.text_of("status")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn two_browsers_chat_through_the_server() {
    let started = Instant::now();
    let Some(chromium) = find_program(
        "TICKHTTP_CHROMIUM",
        &[
            "/usr/lib/chromium/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ],
    ) else {
        return skip("chromium is not installed");
    };
    let Some(chromedriver) = find_program("TICKHTTP_CHROMEDRIVER", &["chromedriver"]) else {
        return skip("chromedriver is not installed");
    };
    let Some(chat) = chat_example() else {
        return skip(
            "the websocket_chat example is not built (cargo build --example websocket_chat)",
        );
    };
    let mut procs = Processes::default();

    // The chat server on a free port; it prints its address first thing.
    let server = procs.spawn(
        Command::new(&chat)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("chat listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the chat example: {line:?}"))
        .to_string();

    let port = free_port();
    procs.spawn(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let driver = WebDriver {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    while !driver.ready() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = || tempfile::tempdir().unwrap();
    let (pa, pb) = (profile(), profile());
    let alice = Browser::open(&driver, &chromium, pa.path());
    let bob = Browser::open(&driver, &chromium, pb.path());
    procs._dirs.extend([pa, pb]);

    // Alice joins through the form; Bob through the page's query.
    alice.goto(&base);
    alice.type_into("#name", "alice");
    alice.type_into("#room", "e2e");
    alice.click("#join");
    alice.wait_joined();
    bob.goto(&format!("{base}?name=bob&room=e2e"));
    bob.wait_joined();
    assert!(
        bob.text_of("status").contains("with alice"),
        "{}",
        bob.text_of("status")
    );
    alice.wait_for_text("log", "bob joined");

    // Alice types and clicks Send; Bob sees it with her name, and so does she.
    alice.type_into("#text", "hello from alice <b>not bold</b>");
    alice.click("#send");
    bob.wait_for_text("log", "alice: hello from alice <b>not bold</b>");
    alice.wait_for_text("log", "alice: hello from alice");
    // Bob answers with the Enter key.
    bob.type_into("#text", "hi alice, ünïcødé ✓\u{E007}");
    alice.wait_for_text("log", "bob: hi alice, ünïcødé ✓");
    assert_eq!(
        alice.eval("return document.getElementById('text').value"),
        json!("")
    );

    // Bob leaves; Alice is told.
    drop(bob);
    alice.wait_for_text("log", "bob left");
    drop(alice);
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
}
