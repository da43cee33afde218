//! The OpenAPI 3.1 document of API v1 (`GET /v1/openapi.json`), made from
//! the same table that builds the router: a route is added to both at once
//! ([`DocumentedRouter::route`]), so the document cannot list a route the
//! server lacks or miss one it serves. Schemas come from the request and
//! answer types themselves (schemars, JSON Schema 2020-12 as OpenAPI 3.1
//! uses it).

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value, json};

use super::tokens::Role;

/// Makes a JSON Schema.
pub type SchemaFn = fn() -> Value;

/// What the document says of one route.
pub struct RouteDoc {
    pub method: Method,
    /// axum's path syntax, which is OpenAPI's: `/v1/runs/{id}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// The least role that may call it; `None`: no token needed.
    pub role: Option<Role>,
    /// Request body: content type and schema.
    pub request: Option<(&'static str, SchemaFn)>,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// Success status, content type and schema of its body.
    pub success: (u16, &'static str, Option<SchemaFn>),
    /// Error statuses it may answer, beside 401 and 429 for every
    /// authenticated route.
    pub errors: &'static [u16],
}

/// The schema of `T`, for a route table.
pub fn schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

/// An axum router that records what it routes.
pub struct DocumentedRouter<S> {
    router: axum::Router<S>,
    routes: Vec<RouteDoc>,
}

impl<S: Clone + Send + Sync + 'static> Default for DocumentedRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> DocumentedRouter<S> {
    pub fn new() -> Self {
        DocumentedRouter {
            router: axum::Router::new(),
            routes: Vec::new(),
        }
    }

    /// Serves `handler` for `doc.method` at `doc.path`, and documents it.
    pub fn route<H, T>(mut self, doc: RouteDoc, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(doc.method.clone())
            .unwrap_or_else(|_| panic!("no method filter for {}", doc.method));
        self.router = self.router.route(doc.path, on(filter, handler));
        self.routes.push(doc);
        self
    }

    /// The router and the routes it serves.
    pub fn split(self) -> (axum::Router<S>, Vec<RouteDoc>) {
        (self.router, self.routes)
    }
}

fn problem_response(status: u16) -> Value {
    let description = match status {
        400 => "malformed request",
        401 => "no token, or an unknown or revoked one",
        403 => "the token's role may not do this",
        404 => "not found, or not visible to this token's tenant",
        409 => "conflicts with the object's state",
        413 => "larger than the server accepts",
        422 => "invalid parameters, or an unsafe or broken archive",
        429 => "over a rate limit or quota; see Retry-After",
        _ => "error",
    };
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// The OpenAPI document of `routes`.
pub fn document(routes: &[RouteDoc], version: &str) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!(
                "{}{}",
                r.method.as_str().to_ascii_lowercase(),
                r.path
                    .split(['/', '{', '}'])
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let mut c = s.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect::<String>()
            )),
        );
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
        }));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some((content_type, schema)) = r.request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {content_type: {"schema": schema()}}}),
            );
        }
        let mut responses = Map::new();
        let (status, content_type, body) = r.success;
        let mut ok = json!({"description": "success"});
        if !content_type.is_empty() {
            ok["content"] = json!({content_type: {"schema": body.map_or(json!({}), |f| f())}});
        }
        responses.insert(status.to_string(), ok);
        let mut errors: Vec<u16> = r.errors.to_vec();
        if r.role.is_some() {
            errors.extend([401, 429]);
        }
        errors.sort_unstable();
        errors.dedup();
        for e in errors {
            responses.insert(e.to_string(), problem_response(e));
        }
        op.insert("responses".into(), Value::Object(responses));
        match r.role {
            Some(role) => {
                op.insert("security".into(), json!([{"bearer": []}]));
                op.insert("x-toolhost-role".into(), json!(role.as_str()));
            }
            None => {
                op.insert("security".into(), json!([]));
            }
        }
        let item = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method.as_str().to_ascii_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Toolhost API",
            "version": version,
            "description": "Upload targets, start and follow runs of sandboxed WebAssembly workflows, read their findings. See docs/API.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a token from `toolhost token create`"}},
            "schemas": {"Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string", "description": "what was wrong and what to do"},
                    "errors": {"type": "array", "items": {"type": "string"}},
                },
            }},
        },
    })
}
