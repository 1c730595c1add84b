//! The problems the layers around every handler can answer, written into each operation of the OpenAPI
//! document, so a client (or schemathesis) finds every status an operation can return documented beside the
//! ones its handler declares. Which apply follows from what the operation is: one that names a credential
//! can be refused it (401) or refused by the tenant's state, scope or rate limit (403, 429); one that takes a
//! body can be sent a malformed (400), oversized (413), compressed or mistyped (415), invalid (422) one, or
//! meet a full in-flight body budget (503); one with query parameters can be sent invalid ones (422); one with a path parameter can name nothing (404); any can fail
//! inside (500).

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{OpenApi, RefOr, ResponseBuilder};

/// Adds, to every operation that lacks them, the problem responses its layers can produce.
pub(crate) fn document_layer_problems(spec: &mut OpenApi) {
    for (path, item) in spec.paths.paths.iter_mut() {
        let has_path_parameter = path.contains('{');
        let keyed_path = path.starts_with("/v1/") || path.starts_with("/admin/");
        for operation in [&mut item.post, &mut item.patch, &mut item.delete].into_iter().filter_map(Option::as_mut) {
            if keyed_path && operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                document_idempotency_key(operation);
            }
        }
        for operation in operations(item) {
            let problems = layer_problems(operation, has_path_parameter);
            for (status, description) in problems {
                operation.responses.responses.entry(status.to_string()).or_insert_with(|| problem(description));
            }
        }
    }
}

/// The optional `Idempotency-Key` header of an authenticated POST, PATCH or DELETE (API.md "Integrations"),
/// and what it can answer: 400 for a malformed key, 409 while the first request runs, 422 for a key reused
/// with another request.
fn document_idempotency_key(operation: &mut Operation) {
    use utoipa::openapi::path::ParameterBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(255))
        .pattern(Some("^[ -~]+$"));
    let header = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "Runs the request at most once per caller and key: a retry with the same key, method, path and body \
             gets the first response again, with `Idempotent-Replayed: true` (kept 24 hours)",
        ))
        .schema(Some(schema))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(header);
    for (status, description) in [
        (400, "Malformed body or Idempotency-Key"),
        (409, "A request with this Idempotency-Key is still running (`Retry-After` says when to try again)"),
        (422, "Body fails validation, or the Idempotency-Key was used for another request"),
    ] {
        operation.responses.responses.entry(status.to_string()).or_insert_with(|| problem(description));
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

fn layer_problems(operation: &Operation, has_path_parameter: bool) -> Vec<(u16, &'static str)> {
    let schemes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| value.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    let mut problems = Vec::new();
    if !schemes.is_empty() {
        problems.push((401, "Missing, unknown or revoked credential"));
    }
    if schemes.iter().any(|s| s == "bearer") {
        problems.push((403, "The key's scope or the tenant's state does not allow this"));
        problems.push((429, "Rate limited or over quota (`Retry-After` says when to try again)"));
    }
    if operation.request_body.is_some() {
        problems.push((400, "Malformed body"));
        problems.push((413, "Body larger than the limit"));
        problems.push((415, "Unsupported Content-Type or Content-Encoding"));
        problems.push((422, "Body fails validation"));
        problems.push((503, "Too many request bodies in flight (`Retry-After` says when to try again)"));
    }
    let has_query = operation.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
    if has_query && operation.request_body.is_none() {
        problems.push((422, "Query parameters fail validation"));
    }
    if has_path_parameter {
        problems.push((404, "No such resource for this caller"));
    }
    if !schemes.is_empty() || operation.request_body.is_some() {
        problems.push((500, "Internal error (logged with the request id)"));
    }
    problems
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"))))
                    .build(),
            )
            .build(),
    )
}
