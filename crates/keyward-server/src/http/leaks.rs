//! Leaked secrets: GitHub's secret scanning partner endpoint (`POST /v1/leaks/github`),
//! GitLab's token revocation API (`GET /v1/revocable_token_types`, `POST /v1/revoke_tokens`),
//! and in-house scanners (`POST /v1/leaks`). GitHub's and GitLab's answer 404 unless configured.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{ApiJson, Bearer, ClientIp, single_header};
use super::tokens::caller;
use super::wire::{
    BearerErrors, ErrorCode, ErrorResponse, GithubLeak, GithubLeakFeedback, GitlabLeak,
    JsonBodyErrors, LeakLabel, LeakReportRequest, LeakReportResponse, RevocableTokenTypes,
    StoreUnavailable,
};
use crate::service::leaks::{GITLAB_TOKEN_TYPES, secret_sha256};
use crate::service::{Action, Keyward, Leak, LeakVerdict, ServiceError};

type Kw = State<Arc<Keyward>>;

/// A partner's credential refused: 401 saying what to check, without a Bearer challenge (a
/// partner does not present keyward tokens).
fn refused(message: &'static str) -> impl Fn(ServiceError) -> ApiError {
    move |e| match e {
        ServiceError::Unauthenticated(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        ),
        other => other.into(),
    }
}

/// `body` as JSON of `T`, or 400 (as every JSON body: the signature covers the raw bytes, so
/// they are read first).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(axum::Json::<T>::from_bytes(body)?.0)
}

/// GitHub's signature headers.
const GITHUB_KEY_ID: HeaderName = HeaderName::from_static("github-public-key-identifier");
const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("github-public-key-signature");

/// A header's value as text, if sent (once: a second copy is refused) and readable.
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    Ok(single_header(headers, name)?.and_then(|value| value.to_str().ok()))
}

/// `POST /v1/leaks/github`: a report from GitHub's secret scanning partner program.
#[utoipa::path(
    post, path = "/v1/leaks/github", tag = "leaks",
    request_body(content = Vec<GithubLeak>, description = "GitHub's report, signed"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "Which of GitHub's published keys signed the report"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 DER ECDSA P-256 SHA-256 signature of the raw body"),
    ),
    responses(
        (status = 200, description = "Every keyward token in the report is revoked; GitHub's feedback, one entry per secret", body = Vec<GithubLeakFeedback>),
        (status = 400, description = "The body is not a report", body = ErrorResponse<'static>),
        (status = 401, description = "A missing or wrong signature, or a key GitHub does not publish: nothing is written", body = ErrorResponse<'static>),
        (status = 404, description = "GitHub's reports are not enabled (`[leaks.github]`)", body = ErrorResponse<'static>),
        (status = 413, description = "The body is too large", body = ErrorResponse<'static>),
        StoreUnavailable,
    )
)]
pub async fn report_github_leaks(
    State(kw): Kw,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let caller = kw
        .github_reporter(
            header_text(&headers, &GITHUB_KEY_ID)?,
            header_text(&headers, &GITHUB_SIGNATURE)?,
            &body,
            ip.0,
        )
        .await
        .map_err(refused(
            "the report's signature does not verify under GitHub's published keys",
        ))?;
    let report: Vec<GithubLeak> = parse(&body)?;
    let mut feedback = Vec::with_capacity(report.len());
    let mut leaks = Vec::with_capacity(report.len());
    for reported in report {
        feedback.push((secret_sha256(reported.token.expose()), reported.token_type));
        leaks.push(Leak {
            secret: reported.token,
            url: reported.url,
            source: reported.source.map(|s| format!("github {s}")),
        });
    }
    let verdicts = kw.report_leaks(&caller, &leaks).await?;
    let answer: Vec<GithubLeakFeedback> = feedback
        .into_iter()
        .zip(verdicts)
        .map(|((token_hash, token_type), verdict)| GithubLeakFeedback {
            token_hash,
            token_type,
            label: if verdict.is_ours() {
                LeakLabel::TruePositive
            } else {
                LeakLabel::FalsePositive
            },
        })
        .collect();
    Ok(axum::Json(answer).into_response())
}

/// `GET /v1/revocable_token_types`: GitLab's token revocation API, the types it may send.
#[utoipa::path(
    get, path = "/v1/revocable_token_types", tag = "leaks",
    security(("gitlab" = [])),
    responses(
        (status = 200, description = "The token types keyward revokes", body = RevocableTokenTypes),
        (status = 401, description = "Not the pre-shared token of `[leaks.gitlab]`", body = ErrorResponse<'static>),
        (status = 404, description = "GitLab's reports are not enabled (`[leaks.gitlab]`)", body = ErrorResponse<'static>),
    )
)]
pub async fn gitlab_token_types(
    State(kw): Kw,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kw.gitlab_reporter(gitlab_credential(&headers)?, ip.0)
        .map_err(refused(
            "send the pre-shared token as the Authorization header",
        ))?;
    let types = RevocableTokenTypes {
        types: GITLAB_TOKEN_TYPES.to_vec(),
    };
    Ok(axum::Json(types).into_response())
}

/// The whole `Authorization` header, as GitLab sends its pre-shared token (no scheme).
fn gitlab_credential(headers: &HeaderMap) -> Result<Option<&[u8]>, ApiError> {
    Ok(single_header(headers, &header::AUTHORIZATION)?.map(|value| value.as_bytes()))
}

/// `POST /v1/revoke_tokens`: GitLab's token revocation API, leaked tokens to revoke.
#[utoipa::path(
    post, path = "/v1/revoke_tokens", tag = "leaks",
    request_body(content = Vec<GitlabLeak>, description = "The leaked tokens"),
    security(("gitlab" = [])),
    responses(
        (status = 204, description = "Every keyward token among them is revoked"),
        (status = 400, description = "The body is not a list of tokens", body = ErrorResponse<'static>),
        (status = 401, description = "Not the pre-shared token of `[leaks.gitlab]`", body = ErrorResponse<'static>),
        (status = 404, description = "GitLab's reports are not enabled (`[leaks.gitlab]`)", body = ErrorResponse<'static>),
        (status = 413, description = "The body is too large", body = ErrorResponse<'static>),
        StoreUnavailable,
    )
)]
pub async fn gitlab_revoke_tokens(
    State(kw): Kw,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = kw
        .gitlab_reporter(gitlab_credential(&headers)?, ip.0)
        .map_err(refused(
            "send the pre-shared token as the Authorization header",
        ))?;
    let body = body?;
    let report: Vec<GitlabLeak> = parse(&body)?;
    let leaks: Vec<Leak> = report
        .into_iter()
        .map(|reported| Leak {
            secret: reported.token,
            url: reported.location,
            source: Some(format!("gitlab {}", reported.token_type)),
        })
        .collect();
    kw.report_leaks(&caller, &leaks).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/leaks`: secrets an in-house scanner found; each one's token is revoked.
#[utoipa::path(
    post, path = "/v1/leaks", tag = "leaks",
    request_body = LeakReportRequest,
    security(("bearer" = ["leaks:report"])),
    responses(
        (status = 200, description = "Every keyward token among them is revoked", body = LeakReportResponse),
        (status = 400, description = "Too many secrets, or a malformed body", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn report_leaks(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    body: Result<ApiJson<LeakReportRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReportLeaks).await?;
    let ApiJson(req) = body?;
    let leaks: Vec<Leak> = req
        .tokens
        .into_iter()
        .map(|secret| Leak {
            secret,
            url: None,
            source: req.source.clone(),
        })
        .collect();
    let verdicts = kw.report_leaks(&caller, &leaks).await?;
    let count = |f: fn(&LeakVerdict) -> bool| {
        u64::try_from(verdicts.iter().filter(|v| f(v)).count()).unwrap_or(u64::MAX)
    };
    let answer = LeakReportResponse {
        found: count(LeakVerdict::is_ours),
        revoked: count(|v| matches!(v, LeakVerdict::Revoked(_))),
    };
    Ok(axum::Json(answer).into_response())
}
