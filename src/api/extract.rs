//! Path and query extractors whose rejections use the one error shape and never echo the
//! offending value.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `Query<T>` with a JSON 400 that names the route's parameters, not the values sent.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|_| {
                ApiError::bad_request(
                    "bad_query",
                    "the query string does not fit this route: unknown parameter, missing \
                     parameter or a value that is not a non-negative integer (see the OpenAPI \
                     document)",
                )
            })
    }
}

/// `Path<T>` with a JSON 400 that does not echo the segment.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| {
                ApiError::bad_request("bad_path", "a path segment does not have the expected form")
            })
    }
}

/// `Json<T>` with JSON 4xx answers: 415 without a JSON content type, 413 over the body limit,
/// 400 for malformed JSON or a body of the wrong shape — naming line and column, never a
/// value.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        use axum::http::StatusCode;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            )),
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than this server accepts",
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(
                "bad_json",
                format!("the body is not valid JSON ({})", position(&e.body_text())),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(
                "bad_json",
                format!(
                    "the JSON does not have the fields this route expects ({})",
                    position(&e.body_text())
                ),
            )),
            Err(_) => Err(ApiError::bad_request(
                "bad_json",
                "the body could not be read",
            )),
        }
    }
}

/// Only the "line L column C" part of a serde_json message (which may quote input values).
fn position(message: &str) -> String {
    message
        .rfind(" at line ")
        .and_then(|i| message.get(i + 4..))
        .map_or_else(|| "position unknown".to_owned(), str::to_owned)
}
