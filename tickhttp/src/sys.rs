//! Socket setup through socket2. The pool's process and fd-passing calls live in `pool::sys`.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Creates a non-blocking, close-on-exec TCP listener: `SO_REUSEADDR` always, `SO_REUSEPORT`
/// when asked, `IPV6_V6ONLY` for IPv6 addresses so an IPv4 listener can share the port.
pub fn bind_tcp(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> Result<std::net::TcpListener, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(bind_err)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_err)?;
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(backlog).map_err(bind_err)?;
    Ok(socket.into())
}
