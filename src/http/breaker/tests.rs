//! The HTTP and gRPC classifiers and rejections, on hand-made responses.

use super::*;

fn response(status: u16, grpc: Option<&'static str>) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(code) = grpc {
        res.headers_mut()
            .insert("grpc-status", HeaderValue::from_static(code));
    }
    res
}

#[test]
fn server_errors_fail_and_the_callers_own_do_not() {
    let c = ServerErrors::new();
    let classify = |status| Classify::<_, ()>::classify(&c, Ok(&response(status, None)));
    assert_eq!(classify(500), Outcome::Failure);
    assert_eq!(classify(503), Outcome::Failure);
    assert_eq!(classify(404), Outcome::Success);
    assert_eq!(classify(429), Outcome::Success);
    assert_eq!(classify(200), Outcome::Success);
    let strict = ServerErrors::new().too_many_requests(true);
    assert_eq!(
        Classify::<_, ()>::classify(&strict, Ok(&response(429, None))),
        Outcome::Failure
    );
    assert_eq!(
        Classify::<Response<()>, _>::classify(&c, Err(&"reset")),
        Outcome::Failure
    );
}

#[test]
fn grpc_statuses_are_told_apart() {
    let classify =
        |status, code| Classify::<_, ()>::classify(&GrpcErrors, Ok(&response(status, code)));
    assert_eq!(classify(200, None), Outcome::Success);
    assert_eq!(classify(200, Some("0")), Outcome::Success);
    for code in ["14", "4", "8", "13", "2", "15"] {
        assert_eq!(classify(200, Some(code)), Outcome::Failure, "{code}");
    }
    for code in ["3", "5", "7", "12", "16", "1"] {
        assert_eq!(classify(200, Some(code)), Outcome::Ignored, "{code}");
    }
    assert_eq!(classify(502, None), Outcome::Failure);
}
