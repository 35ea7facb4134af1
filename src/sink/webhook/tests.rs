use url::Url;

use super::sign::{sign, signing_key};
use crate::redact::display_endpoint;

/// The test vector of the Standard Webhooks reference libraries.
#[test]
fn signs_like_the_reference_libraries() {
    let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = sign(
        &[key],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn several_keys_sign_space_separated() {
    let a = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let b = signing_key("whsec_AAAA").unwrap();
    let sig = sign(&[a, b], "id", "1", b"{}");
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.starts_with("v1,")));
    assert_ne!(parts[0], parts[1]);
}

#[test]
fn bad_secrets_are_refused_without_echo() {
    for bad in [
        "MfKQ9r8GKYqrTwjU",
        "whsec_",
        "whsec_not*base64",
        "whsec_QUJD-_",
    ] {
        let Err(e) = signing_key(bad) else {
            panic!("accepted {bad}")
        };
        let body = bad.trim_start_matches("whsec_");
        assert!(body.is_empty() || !e.contains(body), "{e}");
    }
}

#[test]
fn redaction_drops_credentials_and_query() {
    let u = Url::parse("https://user:pw@hooks.example.com:8443/in/coupa?token=s3cret#x").unwrap();
    assert_eq!(
        display_endpoint(&u),
        "https://hooks.example.com:8443/in/coupa"
    );
}
