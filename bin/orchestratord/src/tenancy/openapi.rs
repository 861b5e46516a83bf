//! The tenancy routes in the OpenAPI document (bodies: `llorch_wire::tenancy`, `.specs/tenancy.md`).

use serde_json::{json, Value};

fn ok(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } })
}

fn err(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } } })
}

fn body() -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" } } } })
}

fn name(what: &str, param: &str) -> Value {
    json!([{ "name": param, "in": "path", "required": true, "description": what, "schema": { "type": "string" } }])
}

/// `/v2/admin/*` (admin token) and `/v2/usage`.
pub fn paths() -> Value {
    json!({
        "/v2/admin/tenants": {
            "post": { "summary": "Create a tenant {name, weight, limits}", "requestBody": body(),
                "responses": { "201": ok("Tenant"), "400": err("INVALID_REQUEST (bad field, or it exists)"), "403": err("FORBIDDEN (tenant key)") } },
            "get": { "summary": "Every tenant", "responses": { "200": ok("TenantList") } } },
        "/v2/admin/tenants/{name}": {
            "get": { "summary": "One tenant", "parameters": name("tenant", "name"), "responses": { "200": ok("Tenant"), "404": err("NOT_FOUND") } },
            "put": { "summary": "Create or replace a tenant's weight and limits", "parameters": name("tenant", "name"), "requestBody": body(),
                "responses": { "200": ok("Tenant (updated)"), "201": ok("Tenant (created)"), "400": err("INVALID_REQUEST") } } },
        "/v2/admin/keys": {
            "post": { "summary": "Create a key {tenant, label?, expires_in_s?}; the answer holds the key, shown this once", "requestBody": body(),
                "responses": { "201": ok("KeyCreated"), "404": err("NOT_FOUND (tenant)") } },
            "get": { "summary": "Keys (ids, never keys); ?tenant=", "responses": { "200": ok("KeyList") } } },
        "/v2/admin/keys/{id}": { "delete": { "summary": "Revoke a key (refused from the next request on)",
            "parameters": name("key id", "id"), "responses": { "200": ok("KeyInfo"), "404": err("NOT_FOUND") } } },
        "/v2/admin/keys/{id}/revoke": { "post": { "summary": "Revoke a key (refused from the next request on)",
            "parameters": name("key id", "id"), "responses": { "200": ok("KeyInfo"), "404": err("NOT_FOUND") } } },
        "/v2/admin/audit": { "get": { "summary": "Audit log, newest first; ?tenant=&limit=", "responses": { "200": ok("AuditList") } } },
        "/v2/usage": { "get": { "summary": "Tasks and tokens by tenant, model, UTC day and user; ?tenant=&from=&to= (YYYY-MM-DD)",
            "responses": { "200": ok("UsageReport"), "400": err("INVALID_REQUEST (date)"), "403": err("FORBIDDEN (another tenant)") } } }
    })
}
