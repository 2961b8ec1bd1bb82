//! The console (docs/console.md): an admin web page at `GET /console`, its assets
//! (`/console/<file>`) embedded in the binary from `services/api/console/`. Plain ES modules and
//! a style sheet, no build step. The page calls only the public API with the server key it asks
//! for (kept in the tab's session storage); these routes themselves need no credentials, since
//! they serve nothing but the page.
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles and requests
//! from this origin only (no inline script, no other host), and an `ETag`, so a browser
//! revalidates instead of running the assets of an older binary.

use std::sync::LazyLock;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use aide::openapi::{Parameter, ParameterData, ParameterSchemaOrContent, PathStyle, ReferenceOr};
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::routes::common::OperationDoc;
use crate::state::AppState;

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console";

/// What the page may load and where it may connect: this origin only, no inline script or
/// style, no frames, no form posts (every form is handled by the page's script).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../../console/", $name)),
        }
    };
}

/// The page and everything it loads.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("users.js", "text/javascript; charset=utf-8"),
    asset!("user.js", "text/javascript; charset=utf-8"),
    asset!("tasks.js", "text/javascript; charset=utf-8"),
    asset!("ops.js", "text/javascript; charset=utf-8"),
];

/// The ETag of each asset, in the order of [`ASSETS`]: a digest of its bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a valid header value")
        })
        .collect()
});

/// The routes of this module.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            CONSOLE_PATH,
            get_with(page, |op| {
                op.doc("getConsole", "operations", "The admin console")
                    .describe(
                        "A web page for admins (docs/console.md): users, one user with its \
                         history as of any position, tasks with live progress, the event log \
                         live, projections and settings. It asks for the server API key and \
                         keeps it in the tab's session storage; it calls only this API.",
                    )
                    .content(200, "text/html", "The console's page.", None)
            }),
        )
        .api_route(
            "/console/{file}",
            get_with(file, |op| {
                let op = op
                    .doc("getConsoleAsset", "operations", "A file of the console")
                    .describe("The console's scripts (ES modules) and style sheet.")
                    .content(
                        200,
                        "text/javascript",
                        "A script (an ES module) or the style sheet.",
                        None,
                    )
                    .content(200, "text/css", "", None)
                    .errors(&[404]);
                add_file_parameter(op)
            }),
        )
}

fn add_file_parameter(
    mut op: aide::transform::TransformOperation<'_>,
) -> aide::transform::TransformOperation<'_> {
    op.inner_mut()
        .parameters
        .push(ReferenceOr::Item(Parameter::Path {
            parameter_data: ParameterData {
                name: "file".into(),
                description: Some("A file name, e.g. `app.js`.".into()),
                required: true,
                format: ParameterSchemaOrContent::Schema(aide::openapi::SchemaObject {
                    json_schema: schemars::json_schema!({"type": "string"}),
                    example: None,
                    external_docs: None,
                }),
                extensions: Default::default(),
                deprecated: None,
                example: None,
                examples: Default::default(),
                explode: None,
            },
            style: PathStyle::Simple,
        }));
    op
}

async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().skip(1).position(|a| a.name == name) {
        Some(i) => serve(i + 1, &headers),
        None => ApiError::not_found("The console has no such file.").into_response(),
    }
}

/// The asset at `index` of [`ASSETS`], or 304 when the browser holds the same bytes.
fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Total bytes of the console's assets (the page weight served at `/console`).
pub fn page_weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page renders every value from the API as text: no script of the console parses
    /// strings as HTML or code.
    #[test]
    fn no_script_turns_strings_into_html_or_code() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "createContextualFragment",
                "EventSource",
                "localStorage",
            ] {
                assert!(
                    !asset.body.contains(sink),
                    "{} uses {sink}: render API values with text nodes, read streams with \
                     fetch, keep the key in sessionStorage",
                    asset.name
                );
            }
        }
    }

    /// Everything the page loads is embedded, and everything embedded is loaded by the page or
    /// a module: nothing stale ships, nothing is missing.
    #[test]
    fn every_asset_is_referenced_and_every_reference_is_embedded() {
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains("style="), "no inline style");
        assert!(!page.contains("http://") && !page.contains("https://"));
        for asset in &ASSETS[1..] {
            let by_page = page.contains(&format!("\"console/{}\"", asset.name));
            let by_module = ASSETS
                .iter()
                .any(|a| a.body.contains(&format!("'./{}'", asset.name)));
            assert!(by_page || by_module, "{} is never loaded", asset.name);
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for import in asset.body.split("from './").skip(1) {
                let name = import.split('\'').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_no_other_origin() {
        let script = CONTENT_SECURITY_POLICY
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .expect("a script-src directive");
        assert_eq!(script, "script-src 'self'");
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none'"));
    }
}
