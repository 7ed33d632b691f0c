//! The console's static files, compiled into the binary: htmx 2.0.2
//! (vendored unmodified: `api/assets/README.md` says where from and its
//! digest), the style sheet and `console.js`.

use actix_web::{web, HttpResponse};

use super::ConsoleError;

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx-2.0.2.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-2.0.2.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    ),
];

/// `GET /ui/assets/{name}`.
pub async fn serve(name: web::Path<String>) -> Result<HttpResponse, ConsoleError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(file, _, _)| *file == name.as_str())
        .ok_or(ConsoleError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(*body))
}
