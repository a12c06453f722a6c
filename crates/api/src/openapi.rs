//! The OpenAPI 3 document, generated from the route table (so it covers every endpoint by
//! construction), with the schemas of the JSON bodies and answers.

use serde_json::{json, Map, Value};

use crate::routes::{Answer, In, Perm, ROUTES};

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let ns = json!({"type": ["string", "null"]});
    let ni = json!({"type": ["integer", "null"]});
    json!({
        "Error": obj(&["error"], json!({"error": s("string")})),
        "Ok": obj(&["ok"], json!({"ok": s("boolean")})),
        "object": s("object"),
        "Whoami": obj(&["token", "role", "permissions"], json!({"token": s("string"), "role": s("string"),
            "address": s("string"), "permissions": {"type": "array", "items": s("string")}, "csrf": ns})),
        "SourceStatus": obj(&["source", "class", "kind", "repository", "rpo_state"], json!({
            "source": s("string"), "class": s("string"), "kind": s("string"), "repository": s("string"),
            "newest": ns, "newest_snapshot": ns, "data_age_secs": ni, "rpo_secs": ni,
            "rpo_state": {"type": "string", "enum": ["OK", "AT_RISK", "BREACHED", "PENDING", "NO_OBJECTIVE", "UNKNOWN"]},
            "last_job": ns, "last_status": ns, "last_error": ns, "next_run": ns, "error": ns})),
        "StatusList": {"type": "array", "items": {"$ref": "#/components/schemas/SourceStatus"}},
        "SourceList": {"type": "array", "items": obj(&["name", "class", "kind", "repository"], json!({
            "name": s("string"), "class": s("string"), "kind": s("string"), "repository": s("string"),
            "rpo_secs": ni, "rto_secs": ni}))},
        "Job": obj(&["id", "kind", "source", "status"], json!({"id": s("string"), "kind": s("string"),
            "source": s("string"), "status": s("string"), "trigger": s("string"), "actor": s("string"),
            "label": ns, "reason": ns, "started_at": ns, "ended_at": ns, "snapshot": ns, "error": ns})),
        "JobList": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
        "JobDetail": obj(&["job", "log"], json!({"job": {"$ref": "#/components/schemas/Job"},
            "log": {"type": "array", "items": obj(&["at", "line"], json!({"at": s("string"), "line": s("string")}))},
            "drill": {"type": ["object", "null"]}})),
        "DrillList": {"type": "array", "items": obj(&["job"], json!({"job": {"$ref": "#/components/schemas/Job"},
            "record": {"type": ["object", "null"]}}))},
        "Task": obj(&["id", "kind", "state", "token", "started_at"], json!({"id": s("integer"), "kind": s("string"),
            "source": ns, "token": s("string"),
            "state": {"type": "string"}, "started_at": s("string"), "ended_at": ns,
            "bytes_done": ni, "bytes_total": ni, "result": {}, "error": ns})),
        "Snapshot": obj(&["id", "time", "hostname", "paths"], json!({"id": s("string"), "short_id": s("string"),
            "time": s("string"), "hostname": s("string"), "source": ns, "label": ns,
            "tags": {"type": "array", "items": s("string")}, "paths": {"type": "array", "items": s("string")}})),
        "SnapshotList": obj(&["repository", "snapshots"], json!({"repository": s("string"),
            "snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}}})),
        "Entry": obj(&["name", "path", "type", "size", "mtime"], json!({"name": s("string"), "path": s("string"),
            "type": {"type": "string", "enum": ["file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket"]},
            "size": s("integer"), "mode": s("integer"), "mtime": s("string"), "link_target": ns})),
        "Listing": obj(&["snapshot", "path", "entries", "truncated"], json!({"snapshot": s("string"), "path": s("string"),
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}}, "truncated": s("boolean")})),
        "SearchResult": obj(&["hits", "truncated"], json!({"hits": {"type": "array", "items": obj(&["snapshot", "time", "path"],
            json!({"snapshot": s("string"), "time": s("string"), "path": s("string"), "type": s("string"), "size": s("integer")}))},
            "truncated": s("boolean")})),
        "VersionList": {"type": "array", "items": obj(&["snapshot", "time", "snapshots", "size"], json!({
            "snapshot": s("string"), "time": s("string"), "snapshots": s("integer"), "size": s("integer"),
            "mtime": s("string"), "type": s("string")}))},
        "Preview": obj(&["snapshot", "confirm", "preview"], json!({"snapshot": s("string"), "confirm": s("string"),
            "preview": obj(&["overwrite", "create"], json!({"overwrite": {"type": "array", "items": s("string")},
                "overwrite_more": s("integer"), "create": s("integer"), "bytes": s("integer")}))})),
        "FilePreview": obj(&["path", "size", "truncated", "binary", "text"], json!({"path": s("string"), "size": s("integer"),
            "truncated": s("boolean"), "binary": s("boolean"), "text": s("string")})),
        "AuditList": obj(&["repository", "records"], json!({"repository": s("string"),
            "records": {"type": "array", "items": obj(&["chain", "n", "record"], json!({"chain": s("string"),
                "n": s("integer"), "record": s("object")}))}})),
        "AuditVerify": obj(&["repository", "ok", "findings"], json!({"repository": s("string"), "chains": s("integer"),
            "segments": s("integer"), "records": s("integer"), "ok": s("boolean"),
            "findings": {"type": "array", "items": s("string")}})),
        "TokenList": {"type": "array", "items": obj(&["name", "role", "created_at"], json!({"name": s("string"),
            "role": s("string"), "created_at": s("string"), "created_by": s("string"), "expires_at": ns,
            "revoked_at": ns, "last_used_at": ns}))},
        "TokenCreated": obj(&["name", "role", "secret"], json!({"name": s("string"), "role": s("string"), "secret": s("string")})),
        // Request bodies.
        "RestoreCopy": obj(&["snapshot", "paths", "target"], json!({"snapshot": s("string"), "repository": s("string"),
            "source": s("string"), "paths": {"type": "array", "items": s("string"), "minItems": 1}, "target": s("string")})),
        "RestoreInPlace": obj(&["snapshot", "paths"], json!({"snapshot": s("string"), "repository": s("string"),
            "source": s("string"), "paths": {"type": "array", "items": s("string"), "minItems": 1},
            "confirm": {"type": "string", "description": "the snapshot's 8-digit short id"}})),
        "BackupRequest": obj(&["source", "label", "reason"], json!({"source": s("string"),
            "label": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": HUMAN},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": HUMAN}})),
        "DrillRequest": obj(&["source"], json!({"source": s("string"),
            "reason": {"type": ["string", "null"], "maxLength": 500, "pattern": HUMAN}})),
        "TokenRequest": obj(&["name", "role"], json!({"name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"},
            "role": {"type": "string", "enum": ["admin", "operator", "restore", "auditor"]},
            "expires": {"type": ["string", "null"], "pattern": "^[1-9][0-9]{0,5}[wdhms]$", "description": "a duration like 90d"}})),
    })
}

fn err_ref() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
}

/// What a parameter accepts, exactly as the handlers check it (so a schema-valid request
/// is never refused as malformed).
fn param_schema(p: &crate::routes::Param) -> Value {
    match (p.name, p.ty) {
        ("limit", _) => json!({"type": "integer", "minimum": 1, "maximum": crate::api::MAX_LIMIT}),
        ("kind", _) => json!({"type": "string", "enum": ["backup", "retention", "verify", "copy", "drill"]}),
        ("since", _) => json!({"type": "string", "format": "date-time"}),
        ("q", _) => json!({"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S"}),
        (_, "string") => json!({"type": "string", "minLength": 1}),
        (_, ty) => json!({"type": ty}),
    }
}

/// One line a person typed: at least one visible character, no control characters.
const HUMAN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}', '.', '-'], "_"))),
        );
        op.insert("x-cairn-permission".into(), json!(r.perm.as_str()));
        let params: Vec<Value> = r
            .params
            .iter()
            .map(|p| {
                json!({"name": p.name, "in": if p.at == In::Path { "path" } else { "query" }, "required": p.required,
                    "description": p.description, "schema": param_schema(p)})
            })
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), json!(params));
        }
        match r.body {
            Some("form") => {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/x-www-form-urlencoded":
                    {"schema": obj(&[], json!({"token": {"type": "string"}}))}}}),
                );
            }
            Some(schema) => {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json":
                    {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
                );
            }
            None => {}
        }
        let ok_code = match (r.method, r.answer) {
            ("POST", Answer::Json("Task")) => "202",
            ("POST", Answer::Json("TokenCreated")) => "201",
            (_, Answer::Redirect) => "303",
            _ => "200",
        };
        let ok_body = match r.answer {
            Answer::Json(s) => {
                json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}})
            }
            Answer::Html => {
                json!({"description": "a console page", "content": {"text/html": {"schema": {"type": "string"}}}})
            }
            Answer::Text(mime) => json!({"description": "text", "content": {mime: {"schema": {"type": "string"}}}}),
            Answer::Bytes => json!({"description": "the file's bytes, or with preview=true its first 64 KiB as JSON",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": {"$ref": "#/components/schemas/FilePreview"}}}}),
            Answer::Redirect => json!({"description": "redirect"}),
        };
        let mut responses = Map::new();
        responses.insert(ok_code.into(), ok_body);
        if r.answer == Answer::Html || r.answer == Answer::Redirect {
            responses.insert("303".into(), json!({"description": "to the login page, or after the form"}));
        }
        // A page's own errors are pages; the layers before it (authorization, parameters)
        // answer JSON.
        let err = if r.answer == Answer::Html {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}, "text/html": {"schema": {"type": "string"}}})
        } else {
            err_ref()
        };
        let err_ref = || err.clone();
        responses.insert("400".into(), json!({"description": "bad input", "content": err_ref()}));
        responses.insert("404".into(), json!({"description": "no such thing", "content": err_ref()}));
        if r.perm != Perm::Public {
            responses.insert("401".into(), json!({"description": "no valid token", "content": err_ref()}));
            responses.insert(
                "403".into(),
                json!({"description": "the token's role lacks the permission", "content": err_ref()}),
            );
            responses.insert(
                "429".into(),
                json!({"description": "too many failed logins from this address", "content": err_ref()}),
            );
            op.insert("security".into(), json!([{"bearer": []}, {"session": []}]));
        }
        if r.method == "POST" || r.method == "DELETE" {
            responses.insert("409".into(), json!({"description": "the source is busy", "content": err_ref()}));
            responses.insert("403".into(), json!({"description": "forbidden by role or policy", "content": err_ref()}));
        }
        responses.insert("500".into(), json!({"description": "the server failed", "content": err_ref()}));
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(m) = entry.as_object_mut() {
            m.insert(r.method.to_lowercase(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "cairn", "version": env!("CARGO_PKG_VERSION"),
            "description": "cairn's daemon API: status, jobs, snapshots, restores, drills, audit, tokens. Permissions per route are in x-cairn-permission."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from `cairn token create`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "cairn_session"}
            }
        }
    })
}
