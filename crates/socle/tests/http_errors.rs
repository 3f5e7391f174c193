//! Whatever the request, the answer is OSC-shaped JSON with a request ID.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn every_bad_request_gets_an_osc_error() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let base = c.endpoint.trim_end_matches("/api/v1");

    // Wrong method and unknown paths.
    for (method, url) in [("GET", format!("{base}/api/v1/ReadVms")), ("POST", format!("{base}/nothing/here"))] {
        let (status, body) = match ureq::request(method, &url).call() {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_json::<Value>().unwrap()),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(status, 404, "{method} {url}");
        assert_eq!(body["Errors"][0]["Code"], "5038");
        assert!(body["ResponseContext"]["RequestId"].is_string());
    }
    // Unknown API version, unknown operation, a real OSC operation not implemented yet.
    let v2 = c.endpoint.replace("/api/v1", "/api/v2");
    raw_call(&v2, Some(c), "ReadVms", b"{}", &[]).expect_error(400, "5038");
    call(c, "DoSomethingElse", serde_json::json!({})).expect_error(400, "5038");
    let body = call(c, "CreateVirtualGateway", serde_json::json!({"ConnectionType": "ipsec.1"})).expect_error(400, "5038");
    assert!(body["Errors"][0]["Details"].as_str().unwrap().contains("not implemented"), "{body}");
    // osc-cli's path works like v1.
    let latest = c.endpoint.replace("/api/v1", "/api/latest");
    assert_eq!(raw_call(&latest, Some(c), "ReadVms", b"{}", &[]).status, 200);
    // The Rust SDK sends a literal null body.
    assert_eq!(raw_call(&c.endpoint, Some(c), "ReadVms", b"null", &[]).status, 200);
}
