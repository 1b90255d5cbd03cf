//! Arbitrary bytes through what a create or replace does with its body, in
//! the services' own order: http-kit's `JsonBody` (415 for a foreign
//! Content-Type, 413 over 64 KiB, declared or not, under the same
//! `DefaultBodyLimit` the services install), then shared-kernel's
//! `parse_warrior` (400 malformed, 422 invalid).
//!
//! The first byte picks the Content-Type and how the length is declared; the
//! rest is the body. Checked besides "no panic": the status is exactly what
//! the contract says for that input; a rejected body names the bad fields;
//! an accepted one holds every rule, and the warrior the API would answer
//! with parses back to the same warrior (a GET's body can be PUT back).

#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::NaiveDate;
use http_kit::{JsonBody, MAX_BODY_BYTES};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use shared_kernel::{parse_warrior, InputError, Warrior, WarriorDraft};
use tower::ServiceExt;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).expect("date")
}

/// Content-Types, JSON ones first (selector % 8 < 4).
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/json"),
    Some("Application/JSON; charset=utf-8"),
    Some("application/merge-patch+json"),
    Some("application/json;"),
    None,
    Some("text/plain"),
    Some("application/jsonp"),
    Some("application/x-www-form-urlencoded"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector % 8)];
    let json = selector % 8 < 4;
    let declare_length = selector & 0x08 != 0;
    let declare_huge = selector & 0x10 != 0;
    // Bit 5 makes the body itself too large (repeated past 64 KiB).
    let body: Vec<u8> = if selector & 0x20 != 0 {
        body.iter().copied().cycle().take(MAX_BODY_BYTES + 1 + body.len()).collect()
    } else {
        body.to_vec()
    };

    let mut request = Request::post("/warrior");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if declare_huge {
        request = request.header(header::CONTENT_LENGTH, "1000000000");
    } else if declare_length {
        request = request.header(header::CONTENT_LENGTH, body.len().to_string());
    }
    let request = request.body(Body::from(body.clone())).expect("request");
    let app = Router::new()
        .route("/warrior", post(decode_and_validate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let status = RUNTIME
        .block_on(app.oneshot(request))
        .expect("infallible")
        .status();

    let expected = if !json {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else if declare_huge || body.len() > MAX_BODY_BYTES {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        match parse_warrior(&body, today()) {
            Ok(_) => StatusCode::CREATED,
            Err(InputError::Malformed { .. }) => StatusCode::BAD_REQUEST,
            Err(InputError::Invalid { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    };
    assert_eq!(status, expected, "selector {selector:#04x}, {} bytes", body.len());
});

/// The handler: the services' extractor, then the domain's validation, with
/// the properties checked in between; answers as the command side would.
async fn decode_and_validate(body: JsonBody) -> StatusCode {
    let bytes = &body.0;
    assert!(bytes.len() <= MAX_BODY_BYTES);
    let is_object = serde_json::from_slice::<Map<String, Value>>(bytes).is_ok();
    match parse_warrior(bytes, today()) {
        Ok(draft) => {
            assert!(is_object);
            check_valid(&draft);
            let shown = serde_json::to_vec(&Warrior::from_draft(uuid::Uuid::nil(), 1, &draft)).expect("JSON");
            assert_eq!(parse_warrior(&shown, today()), Ok(draft), "a warrior's own JSON must validate");
            StatusCode::CREATED
        }
        Err(InputError::Invalid { errors }) => {
            assert!(is_object, "422 only for a JSON object");
            assert!(!errors.is_empty(), "a 422 names the bad fields");
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(InputError::Malformed { errors, .. }) => {
            // Either not a JSON object at all, or an object with fields of
            // the wrong type, which are named.
            assert_eq!(is_object, !errors.is_empty());
            StatusCode::BAD_REQUEST
        }
    }
}

fn check_valid(draft: &WarriorDraft) {
    let name = draft.name.as_str();
    assert!(!name.trim().is_empty() && name.chars().count() <= 100 && !name.contains('\0'));
    assert!(draft.dob.date() <= today());
    let skills = draft.fight_skills.to_strings();
    assert!(skills.len() <= 100);
    for skill in &skills {
        assert!(!skill.trim().is_empty() && skill.chars().count() <= 50 && !skill.contains('\0'));
    }
}
