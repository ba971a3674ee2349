//! The byte stream a link runs on: plain TCP, or TLS 1.3 over it (`link.tls_cert`,
//! `PROTOCOL.md §1`), on either side. Frames, the handshake and everything after are
//! the same on both.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server};

use super::tls::ServerTls;
use crate::protocol::Cause;

/// A link's connection.
pub enum LinkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, as the controller holds it.
    Server(Box<server::TlsStream<TcpStream>>),
    /// TLS, as a gateway holds it.
    Client(Box<client::TlsStream<TcpStream>>),
}

impl LinkStream {
    /// Writes `bytes` now if the socket takes them without waiting, else drops them: a
    /// refusal to a peer that may be a stranger never waits on it (`session::refuse`).
    pub fn try_write_now(&mut self, bytes: &[u8]) {
        match self {
            LinkStream::Plain(tcp) => {
                let _ = tcp.try_write(bytes);
            }
            LinkStream::Server(tls) => {
                let (tcp, conn) = tls.get_mut();
                push_now(tcp, conn, bytes);
            }
            LinkStream::Client(tls) => {
                let (tcp, conn) = tls.get_mut();
                push_now(tcp, conn, bytes);
            }
        }
    }
}

/// Encrypts `bytes` into `conn` and writes its records to `tcp` as far as the socket
/// takes them without waiting.
fn push_now<D>(tcp: &TcpStream, conn: &mut rustls::ConnectionCommon<D>, bytes: &[u8]) {
    /// `write` as the socket takes it at once.
    struct Now<'a>(&'a TcpStream);
    impl Write for Now<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.try_write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    if conn.writer().write_all(bytes).is_ok() {
        while conn.wants_write() && conn.write_tls(&mut Now(tcp)).is_ok_and(|n| n > 0) {}
    }
}

/// Whether a new connection's first byte begins a TLS handshake record (read, not
/// taken); `None` when it closed before sending anything.
pub(crate) async fn starts_tls(stream: &TcpStream) -> io::Result<Option<bool>> {
    /// The first byte of a TLS handshake record.
    const TLS_HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    Ok(match stream.peek(&mut first).await? {
        0 => None,
        _ => Some(first[0] == TLS_HANDSHAKE),
    })
}

/// What a link port (speaking TLS with `tls`, or plain) makes of a new connection whose
/// first byte began a TLS record or not (`PROTOCOL.md §1`).
pub(crate) enum Opened {
    /// The stream its link runs on.
    Link(LinkStream),
    /// It speaks the other: the refusal it gets, in plain, and the connection for it.
    Refused(LinkStream, Cause, &'static str),
    /// The TLS handshake failed: nothing can be sent on it.
    Failed(String),
}

/// [`Opened`] for `stream` on a port with `tls`.
pub(crate) async fn open(stream: TcpStream, tls_record: bool, tls: Option<&ServerTls>) -> Opened {
    match (tls, tls_record) {
        (None, false) => Opened::Link(LinkStream::Plain(stream)),
        (None, true) => Opened::Refused(
            LinkStream::Plain(stream),
            Cause::TlsNotOffered,
            "a TLS ClientHello on a plain link port",
        ),
        (Some(_), false) => Opened::Refused(
            LinkStream::Plain(stream),
            Cause::TlsRequired,
            "plain TCP on a TLS link port",
        ),
        (Some(tls), true) => match tls.acceptor().accept(stream).await {
            Ok(s) => Opened::Link(LinkStream::Server(Box::new(s))),
            Err(e) => Opened::Failed(format!("TLS handshake failed: {e}")),
        },
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            LinkStream::Plain($s) => $e,
            LinkStream::Server($s) => $e,
            LinkStream::Client($s) => $e,
        }
    };
}

impl AsyncRead for LinkStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            LinkStream::Plain(s) => s.is_write_vectored(),
            LinkStream::Server(s) => s.is_write_vectored(),
            LinkStream::Client(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
