//! systemd `Type=notify`: tell the service manager the node is up.

/// systemd `Type=notify`: tell the service manager we are up.
pub(super) fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify socket");
            return;
        }
    };
    let p = path.to_string_lossy();
    let res = if let Some(abstract_name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &*p)
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "sd_notify READY=1 not sent");
    }
}
