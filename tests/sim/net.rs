//! `turmoil::net` behind the transport's `Network`.

use std::net::SocketAddr;

use breakwater::lease::peers::transport::{Listener, Network};

/// `turmoil::net` behind the transport's [`Network`].
pub struct SimNet;

/// A `turmoil::net::TcpListener` (a local type, for the foreign trait).
pub struct SimListener(pub turmoil::net::TcpListener);

impl Network for SimNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr) -> std::io::Result<SimListener> {
        turmoil::net::TcpListener::bind(addr).await.map(SimListener)
    }

    async fn connect(&self, addr: &str) -> std::io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr.to_owned()).await
    }
}

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
