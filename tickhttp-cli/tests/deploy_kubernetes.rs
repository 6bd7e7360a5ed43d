//! `deploy/kubernetes.yaml` against the binary, without a cluster: the container's `args` run
//! as written (only the listen address moves to a free loopback port), the readiness and
//! liveness probe paths answer 200 on the port the probes name, the termination grace period
//! covers the preStop sleep and `--shutdown-timeout`, and after SIGTERM the readiness path
//! stops answering 200 while a slow request in flight is still answered, then the process
//! exits 0 within the shutdown timeout.
//!
//! The manifest is read line by line (indentation, `key: value`, `- item`), which is all this
//! file uses of YAML.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_tickhttp");
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes.yaml");

/// Kills the process group (the pool's master and its workers) unless the test already saw
/// the master exit.
struct Guard(Option<Child>);

impl Guard {
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// One meaningful line of the manifest: its indentation (a `- ` list marker counts as
/// indentation, so `- name: http` is the key `name` two columns in) and its text.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    indent: usize,
    item: bool,
    text: &'a str,
}

fn lines(doc: &str) -> Vec<Line<'_>> {
    doc.lines()
        .filter_map(|raw| {
            let t = raw.trim_start();
            if t.is_empty() || t.starts_with('#') {
                return None;
            }
            let mut indent = raw.len() - t.len();
            let (item, text) = match t.strip_prefix("- ") {
                Some(rest) => {
                    indent += 2;
                    (true, rest.trim_start())
                }
                None => (false, t),
            };
            Some(Line { indent, item, text })
        })
        .collect()
}

/// `key: value` → value, unquoted.
fn value_of<'a>(line: &Line<'a>, key: &str) -> Option<&'a str> {
    let rest = line.text.strip_prefix(key)?.strip_prefix(':')?;
    Some(rest.trim().trim_matches('"'))
}

/// The lines nested under the first `key:` found in `lines` (deeper than it).
fn block<'a>(lines: &[Line<'a>], key: &str) -> Vec<Line<'a>> {
    let start = lines
        .iter()
        .position(|l| value_of(l, key).is_some())
        .unwrap_or_else(|| panic!("kubernetes.yaml: no `{key}:`"));
    let indent = lines[start].indent;
    lines[start + 1..]
        .iter()
        .take_while(|l| l.indent > indent)
        .copied()
        .collect()
}

/// The value of the first `key:` in `lines`.
fn field<'a>(lines: &[Line<'a>], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| value_of(l, key))
        .unwrap_or_else(|| panic!("kubernetes.yaml: no `{key}:` in {lines:#?}"))
}

/// The scalar items of the list under `key:` (block style, one `- item` a line).
fn list<'a>(lines: &[Line<'a>], key: &str) -> Vec<&'a str> {
    block(lines, key)
        .iter()
        .filter(|l| l.item)
        .map(|l| l.text.trim_matches('"'))
        .collect()
}

/// A flow list: `["sleep", "5"]`.
fn flow_list(text: &str) -> Vec<String> {
    text.trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a flow list: {text}"))
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// A tickhttp duration: ms, s or m, a bare number being seconds.
fn duration(text: &str) -> Duration {
    if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else if let Some(s) = text.strip_suffix('s') {
        Duration::from_secs_f64(s.parse().unwrap())
    } else if let Some(m) = text.strip_suffix('m') {
        Duration::from_secs_f64(m.parse::<f64>().unwrap() * 60.0)
    } else {
        Duration::from_secs_f64(text.parse().unwrap())
    }
}

/// The value following `flag` in `args` (`--flag value` or `--flag=value`).
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

/// The container port a probe's `port:` names (a number or a port's name).
fn container_port(ports: &[Vec<Line<'_>>], port: &str) -> u16 {
    if let Ok(n) = port.parse() {
        return n;
    }
    ports
        .iter()
        .find(|p| p.iter().any(|l| value_of(l, "name") == Some(port)))
        .map(|p| field(p, "containerPort").parse().unwrap())
        .unwrap_or_else(|| panic!("kubernetes.yaml: no container port named {port}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads one response with a Content-Length body: (status, head, body).
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head}")))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| std::io::Error::other(format!("no Content-Length: {head}")))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// What a kubelet's httpGet probe sees: the status, or the connection's failure.
fn probe(port: u16, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.30\r\n\
         Connection: close\r\n\r\n"
    )?;
    read_response(&mut s).map(|(status, _, _)| status)
}

#[test]
fn kubernetes_manifest_matches_the_binary() {
    let text = std::fs::read_to_string(MANIFEST).unwrap();
    let docs: Vec<&str> = text.split("\n---").collect();
    let deployment = docs
        .iter()
        .map(|d| lines(d))
        .find(|l| l.iter().any(|l| value_of(l, "kind") == Some("Deployment")))
        .expect("kubernetes.yaml: a Deployment");
    let service = docs
        .iter()
        .map(|d| lines(d))
        .find(|l| l.iter().any(|l| value_of(l, "kind") == Some("Service")))
        .expect("kubernetes.yaml: a Service");

    let containers = block(&deployment, "containers");
    let top = containers.iter().map(|l| l.indent).min().unwrap();
    assert_eq!(
        containers
            .iter()
            .filter(|l| l.item && l.indent == top)
            .count(),
        1,
        "kubernetes.yaml: one container expected"
    );
    let args = list(&containers, "args");
    assert_eq!(args.first(), Some(&"serve"), "args: {args:?}");
    let listen = flag(&args, "--listen").expect("args: --listen");
    let (host, listen_port) = listen.rsplit_once(':').expect("--listen host:port");
    // The kubelet probes the pod's IP, and the Service forwards to it: not loopback.
    assert!(
        matches!(host, "0.0.0.0" | "[::]"),
        "--listen {listen} is unreachable from outside the pod"
    );
    let listen_port: u16 = listen_port.parse().unwrap();
    let shutdown_timeout = duration(flag(&args, "--shutdown-timeout").unwrap_or("10s"));

    // Each `- name: …` item under `ports:`, with its fields.
    let port_lines = block(&containers, "ports");
    let mut ports: Vec<Vec<Line>> = Vec::new();
    for l in port_lines {
        if l.item {
            ports.push(Vec::new());
        }
        ports.last_mut().expect("a port item").push(l);
    }
    for p in &ports {
        assert_eq!(field(p, "protocol"), "TCP");
    }

    let readiness = block(&containers, "readinessProbe");
    let liveness = block(&containers, "livenessProbe");
    let mut probes = Vec::new();
    for (name, p) in [("readinessProbe", &readiness), ("livenessProbe", &liveness)] {
        let path = field(p, "path").to_string();
        let port = container_port(&ports, field(p, "port"));
        assert_eq!(
            port, listen_port,
            "{name} probes port {port}, tickhttp listens on {listen_port}"
        );
        let timeout = Duration::from_secs(field(p, "timeoutSeconds").parse().unwrap());
        probes.push((name, path, timeout));
    }
    let (_, ready_path, ready_timeout) = probes[0].clone();

    // The Service forwards to a port the container has.
    let target = field(&block(&service, "ports"), "targetPort");
    assert_eq!(container_port(&ports, target), listen_port, "targetPort");

    // SIGKILL comes terminationGracePeriodSeconds after the pod starts terminating: preStop,
    // then SIGTERM and the graceful shutdown, all within it.
    let grace = Duration::from_secs(
        field(&deployment, "terminationGracePeriodSeconds")
            .parse()
            .unwrap(),
    );
    let pre_stop = flow_list(field(&block(&containers, "preStop"), "command"));
    assert_eq!(pre_stop[0], "sleep", "preStop: {pre_stop:?}");
    let pre_stop = Duration::from_secs_f64(pre_stop[1].parse().unwrap());
    assert!(
        grace > pre_stop + shutdown_timeout,
        "terminationGracePeriodSeconds {grace:?} does not cover preStop {pre_stop:?} + \
         --shutdown-timeout {shutdown_timeout:?}"
    );

    // The container's args, on a free loopback port.
    let port = free_port();
    let loopback = format!("127.0.0.1:{port}");
    let run_args: Vec<&str> = args
        .iter()
        .map(|a| if *a == listen { loopback.as_str() } else { a })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tickhttp.log");
    let mut server = Guard(Some(
        Command::new(BIN)
            .args(&run_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap(),
    ));
    let pid = Pid::from_raw(server.0.as_ref().unwrap().id() as i32);
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready once a worker is; alive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(probe(port, &ready_path, ready_timeout), Ok(200)) {
        assert!(
            Instant::now() < deadline,
            "{ready_path} never answered 200:\n{}",
            server_log()
        );
        assert!(
            server.wait_exit(Duration::ZERO).is_none(),
            "tickhttp exited:\n{}",
            server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, path, timeout) in &probes {
        let started = Instant::now();
        assert_eq!(probe(port, path, *timeout).unwrap(), 200, "{name} {path}");
        assert!(started.elapsed() < *timeout, "{name} {path} is slow");
    }

    // A slow request in flight: on a connection a worker already serves.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut slow).unwrap().0, 200);
    let sleep = Duration::from_millis(1500);
    slow.write_all(b"GET /sleep?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let sent = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    kill(pid, Signal::SIGTERM).unwrap();
    let term = Instant::now();
    // The readiness path stops answering 200 (503, or the listener is gone) while the slow
    // request is still being served.
    let not_ready = loop {
        match probe(port, &ready_path, ready_timeout) {
            Ok(200) => {}
            Ok(503) | Err(_) => break Instant::now(),
            Ok(other) => panic!("{ready_path} answered {other} while draining"),
        }
        assert!(
            sent.elapsed() < sleep,
            "{ready_path} still answered 200 {:?} after SIGTERM",
            term.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(not_ready - sent < sleep);

    let (status, _, body) = read_response(&mut slow).expect("the slow request's answer");
    assert_eq!(status, 200, "the slow request: {body}");
    assert!(
        body.contains("\"slept_ms\":1500"),
        "the slow request: {body}"
    );
    assert!(sent.elapsed() >= sleep);

    let status = server
        .wait_exit(shutdown_timeout + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", server_log()));
    let stopped = term.elapsed();
    server.0 = None;
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        server_log()
    );
    assert!(
        stopped < shutdown_timeout,
        "stopping took {stopped:?}, --shutdown-timeout is {shutdown_timeout:?}"
    );
    // No worker outlives the master.
    let deadline = Instant::now() + Duration::from_secs(2);
    while killpg(pid, None).is_ok() {
        if Instant::now() >= deadline {
            let _ = killpg(pid, Signal::SIGKILL);
            panic!("a worker outlived the master:\n{}", server_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
