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
