//! The route table of the admin API and the OpenAPI 3.1 document generated from it.
//!
//! [`ROUTES`] is the one list of endpoints: the router refuses paths that match none of them, the
//! document is built from it with the JSON Schemas of the [`super::views`] types, and a test calls
//! every entry against a running process, so the document cannot describe an endpoint that is not
//! served.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::views::*;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One endpoint.
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path under `/api/v1`, with `{param}` placeholders.
    pub path: &'static str,
    /// What it does and who may.
    pub summary: &'static str,
    /// Request body schema, if it takes one.
    pub request: Option<SchemaFn>,
    /// Success status.
    pub status: u16,
    /// Success body schema, if any.
    pub response: Option<SchemaFn>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<SchemaFn>,
    status: u16,
    response: Option<SchemaFn>,
) -> Route {
    Route {
        method,
        path,
        summary,
        request,
        status,
        response,
    }
}

/// Every admin API endpoint.
pub const ROUTES: &[Route] = &[
    route(
        "get",
        "/spaces",
        "List the spaces the caller can read.",
        None,
        200,
        Some(schema::<SpaceList>),
    ),
    route(
        "post",
        "/spaces",
        "Create a space (admin of the parent).",
        Some(schema::<CreateSpace>),
        201,
        Some(schema::<SpaceView>),
    ),
    route(
        "get",
        "/spaces/{id}",
        "Read a space.",
        None,
        200,
        Some(schema::<SpaceView>),
    ),
    route(
        "patch",
        "/spaces/{id}",
        "Rename a space or toggle inherit_entities (admin).",
        Some(schema::<UpdateSpace>),
        200,
        Some(schema::<SpaceView>),
    ),
    route(
        "delete",
        "/spaces/{id}",
        "Delete an empty space (admin); 409 while it holds spaces, integrations or stacks.",
        None,
        204,
        None,
    ),
    route(
        "get",
        "/api-keys",
        "List the API keys whose every binding the caller administers.",
        None,
        200,
        Some(schema::<ApiKeyList>),
    ),
    route(
        "post",
        "/api-keys",
        "Create an API key (admin of every bound space); the secret is shown once.",
        Some(schema::<CreateApiKey>),
        201,
        Some(schema::<CreatedApiKey>),
    ),
    route(
        "delete",
        "/api-keys/{id}",
        "Revoke an API key.",
        None,
        204,
        None,
    ),
    route(
        "get",
        "/integrations",
        "List integrations: the default one, and space-level ones the caller can read.",
        None,
        200,
        Some(schema::<IntegrationList>),
    ),
    route(
        "post",
        "/integrations",
        "Create an integration (admin of its space; root admin for the default one).",
        Some(schema::<CreateIntegration>),
        201,
        Some(schema::<IntegrationView>),
    ),
    route(
        "get",
        "/integrations/{name}",
        "Read an integration (no secrets).",
        None,
        200,
        Some(schema::<IntegrationView>),
    ),
    route(
        "patch",
        "/integrations/{name}",
        "Change an integration's mutable fields (admin); the name is immutable.",
        Some(schema::<UpdateIntegration>),
        200,
        Some(schema::<IntegrationView>),
    ),
    route(
        "delete",
        "/integrations/{name}",
        "Delete an integration (admin); its stacks become detached.",
        None,
        204,
        None,
    ),
    route(
        "get",
        "/integrations/{name}/details",
        "Webhook URL and secret (admin of the integration's space).",
        None,
        200,
        Some(schema::<IntegrationDetails>),
    ),
    route(
        "post",
        "/integrations/{name}/rotate-secret",
        "Replace the webhook secret; the old one verifies until the grace period ends (admin).",
        Some(schema::<RotateSecret>),
        200,
        Some(schema::<IntegrationDetails>),
    ),
    route(
        "get",
        "/stacks",
        "List the stacks the caller can read.",
        None,
        200,
        Some(schema::<StackList>),
    ),
    route(
        "post",
        "/stacks",
        "Create a stack (admin of its space).",
        Some(schema::<CreateStack>),
        201,
        Some(schema::<StackView>),
    ),
    route(
        "get",
        "/stacks/{id}",
        "Read a stack, with integration_status.",
        None,
        200,
        Some(schema::<StackView>),
    ),
    route(
        "patch",
        "/stacks/{id}",
        "Change a stack (admin); naming an available integration re-attaches it.",
        Some(schema::<UpdateStack>),
        200,
        Some(schema::<StackView>),
    ),
    route(
        "delete",
        "/stacks/{id}",
        "Delete a stack (admin).",
        None,
        204,
        None,
    ),
    route(
        "post",
        "/stacks/{id}/runs",
        "Trigger a manual tracked run (writer); 409 stack_detached.",
        Some(schema::<TriggerRun>),
        202,
        Some(schema::<RunAccepted>),
    ),
    route(
        "get",
        "/stacks/{id}/runs",
        "Recent decisions for the stack, newest first.",
        None,
        200,
        Some(schema::<RunList>),
    ),
    route(
        "get",
        "/integrations/{name}/deliveries",
        "Recent deliveries of the integration, newest first (`?offset=&limit=`).",
        None,
        200,
        Some(schema::<DeliveryList>),
    ),
    route(
        "get",
        "/deliveries/{id}",
        "What every stage did with one delivery, and why.",
        None,
        200,
        Some(schema::<DeliveryStory>),
    ),
    route(
        "post",
        "/deliveries/{id}/redeliver",
        "Re-publish the stored webhook (admin); bypasses the duplicate-delivery filter, not run deduplication.",
        None,
        202,
        Some(schema::<Redelivered>),
    ),
];

fn matches(template: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(part, segment)| part.starts_with('{') || part == segment)
}

/// Whether `segments` (the path under `/api/v1/`) names an endpoint, whatever the method.
pub fn is_resource(segments: &[&str]) -> bool {
    ROUTES.iter().any(|r| matches(r.path, segments))
}

/// The methods the route table serves on `segments`, for a 405's `Allow` header.
pub fn allowed_methods(segments: &[&str]) -> String {
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|r| matches(r.path, segments))
        .map(|r| r.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for route in ROUTES {
        let mut operation = Map::new();
        operation.insert("summary".into(), Value::from(route.summary));
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::from(parameters));
        }
        if let Some(request) = route.request {
            operation.insert(
                "requestBody".into(),
                // Manual runs and rotations take an optional body.
                json!({"required": !(route.path.ends_with("/runs") || route.path.ends_with("/rotate-secret")),
                       "content": {"application/json": {"schema": request(&mut generator)}}}),
            );
        }
        let success = match route.response {
            Some(response) => json!({"description": "success",
                "content": {"application/json": {"schema": response(&mut generator)}}}),
            None => json!({"description": "success, no body"}),
        };
        let failure = json!({"description": "error", "content": {"application/json": {"schema": error.clone()}}});
        operation.insert(
            "responses".into(),
            json!({route.status.to_string(): success, "default": failure}),
        );
        paths
            .entry(format!("/api/v1{}", route.path))
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .map(|methods| methods.insert(route.method.to_owned(), Value::Object(operation)));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "inlet admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Spaces, API keys, Bitbucket Data Center integrations and stacks. \
                Authenticate with `Authorization: Bearer <key>`."
        },
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route is in the document, and every schema reference resolves.
    #[test]
    fn document_is_complete() {
        let doc = document();
        for route in ROUTES {
            let path = format!("/api/v1{}", route.path);
            assert!(
                doc["paths"][&path][route.method].is_object(),
                "{} {path} missing",
                route.method
            );
        }
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap_or_default();
            let name = target.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling {target}"
            );
        }
        assert!(
            doc["components"]["schemas"]["CreateStack"]["properties"]["repository"].is_object()
        );
    }

    /// Templates match concrete paths segment by segment.
    #[test]
    fn templates_match() {
        assert!(is_resource(&["stacks", "abc", "runs"]));
        assert!(is_resource(&["integrations", "bb", "details"]));
        assert!(!is_resource(&["stacks", "abc", "nope"]));
        assert!(!is_resource(&["nope"]));
    }
}
