//! The raw escape hatch: any call under `/api/` the named actions do not
//! cover, refused if its path leaves `/api/`.

use reqwest::Method;
use serde_json::Value;

use super::Actions;
use crate::coupa::error::CoupaError;
use crate::coupa::exchange::{endpoint, RetryPolicy};

impl Actions {
    /// Any call under `/api/` the named actions do not cover. `GET`
    /// retries like a read; every other method like a write. The path
    /// (no query: pass `query`) must stay under `/api/` once `.`/`..` are
    /// resolved. Returns the response's JSON (`null` for an empty body).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, CoupaError> {
        if ![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
        .contains(&method)
        {
            return Err(CoupaError::Invalid(format!(
                "raw: method {method} is not one Coupa's API uses (GET, POST, PUT, PATCH, DELETE)"
            )));
        }
        check_api_path(self.client.base_url(), path)?;
        let policy = if method == Method::GET {
            RetryPolicy::Read
        } else {
            RetryPolicy::Write
        };
        self.client.send(method, path, query, body, policy).await
    }
}

/// Refuses raw paths that are not under `/api/` once resolved (`..`,
/// `%2e%2e`) or that carry their own query or fragment.
fn check_api_path(base: &url::Url, path: &str) -> Result<(), CoupaError> {
    let bad = |why: &str| CoupaError::Invalid(format!("raw: path `{path}` {why}"));
    if !path.starts_with("/api/") {
        return Err(bad("must start with /api/"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("must not carry a query or fragment (pass query pairs)"));
    }
    let url = endpoint(base, path).map_err(|e| bad(&e.to_string()))?;
    let api_root = format!("{}/api/", base.path().trim_end_matches('/'));
    if !url.path().starts_with(&api_root) {
        return Err(bad("leaves /api/ once `.` and `..` are resolved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_stay_under_api() {
        let base = url::Url::parse("https://acme.coupahost.com").unwrap();
        assert!(check_api_path(&base, "/api/purchase_orders/1/reopen").is_ok());
        for bad in [
            "/oauth2/token",
            "/api/../oauth2/token",
            "/api/%2e%2e/oauth2/token",
            "/api/x?y=1",
            "api/x",
        ] {
            assert!(check_api_path(&base, bad).is_err(), "{bad}");
        }
    }
}
