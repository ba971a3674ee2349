//! The operator API: HTTP and JSON on axum, served by `trunkd serve` on `api.listen`, on
//! the same runtime as the site link. Every route calls the [`ControllerHandle`], never
//! the controller's internals.
//!
//! So far: `GET /healthz` (no authentication: liveness and whether the database
//! answers), `GET /metrics` (no authentication either, for Prometheus scrapers: the
//! API listens on loopback by default; the Prometheus text format of
//! [`ControllerHandle::metrics`], every metric listed in the README) and JSON errors for
//! everything else. Operators, tokens and the `/api/v1` routes are issue 12's next
//! steps.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::controller::{Alarm, Answer, ControllerHandle, Query};

/// An error as every route answers it: a stable `code`, a `message` for people, and the
/// `field` at fault where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// Stable, machine-readable: `not_found`, `method_not_allowed`, …
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The body field, parameter or path segment at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    status: StatusCode,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

/// What `GET /healthz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Always `ok`: the controller answers.
    pub status: &'static str,
    /// `up`, or `down` while the database does not answer (the controller keeps serving
    /// from memory meanwhile).
    pub database: &'static str,
}

/// The API's routes over `handle`.
pub fn router(handle: ControllerHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(handle)
}

async fn healthz(State(handle): State<ControllerHandle>) -> Result<Json<Health>, ApiError> {
    let alarms = match handle.query(Query::Alarms) {
        Ok(Answer::Alarms(a)) => a,
        _ => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the controller did not answer its alarms",
            ))
        }
    };
    let down = alarms
        .iter()
        .any(|a| matches!(a, Alarm::DatabaseUnavailable { .. }));
    Ok(Json(Health {
        status: "ok",
        database: if down { "down" } else { "up" },
    }))
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4), without a token like
/// `/healthz`, so that a Prometheus server can scrape it.
async fn metrics(State(handle): State<ControllerHandle>) -> Result<Response, ApiError> {
    let text = handle.metrics().encode().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Binds the API on `addr`; warns when that is reachable from the network without TLS.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!(%bound, "the operator API listens on a non-loopback address without TLS");
    }
    info!(addr = %bound, "operator API listening");
    Ok(listener)
}

/// Serves the API on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    handle: ControllerHandle,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(stop)
        .await
}
