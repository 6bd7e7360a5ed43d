//! Descriptor passing delivers the connection itself and its metadata.

mod pool_util;

use pool_util::{json_number, Client, Pool};

#[test]
fn fd_passing_carries_the_client_address() {
    let pool = Pool::start(2, &["--mode", "centralized", "--worker-mode", "callback"]);
    for _ in 0..4 {
        let mut client = Client::connect(pool.addr).unwrap();
        let me = client.local_addr();
        let (status, body) = client.get("/whoami").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("\"peer\":\"{me}\"")),
            "expected {me} in {body}"
        );
        assert!((1..=2).contains(&json_number(&body, "worker_id")));
    }
}
