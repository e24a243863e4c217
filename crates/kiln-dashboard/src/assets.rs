//! The stylesheet and the live-update script, built into the binary:
//! the dashboard loads nothing from another origin.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::error::DashboardError;

const STYLE: &str = include_str!("../assets/style.css");
const LIVE: &str = include_str!("../assets/live.js");

pub(crate) async fn serve(Path(name): Path<String>) -> Result<Response, DashboardError> {
    let (body, content_type) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "live.js" => (LIVE, "text/javascript; charset=utf-8"),
        _ => return Err(DashboardError::NotFound(format!("no asset {name:?}"))),
    };
    Ok((
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=300")],
        body,
    )
        .into_response())
}
