//! trunkd as a system service: it tells systemd when it is ready, reloading and
//! stopping (`sd_notify`, a no-op without `NOTIFY_SOCKET`), and reloads on `SIGHUP`
//! what can change without a restart.
//!
//! What `SIGHUP` reloads (the configuration file read again): `log.level`, and the
//! certificates and keys of the site link (`link.tls_cert`, `link.tls_key`) and of the
//! operator API (`api.tls_cert`, `api.tls_key`): new connections get the new ones. Everything else needs a restart, or is a system parameter
//! (`PUT /api/v1/parameters/{name}`); a changed configuration that cannot be read
//! keeps what runs and says why in the log.

use sd_notify::NotifyState;
use tracing::{info, warn};

/// Tells the service manager that trunkd is up: its listeners are bound and it serves.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells the service manager that trunkd is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Tells the service manager that trunkd reloads, runs `reload`, then says it is
/// ready again (systemd's `Type=notify-reload` protocol, which an older systemd
/// ignores).
pub fn reloading(reload: impl FnOnce()) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => warn!(error = %e, "reading the monotonic clock for systemd"),
    }
    reload();
    ready();
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "telling systemd (NOTIFY_SOCKET)");
    }
}

/// Logs that a reload left something as it was.
pub fn kept(what: &str, e: &dyn std::fmt::Display) {
    warn!(error = %e, "reload: {what} kept as it was");
}

/// Logs what a reload changed.
pub fn reloaded(what: &str) {
    info!("reload: {what} reloaded");
}
