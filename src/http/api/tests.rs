use super::routes::*;
use super::*;
use crate::coupa::body::DEFAULT_LIMIT;
use crate::coupa::objects::CATALOGUE;

/// The parent object nested objects are addressed under
/// (`/v1/suppliers/{supplier_id}/{object}`); the catalogue has no other.
const PARENT: &str = "suppliers";

#[test]
fn every_nested_object_lives_under_the_one_parent_routed() {
    for spec in CATALOGUE {
        if let Some(p) = spec.parent {
            assert_eq!(
                p.object, PARENT,
                "{} needs a /v1/{}/... route",
                spec.name, p.object
            );
        }
    }
}

#[test]
fn status_follows_the_documented_mapping() {
    let url = "http://x/api/y".to_string();
    let cases = [
        (CoupaError::Invalid("x".into()), 400),
        (
            CoupaError::Refused {
                object: "a".into(),
                operation: "b".into(),
                reason: "c".into(),
            },
            422,
        ),
        (CoupaError::NotFound { url: url.clone() }, 404),
        (
            CoupaError::Status {
                url: url.clone(),
                status: 500,
                snippet: String::new(),
            },
            502,
        ),
        (
            CoupaError::Status {
                url: url.clone(),
                status: 409,
                snippet: String::new(),
            },
            409,
        ),
        (
            CoupaError::RetriesExhausted {
                attempts: 3,
                last: Box::new(CoupaError::Status {
                    url: url.clone(),
                    status: 429,
                    snippet: String::new(),
                }),
            },
            503,
        ),
        (
            CoupaError::Transport {
                url: url.clone(),
                kind: TransportKind::Timeout,
                detail: String::new(),
            },
            504,
        ),
        (
            CoupaError::Unauthorized {
                url,
                detail: String::new(),
            },
            502,
        ),
    ];
    for (e, want) in cases {
        assert_eq!(http_status(&e).as_u16(), want, "{e:?}");
    }
}

#[test]
fn search_query_takes_limit_and_keeps_filters_in_order() {
    let (limit, f) = search_query(Some("status%5Bin%5D=a,b&limit=5&x=1&x=2")).unwrap();
    assert_eq!(limit, 5);
    assert_eq!(
        f,
        [
            ("status[in]".to_string(), "a,b".to_string()),
            ("x".into(), "1".into()),
            ("x".into(), "2".into())
        ]
    );
    assert_eq!(search_query(None).unwrap().0, DEFAULT_LIMIT);
    assert!(search_query(Some("limit=x")).is_err());
    assert!(search_query(Some("limit=1&limit=2")).is_err());
}
