//! The cross-tenant sweep, generated from the OpenAPI document the server
//! serves, not from a hand-written list: every operation that takes an id
//! in its path is called with organization A's admin token and organization
//! B's ids (under B's organization, and under A's own), every request-body
//! field and query parameter that names another resource is sent with B's
//! id, and each answer must reveal and change nothing of B's. A new route
//! is covered without editing this file; a new kind of id makes it fail
//! until `helpers::tenant` knows one.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{fixture, snapshot, tenant, Backend, Tenant};

/// Fields that end like ids but name no Cairn resource.
const NOT_RESOURCES: &[&str] = &["accessKeyId"];

/// Fields whose name is not their kind's (`copyTargetIds` name targets).
const ALIASES: &[(&str, &str)] = &[("copyTargetIds", "targetId")];

/// Which kind of resource a request field names (`appIds` → `appId`).
fn id_kind(field: &str) -> Option<&str> {
    if NOT_RESOURCES.contains(&field) {
        return None;
    }
    if let Some((_, kind)) = ALIASES.iter().find(|(name, _)| *name == field) {
        return Some(kind);
    }
    field
        .strip_suffix("Ids")
        .map(|_| &field[..field.len() - 1])
        .or_else(|| field.ends_with("Id").then_some(field))
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The JSON paths of a schema's fields that name resources
/// (`targetId`, `appIds`, `into.appId`, …).
fn id_fields(document: &Value, schema: &Value, prefix: &str, found: &mut Vec<String>) {
    let schema = resolve(document, schema);
    let mut nested: Vec<&Value> = vec![schema];
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema[combinator].as_array() {
            nested.extend(options.iter().map(|o| resolve(document, o)));
        }
    }
    for schema in nested {
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        for (name, property) in properties {
            let path = format!("{prefix}{name}");
            if id_kind(name).is_some() {
                found.push(path);
            } else {
                id_fields(document, property, &format!("{path}."), found);
            }
        }
    }
}

/// A valid body for each request schema that names resources, built on A's
/// own resources: the sweep then puts B's id in one field at a time.
fn valid_body(schema: &str, a: &Tenant) -> Option<Value> {
    let id = |kind: &str| json!(a.ids[kind]);
    Some(match schema {
        "JobRequest" => json!({ "name": "sweep", "schedule": "0 3 * * *",
            "appIds": [id("appId")], "targetId": id("targetId"), "copyTargetIds": [],
            "keepLast": 1 }),
        "RestoreRequest" => json!({ "confirm": id("backupId"), "dryRun": true,
            "into": { "appId": id("appId"), "volumeName": "data" },
            "targetId": id("targetId") }),
        "VerifyRequest" => json!({ "mode": "read", "targetId": id("targetId") }),
        _ => return None,
    })
}

fn set_path(body: &mut Value, path: &str, value: Value) {
    let mut target = body;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            let is_list = target[part].is_array();
            target[part] = if is_list { json!([value]) } else { value };
            return;
        }
        target = &mut target[part];
    }
}

async fn every_route_keeps_other_tenants_out(backend: Backend) {
    let f = fixture(backend, "alpha").await;
    let a = tenant(&f, f.org.clone(), "ashop").await;
    let b_org = f.app.org("beta").await;
    let b = tenant(&f, b_org, "bshop").await;
    let document = f
        .app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .clone();
    let b_before = snapshot(&f, &b.org).await;
    let a_before = snapshot(&f, &a.org).await;

    let mut swept = 0;
    let mut fields_swept = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/organizations/{orgId}") {
            continue;
        }
        for (method, operation) in operations.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let parameters: Vec<(&str, &str)> = operation["parameters"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            let body = operation["requestBody"].is_object().then(|| json!({}));
            let fill = |with: &dyn Fn(&str) -> String| {
                let mut filled = path.clone();
                for (name, place) in &parameters {
                    if *place == "path" {
                        filled = filled.replace(&format!("{{{name}}}"), &with(name));
                    }
                }
                filled
            };
            let of_b = |name: &str| -> String {
                b.ids
                    .get(name)
                    .unwrap_or_else(|| {
                        panic!("{path} takes `{name}`: give the sweep's tenants one")
                    })
                    .clone()
            };
            // B's organization, B's ids.
            let reply = f
                .app
                .request(
                    method.clone(),
                    &fill(&of_b),
                    Some(&a.org.admin),
                    body.as_ref(),
                )
                .await;
            assert_eq!(
                reply.status, 404,
                "{method} {path} under B's org: {}",
                reply.text
            );
            reply.assert_problem();
            swept += 1;
            // A's organization, B's resource ids (names are A's own space).
            let resources: Vec<&str> = parameters
                .iter()
                .filter(|(name, place)| *place == "path" && *name != "orgId" && *name != "appName")
                .map(|(name, _)| *name)
                .collect();
            if !resources.is_empty() {
                let under_a = |name: &str| {
                    if name == "orgId" {
                        a.ids["orgId"].clone()
                    } else {
                        of_b(name)
                    }
                };
                let reply = f
                    .app
                    .request(
                        method.clone(),
                        &fill(&under_a),
                        Some(&a.org.admin),
                        body.as_ref(),
                    )
                    .await;
                assert_eq!(
                    reply.status, 404,
                    "{method} {path} with B's ids: {}",
                    reply.text
                );
                swept += 1;
            }
            // Query parameters naming resources: nothing of B comes back.
            for (name, place) in &parameters {
                if *place != "query" || id_kind(name).is_none() {
                    continue;
                }
                let own = fill(&|n: &str| a.ids[n].clone());
                let reply = f
                    .app
                    .request(
                        method.clone(),
                        &format!("{own}?{name}={}", of_b(name)),
                        Some(&a.org.admin),
                        None,
                    )
                    .await;
                match reply.status.as_u16() {
                    200 => assert_eq!(
                        reply.body["items"],
                        json!([]),
                        "{path}?{name}: {}",
                        reply.text
                    ),
                    404 | 422 => {}
                    other => panic!("{path}?{name} answered {other}: {}", reply.text),
                }
                for (_, id) in b.ids.iter().filter(|(k, _)| **k != "appName") {
                    assert!(
                        !reply.text.contains(id.as_str()),
                        "{path}?{name} shows B's {id}"
                    );
                }
                fields_swept += 1;
            }
            // Body fields naming resources, on A's own route.
            let Some(schema) = operation["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|_| &operation["requestBody"]["content"]["application/json"]["schema"])
            else {
                continue;
            };
            let mut fields = Vec::new();
            id_fields(&document, schema, "", &mut fields);
            if fields.is_empty() {
                continue;
            }
            let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            let base = valid_body(name, &a)
                .unwrap_or_else(|| panic!("{name} names resources: give the sweep a valid body"));
            let own = fill(&|n: &str| a.ids[n].clone());
            for field in fields {
                let kind = id_kind(field.rsplit('.').next().unwrap()).unwrap();
                let mut body = base.clone();
                set_path(&mut body, &field, json!(of_b(kind)));
                let reply = f
                    .app
                    .request(method.clone(), &own, Some(&a.org.admin), Some(&body))
                    .await;
                assert!(
                    [404, 422].contains(&reply.status.as_u16()),
                    "{method} {path} with B's {field}: {} {}",
                    reply.status,
                    reply.text
                );
                reply.assert_problem();
                fields_swept += 1;
            }
        }
    }
    assert!(swept > 40, "only {swept} calls were generated");
    assert!(fields_swept >= 8, "only {fields_swept} fields were swept");
    f.drain().await;
    assert_eq!(snapshot(&f, &b.org).await, b_before, "B is unchanged");
    assert_eq!(snapshot(&f, &a.org).await, a_before, "A wrote nothing");
}
both_backends!(every_route_keeps_other_tenants_out);
