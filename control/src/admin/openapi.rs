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
use crate::domain::ROOT_SPACE;

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
        "Replace the webhook secret; the old one verifies until the grace period ends (admin). \
         Every managed Bitbucket webhook then gets the new secret; the answer lists which did and \
         which did not.",
        Some(schema::<RotateSecret>),
        200,
        Some(schema::<RotatedSecret>),
    ),
    route(
        "get",
        "/integrations/{name}/bitbucket-webhooks",
        "The Bitbucket webhooks inlet manages for the integration (admin).",
        None,
        200,
        Some(schema::<BitbucketWebhookList>),
    ),
    route(
        "put",
        "/integrations/{name}/bitbucket-webhooks",
        "Create or update, idempotently, the project- or repository-level webhook in Bitbucket \
         with the integration's URL, current secret and the eight events (admin); 502 with \
         Bitbucket's message when it refuses or cannot be reached, and nothing is recorded.",
        Some(schema::<SyncBitbucketWebhook>),
        200,
        Some(schema::<SyncedBitbucketWebhook>),
    ),
    route(
        "delete",
        "/integrations/{name}/bitbucket-webhooks/{id}",
        "Delete a managed webhook in Bitbucket and stop managing it (admin); 502 when Bitbucket \
         refuses.",
        None,
        204,
        None,
    ),
    route(
        "post",
        "/integrations/{name}/reconcile",
        "Start one reconciliation pass of the integration now (writer of its space; writer of any \
         space for the default one); no body or `{}`. Within 2 s of the last request the answer \
         is that pending request's id and nothing new is recorded.",
        Some(schema::<RequestReconcile>),
        202,
        Some(schema::<ReconcileAccepted>),
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
    // Methods are case-sensitive tokens (RFC 9110 §9.1): the header says `GET`, not `get`.
    let mut methods: Vec<String> = ROUTES
        .iter()
        .filter(|r| matches(r.path, segments))
        .map(|r| r.method.to_ascii_uppercase())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// Unicode `White_Space`, the characters Rust's `char::is_whitespace` (and so every `trim` and
/// "no whitespace" rule of the fold) means, spelled out so that no regex engine's idea of `\s`
/// (Python's also includes U+001C–U+001F) changes what the document says.
const WS: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// Ids of spaces and stacks (fold `validate_id`).
const ID: &str = "^[a-z0-9][a-z0-9_-]*$";
/// Integration names (fold `validate_integration_name`).
const INTEGRATION_NAME: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";
/// Bitbucket project keys (fold `validate_project_key`).
const PROJECT_KEY: &str = "^([A-Za-z][A-Za-z0-9_]*|~[A-Za-z0-9_.@-]+)$";
/// Repository slugs (fold `validate_repository_slug`): never `.` or `..`, written without
/// look-ahead.
const REPOSITORY_SLUG: &str =
    r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*|\.[A-Za-z0-9_-][A-Za-z0-9_.-]*|\.\.[A-Za-z0-9_.-]+)$";
/// Bitbucket webhook ids: what fits a u64 without a doubt.
const WEBHOOK_ID: &str = "^[0-9]{1,19}$";
/// `X-Request-Id`s, the ids of deliveries (ingest: 1–128 visible ASCII characters).
const DELIVERY_ID: &str = "^[!-~]+$";

/// Names, labels: at least one character that is not whitespace.
fn not_blank() -> String {
    format!("[^{WS}]")
}

/// `PROJECT/repo` (fold `validate_repository`).
fn repository() -> String {
    format!("^[^/{WS}]+/[^/{WS}]+$")
}

/// A branch: no whitespace, not a ref other than `refs/heads/…` (which is shortened). Written
/// without look-ahead, which not every generator supports: the short name must not start with
/// `refs/`, spelled as "differs from `refs/` at some position, or ends before it".
fn branch() -> String {
    let c = |except: &str| format!("[^{except}{WS}]");
    format!(
        "^(refs/heads/)?({}|r({}|e({}|f({}|s({}|$)|$)|$)|$))[^{WS}]*$",
        c("r"),
        c("e"),
        c("f"),
        c("s"),
        c("/")
    )
}

/// A project root (`paths::normalise_root`): optional `/`s around components separated by one
/// `/`; a component is anything without `/` or `\` except `.` and `..`.
fn project_root() -> String {
    let component = r"([^/\\.][^/\\]*|\.[^/\\.][^/\\]*|\.\.[^/\\]+)";
    format!("^/*({component}(/{component})*)?/*$")
}

/// An API host URL (fold `validate_host_url` and `valid_authority`, admin `check_scheme`).
fn host_url(allow_http: bool) -> String {
    let schemes = if allow_http {
        "https|http|private"
    } else {
        "https|private"
    };
    format!("^({schemes})://[A-Za-z0-9.-]+(:[0-9]{{1,5}})?([/?#][^{WS}]*)?$")
}

/// The constraints the fold and the admin API enforce, as JSON Schema keywords on the derived
/// schemas, so that a request the document calls valid is accepted and one it calls invalid is
/// refused (schemathesis checks both). Globs have a grammar no regular expression captures, so
/// they carry `format: glob` (globset syntax, README) instead of a pattern.
fn constraints(allow_http: bool) -> Vec<(&'static str, &'static str, Value)> {
    let id = json!({"pattern": ID, "maxLength": 64});
    let name = json!({"pattern": not_blank(), "minLength": 1, "maxLength": 128});
    let labels = json!({"maxItems": 50,
        "items": {"type": "string", "pattern": not_blank(), "maxLength": 64}});
    let description = json!({"maxLength": 4096});
    let integration = json!({"pattern": INTEGRATION_NAME, "maxLength": 64});
    let url = json!({"pattern": host_url(allow_http)});
    let globs = json!({"maxItems": 100,
        "items": {"type": "string", "format": "glob", "minLength": 1}});
    let mut rules = vec![
        ("CreateSpace", "id", id.clone()),
        ("CreateSpace", "name", name.clone()),
        ("CreateSpace", "parent_id", id.clone()),
        ("UpdateSpace", "name", name.clone()),
        ("Binding", "space_id", id.clone()),
        ("CreateApiKey", "name", name.clone()),
        ("CreateApiKey", "bindings", json!({"minItems": 1})),
        ("CreateIntegration", "name", integration.clone()),
        ("CreateIntegration", "space_id", id.clone()),
        ("CreateIntegration", "api_host_url", url.clone()),
        ("CreateIntegration", "user_facing_host_url", url.clone()),
        ("CreateIntegration", "labels", labels.clone()),
        ("CreateIntegration", "description", description.clone()),
        ("UpdateIntegration", "name", integration.clone()),
        ("UpdateIntegration", "space_id", id.clone()),
        ("UpdateIntegration", "api_host_url", url.clone()),
        ("UpdateIntegration", "user_facing_host_url", url),
        ("UpdateIntegration", "labels", labels.clone()),
        ("UpdateIntegration", "description", description),
        (
            "RotateSecret",
            "grace_period_secs",
            json!({"minimum": 0, "maximum": 604800}),
        ),
        (
            "TriggerRun",
            "sha",
            json!({"pattern": "^([0-9a-fA-F]{4,64})?$"}),
        ),
        (
            "SyncBitbucketWebhook",
            "project_key",
            json!({"pattern": PROJECT_KEY, "maxLength": 128}),
        ),
        (
            "SyncBitbucketWebhook",
            "repository_slug",
            json!({"pattern": REPOSITORY_SLUG, "maxLength": 128}),
        ),
    ];
    for schema in ["CreateStack", "UpdateStack"] {
        rules.extend([
            (schema, "name", name.clone()),
            (schema, "integration", integration.clone()),
            (schema, "repository", json!({"pattern": repository()})),
            (schema, "branch", json!({"pattern": branch()})),
            (schema, "project_root", json!({"pattern": project_root()})),
            (schema, "additional_project_globs", globs.clone()),
            (schema, "labels", labels.clone()),
        ]);
    }
    rules.extend([
        ("CreateStack", "id", id.clone()),
        ("CreateStack", "space_id", id),
    ]);
    rules
}

/// Merges `keywords` into a property schema. For `Option` fields schemars writes
/// `"type": ["string", "null"]` (string keywords then leave `null` valid); array keywords go on
/// the array.
fn constrain(schemas: &mut Map<String, Value>, schema: &str, property: &str, keywords: &Value) {
    let target = schemas
        .get_mut(schema)
        .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{schema}.{property} is not in the document"));
    for (keyword, value) in keywords.as_object().into_iter().flatten() {
        target.insert(keyword.clone(), value.clone());
    }
}

/// Manual runs, rotations and reconciliations take an optional body (no body means the
/// defaults).
fn optional_body(path: &str) -> bool {
    ["/runs", "/rotate-secret", "/reconcile"]
        .iter()
        .any(|suffix| path.ends_with(suffix))
}

/// The schema of a path parameter.
fn parameter_schema(name: &str, path: &str) -> Value {
    match (name, path) {
        ("name", _) => json!({"type": "string", "pattern": INTEGRATION_NAME, "maxLength": 64}),
        ("id", p) if p.starts_with("/deliveries") => {
            json!({"type": "string", "pattern": DELIVERY_ID, "maxLength": 128})
        }
        ("id", p) if p.starts_with("/api-keys") => json!({"type": "string", "minLength": 1}),
        ("id", p) if p.contains("/bitbucket-webhooks/") => {
            json!({"type": "string", "pattern": WEBHOOK_ID})
        }
        _ => json!({"type": "string", "pattern": ID, "maxLength": 64}),
    }
}

/// `?offset=&limit=` of the listings that page.
fn page_parameters() -> Vec<Value> {
    ["offset", "limit"]
        .into_iter()
        .map(|name| {
            json!({"name": name, "in": "query", "required": false,
                   "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}})
        })
        .collect()
}

/// The OpenAPI 3.1 document; `allow_http` is whether this process accepts `http://` Bitbucket
/// hosts (`INLET_BITBUCKET_ALLOW_HTTP`), so the document describes what it serves.
pub fn document(allow_http: bool) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for route in ROUTES {
        let mut operation = Map::new();
        operation.insert("summary".into(), Value::from(route.summary));
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                               "schema": parameter_schema(name, route.path)})
            })
            .collect();
        if route.path.ends_with("/deliveries") {
            parameters.extend(page_parameters());
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::from(parameters));
        }
        if let Some(request) = route.request {
            operation.insert(
                "requestBody".into(),
                json!({"required": !optional_body(route.path),
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
    let mut schemas = generator.take_definitions(true);
    for (schema, property, keywords) in constraints(allow_http) {
        constrain(&mut schemas, schema, property, &keywords);
    }
    // The one rule across fields: the default integration lives in the root space.
    if let Some(create) = schemas
        .get_mut("CreateIntegration")
        .and_then(Value::as_object_mut)
    {
        create.insert(
            "if".into(),
            json!({"properties": {"is_default": {"const": true}}, "required": ["is_default"]}),
        );
        create.insert(
            "then".into(),
            json!({"properties": {"space_id": {"enum": [ROOT_SPACE, null]}}}),
        );
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
            "schemas": schemas,
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
        let doc = document(false);
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

    /// Every pattern the document publishes accepts exactly what the server accepts, over every
    /// string of up to three characters from an alphabet of the tricky ones (after each prefix
    /// that reaches a different rule): schemathesis samples this, here it is exhaustive.
    #[test]
    fn patterns_agree_with_the_validators() {
        use crate::fold;
        let alphabet = [
            "a", "Z", "0", "-", "_", ".", "/", "\\", " ", "\n", "\t", "\u{3000}", "\u{1c}",
            "\u{85}", "r", "e", "f", "s", ":", "?", "#", "[", "é", "8",
        ];
        let mut samples = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = samples
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            samples.extend(longer);
        }
        samples.sort();
        samples.dedup();
        let prefixes = [
            "",
            "https://",
            "http://",
            "private://",
            "refs/heads/",
            "refs/",
            "a/",
            "~",
        ];
        type Rule = (String, Box<dyn Fn(&str) -> bool>);
        let rules: Vec<Rule> = vec![
            (
                ID.to_owned(),
                Box::new(|s| fold::validate_id("id", s).is_ok() && s.len() <= 64),
            ),
            (
                INTEGRATION_NAME.to_owned(),
                Box::new(|s| fold::validate_integration_name(s).is_ok()),
            ),
            (
                not_blank(),
                Box::new(|s| fold::validate_name("name", s).is_ok()),
            ),
            (
                not_blank(),
                Box::new(|s| fold::validate_labels(&[s.to_owned()]).is_ok()),
            ),
            (
                repository(),
                Box::new(|s| fold::validate_repository(s).is_ok()),
            ),
            (
                branch(),
                Box::new(|s| {
                    fold::validate_branch(&super::super::stacks::short_branch(s.to_owned())).is_ok()
                }),
            ),
            (
                project_root(),
                Box::new(|s| crate::paths::normalise_root(s).is_ok()),
            ),
            (
                PROJECT_KEY.to_owned(),
                Box::new(|s| fold::validate_project_key(s).is_ok()),
            ),
            (
                REPOSITORY_SLUG.to_owned(),
                Box::new(|s| fold::validate_repository_slug(s).is_ok()),
            ),
            (
                host_url(true),
                Box::new(|s| fold::validate_host_url("api_host_url", s).is_ok()),
            ),
            (
                host_url(false),
                Box::new(|s| {
                    fold::validate_host_url("api_host_url", s).is_ok() && !s.starts_with("http://")
                }),
            ),
        ];
        for (pattern, accepts) in &rules {
            let regex = regex::Regex::new(pattern).expect("pattern compiles");
            for prefix in prefixes {
                for sample in &samples {
                    let value = format!("{prefix}{sample}");
                    assert_eq!(
                        regex.is_match(&value),
                        accepts(&value),
                        "pattern {pattern} and the server disagree on {value:?}"
                    );
                }
            }
        }
    }

    /// Templates match concrete paths segment by segment.
    #[test]
    fn templates_match() {
        assert!(is_resource(&["stacks", "abc", "runs"]));
        assert!(is_resource(&["integrations", "bb", "details"]));
        assert!(is_resource(&[
            "integrations",
            "bb",
            "bitbucket-webhooks",
            "7"
        ]));
        assert!(is_resource(&["integrations", "bb", "reconcile"]));
        assert_eq!(
            allowed_methods(&["integrations", "bb", "reconcile"]),
            "POST"
        );
        assert!(!is_resource(&["stacks", "abc", "nope"]));
        assert!(!is_resource(&["nope"]));
    }
}
